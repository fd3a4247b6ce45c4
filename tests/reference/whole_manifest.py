"""The whole-memory replication manifest of the engine before paging (main at 72bcb7f),
kept verbatim as the reference of tests/unit/test_paged_replication.py.

Replication checkpoints: one manifest per app, dataset and site, kept in that site's
bucket or container at ``<prefix>.lifeboat/replication/<namespace>/<app>/<dataset>.json``.

Why there: the manifest describes the objects of that very bucket (their ETags, the epoch
that wrote them, the source version each copy was made from), so it lives and dies with
them, survives any operator restart, is read where it is needed (the destination's while
copying into it; the source's, read-only, once that site has become the source after a
failover), and its size grows with the bucket instead of with a Kubernetes object (a
ConfigMap stops at 1 MiB; the app's status must stay small). It is written with the same
atomic, MD5-checked ``put`` as any copy, so a torn manifest is never visible; ``.lifeboat/``
is excluded from replication.

Only the flow copying *into* a site writes that site's manifest, at most every few seconds
while it works and at the end of every pass. A manifest lost or unreadable costs HEADs,
not correctness: every copy also carries its stamps (see :mod:`controller.replication.plan`),
from which the next pass learns again what is already in place.

Memory: the manifest is held whole (about 150 bytes per object).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from controller.providers.protocols import ObjectStore
from controller.replication.epochs import EpochHistory
from controller.replication.plan import RESERVED, Entry

log = logging.getLogger(__name__)

FORMAT = "lifeboat.dev/replication-manifest"
VERSION = 1


def manifest_key(prefix: str, app: str, dataset: str) -> str:
    """Where a dataset's manifest lives in a location (``app`` is ``namespace/name``)."""
    return f"{prefix}{RESERVED}replication/{app}/{dataset}.json"


class ManifestError(ValueError):
    """The stored manifest cannot be read (not ours, or damaged)."""


@dataclass(frozen=True)
class UnreplicatedObject:
    """An object of an older epoch at a destination that never reached the source."""

    key: str
    etag: str
    size: int
    epoch: int


@dataclass
class Totals:
    """What was done to the site over its lifetime as a destination."""

    copied_objects: int = 0
    copied_bytes: int = 0
    deletes: int = 0
    errors: int = 0
    conflicts: int = 0


@dataclass
class Manifest:
    """What Lifeboat knows of the objects in one site's bucket, for one dataset."""

    site: str
    entries: dict[str, Entry] = field(default_factory=dict)
    """By key relative to the location's prefix."""
    history: EpochHistory = field(default_factory=EpochHistory)
    conflicts: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Keys refused by the epoch rule: (source ETag, destination ETag) when refused."""
    unreplicated: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    """Objects of an older epoch that never reached the source (see
    :class:`~controller.replication.plan.Unreplicated`): (ETag, size, epoch)."""
    totals: Totals = field(default_factory=Totals)
    saved_at: float | None = None

    def snapshot(self) -> Manifest:
        """A copy that later changes to this one do not touch (entries are immutable)."""
        return Manifest(
            self.site,
            dict(self.entries),
            self.history,
            dict(self.conflicts),
            dict(self.unreplicated),
            replace(self.totals),
            self.saved_at,
        )

    def encode(self, now: float) -> bytes:
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "site": self.site,
            "savedAt": now,
            "epochs": self.history.to_wire(),
            "totals": vars(self.totals),
            "conflicts": {k: list(v) for k, v in sorted(self.conflicts.items())},
            "unreplicated": {k: list(v) for k, v in sorted(self.unreplicated.items())},
            "objects": {
                key: [e.etag, e.size, e.epoch, e.source_etag, e.md5, e.held]
                for key, e in sorted(self.entries.items())
            },
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> Manifest:
        try:
            document = json.loads(data)
        except ValueError as error:
            raise ManifestError(f"not JSON: {error}") from None
        if not isinstance(document, Mapping) or document.get("format") != FORMAT:
            raise ManifestError("not a Lifeboat replication manifest")
        if document.get("version") != VERSION:
            raise ManifestError(f"manifest version {document.get('version')} not understood")
        try:
            entries = {
                str(key): Entry(
                    str(v[0]),
                    int(v[1]),
                    None if v[2] is None else int(v[2]),
                    None if v[3] is None else str(v[3]),
                    None if v[4] is None else str(v[4]),
                    None if len(v) < 6 or v[5] is None else int(v[5]),
                )
                for key, v in dict(document.get("objects") or {}).items()
            }
            conflicts = {
                str(k): (str(v[0]), str(v[1]))
                for k, v in dict(document.get("conflicts") or {}).items()
            }
            unreplicated = {
                str(k): (str(v[0]), int(v[1]), int(v[2]))
                for k, v in dict(document.get("unreplicated") or {}).items()
            }
            raw_totals = dict(document.get("totals") or {})
            totals = Totals(
                **{k: int(raw_totals.get(k, 0)) for k in vars(Totals()) if k in raw_totals}
            )
            saved = document.get("savedAt")
            return Manifest(
                site=str(document.get("site", "")),
                entries=entries,
                history=EpochHistory.from_wire(document.get("epochs")),
                conflicts=conflicts,
                unreplicated=unreplicated,
                totals=totals,
                saved_at=float(saved) if isinstance(saved, int | float) else None,
            )
        except (TypeError, ValueError, IndexError) as error:
            raise ManifestError(f"malformed manifest: {error}") from None


async def load_manifest(store: ObjectStore, key: str) -> Manifest | None:
    """The manifest stored at ``key`` (None when there is none yet).

    Raises :class:`ManifestError` for one that cannot be read, and whatever the store
    raises when it cannot be reached.
    """
    try:
        parts = [chunk async for chunk in store.get(key)]
    except KeyError:
        return None
    return Manifest.decode(b"".join(parts))


async def save_manifest(store: ObjectStore, key: str, manifest: Manifest, now: float) -> None:
    """Write the manifest atomically (MD5-checked; visible only once complete).

    A manifest of 100,000 objects takes a good part of a second to encode: that is done on
    a copy, in a thread, so the flows' other copies go on meanwhile.
    """
    data = await asyncio.to_thread(manifest.snapshot().encode, now)
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        yield data

    await store.put(key, body(), len(data), {}, md5_hex=digest)
    manifest.saved_at = now
