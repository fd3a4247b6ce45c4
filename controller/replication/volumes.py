"""Volume replication, decided: which snapshots to take, copy and prune, and the figures.

Pure: a function of the dataset's settings, what the regions hold (listings of snapshots
with their tags) and the time. The operator (:mod:`controller.operator.volumes`) lists,
calls :func:`plan`, carries the plan out and lists again; a restarted operator simply
lists again, because **the tags are the state**. Every snapshot Lifeboat makes carries:

=========================  ===============================================================
``lifeboat.dev/app``       ``namespace/name`` of the ResilientApp
``lifeboat.dev/dataset``   the volume dataset
``lifeboat.dev/site``      the site whose region holds it (listings filter on these three)
``lifeboat.dev/volume``    the protected volume: the ID it was first protected under, kept
                           by every successor (a volume restored from it at a failover)
``lifeboat.dev/volume-id`` the volume the source snapshot was taken of
``lifeboat.dev/epoch``     the app's epoch when it was taken
``lifeboat.dev/origin``    the site it was taken at (the active site of that epoch)
``lifeboat.dev/kind``      ``snapshot`` (taken at the origin) or ``copy`` (copied there)
``lifeboat.dev/copy-of``   copies: the source snapshot's ID
``lifeboat.dev/taken``     copies: when the source snapshot was taken (Unix seconds)
=========================  ===============================================================

Rules, per volume:

* **schedule**: the active site (the source) snapshots a volume when its newest snapshot of
  the current epoch is ``interval`` old, and never while one is still pending; after a
  snapshot that failed it waits a quarter interval before trying again. A volume that is
  not ready (one a failover restored, still being created, failed or gone) is not
  snapshotted until it is;
* **copies**: the newest completed source snapshot goes to every destination that lacks
  it and has no copy of the volume in flight (one copy per volume and destination at a
  time; older snapshots are skipped, the newest supersedes them). Only snapshots of the
  current epoch taken at the current source are copied (fencing: a demoted site is never
  a source again);
* **retention**: at every site, the ``retain`` newest completed snapshots and copies of a
  volume are kept (ordered by epoch, then by when the data was taken); older ones are
  pruned, except those protected (a restore reads them) and source snapshots a copy still
  reads from. The newest completed one is never pruned (``retain`` is at least 1). Pending
  ones are never pruned; failed ones once they are an interval old. A snapshot whose ID
  another site also lists (a Cinder copy is the source's backup record imported, with its
  ID: both records refer to the same objects in the backup store, and deleting either
  deletes them) is pruned only once every site listing it prunes it;
* **figures** per destination: the RPO is the age of the data in the newest completed copy
  there (the worst over the volumes; unknown while a volume has none), pending counts the
  source snapshots newer than that copy.

A listing that could not be refreshed (its region unreachable or Impaired) still counts
for the figures — the RPO keeps growing — but nothing is planned against it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from controller.api.models import VolumeDataset
from controller.api.names import (
    TAG_APP,
    TAG_COPY_OF,
    TAG_DATASET,
    TAG_EPOCH,
    TAG_KIND,
    TAG_ORIGIN,
    TAG_RESTORED_FOR,
    TAG_SITE,
    TAG_TAKEN,
    TAG_VOLUME,
    TAG_VOLUME_ID,
)
from controller.providers.protocols import Snapshot

Kind = Literal["snapshot", "copy"]
RETRY_SHARE = 0.25
"""After a failed snapshot or copy, wait this share of the interval before trying again."""


def app_key(namespace: str | None, name: str) -> str:
    """The value of ``lifeboat.dev/app``."""
    return f"{namespace or ''}/{name}"


def listing_tags(app: str, dataset: str, site: str) -> dict[str, str]:
    """What a region's listing filters on: everything ``site`` holds of the dataset."""
    return {TAG_APP: app, TAG_DATASET: dataset, TAG_SITE: site}


def restore_tags(app: str, dataset: str, volume: str, site: str, epoch: int) -> dict[str, str]:
    """Tags of a volume restored at ``site`` for the failover of ``epoch``; a resumed
    restore finds the volume it made by them."""
    return {
        TAG_APP: app,
        TAG_DATASET: dataset,
        TAG_VOLUME: volume,
        TAG_EPOCH: str(epoch),
        TAG_RESTORED_FOR: f"{site}/{epoch}",
    }


MAKING_STATES = frozenset({"creating", "restoring-backup", "downloading"})
"""Volume states (EBS's and Cinder's words) of a volume still being made."""
GONE_STATES = frozenset({"deleting", "deleted", "not-found"})


def volume_failed(state: str) -> bool:
    """Whether a volume in ``state`` failed (``error``, Cinder's ``error_restoring``, ...)
    or is gone (``not-found``: not listed any more)."""
    return state.startswith("error") or state in GONE_STATES


