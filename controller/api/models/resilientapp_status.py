"""The ResilientApp kind's status: the operator's memory (zones, sites, traffic, the last
failover and decision, requests, restores) and what users read of it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from controller.api.models.common import (
    MAX_EPOCH,
    Conditions,
    Model,
    Timestamp,
    list_map,
)
from controller.api.models.replication import ReplicationStatus

ZoneState = Literal["Unknown", "Healthy", "Suspect", "Down", "Recovering"]
SiteState = Literal["Unknown", "Healthy", "Degraded", "Down"]
AppPhase = Literal["Pending", "Healthy", "Degraded", "Frozen", "FailingOver", "Down", "Invalid"]


class ZoneStatus(Model):
    """Data-plane health of one zone."""

    site: str = Field(max_length=63, description="Site of the zone.")
    zone: str = Field(max_length=63, description="Zone name.")
    state: ZoneState = Field(description="Unknown, Healthy, Suspect, Down or Recovering.")
    consecutive_failures: int = Field(default=0, ge=0, description="Failed rounds in a row.")
    consecutive_successes: int = Field(default=0, ge=0, description="Good rounds in a row.")
    since: Timestamp | None = Field(default=None, description="When the zone entered its state.")
    failing_since: Timestamp | None = Field(
        default=None, description="First failed probe of the current failure streak."
    )
    last_ok_time: Timestamp | None = Field(
        default=None, description="Last probe the zone answered."
    )
    last_probe_time: Timestamp | None = Field(default=None, description="Last probe round.")
    latency_ms: float | None = Field(default=None, ge=0, description="Last probe latency.")
    message: str = Field(default="", max_length=1024, description="Last probe outcome.")
    in_traffic: bool = Field(
        default=True, description="False while the zone is evacuated (out of traffic)."
    )


class ZoneCount(Model):
    zone: str = Field(max_length=63, description="Zone.")
    count: int = Field(ge=0, description="Instances.")


class CapacityStatus(Model):
    """Capacity as Lifeboat last set it."""

    applied_time: Timestamp = Field(description="When it was set.")
    fingerprint: str = Field(max_length=64, description="Digest of what was set.")
    zones: tuple[ZoneCount, ...] = Field(default=(), max_length=16, description="Per zone.")
    ready_time: Timestamp | None = Field(
        default=None,
        description="When the site's capacity driver first reported it Ready (empty: not yet).",
    )
    ready_seconds: float | None = Field(
        default=None,
        ge=0,
        description="From when it was asked for (the failover's decision, when a failover "
        "asked for it) to Ready.",
    )
    overdue: bool | None = Field(
        default=None,
        description="Not Ready within readiness.capacityTimeoutSeconds: its CapacityNotReady "
        "Event was sent (a restarted operator does not send it again).",
    )


class ReadinessStatus(Model):
    """Whether a site that does not take the traffic could take it now."""

    ready: Literal["True", "False", "Unknown"] = Field(
        description="True, False, or Unknown (its capacity not read yet, or unreadable)."
    )
    reasons: tuple[Annotated[str, Field(max_length=512)], ...] = Field(
        default=(), max_length=16, description="Why not, each cause with its figure."
    )
    ready_instances: int | None = Field(
        default=None, ge=0, description="Instances its capacity driver reports Ready."
    )
    standby_instances: int = Field(default=0, ge=0, description="Instances it runs as standby.")
    failover_instances: int = Field(
        default=0, ge=0, description="Instances it runs once it takes the traffic."
    )
    max_size: int | None = Field(
        default=None,
        ge=0,
        description="The capacity's own bound (an Auto Scaling group's MaxSize; raised by "
        "Lifeboat when a change needs more).",
    )
    headroom: int | None = Field(
        default=None,
        ge=0,
        description="Instances more the cloud's quota allows (empty: the cloud does not say).",
    )
    checked_time: Timestamp | None = Field(
        default=None, description="When its capacity was last read."
    )


class SiteStatus(Model):
    """Summary of one site."""

    name: str = Field(max_length=63, description="Site name.")
    active: bool = Field(description="Whether this site takes traffic.")
    state: SiteState = Field(description="Unknown, Healthy, Degraded or Down.")
    healthy_zones: int = Field(ge=0, description="Zones in state Healthy.")
    total_zones: int = Field(ge=0, description="Zones declared.")
    api_plane: str = Field(
        default="Unknown", max_length=16, description="API-plane verdict of its region."
    )
    healthy_since: Timestamp | None = Field(
        default=None, description="Since when every probed zone has been Healthy."
    )
    capacity: CapacityStatus | None = Field(default=None, description="Capacity as set.")
    readiness: ReadinessStatus | None = Field(
        default=None,
        description="A site that does not take the traffic: whether it could take it now.",
    )


class PendingAction(Model):
    """An action the decision calls for that has not been carried out yet."""

    id: str = Field(max_length=256, description="Stable identity of the action.")
    kind: str = Field(
        max_length=32, description="ShiftTraffic, SetCapacity, RestoreVolumes or FenceWrites."
    )
    target: str = Field(max_length=512, description="What it changes.")
    state: Literal["Pending", "Running", "Held"] = Field(description="Where it stands.")
    reason: str = Field(default="", max_length=1024, description="Why it is held.")


class RecommendationStatus(Model):
    """A decision waiting for approval (Manual) or recorded only (Observe)."""

    id: str = Field(max_length=256, description="Approve it with this ID.")
    response: str = Field(max_length=32, description="What would be done.")
    summary: str = Field(max_length=1024, description="Why.")
    target: str | None = Field(default=None, max_length=63, description="Site concerned.")
    zones: tuple[Annotated[str, Field(max_length=63)], ...] = Field(
        default=(), max_length=16, description="Zones concerned."
    )
    time: Timestamp = Field(description="When it was decided.")


class RequestStatus(Model):
    """The last user request (failover, failback) and how it was answered."""

    id: str = Field(max_length=256, description="Request ID.")
    op: str = Field(max_length=32, description="failover or failback.")
    accepted: bool = Field(description="Whether it was carried out.")
    reason: str = Field(max_length=1024, description="Why (or why not).")
    time: Timestamp = Field(description="When it was answered.")


class UnreplicatedRequestStatus(Model):
    """The last request to merge or discard the unreplicated objects of an older epoch."""

    id: str = Field(max_length=256, description="Request ID.")
    action: Literal["merge", "discard"] = Field(description="merge or discard.")
    dataset: str | None = Field(
        default=None, max_length=63, description="The dataset (empty: every dataset)."
    )
    phase: Literal["Running", "Succeeded", "Failed"] = Field(description="Where it stands.")
    objects: int = Field(default=0, ge=0, description="Objects merged or discarded.")
    bytes: int = Field(default=0, ge=0, description="Their bytes.")
    skipped: int = Field(
        default=0,
        ge=0,
        description="Objects left alone: changed, or present at the active site by now.",
    )
    failed: int = Field(default=0, ge=0, description="Objects that could not be handled.")
    message: str = Field(default="", max_length=1024, description="What happened.")
    time: Timestamp = Field(description="When it was last updated.")


# The wire form of the core's FailoverRecord (converted both ways in controller.core.status).
# Class docstrings are the CRD's descriptions: they stay as they are.
class FailoverStatus(Model):
    """What happened at a failover."""

    epoch: int = Field(ge=1, le=MAX_EPOCH, description="Epoch the failover raised the app to.")
    from_site: str = Field(max_length=63, description="Site traffic moved away from.")
    to_site: str = Field(max_length=63, description="Site traffic moved to.")
    reason: str = Field(max_length=1024, description="Why.")
    outage_start_time: Timestamp | None = Field(
        default=None, description="First failed probe of the outage that caused it."
    )
    decided_time: Timestamp = Field(description="When the failover was decided.")
    completed_time: Timestamp | None = Field(
        default=None, description="When traffic was confirmed moved (the DNS change in sync)."
    )
    detection_seconds: float | None = Field(
        default=None, ge=0, description="From outage start to decision."
    )
    rto_seconds: float | None = Field(
        default=None, ge=0, description="From outage start to traffic moved (measured RTO)."
    )
    manual: bool = Field(default=False, description="Requested by a user.")
    forced: bool = Field(
        default=False,
        description="Requested with --force: it started no dwell and spent no budget.",
    )
    planned: bool = Field(
        default=False,
        description="A planned switchover: writes stopped and replication drained first.",
    )
    rpo_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Data lost by the move, when measured: 0 for a planned switchover "
        "that drained.",
    )
    drill: bool = Field(
        default=False,
        description="Made by a FailoverDrill: checked like any request, but it started no "
        "dwell and spent no budget.",
    )


PlannedStep = Literal["StopWrites", "Drain", "ResumeWrites", "Done", "Abort", "Aborted"]


class PlannedSwitchoverStatus(Model):
    """The latest planned switchover and the step it is at: StopWrites (the write fence
    asked to stop writes at the old site), Drain (waiting for replication to the new site
    to reach zero pending), ResumeWrites (moved: writes resume at the new site), Done; or
    Abort (not moved: writes resume where the app is) then Aborted."""

    id: str = Field(max_length=256, description="Request ID.")
    op: str = Field(max_length=32, description="failover or failback.")
    from_site: str = Field(max_length=63, description="Site writes are stopped at.")
    to_site: str = Field(max_length=63, description="Site the app moves to.")
    epoch: int = Field(ge=1, le=MAX_EPOCH, description="Epoch when it was asked for.")
    step: PlannedStep = Field(description="Where it stands.")
    fence: Literal["Webhook", "None"] = Field(description="How writes are stopped.")
    forced: bool = Field(default=False, description="Asked with --force (the drain still).")
    drill: bool = Field(default=False, description="Asked by a FailoverDrill.")
    start_time: Timestamp = Field(description="When it was asked for.")
    writes_stopped_time: Timestamp | None = Field(
        default=None, description="When the write fence said writes were stopped."
    )
    drained_time: Timestamp | None = Field(
        default=None, description="When replication to the new site was found drained."
    )
    moved_epoch: int | None = Field(
        default=None, ge=1, le=MAX_EPOCH, description="Epoch of the move (empty: not moved)."
    )
    resume_site: str | None = Field(
        default=None, max_length=63, description="Site writes resume at."
    )
    writes_resumed_time: Timestamp | None = Field(
        default=None, description="When the write fence said writes were resumed."
    )
    fence_answer: str = Field(
        default="", max_length=256, description="The write fence's last answer."
    )
    message: str = Field(default="", max_length=1024, description="What happened.")


class DrillEvacuationStatus(Model):
    """A zone a ZoneEvacuation drill took out of traffic while it was Healthy: the
    automatic rules leave it out until the drill puts it back, a real outage of its site
    ends the drill's claim, and so does the end of the lease."""

    drill: str = Field(max_length=253, description="The FailoverDrill holding it.")
    request_id: str = Field(max_length=256, description="The drill's evacuate request.")
    site: str = Field(max_length=63, description="Site of the zone.")
    zone: str = Field(max_length=63, description="The zone out of traffic.")
    start_time: Timestamp = Field(description="When it was taken out.")
    expiry_time: Timestamp = Field(
        description="The drill's lease: from then on the automatic rules take the zone back."
    )


