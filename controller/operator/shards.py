"""Sharding: several operator processes split the ResilientApps between them.

One Python process decides on one core (the GIL), so one operator carries a bounded number
of apps (``make bench-failover`` measures it). ``lifeboat run --shard I/N`` makes this
process shard ``I`` of ``N``: it serves the ResilientApps (and their FailoverDrills) whose
``namespace/name`` hashes to ``I`` — a SHA-256 of the name, not Python's salted ``hash``,
so every process and every restart agrees — and takes the Lease ``lifeboat-shard-I-of-N``,
so each shard has its own leader and standbys. Every shard watches the CloudProviders and
probes their API planes (its apps' decisions need the verdicts); only shard 0 writes their
status and Events. With ``N`` = 1 (the default) nothing changes: the Lease is ``lifeboat``.

Changing ``N`` moves apps between shards: the new owner rebuilds each app from its status
and what DNS holds, as after any restart (the epoch fences a late write of the old one).
Shards and peers (``--peer-name``) do not combine in this release.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from controller.api.annotations import KOPF_PREFIX
from controller.api.names import FINALIZER

MAX_SHARDS = 64
_SPEC = re.compile(r"^(\d{1,2})/(\d{1,2})$")


@dataclass(frozen=True)
class Shard:
    """This process's share of the apps: shard ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"the number of shards must be 1..{MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard {self.index} does not exist: shards are numbered 0..{self.count - 1}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``I/N`` (e.g. ``0/2``) -> shard I of N; ValueError in one line otherwise."""
        found = _SPEC.match(text.strip())
        if found is None:
            raise ValueError(f"a shard is written I/N, e.g. 0/2 (got {text!r})")
        return cls(int(found[1]), int(found[2]))

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def lease_name(self) -> str:
        """The Lease this shard's replicas elect their leader with."""
        return f"lifeboat-shard-{self.index}-of-{self.count}" if self.sharded else "lifeboat"

    @property
    def writes_providers(self) -> bool:
        """Whether this shard writes CloudProviders' status and Events (shard 0 only)."""
        return self.index == 0

    @property
    def finalizer(self) -> str:
        """This shard's finalizer. kopf takes its own finalizer off an object none of its
        handlers serve: with one name for every shard, each shard took off the owner's
        finalizer and the owner put it back, and every status write met a changed object."""
        if not self.sharded:
            return FINALIZER
        return f"{FINALIZER}-shard-{self.index}-of-{self.count}"

    @property
    def kopf_prefix(self) -> str:
        """Where kopf keeps this shard's bookkeeping on objects every shard handles
        (CloudProviders): a prefix of its own, so that no shard reads another's as its own."""
        return (
            KOPF_PREFIX if not self.sharded else f"shard-{self.index}-of-{self.count}.{KOPF_PREFIX}"
        )

    def stale_finalizers(self, finalizers: Iterable[str]) -> list[str]:
        """Lifeboat finalizers of another shard layout (before ``N`` changed): nobody of
        this layout would ever take them off, so the owner of the object does."""
        layout = {Shard(i, self.count).finalizer for i in range(self.count)}
        return [
            f
            for f in finalizers
            if (f == FINALIZER or f.startswith(f"{FINALIZER}-shard-")) and f not in layout
        ]

    def of(self, namespace: str | None, name: str | None) -> int:
        """The shard that serves the app ``namespace/name``."""
        key = f"{namespace or ''}/{name or ''}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % self.count

    def owns(self, namespace: str | None, name: str | None) -> bool:
        """Whether this shard serves the app ``namespace/name``."""
        return not self.sharded or self.of(namespace, name) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