def failure(state: str) -> str:
    """Why a volume in a failed ``state`` (:func:`volume_failed`) failed, for people."""
    if state == "error_restoring":
        return (
            "its restore failed in the cloud: Cinder's backup service in that region could "
            "not read the backup's data (a copied backup restores only where the backup "
            "store holding it, e.g. the Swift container its source region wrote, is "
            "reachable)"
        )
    if state in GONE_STATES:
        return "it is gone"
    return "the cloud failed to make it"


def volume_ready(state: str) -> bool:
    """Whether a volume in ``state`` can be snapshotted: neither still being made nor
    failed. Busy states (attaching, being backed up, ...) count as ready: a snapshot that
    fails on one is retried."""
    return state not in MAKING_STATES and not volume_failed(state)


@dataclass(frozen=True)
class SourceVolume:
    """A volume the active site holds: ``key`` is the protected volume it stands for;
    ``ready`` False while it cannot be snapshotted (see :func:`volume_ready`)."""

    key: str
    volume_id: str
    ready: bool = True


def source_volumes(
    dataset: VolumeDataset, site: str, restored: Sequence[tuple[str, str]] = ()
) -> tuple[SourceVolume, ...]:
    """The volumes ``site`` holds of ``dataset`` while it is active: those the failover to it
    restored (``restored``: (protected volume, volume made) pairs of the dataset), or else
    the volumes its location lists (each standing for itself)."""
    if restored:
        return tuple(SourceVolume(key, volume_id) for key, volume_id in restored)
    location = next((loc for loc in dataset.locations if loc.site == site), None)
    return tuple(SourceVolume(v, v) for v in location.volume_ids) if location else ()


@dataclass(frozen=True)
class Scope:
    """Who replicates: an app's dataset, from ``source`` under ``epoch``."""

    app: str
    dataset: str
    source: str
    epoch: int

    def snapshot_tags(self, volume: SourceVolume) -> dict[str, str]:
        return {
            **listing_tags(self.app, self.dataset, self.source),
            TAG_VOLUME: volume.key,
            TAG_VOLUME_ID: volume.volume_id,
            TAG_EPOCH: str(self.epoch),
            TAG_ORIGIN: self.source,
            TAG_KIND: "snapshot",
        }

    def copy_tags(self, source: Holding, destination: str) -> dict[str, str]:
        return {
            **listing_tags(self.app, self.dataset, destination),
            TAG_VOLUME: source.volume,
            TAG_VOLUME_ID: source.volume_id,
            TAG_EPOCH: str(source.epoch),
            TAG_ORIGIN: source.origin,
            TAG_KIND: "copy",
            TAG_COPY_OF: source.snapshot.id,
            TAG_TAKEN: f"{source.taken:.3f}",
        }


@dataclass(frozen=True)
class Holding:
    """A snapshot or copy of the dataset, as its tags describe it."""

    snapshot: Snapshot
    site: str
    volume: str
    volume_id: str
    epoch: int
    origin: str
    kind: Kind
    copy_of: str
    taken: float
    """When the data was taken (a copy: when its source snapshot was)."""

    @property
    def id(self) -> str:
        return self.snapshot.id

    @property
    def state(self) -> str:
        return self.snapshot.state

    @property
    def data(self) -> tuple[int, float]:
        """How new its data is: a newer epoch first, then the time it was taken (a copy and
        its source are equal)."""
        return (self.epoch, self.taken)

    @property
    def order(self) -> tuple[int, float, str]:
        """:attr:`data`, ties broken by ID (a total order for sorting)."""
        return (self.epoch, self.taken, self.snapshot.id)


def holding(snapshot: Snapshot) -> Holding | None:
    """The snapshot as a :class:`Holding`; None when its tags are not Lifeboat's (such a
    snapshot is left alone: never copied, never pruned)."""
    tags = snapshot.tags
    kind = tags.get(TAG_KIND)
    try:
        epoch = int(tags.get(TAG_EPOCH, ""))
        taken = float(tags[TAG_TAKEN]) if TAG_TAKEN in tags else snapshot.created_at
    except ValueError:
        return None
    site, volume, origin = tags.get(TAG_SITE), tags.get(TAG_VOLUME), tags.get(TAG_ORIGIN)
    if kind not in ("snapshot", "copy") or not site or not volume or not origin:
        return None
    if not math.isfinite(taken) or epoch < 1:
        return None
    return Holding(
        snapshot,
        site,
        volume,
        tags.get(TAG_VOLUME_ID, ""),
        epoch,
        origin,
        kind,  # type: ignore[arg-type]
        tags.get(TAG_COPY_OF, ""),
        round(taken, 3),  # as copies record it
    )