class TrafficStatus(Model):
    """What the DNS record says, as last applied by Lifeboat."""

    active_site: str | None = Field(default=None, max_length=63, description="Weighted 100.")
    epoch: int = Field(default=0, ge=0, le=MAX_EPOCH, description="Epoch last applied to DNS.")
    applied_time: Timestamp | None = Field(default=None, description="When it was applied.")
    change_id: str | None = Field(default=None, max_length=256, description="DNS change ID.")
    hosted_zone_id: str | None = Field(default=None, max_length=64, description="Hosted zone ID.")
    hosted_zone_name: str | None = Field(
        default=None, max_length=253, description="Hosted zone name."
    )
    record_name: str | None = Field(default=None, max_length=253, description="Record name.")
    record_type: str | None = Field(default=None, max_length=8, description="Record type.")
    ttl: int | None = Field(default=None, ge=0, description="Record TTL.")
    fingerprint: str | None = Field(
        default=None, max_length=64, description="Digest of the DNS state applied."
    )


class Fact(Model):
    """One observation or threshold a decision rested on."""

    name: str = Field(max_length=128, description="What.")
    value: str = Field(max_length=1024, description="Its value.")


class DecisionRecord(Model):
    """The latest decision and its explanation (the trace)."""

    time: Timestamp = Field(description="When the decision was first taken.")
    rule: str = Field(max_length=64, description="Rule that decided, e.g. site-down or cascade.")
    summary: str = Field(max_length=1024, description="The decision in one sentence.")
    facts: tuple[Fact, ...] = Field(
        default=(), max_length=64, description="Observations and thresholds behind it."
    )


