"""The small Protocols the operator talks to; each cloud implements them.

Only ``providers`` know an SDK. The operator and the decision core see these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SiteRecord:
    """One site's share of a weighted DNS name."""

    site: str
    values: tuple[str, ...]
    weight: int


@dataclass(frozen=True)
class DnsRecord:
    """A DNS name in a hosted zone (given by ID, or by name when there is no ID)."""

    hosted_zone_id: str | None
    hosted_zone_name: str | None
    name: str
    type: str
    ttl: int


@dataclass(frozen=True)
class TrafficPlan:
    """The DNS state to reach: every site's record set with its weight.

    Record sets of ``record`` for sites not in ``records`` are removed in the same
    atomic change (a removed site must not keep a weight), and so are all of ``retire``'s
    (the name the app was published under before it was renamed).
    """

    record: DnsRecord
    records: tuple[SiteRecord, ...]
    retire: DnsRecord | None = None
    comment: str = ""


@dataclass(frozen=True)
class TrafficChange:
    """A DNS change as submitted; ``in_sync`` once the provider reports it propagated."""

    change_id: str
    in_sync: bool
    submitted_at: float
    synced_at: float | None


class TrafficManager(Protocol):
    """Moves users between sites through DNS."""

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        """Make DNS match ``plan`` in one atomic change and wait until it is in sync."""
        ...

    async def weights(self, plan: TrafficPlan) -> dict[str, int]:
        """The weights DNS holds now for the plan's record, by site."""
        ...


class IdentityChecker(Protocol):
    """Verifies that a provider's credentials work."""

    async def whoami(self) -> str:
        """The account (or project) the credentials belong to."""
        ...