@dataclass(frozen=True)
class Listing:
    """What one site's region holds of the dataset; ``fresh``: listed in this pass."""

    snapshots: tuple[Snapshot, ...] = ()
    fresh: bool = True


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Take:
    """Snapshot ``volume`` at the source."""

    volume: SourceVolume


@dataclass(frozen=True)
class Copy:
    """Copy ``source`` into ``destination``'s region (made by the destination)."""

    destination: str
    source: Holding


@dataclass(frozen=True)
class Prune:
    """Delete ``holding`` from ``site``'s region."""

    site: str
    holding: Holding
    reason: Literal["retention", "failed"]


@dataclass(frozen=True)
class Figures:
    """How far one destination is behind the source."""

    destination: str
    pending: int
    """Source snapshots newer than the destination's newest completed copy."""
    rpo_seconds: float | None
    """Age of the data in the newest completed copy (the worst volume); None: unknown."""
    newest_copy_time: float | None
    """When the data that sets the RPO was taken."""
    copying: int
    """Copies in flight."""
    failed: int
    """Copies that ended in error (until pruned)."""


@dataclass(frozen=True)
class Plan:
    takes: tuple[Take, ...]
    copies: tuple[Copy, ...]
    prunes: tuple[Prune, ...]
    figures: tuple[Figures, ...]
    failed_snapshots: int
    """Source snapshots that ended in error (until pruned)."""


def plan(
    scope: Scope,
    volumes: Sequence[SourceVolume],
    destinations: Sequence[str],
    listings: Mapping[str, Listing],
    now: float,
    *,
    interval: float,
    retain: int,
    protected: Iterable[str] = (),
    act: bool = True,
) -> Plan:
    """What to do next for one dataset, and the figures; see the module docstring.

    ``listings`` holds the source's and the destinations' (a site without one counts as
    holding nothing and unlisted). ``protected``: snapshot IDs that must not be pruned.
    ``act`` False: figures only (the direction of replication is changing).
    """
    retain = max(1, retain)
    held = {site: _holdings(site, listings.get(site)) for site in (scope.source, *destinations)}
    fresh = {site for site in held if (listing := listings.get(site)) and listing.fresh}
    source = [
        h
        for h in held[scope.source]
        if h.kind == "snapshot" and h.origin == scope.source and h.epoch == scope.epoch
    ]
    figures = tuple(
        _figures(scope, volumes, source, held[d], d, now) for d in destinations if d in held
    )
    failed = sum(1 for h in source if h.state == "error")
    if not act:
        return Plan((), (), (), figures, failed)

    takes = tuple(
        Take(v)
        for v in volumes
        if v.ready and scope.source in fresh and _due(source, v, now, interval)
    )
    copies = tuple(
        copy
        for d in destinations
        if d in fresh
        for v in _keys(volumes)
        if (copy := _copy(source, held[d], d, v, now, interval)) is not None
    )
    reading = {
        h.copy_of
        for d in destinations
        for h in held[d]
        if h.kind == "copy" and h.state == "pending" and h.origin == scope.source
    }
    keep = set(protected)
    prunes = tuple(
        prune
        for site in held
        if site in fresh
        for prune in _prunes(
            site,
            held[site],
            keep | (reading if site == scope.source else set()),
            retain,
            now,
            interval,
        )
    )
    return Plan(takes, copies, _shared_prunes(held, prunes), figures, failed)


def _shared_prunes(
    held: Mapping[str, list[Holding]], prunes: tuple[Prune, ...]
) -> tuple[Prune, ...]:
    """The prunes that delete no data another site still keeps. Where a copy keeps its
    source's ID (Cinder: the source's backup record imported in the other region), both
    records refer to the same objects in the backup store, and deleting either deletes
    them: such a backup is pruned only once every site that lists it prunes it (a site
    not listed afresh prunes nothing, so it keeps it too). EBS copies have IDs of their
    own: nothing changes for them."""
    holders: dict[str, set[str]] = defaultdict(set)
    for site, holdings in held.items():
        for h in holdings:
            holders[h.id].add(site)
    pruning: dict[str, set[str]] = defaultdict(set)
    for prune in prunes:
        pruning[prune.holding.id].add(prune.site)
    return tuple(p for p in prunes if holders[p.holding.id] <= pruning[p.holding.id])


def _holdings(site: str, listing: Listing | None) -> list[Holding]:
    if listing is None:
        return []
    found = (holding(s) for s in listing.snapshots)
    return [h for h in found if h is not None and h.site == site]


def _keys(volumes: Sequence[SourceVolume]) -> list[str]:
    return list(dict.fromkeys(v.key for v in volumes))