# The wire form of the core's RestoredVolume, plus the volume's last seen state.
class RestoredVolumeStatus(Model):
    """A volume made from the newest copy at a site when a failover made the site active."""

    dataset: str = Field(max_length=63, description="Volume dataset.")
    volume: str = Field(
        max_length=255,
        description="The protected volume it continues (the ID it was first protected "
        "under; snapshots of every successor carry it).",
    )
    volume_id: str = Field(max_length=255, description="The volume made at this site.")
    zone: str = Field(max_length=63, description="Zone it was made in.")
    snapshot_id: str = Field(max_length=255, description="Copy it was made from.")
    snapshot_time: Timestamp | None = Field(
        default=None, description="When the data in that copy was taken."
    )
    state: str | None = Field(
        default=None,
        max_length=32,
        description="The volume's state when Lifeboat last looked, while its site is "
        "active: the provider's word (creating, available, in-use, error, ...) or "
        "not-found. It is snapshotted, and so replicated, once it is made and has not "
        "failed.",
    )


class VolumeRestoreStatus(Model):
    """Volumes restored at one site by the failover that made it active (under its epoch);
    while the site is active they are the source that replication snapshots."""

    site: str = Field(max_length=63, description="Site the volumes were made at.")
    epoch: int = Field(ge=1, le=MAX_EPOCH, description="Epoch of the failover that restored them.")
    time: Timestamp = Field(description="When the restore was completed.")
    volumes: tuple[RestoredVolumeStatus, ...] = Field(
        default=(), max_length=2048, description="Volumes made, per dataset."
    )
    missing: tuple[Annotated[str, Field(max_length=320)], ...] = Field(
        default=(),
        max_length=2048,
        description="dataset/volume without any copy at the site: nothing to restore from.",
    )


