"""Replication figures: per dataset and destination, and what they mean for the app.

Pure (time is an argument). :class:`FlowFigures` is what an object flow knows of its
progress; :meth:`FlowFigures.status` turns it into the ``status.replication`` entry.
:func:`replication_lag` and :func:`replication_conditions` read any entries, object or
volume, to feed the decision core's failback gate and the ``Replicating`` and
``RPOBreached`` conditions.

**RPO** of an object flow: the age of the oldest change at the source that may not be at
the destination yet. That is the oldest pending change (copies and deletes found by the
last scan or announced by a change notice), and at least the time since the flow last
looked: the start of its last listing or, with change notices, the last time they were
read to the end of the queue less the time a notice may take to arrive (5 s, or the
longest delay a late notice proved in the last 15 minutes; see
:class:`~controller.replication.objects.ChangeListener`) — anything written since may be
missing. So without notices the RPO of a flow that keeps
up runs between 0 and the scan interval (plus the time a pass takes): keep the scan
interval well below the RPO target, or give the source an event queue. While the flow
cannot see (listing failed, or held because a region's API plane is Impaired) notices do
not count and the RPO grows from its last listing. Unknown (None) until a first listing
succeeded; a dataset restarted with the same source, epoch and ends (a spec change, a
provider that became unusable) starts from what its predecessor knew, so its RPO keeps
growing from the predecessor's last look instead of turning unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from controller.api.conditions import parse_rfc3339, rfc3339
from controller.api.events import EventReason
from controller.api.models import ReplicationStatus
from controller.core.model import FlowProgress
from controller.replication.manifest import Totals

ConditionStatus = Literal["True", "False", "Unknown"]

PENDING_TRACKED = 10_000
"""Pending changes tracked key by key per flow, at most (about 200 bytes each)."""


@dataclass(frozen=True)
class Untracked:
    """Pending changes beyond the tracked ones: how many, their bytes, the oldest."""

    objects: int = 0
    bytes: int = 0
    oldest: float | None = None

    def plus(self, other: Untracked) -> Untracked:
        oldest = min((t for t in (self.oldest, other.oldest) if t is not None), default=None)
        return Untracked(self.objects + other.objects, self.bytes + other.bytes, oldest)


@dataclass
class Pending:
    """Changes not yet at the destination: key -> (when made at the source, bytes).

    Bounded: at most ``limit`` keys are tracked one by one; past that, changes are only
    counted (``untracked``: number, bytes, oldest). An untracked change cannot be taken off
    when it is done, so the figures are then upper bounds (``estimated``): never fewer
    objects or bytes, never a younger oldest change, than are really pending — the RPO
    reads too high, never too low — until the next pass that lists both ends to the end
    counts them afresh. ``carried`` holds what was untracked when the running pass began
    (dropped when its listing completes)."""

    keys: dict[str, tuple[float, int]] = field(default_factory=dict)
    limit: int = PENDING_TRACKED
    untracked: Untracked = field(default_factory=Untracked)
    carried: Untracked = field(default_factory=Untracked)

    @staticmethod
    def of(items: dict[str, tuple[float, int]], limit: int = PENDING_TRACKED) -> Pending:
        pending = Pending(limit=limit)
        for key, (since, size) in items.items():
            pending.add(key, since, size)
        return pending

    def copy(self) -> Pending:
        return replace(self, keys=dict(self.keys))

    def __len__(self) -> int:
        return len(self.keys) + self.untracked.objects + self.carried.objects

    def __bool__(self) -> bool:
        return len(self) > 0

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def __getitem__(self, key: str) -> tuple[float, int]:
        return self.keys[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, dict):  # a fully tracked set compares as its keys
            return not self.estimated and self.keys == other
        if isinstance(other, Pending):
            return (self.keys, self.untracked, self.carried) == (
                other.keys,
                other.untracked,
                other.carried,
            )
        return NotImplemented

    @property
    def estimated(self) -> bool:
        """Some changes are counted without their keys: the figures are upper bounds."""
        return bool(self.untracked.objects or self.carried.objects)

    def bytes(self) -> int:
        return (
            sum(size for _, size in self.keys.values()) + self.untracked.bytes + self.carried.bytes
        )

    def oldest(self) -> float | None:
        times = [since for since, _ in self.keys.values()]
        times += [u.oldest for u in (self.untracked, self.carried) if u.oldest is not None]
        return min(times, default=None)

    def get(self, key: str) -> tuple[float, int] | None:
        return self.keys.get(key)

    def since(self, key: str) -> float | None:
        """When ``key``'s oldest pending change was made, as far as is known: for a key not
        tracked while some changes are untracked, the oldest of those (on the safe side)."""
        known = self.keys.get(key)
        if known is not None:
            return known[0]
        return self.untracked.plus(self.carried).oldest

    def add(self, key: str, since: float, size: int) -> None:
        """``key`` is pending since ``since`` with ``size`` bytes (replacing what was)."""
        if key in self.keys or len(self.keys) < self.limit:
            self.keys[key] = (since, size)
        else:
            self.untracked = self.untracked.plus(Untracked(1, size, since))

    def setdefault(self, key: str, since: float, size: int) -> None:
        if key not in self.keys:
            self.add(key, since, size)

    def pop(self, key: str) -> None:
        """``key`` is no longer pending (an untracked one stays counted: see above)."""
        self.keys.pop(key, None)

    def drop(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.keys.pop(key, None)

    def begin_pass(self) -> None:
        """A pass starts listing: what is untracked is carried until its listing ends."""
        self.carried = self.carried.plus(self.untracked)
        self.untracked = Untracked()

    def end_listing(self) -> None:
        """The pass listed both ends to the end: whatever was carried was judged again."""
        self.carried = Untracked()


@dataclass
class FlowFigures:
    """Progress of one object dataset towards one destination."""

    dataset: str
    destination: str
    source: str
    epoch: int
    pending: Pending = field(default_factory=Pending)
    """Changes not yet at the destination (bounded; see :class:`Pending`)."""
    listed_at: float | None = None
    """When the last successful listing started."""
    synced_at: float | None = None
    """When the listing of the last pass that ended caught up started."""
    blind: bool = True
    """The latest attempt could not list the two ends (or was held)."""
    passed_at: float | None = None
    """When the last pass that completed without error ended."""
    watched_at: float | None = None
    """Until when every change at the source has been noticed: when the notices were last
    read to the end of the queue, less the delivery allowance (None: the source has
    none)."""
    totals: Totals = field(default_factory=Totals)
    throughput: float = 0.0
    last_error: str = ""
    unreplicated_objects: int = 0
    """Objects of an older epoch at the destination that never reached the source."""
    unreplicated_bytes: int = 0
    unreplicated_keys: tuple[str, ...] = ()
    """The first of them, in key order."""

    def oldest(self) -> float | None:
        return self.pending.oldest()

    def looked_at(self) -> float | None:
        """Until when every change at the source is known (listed, or noticed)."""
        if self.listed_at is None or self.blind or self.watched_at is None:
            return self.listed_at
        return max(self.listed_at, self.watched_at)

    def rpo(self, now: float) -> float | None:
        looked = self.looked_at()
        if looked is None:
            return None
        ages = [0.0, now - looked]
        oldest = self.oldest()
        if oldest is not None:
            ages.append(now - oldest)
        return max(ages)

    def status(self, now: float) -> ReplicationStatus:
        rpo = self.rpo(now)
        oldest = self.oldest()
        return ReplicationStatus(
            dataset=self.dataset,
            destination=self.destination,
            kind="Objects",
            source=self.source,
            epoch=self.epoch,
            pending_objects=len(self.pending),
            pending_bytes=self.pending.bytes(),
            pending_estimated=self.pending.estimated,
            rpo_seconds=round(rpo, 1) if rpo is not None else None,
            oldest_pending_time=rfc3339(oldest) if oldest is not None else None,
            last_sync_time=rfc3339(self.synced_at) if self.synced_at is not None else None,
            copied_objects=self.totals.copied_objects,
            copied_bytes=self.totals.copied_bytes,
            throughput_bytes_per_second=round(self.throughput, 1),
            errors=self.totals.errors,
            conflicts=self.totals.conflicts,
            unreplicated_objects=self.unreplicated_objects,
            unreplicated_bytes=self.unreplicated_bytes,
            unreplicated_keys=self.unreplicated_keys,
            last_error=self.last_error[:1024],
        )


def replication_lag(entries: Sequence[ReplicationStatus]) -> dict[str, float | None]:
    """Seconds of data each destination site lacks: its worst RPO over every dataset
    (None when any is unknown). Sites that receive nothing are left out."""
    lag: dict[str, float | None] = {}
    for entry in entries:
        if entry.destination not in lag:
            lag[entry.destination] = entry.rpo_seconds
            continue
        known = lag[entry.destination]
        if known is None or entry.rpo_seconds is None:
            lag[entry.destination] = None
        else:
            lag[entry.destination] = max(known, entry.rpo_seconds)
    return lag


def flow_progress(entries: Sequence[ReplicationStatus]) -> tuple[FlowProgress, ...]:
    """Each entry's progress as a planned switchover's drain reads it: until when the
    destination is known to hold every change made at the source (objects: the start of
    the listing of the last pass that ended caught up, unknown while the pending figures
    are only upper bounds; volumes: when the data of the newest copy there was taken)."""
    found = []
    for entry in entries:
        stamp = entry.newest_copy_time if entry.kind == "Volumes" else entry.last_sync_time
        known = stamp is not None and not entry.pending_estimated and not entry.stopped
        found.append(
            FlowProgress(
                entry.dataset,
                entry.destination,
                entry.source,
                entry.epoch,
                entry.pending_objects,
                parse_rfc3339(stamp) if known and stamp is not None else None,
            )
        )
    return tuple(found)


def _name(entry: ReplicationStatus) -> str:
    return f"{entry.dataset} -> {entry.destination}"


def describe_rpo(entries: Sequence[ReplicationStatus], target: float) -> str:
    """Each destination's RPO against the target, worst first (for Events and logs)."""
    ordered = sorted(entries, key=lambda e: -(e.rpo_seconds or 0.0))
    parts = [
        f"{_name(e)} "
        + (f"{e.rpo_seconds:.0f}s" if e.rpo_seconds is not None else "unknown")
        + f" ({e.pending_objects} pending)"
        for e in ordered[:5]
    ]
    return f"RPO target {target:.0f}s; " + ", ".join(parts)


