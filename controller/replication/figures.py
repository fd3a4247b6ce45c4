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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from controller.api.conditions import rfc3339
from controller.api.events import EventReason
from controller.api.models import ReplicationStatus
from controller.replication.manifest import Totals

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass
class FlowFigures:
    """Progress of one object dataset towards one destination."""

    dataset: str
    destination: str
    source: str
    epoch: int
    pending: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Changes not yet at the destination: key -> (when made at the source, bytes)."""
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
        return min((since for since, _ in self.pending.values()), default=None)

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
            pending_bytes=sum(size for _, size in self.pending.values()),
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