class ResilientAppStatus(Model):
    """Observed state of a ResilientApp."""

    observed_generation: int | None = Field(
        default=None, ge=0, le=MAX_EPOCH, description="Last generation seen."
    )
    phase: AppPhase | None = Field(default=None, description="Overall state of the app.")
    active_site: str | None = Field(
        default=None, max_length=63, description="Site that takes traffic."
    )
    epoch: int | None = Field(
        default=None, ge=1, le=MAX_EPOCH, description="Fencing epoch; rises at every failover."
    )
    healthy_zones: str | None = Field(
        default=None, max_length=16, description="Healthy zones over all zones, e.g. 5/6."
    )
    zones: tuple[ZoneStatus, ...] = Field(
        default=(),
        max_length=256,
        description="Per-zone data-plane health.",
        json_schema_extra=list_map("site", "zone"),
    )
    sites: tuple[SiteStatus, ...] = Field(
        default=(),
        max_length=16,
        description="Per-site summary.",
        json_schema_extra=list_map("name"),
    )
    traffic: TrafficStatus | None = Field(default=None, description="DNS as last applied.")
    last_failover: FailoverStatus | None = Field(default=None, description="Latest failover.")
    recent_failovers: tuple[Timestamp, ...] = Field(
        default=(), max_length=100, description="When failovers were decided in the last hour."
    )
    last_decision: DecisionRecord | None = Field(
        default=None, description="Latest decision and why it was taken."
    )
    actions: tuple[PendingAction, ...] = Field(
        default=(), max_length=32, description="Actions not carried out yet."
    )
    recommendation: RecommendationStatus | None = Field(
        default=None, description="Decision waiting for approval (Manual) or shadowed (Observe)."
    )
    last_request: RequestStatus | None = Field(default=None, description="Last user request.")
    planned_switchover: PlannedSwitchoverStatus | None = Field(
        default=None, description="The latest planned switchover and its steps."
    )
    drill_evacuation: DrillEvacuationStatus | None = Field(
        default=None, description="The zone a ZoneEvacuation drill holds out of traffic."
    )
    unreplicated_request: UnreplicatedRequestStatus | None = Field(
        default=None,
        description="Last request to merge or discard unreplicated objects of an older epoch.",
    )
    pinned_site: str | None = Field(
        default=None, max_length=63, description="Site the app is pinned to (annotation)."
    )
    replication: tuple[ReplicationStatus, ...] = Field(
        default=(),
        max_length=512,
        description="Per dataset and destination: pending changes, RPO, throughput.",
        json_schema_extra=list_map("dataset", "destination"),
    )
    volume_restores: tuple[VolumeRestoreStatus, ...] = Field(
        default=(),
        max_length=16,
        description="Per site: the volumes the latest failover to it restored from copies.",
        json_schema_extra=list_map("site"),
    )
    conditions: Conditions
