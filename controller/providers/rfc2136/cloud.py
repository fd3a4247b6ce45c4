"""An ``rfc2136`` CloudProvider, connected: one DNS server taking signed dynamic updates.

It offers DNS traffic only. Its API plane is the server: probed with a signed SOA query of
its first zone (sent even when the gate is Impaired), judged from every query and update
like any cloud's calls. The identity check is a signed SOA query of every zone: it proves
the key is known to the server (a wrong secret fails the answer's signature) and that
the server is authoritative for each zone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from controller.api.models import CloudProviderSpec
from controller.providers.backend import Cloud
from controller.providers.calls import OutcomeHook
from controller.providers.errors import CredentialsError, DnsZoneNotFound
from controller.providers.protocols import ProbeReport
from controller.providers.rfc2136.connector import Rfc2136Connector, classify
from controller.providers.rfc2136.dns import Rfc2136Traffic


@dataclass
class SoaProbe:
    connector: Rfc2136Connector

    async def probe(self, region: str) -> ProbeReport:
        zone = self.connector.settings.zones[0]
        started = time.monotonic()
        try:
            soa, _ = await self.connector.call(
                region,
                "QuerySOA",
                lambda: self.connector.query(zone, "SOA"),
                mutating=False,
                probe=True,
            )
        except Exception as error:
            return ProbeReport(
                region,
                classify(error).outcome,
                time.monotonic() - started,
                (),
                self.connector.explain(error),
            )
        detail = f"zone {zone} serial {soa[0].serial}" if soa else f"no SOA for {zone}"
        return ProbeReport(region, classify(None).outcome, time.monotonic() - started, (), detail)


@dataclass
class TsigIdentity:
    connector: Rfc2136Connector
    region: str

    async def whoami(self) -> str:
        """The key and server, once every zone answered a signed SOA query."""
        settings = self.connector.settings
        for zone in settings.zones:
            soa, _ = await self.connector.call(
                self.region,
                "QuerySOA",
                lambda zone=zone: self.connector.query(zone, "SOA"),  # type: ignore[misc]
                mutating=False,
            )
            if soa is None:
                raise DnsZoneNotFound(f"{settings.server} is not authoritative for zone {zone}")
        return f"TSIG key {settings.tsig_key_name} at {settings.server}:{settings.port}"


class Rfc2136Cloud(Cloud):
    """One server for every region of the CloudProvider; each region is a gate of its own
    (a region names where the DNS is, e.g. a data centre)."""

    connector: Rfc2136Connector

    def __init__(self, connector: Rfc2136Connector) -> None:
        super().__init__(
            connector.name,
            connector.spec,
            connector,
            SoaProbe(connector),
            TsigIdentity(connector, connector.spec.regions[0]),
        )
        self._traffic: dict[str, Rfc2136Traffic] = {}

    def traffic(self, region: str) -> Rfc2136Traffic:
        return self._traffic.setdefault(region, Rfc2136Traffic(self.connector, region))


def connect(
    name: str,
    spec: CloudProviderSpec,
    secret: Mapping[str, str] | None,
    on_outcome: OutcomeHook | None,
) -> Rfc2136Cloud:
    """The CloudProvider ``name`` with the TSIG secret in ``secret`` (required: there is no
    environment chain for TSIG keys)."""
    if secret is None:
        raise CredentialsError("type rfc2136 takes its TSIG secret from a Secret (tsig_secret)")
    return Rfc2136Cloud(Rfc2136Connector(name, spec, secret, on_outcome=on_outcome))
