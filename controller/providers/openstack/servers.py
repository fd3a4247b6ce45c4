"""The Nova servers of one site in one region: how they are recognised and what they say.

A site's servers are the servers of the project whose name starts with the site's name
prefix and a hyphen **and** whose metadata holds ``lifeboat.dev/site=<site>``. The name
prefix narrows the listing on the server side (Nova's ``name`` filter is a regular
expression); the metadata item, which Nova cannot filter on for project members, is
checked here. Either alone could match someone else's servers: both together make the
site's servers unmistakable. (Nova server *tags* cannot hold ``/``, hence metadata.)

Servers being deleted (``task_state`` ``deleting``, status ``DELETED`` or
``SOFT_DELETED``) are not the site's any more. A server's zone is what Nova reports in
``OS-EXT-AZ:availability_zone``: at microversion 2.79 Nova ignores the
``availability_zone`` list filter for project members, so zones are told apart here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from controller.api.names import TAG_SITE
from controller.providers.openstack.connector import OpenStackConnector

GONE_STATUSES = frozenset({"DELETED", "SOFT_DELETED"})
BROKEN_STATUSES = frozenset({"ERROR", "SHUTOFF"})
"""Servers that hold a place without serving; they are the first to go when a zone shrinks."""

# A DNS label: Nova takes it as-is into server names and the host names made from them.
_NAME_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_METADATA_MAX = 255  # Nova's limit for metadata keys and values


@dataclass(frozen=True)
class ServerMatch:
    """What makes a server one of the site's."""

    name_prefix: str
    """A DNS label (lower-case letters, digits and hyphens, at most 63 characters); the
    site's servers are called ``<name_prefix>-...``."""
    site: str
    """The value of the servers' ``lifeboat.dev/site`` metadata item."""

    def __post_init__(self) -> None:
        if not _NAME_PREFIX.match(self.name_prefix):
            raise ValueError(
                f"server name prefix {self.name_prefix!r} must be a DNS label: 1-63 lower-case "
                "letters, digits and hyphens, starting and ending with a letter or digit"
            )
        if not 0 < len(self.site) <= _METADATA_MAX:
            raise ValueError(f"site must be 1-{_METADATA_MAX} characters, got {self.site!r}")

    @property
    def name_filter(self) -> str:
        """Nova's ``name`` list filter (a regular expression) for the site's servers."""
        return f"^{self.name_prefix}-"

    def matches(self, server: Any) -> bool:
        name = str(getattr(server, "name", "") or "")
        metadata = getattr(server, "metadata", None) or {}
        return name.startswith(f"{self.name_prefix}-") and metadata.get(TAG_SITE) == self.site


def status_of(server: Any) -> str:
    return str(getattr(server, "status", "") or "").upper()


def is_live(server: Any) -> bool:
    """Neither gone nor being deleted."""
    return status_of(server) not in GONE_STATUSES and server.task_state != "deleting"


def zone_of(server: Any) -> str:
    return str(getattr(server, "availability_zone", "") or "")


def fault_message(server: Any) -> str:
    fault = getattr(server, "fault", None) or {}
    return str(fault.get("message", "")) if isinstance(fault, dict) else ""


def list_matching(conn: Any, match: ServerMatch) -> list[Any]:
    """The site's live servers, with details (blocking: runs inside a connector call)."""
    return [
        server
        for server in conn.compute.servers(details=True, name=match.name_filter)
        if match.matches(server) and is_live(server)
    ]


async def site_servers(connector: OpenStackConnector, region: str, match: ServerMatch) -> list[Any]:
    """The site's live servers in ``region``: one listing (paginated by the SDK)."""
    found: list[Any] = await connector.call(
        region, "compute", "ListServers", lambda conn: list_matching(conn, match), mutating=False
    )
    return found
