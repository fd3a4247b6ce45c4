"""Keystone as an :class:`~controller.providers.protocols.IdentityChecker`."""

from __future__ import annotations

from dataclasses import dataclass

from controller.providers.openstack.connector import OpenStackConnector


@dataclass
class KeystoneIdentity:
    connector: OpenStackConnector
    region: str

    async def whoami(self) -> str:
        """The project the credentials are scoped to (authenticating if needed)."""
        project = await self.connector.call(
            self.region,
            "identity",
            "GetProjectId",
            lambda conn: conn.session.get_project_id(),
            mutating=False,
        )
        return f"project {project}"