def replication_conditions(
    entries: Sequence[ReplicationStatus], target: float
) -> tuple[tuple[ConditionStatus, str, str], tuple[ConditionStatus, str, str]]:
    """The ``Replicating`` and ``RPOBreached`` conditions as (status, reason, message).

    Replicating is True when every destination of every dataset is within the RPO target;
    RPOBreached is True when any is above it (Unknown while some RPO is not measured yet
    and none is above). The messages name the destinations but not their changing
    figures, so that they stay the same from one round to the next.
    """
    if not entries:
        message = "no dataset has a destination other than the active site"
        return ("False", "NothingToReplicate", message), ("False", "NothingToReplicate", message)
    replicating, breached = _rpo_conditions(entries, target)
    stopped = [e for e in entries if e.stopped]
    if stopped:
        shown = "; ".join(f"{_name(e)} ({e.last_error})" for e in stopped[:5])
        replicating = ("False", EventReason.REPLICATION_STOPPED, f"replication stopped: {shown}")
    return replicating, breached


def _rpo_conditions(
    entries: Sequence[ReplicationStatus], target: float
) -> tuple[tuple[ConditionStatus, str, str], tuple[ConditionStatus, str, str]]:
    unknown = [e for e in entries if e.rpo_seconds is None]
    breached = [e for e in entries if e.rpo_seconds is not None and e.rpo_seconds > target]
    if breached:
        shown = ", ".join(
            _name(e) + (f" ({e.last_error})" if e.last_error else "") for e in breached[:5]
        )
        message = f"RPO above the target of {target:.0f}s: {shown}"
        return ("False", "RPOBreached", message), ("True", "RPOAboveTarget", message)
    if unknown:
        shown = ", ".join(
            _name(e) + (f" ({e.last_error})" if e.last_error else "") for e in unknown[:5]
        )
        message = f"RPO not measured yet: {shown}"
        return ("False", "RPOUnknown", message), ("Unknown", "RPOUnknown", message)
    message = f"{len(entries)} destination(s) within the RPO target of {target:.0f}s"
    return ("True", "WithinTarget", message), ("False", "WithinTarget", message)