def _due(source: list[Holding], volume: SourceVolume, now: float, interval: float) -> bool:
    """Whether ``volume`` should be snapshotted now."""
    mine = [h for h in source if h.volume == volume.key and h.volume_id == volume.volume_id]
    if any(h.state == "pending" for h in mine):
        return False
    good = [h.taken for h in mine if h.state == "completed"]
    bad = [h.snapshot.created_at for h in mine if h.state == "error"]
    if good and max(good) > now - interval:
        return False
    return not (bad and max(bad) > now - interval * RETRY_SHARE)


def _copy(
    source: list[Holding],
    there: list[Holding],
    destination: str,
    volume: str,
    now: float,
    interval: float,
) -> Copy | None:
    candidates = [h for h in source if h.volume == volume and h.state == "completed"]
    if not candidates:
        return None
    newest = max(candidates, key=lambda h: h.order)
    mine = [h for h in there if h.volume == volume]
    if any(h.kind == "copy" and h.state == "pending" for h in mine):
        return None  # one copy of a volume in flight per destination
    if any(h.state != "error" and h.data >= newest.data for h in mine):
        return None  # already there (or something newer is)
    failed = [h.snapshot.created_at for h in mine if h.state == "error" and h.copy_of == newest.id]
    if failed and max(failed) > now - interval * RETRY_SHARE:
        return None  # it failed lately: wait before trying again
    return Copy(destination, newest)


def _prunes(
    site: str,
    holdings: list[Holding],
    keep: set[str],
    retain: int,
    now: float,
    interval: float,
) -> Iterable[Prune]:
    by_volume: dict[str, list[Holding]] = defaultdict(list)
    for h in holdings:
        by_volume[h.volume].append(h)
    for group in by_volume.values():
        completed = sorted(
            (h for h in group if h.state == "completed"), key=lambda h: h.order, reverse=True
        )
        for h in completed[retain:]:
            if h.id not in keep:
                yield Prune(site, h, "retention")
        for h in group:
            if h.state == "error" and h.id not in keep and h.snapshot.created_at <= now - interval:
                yield Prune(site, h, "failed")


def _figures(
    scope: Scope,
    volumes: Sequence[SourceVolume],
    source: list[Holding],
    there: list[Holding],
    destination: str,
    now: float,
) -> Figures:
    pending = 0
    ages: list[float | None] = []
    times: list[float] = []
    for key in _keys(volumes):
        completed = [h for h in there if h.volume == key and h.state == "completed"]
        best = max(completed, key=lambda h: h.order) if completed else None
        floor = best.data if best else None
        pending += sum(
            1
            for h in source
            if h.volume == key and h.state != "error" and (floor is None or h.data > floor)
        )
        ages.append(max(0.0, now - best.taken) if best else None)
        if best:
            times.append(best.taken)
    known = [a for a in ages if a is not None]
    rpo: float | None = None if len(known) < len(ages) else max(known, default=0.0)
    newest = min(times) if rpo is not None and times else None
    copying = sum(
        1 for h in there if h.kind == "copy" and h.state == "pending" and h.origin == scope.source
    )
    failed = sum(1 for h in there if h.kind == "copy" and h.state == "error")
    return Figures(destination, pending, rpo, newest, copying, failed)


# --------------------------------------------------------------------------- restores


@dataclass(frozen=True)
class RestorePick:
    """What a restore makes a protected volume from at a site."""

    volume: str
    copy: Holding | None
    """The newest completed copy there (by epoch, then by when its data was taken)."""
    waiting: bool
    """No completed copy yet, but one is in flight."""


def pick_for_restore(
    keys: Sequence[str], snapshots: Iterable[Snapshot], site: str
) -> tuple[RestorePick, ...]:
    """For each protected volume in ``keys`` (or, when none are known, each volume of the
    newest epoch ``site`` holds data of), the copy to restore it from."""
    held = [h for h in map(holding, snapshots) if h is not None and h.site == site]
    if not keys:
        newest = max((h.epoch for h in held if h.state == "completed"), default=None)
        keys = sorted({h.volume for h in held if h.epoch == newest})
    picks = []
    for key in dict.fromkeys(keys):
        mine = [h for h in held if h.volume == key]
        completed = [h for h in mine if h.state == "completed"]
        best = max(completed, key=lambda h: h.order) if completed else None
        picks.append(
            RestorePick(key, best, best is None and any(h.state == "pending" for h in mine))
        )
    return tuple(picks)


def spread(keys: Sequence[str], zones: Sequence[str]) -> dict[str, str]:
    """A zone for each volume, round-robin in key order (the same answer every time)."""
    if not zones:
        return {}
    return {key: zones[i % len(zones)] for i, key in enumerate(sorted(set(keys)))}
