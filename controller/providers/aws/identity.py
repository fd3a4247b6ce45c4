"""STS GetCallerIdentity as an :class:`~controller.providers.protocols.IdentityChecker`."""

from __future__ import annotations

from dataclasses import dataclass

from controller.providers.aws.connector import AwsConnector


@dataclass
class StsIdentity:
    connector: AwsConnector
    region: str

    async def whoami(self) -> str:
        client = self.connector.sts(self.region)
        answer = await self.connector.call(
            self.region, "sts", "GetCallerIdentity", client.get_caller_identity
        )
        return answer["Account"]
