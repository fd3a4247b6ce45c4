"""The decision core's vocabulary: state, observations, actions, explanations.

Everything here is an immutable value. The core never reads a clock or talks to anything;
the operator (or ``lifeboat simulate``) passes observations and the time in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from controller.api.annotations import Request
from controller.api.events import EventReason
from controller.core.apiplane import ApiPlaneState
from controller.core.capacity import CapacityReading, SiteReadiness
from controller.core.health import ProbeResult, ZoneHealth, ZoneKey
from controller.core.vantage import Consensus, Vantage

ACTIVE_WEIGHT = 100
FENCED_WEIGHT = 0
HOUR = 3600.0

RegionKey = tuple[str, str]
"""(CloudProvider name, region)."""


class Phase(StrEnum):
    PENDING = "Pending"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    FROZEN = "Frozen"
    FAILING_OVER = "FailingOver"
    DOWN = "Down"


class Situation(StrEnum):
    """How the active site is doing, as the rules classify it."""

    STEADY = "steady"
    NOISY = "healthy-but-noisy"
    LONE_ZONE = "lone-zone-failure"
    MULTI_ZONE = "multi-zone-failure"
    CASCADE = "cascade"
    SITE_DOWN = "site-down"
    API_PLANE_ONLY = "api-plane-impairment"


class Rule(StrEnum):
    """The rule that decided a round: a situation of the active site, or what a user or the
    failback policy asked for."""

    SITE_DOWN = "site-down"
    MULTI_ZONE = "multi-zone-failure"
    CASCADE = "cascade"
    LONE_ZONE = "lone-zone-failure"
    API_PLANE_ONLY = "api-plane-impairment"
    NOISY = "healthy-but-noisy"
    STEADY = "steady"
    MANUAL_FAILOVER = "manual-failover"
    FAILBACK = "failback"
    ZONE_RESTORE = "zone-restore"
    REQUEST_REFUSED = "request-refused"
    PLANNED = "planned-switchover"
    ZONE_DRILL = "zone-drill"
    """A ZoneEvacuation drill took a zone out, put it back, or gave it up to a real
    outage."""

    @classmethod
    def of(cls, situation: Situation) -> Rule:
        return cls(situation.value)


@dataclass(frozen=True)
class Verdict:
    """The rule that decided, and whether what it called for is held (a refusal that names
    its blocking cause in the trace). Written ``rule`` or ``rule-held`` in status."""

    rule: Rule
    held: bool = False

    def __str__(self) -> str:
        return f"{self.rule.value}-held" if self.held else self.rule.value

    @classmethod
    def parse(cls, text: str | None) -> Verdict:
        """The verdict a status recorded (``steady`` for none, or one this version does not
        know, as a status written by a newer Lifeboat may hold)."""
        name = (text or "").removesuffix("-held")
        try:
            return cls(Rule(name), held=bool(text) and text != name)
        except ValueError:
            return cls(Rule.STEADY)


STEADY = Verdict(Rule.STEADY)


class Outcome(StrEnum):
    """What came of a decision round (``lifeboat_decisions_total``'s ``outcome``)."""

    FAILOVER = "failover"
    EVACUATION = "evacuation"
    RESTORE = "restore"
    HELD = "held"
    REFUSED = "refused"
    RECOMMENDED = "recommended"
    NONE = "none"


class Response(StrEnum):
    NOTHING = "nothing"
    EVACUATE = "zonal-evacuation"
    FAILOVER = "region-failover"
    FREEZE = "freeze"


# --------------------------------------------------------------------------- inputs


class Ownership(StrEnum):
    """Who holds the app's DNS name, as its owner record says."""

    OURS = "ours"
    """The owner record names this app."""
    NONE = "none"
    """No owner record (never published, or published before records had owners, with
    record sets of this app's sites only: Lifeboat takes them over)."""
    OTHER = "other"
    """Another owner, or record sets of sites this app does not have: never touched."""
    UNKNOWN = "unknown"
    """DNS could not be read."""


@dataclass(frozen=True)
class DnsObservation:
    """What the DNS service holds for the app's name, read back: the owner record (owner,
    the epoch and active site of the last change, the fingerprint of the desired state it
    carried out)."""

    ownership: Ownership
    epoch: int | None = None
    active_site: str | None = None
    fingerprint: str | None = None
    owner: str | None = None
    """Another owner's name (``namespace/name``) or a description of foreign records."""


@dataclass(frozen=True)
class FlowProgress:
    """Replication of one dataset to one destination, as its engine last reported it (what
    a planned switchover waits on to drain)."""

    dataset: str
    destination: str
    source: str
    epoch: int
    pending: int
    """Changes (objects, snapshots) known not to be at the destination yet."""
    caught_up_at: float | None
    """Every change made at the source before this moment is at the destination (objects:
    the start of the listing of the last pass that ended with nothing pending; volumes:
    when the data of the newest copy there was taken). None: not known (or the pending
    figures are only an upper bound)."""


@dataclass(frozen=True)
class Observations:
    """What was seen since the last decision."""

    probes: tuple[ProbeResult, ...] = ()
    api_planes: Mapping[RegionKey, ApiPlaneState] = field(default_factory=dict)
    """API-plane verdicts of the regions the app's sites live in."""
    traffic_plane: ApiPlaneState = ApiPlaneState.UNKNOWN
    """API-plane verdict of the DNS service that moves traffic (Route 53: global)."""
    request: Request | None = None
    approval: str | None = None
    """ID of the recommendation a user approved (Manual mode)."""
    pinned: str | None = None
    """Site the user pinned as active: no automatic failover or failback away from it."""
    replication_lag: Mapping[str, float | None] = field(default_factory=dict)
    """Seconds of data a site lacks (None: not known); missing: the app replicates nothing."""
    replication_target: float | None = None
    """The lag under which replication counts as caught up (the RPO target)."""
    api_plane_reasons: Mapping[RegionKey, str] = field(default_factory=dict)
    """Why each region's API plane has its verdict, with the figure (``throttle share 40%
    >= 30%``), for the words of refusals and holds."""
    dns: DnsObservation | None = None
    """DNS as read back this round (None: not read this round)."""
    vantage: Vantage | None = None
    """Other peers' views of the app's zones (None: single-cluster mode, one vantage)."""
    capacity: Mapping[str, CapacityReading] = field(default_factory=dict)
    """Per site: its capacity as its driver last reported it (missing: not read yet, or the
    site has no capacity driver). Each reading carries the time it was taken."""
    replication_flows: tuple[FlowProgress, ...] = ()
    """Every replication flow's progress (a planned switchover's drain reads it)."""
    drill: str | None = None
    """The FailoverDrill the app's ``lifeboat.dev/drill`` annotation names (None: none). A
    zone a drill took out is kept out only while that drill holds the app."""


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class FailoverRecord:
    """What happened at a failover (status: ``FailoverStatus``, see :mod:`.status`)."""

    epoch: int
    from_site: str
    to_site: str
    reason: str
    decided_at: float
    outage_start: float | None
    completed_at: float | None = None
    manual: bool = False
    forced: bool = False
    """Requested with ``--force``: the anti-flapping guards do not count it (it starts no
    dwell and spends no budget), so a site it moved the app onto can be left at once."""
    planned: bool = False
    """A planned switchover: writes were stopped and replication drained before it."""
    rpo_seconds: float | None = None
    """Data the move lost, when known (0: a planned switchover that drained)."""
    drill: bool = False
    """Made by a FailoverDrill: checked like any request, but like a forced one it starts
    no dwell and spends no budget (a drill never blocks a real failover)."""

    @property
    def unguarded(self) -> bool:
        """Whether the anti-flapping guards leave it uncounted (forced, or a drill)."""
        return self.forced or self.drill

    @property
    def detection_seconds(self) -> float | None:
        if self.outage_start is None:
            return None
        return max(0.0, self.decided_at - self.outage_start)

    @property
    def rto_seconds(self) -> float | None:
        if self.outage_start is None or self.completed_at is None:
            return None
        return max(0.0, self.completed_at - self.outage_start)


@dataclass(frozen=True)
class DnsName:
    """The DNS record an app is reached at."""

    hosted_zone_id: str | None
    hosted_zone_name: str | None
    name: str
    type: str
    ttl: int

    def same_record(self, other: DnsName) -> bool:
        """Whether both address the same record sets (TTL aside)."""
        return replace(self, ttl=0) == replace(other, ttl=0)


@dataclass(frozen=True)
class AppliedTraffic:
    """The traffic shift last carried out."""

    active_site: str
    epoch: int
    applied_at: float
    change_id: str = ""
    fingerprint: str = ""
    dns: DnsName | None = None


@dataclass(frozen=True)
class AppliedCapacity:
    """The capacity last set for a site."""

    fingerprint: str
    applied_at: float
    zones: tuple[tuple[str, int], ...] = ()
    ready_at: float | None = None
    """When a reading of the site's driver first counted this capacity Ready (None: not
    yet)."""
    overdue: bool = False
    """Not Ready within ``readiness.capacityTimeoutSeconds`` (said once, and kept in the
    status, so a restarted operator does not say it again)."""

    @property
    def total(self) -> int:
        return sum(n for _, n in self.zones)


@dataclass(frozen=True)
class RestoredVolume:
    """A volume made at a site from the newest copy of a protected volume (status:
    ``RestoredVolumeStatus``, see :mod:`.status`)."""

    dataset: str
    volume: str
    """The protected volume it continues (its key in snapshot tags)."""
    volume_id: str
    zone: str
    snapshot_id: str
    snapshot_time: float | None = None
    """When the data in the copy was taken."""


@dataclass(frozen=True)
class AppliedRestore:
    """The volume restore carried out at a site for the failover of ``epoch``."""

    epoch: int
    applied_at: float
    volumes: tuple[RestoredVolume, ...] = ()
    missing: tuple[str, ...] = ()
    """``dataset/volume`` that had no copy at the site."""


@dataclass(frozen=True)
class Recommendation:
    """A decision waiting for approval (Manual) or recorded only (Observe)."""

    id: str
    response: Response
    summary: str
    target: str | None = None
    zones: tuple[str, ...] = ()
    decided_at: float = 0.0


@dataclass(frozen=True)
class RequestOutcome:
    id: str
    op: str
    accepted: bool
    reason: str
    at: float


class PlannedStep(StrEnum):
    """Where a planned switchover stands (status: ``plannedSwitchover.step``)."""

    STOP_WRITES = "StopWrites"
    """The write fence is asked to stop writes at the old site."""
    DRAIN = "Drain"
    """Writes stopped: waiting for replication to the new site to drain."""
    RESUME = "ResumeWrites"
    """Moved (new epoch): writes resume at the new site once DNS points there."""
    DONE = "Done"
    ABORT = "Abort"
    """Not moved (drain timed out, refused, or overtaken): writes resume where the app
    is."""
    ABORTED = "Aborted"

    @property
    def waiting(self) -> bool:
        """Before the move: writes are (being) stopped and nothing has moved yet."""
        return self in (PlannedStep.STOP_WRITES, PlannedStep.DRAIN)

    @property
    def resuming(self) -> bool:
        return self in (PlannedStep.RESUME, PlannedStep.ABORT)

    @property
    def final(self) -> bool:
        return self in (PlannedStep.DONE, PlannedStep.ABORTED)


@dataclass(frozen=True)
class PlannedMove:
    """A planned switchover under way, or the latest one (persisted in the status)."""

    request_id: str
    op: str
    from_site: str
    to_site: str
    epoch: int
    """The epoch it was asked under (the move raises it; nothing of an older one acts)."""
    step: PlannedStep
    started_at: float
    forced: bool = False
    """Asked with ``--force``: the move skips the safety checks (never the drain)."""
    drill: bool = False
    """Asked by a FailoverDrill: its move starts no dwell and spends no budget."""
    fence: str = "None"
    """``Webhook`` or ``None`` (the user stops writes)."""
    stopped_at: float | None = None
    drained_at: float | None = None
    moved_epoch: int | None = None
    resume_site: str | None = None
    resumed_at: float | None = None
    fence_answer: str = ""
    message: str = ""


@dataclass(frozen=True)
class DrillEvacuation:
    """A zone a ZoneEvacuation drill took out of traffic while it was Healthy (persisted in
    the status, ``drillEvacuation``). The zone is also in ``AppState.evacuated``, so DNS and
    capacity follow it exactly as for a real evacuation; this record says that the
    automatic rules must not put it back on their own (it never failed), and until when.
    """

    drill: str
    """The FailoverDrill that holds it (the app's drill annotation when it was asked)."""
    request_id: str
    site: str
    zone: str
    started_at: float
    expires_at: float
    """The drill's lease: past it, the automatic rules take the zone back."""

    @property
    def key(self) -> ZoneKey:
        return ZoneKey(self.site, self.zone)


@dataclass(frozen=True)
class AppState:
    """Everything the core remembers between rounds (persisted in the app's status)."""

    active_site: str
    epoch: int = 1
    zones: Mapping[ZoneKey, ZoneHealth] = field(default_factory=dict)
    evacuated: frozenset[ZoneKey] = frozenset()
    """Zones taken out of traffic (and capacity) inside their site."""
    drill_evacuation: DrillEvacuation | None = None
    """The zone of ``evacuated`` a ZoneEvacuation drill took out (its own, not the
    automatic rules': they leave it out until the drill restores it or gives it up)."""
    traffic: AppliedTraffic | None = None
    capacity: Mapping[str, AppliedCapacity] = field(default_factory=dict)
    last_failover: FailoverRecord | None = None
    failover_times: tuple[float, ...] = ()
    """When recent failovers were decided (for the hourly budget)."""
    recommendation: Recommendation | None = None
    last_request: RequestOutcome | None = None
    last_rule: Verdict = STEADY
    site_healthy_since: Mapping[str, float] = field(default_factory=dict)
    """Since when every probed zone of a site has been Healthy (for failback)."""
    restores: Mapping[str, AppliedRestore] = field(default_factory=dict)
    """Per site: the volumes restored there by the latest failover to it."""
    dns_conflict: str | None = None
    """Who else holds the app's DNS name, as last read back: no traffic change is made
    while it is set."""
    hold: str | None = None
    """The causes of the failover hold in force, figures aside (:func:`..decide.hold_key`):
    a change of causes is announced again. Not kept in the status (a restarted operator
    announces a hold once more)."""
    standby_ready: Mapping[str, tuple[bool | None, str]] = field(default_factory=dict)
    """Per standby site: its readiness as last announced (verdict, causes figures aside).
    Not kept in the status (a restarted operator announces a standby not ready again)."""
    planned: PlannedMove | None = None
    """The planned switchover under way, or the latest one."""
    dns_read: bool = True
    """Whether DNS has been read back since this state was rebuilt from a status (the
    operator sets it to False when it loads a status: it changes no DNS before it has seen
    what DNS holds, as a lost or rolled-back status must not move traffic back)."""

    @property
    def traffic_epoch(self) -> int:
        """The epoch DNS was last set for (0: never)."""
        return self.traffic.epoch if self.traffic else 0

    def zone(self, key: ZoneKey) -> ZoneHealth:
        return self.zones.get(key, ZoneHealth())


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class SiteTarget:
    site: str
    values: tuple[str, ...]
    weight: int
    health_check_url: str | None = None


@dataclass(frozen=True)
class ShiftTraffic:
    """Make DNS send everyone to ``active_site``: weight 100 there, 0 everywhere else.

    Idempotent: it states the whole desired record, it does not toggle. ``retire`` names
    a record the app was published under before (its name changed) to remove.
    """

    active_site: str
    epoch: int
    dns: DnsName
    targets: tuple[SiteTarget, ...]
    retire: DnsName | None = None
    routing: str = "Weighted"

    kind = "ShiftTraffic"

    @property
    def weights(self) -> tuple[tuple[str, int], ...]:
        return tuple((t.site, t.weight) for t in self.targets)

    @property
    def fingerprint(self) -> str:
        """Digest of the desired DNS state: a change of it means DNS must be updated."""
        return _digest((self.dns, self.targets, self.routing))

    @property
    def id(self) -> str:
        """Stable identity: one traffic shift per epoch and desired DNS state."""
        return f"shift-traffic/epoch-{self.epoch}/{self.fingerprint}"

    @property
    def target(self) -> str:
        return f"DNS {self.dns.name} -> {self.active_site}"


@dataclass(frozen=True)
class SetCapacity:
    """Run ``zones[zone]`` instances in each zone of ``site`` (idempotent)."""

    site: str
    region: RegionKey
    zones: tuple[tuple[str, int], ...]
    epoch: int

    kind = "SetCapacity"

    @property
    def fingerprint(self) -> str:
        return _digest((self.site, self.zones))

    @property
    def id(self) -> str:
        return f"set-capacity/{self.site}/{self.fingerprint}"

    @property
    def target(self) -> str:
        counts = ", ".join(f"{z}={n}" for z, n in self.zones)
        return f"capacity of {self.site} ({self.region[1]}): {counts}"


@dataclass(frozen=True)
class RestoreVolumes:
    """Make the volumes of ``datasets`` at ``site`` from the newest copies in its region.

    Due once per failover to a site holding volume datasets (``epoch``: the failover's).
    Idempotent: volumes are tagged with app, dataset, epoch and volume, so a repeated or
    resumed restore finds what it already made. Needs nothing of ``from_site``'s region
    (static stability); ``zones`` are the site's serving zones, the volumes are spread
    over them.
    """

    site: str
    region: RegionKey
    epoch: int
    datasets: tuple[str, ...]
    from_site: str
    zones: tuple[str, ...]

    kind = "RestoreVolumes"

    @property
    def id(self) -> str:
        return f"restore-volumes/{self.site}/epoch-{self.epoch}"

    @property
    def target(self) -> str:
        return (
            f"volumes of {', '.join(self.datasets)} at {self.site} ({self.region[1]}) "
            f"from the newest copies, epoch {self.epoch}"
        )


@dataclass(frozen=True)
class FenceWrites:
    """Ask the app's write fence (``failover.planned.writeFence``) to stop writes at
    ``site`` (``stop``) or to resume them there. Idempotent: the hook is told the request
    and epoch, and one call per step is enough."""

    site: str
    stop: bool
    epoch: int
    request_id: str

    kind = "FenceWrites"

    @property
    def id(self) -> str:
        verb = "stop" if self.stop else "resume"
        return f"fence-writes/{verb}/{self.site}/epoch-{self.epoch}/{self.request_id}"

    @property
    def target(self) -> str:
        verb = "stop" if self.stop else "resume"
        return f"writes at {self.site}: {verb} (planned switchover {self.request_id})"


Action = ShiftTraffic | SetCapacity | RestoreVolumes | FenceWrites


@dataclass(frozen=True)
class Held:
    """An action that would be due but is not emitted, and why (static stability)."""

    action: Action
    reason: str


@dataclass(frozen=True)
class Trace:
    """Why the decision was taken: the rule, a sentence and the facts it rested on."""

    rule: Verdict
    summary: str
    facts: tuple[tuple[str, str], ...] = ()


class NoteKind(StrEnum):
    """The transitions the core reports; each is posted as an Event of that reason."""

    ZONE_STATE = EventReason.ZONE_STATE_CHANGED
    FAILOVER = EventReason.FAILOVER_STARTED
    FAILBACK = EventReason.FAILBACK_STARTED
    EVACUATION = EventReason.ZONE_EVACUATED
    EVACUATION_HELD = EventReason.EVACUATION_HELD
    ZONE_RESTORED = EventReason.ZONE_RESTORED
    RECOMMENDED = EventReason.ACTION_RECOMMENDED
    NO_TARGET = EventReason.NO_FAILOVER_TARGET
    HELD = EventReason.FAILOVER_HELD
    FROZEN = EventReason.REGION_FROZEN
    UNFROZEN = EventReason.REGION_UNFROZEN
    SPEC_CHANGED = EventReason.ACTIVE_SITE_RESET
    REQUEST_ACCEPTED = EventReason.REQUEST_ACCEPTED
    REQUEST_REFUSED = EventReason.REQUEST_REFUSED
    DNS_DIVERGED = EventReason.DNS_DIVERGED
    DNS_CONFLICT = EventReason.DNS_OWNERSHIP_CONFLICT
    DNS_RESOLVED = EventReason.DNS_OWNERSHIP_RESOLVED
    CAPACITY_READY = EventReason.CAPACITY_READY
    CAPACITY_NOT_READY = EventReason.CAPACITY_NOT_READY
    STANDBY_READY = EventReason.STANDBY_READY
    STANDBY_NOT_READY = EventReason.STANDBY_NOT_READY
    PLANNED_STARTED = EventReason.PLANNED_SWITCHOVER_STARTED
    DRAINED = EventReason.REPLICATION_DRAINED
    PLANNED_ABORTED = EventReason.PLANNED_SWITCHOVER_ABORTED
    PLANNED_DONE = EventReason.PLANNED_SWITCHOVER_DONE


@dataclass(frozen=True)
class Note:
    """A notable transition, for the event stream. ``warning`` marks bad news."""

    kind: NoteKind
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Decision:
    state: AppState
    actions: tuple[Action, ...]
    held: tuple[Held, ...]
    trace: Trace
    notes: tuple[Note, ...]
    phase: Phase
    outcome: Outcome = Outcome.NONE
    vantage: Consensus | None = None
    """How the other peers' views were weighed (None: single-cluster mode)."""
    readiness: tuple[SiteReadiness, ...] = ()
    """Every site that does not take the traffic: whether it could take it now."""


def _digest(value: object) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def recommendation_id(
    response: Response, target: str | None, zones: tuple[str, ...], epoch: int
) -> str:
    """Stable ID of a recommended decision (what a user approves)."""
    return f"{response.value}/epoch-{epoch}/{_digest((target, zones))[:8]}"


def prune_times(times: tuple[float, ...], now: float) -> tuple[float, ...]:
    """Failover times within the last hour."""
    return tuple(t for t in times if now - t < HOUR)
