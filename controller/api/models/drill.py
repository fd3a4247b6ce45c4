"""The FailoverDrill kind: a practice run against a ResilientApp (spec), and its report
(status). See docs/drills.md and docs/adr/0014-failover-drills.md."""

from __future__ import annotations

from typing import Annotated, Literal

from croniter import croniter
from pydantic import Field, WithJsonSchema

from controller.api.models.common import (
    CloudName,
    Conditions,
    Model,
    ObjectName,
    SiteName,
    Timestamp,
    list_map,
    with_rules,
)
from controller.api.rules import Rule

DrillKind = Literal["Switchover", "ZoneEvacuation", "Observe"]
DrillPhase = Literal["Scheduled", "Running", "Succeeded", "Failed", "Aborted"]
DrillResult = Literal["Succeeded", "Failed", "Aborted"]
StepResult = Literal["Running", "Succeeded", "Failed", "Skipped"]
CheckResult = Literal["Passed", "Failed", "Unknown"]


def valid_cron(expression: str | None) -> bool:
    """Whether ``expression`` is a five-field cron expression croniter reads."""
    if expression is None:
        return True
    return len(expression.split()) == 5 and bool(croniter.is_valid(expression))


class DrillSchedule(Model):
    """When the drill runs: every time a cron expression fires, or once."""

    cron: str | None = Field(
        default=None,
        min_length=9,
        max_length=128,
        description="Five-field cron expression, in UTC (e.g. '0 10 * * 2': Tuesdays at 10:00).",
    )
    once: Timestamp | None = Field(
        default=None,
        description="Run once at this time (a time in the past: as soon as the drill is seen).",
    )

    rules, model_config = with_rules(
        Rule(
            cel="has(self.cron) != has(self.once)",
            message="schedule takes exactly one of cron and once",
            check=lambda s: (s.cron is None) != (s.once is None),
        ),
        Rule(
            cel="!has(self.cron) || self.cron.split(' ').filter(f, f != '').size() == 5",
            message="schedule.cron takes five fields: minute hour day-of-month month day-of-week",
            check=lambda s: s.cron is None or len(s.cron.split()) == 5,
        ),
    )


class DrillAbort(Model):
    """When a running drill stops and moves the app back where it started."""

    max_unhealthy_target_zones: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Switchover: zones of the target site that may be other than Healthy "
        "(probes failing) while the app runs there. ZoneEvacuation: zones of the active "
        "site still serving that may be other than Healthy while the zone is out. One "
        "more aborts the drill.",
    )
    max_rpo_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Abort when the app's largest replication RPO exceeds this (empty: no limit).",
    )
    on_degraded: bool = Field(
        default=True,
        description="Abort when the app turns Degraded, Frozen or Down during the drill.",
    )


MAX_TIMELINE_SECONDS = 86400.0
"""An Observe drill's longest timeline (and latest entry): a day, as ``lifeboat simulate``."""
MAX_TIMELINE_ENTRIES = 64
MAX_OBSERVED_DECISIONS = 32
"""Decisions an Observe run's report keeps (the first ones, then the last one)."""

ZoneOutcome = Annotated[
    str,
    Field(
        max_length=32,
        pattern=r"^(ok|fail|down|timeout|slow:[0-9]+(\.[0-9]+)?|flaky:(0(\.[0-9]+)?|1(\.0+)?)"
        r"|status:[1-5][0-9][0-9])$",
    ),
]
ApiOutcome = Literal[
    "ok",
    "throttled",
    "server_error",
    "timeout",
    "unreachable",
    "auth_error",
    "capacity_error",
    "client_error",
]
ZoneRef = Annotated[str, Field(min_length=3, max_length=127)]
"""site/zone (a CRD cannot constrain map keys by pattern: CEL rules check the slash)."""
RegionRef = Annotated[str, Field(min_length=3, max_length=127)]
"""provider/region."""
SiteKey = Annotated[str, Field(min_length=1, max_length=63)]
Capacity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True}),
]


def _slashed(key: str) -> bool:
    first, slash, second = key.partition("/")
    return bool(first and slash and second and "/" not in second)


def _capacity_ok(value: int | str) -> bool:
    return value == "ready" or (isinstance(value, int) and 0 <= value <= 160000)


class ObserveRequest(Model):
    """A request the timeline makes of the simulated app (as ``lifeboat failover``)."""

    op: Literal["failover", "failback"] = Field(description="failover or failback.")
    site: SiteName | None = Field(default=None, description="The site to move to.")
    force: bool = Field(default=False, description="Skip the safety checks (as --force).")
    planned: bool = Field(default=False, description="Stop writes and drain replication first.")
    id: str | None = Field(default=None, min_length=1, max_length=63, description="Its ID.")


class ObserveEntry(Model):
    """One change of the scripted world, from its time on (as in ``lifeboat simulate``)."""

    at: float = Field(ge=0, le=MAX_TIMELINE_SECONDS, description="Seconds from the start.")
    zones: dict[ZoneRef, ZoneOutcome] = Field(
        default_factory=dict,
        max_length=64,
        description="site/zone: ok | fail | timeout | slow:<s> | flaky:<share> | status:<code>.",
    )
    api: dict[RegionRef, Annotated[list[ApiOutcome], Field(max_length=16)]] = Field(
        default_factory=dict,
        max_length=32,
        description="provider/region: outcomes of the API calls of each round.",
    )
    request: ObserveRequest | None = Field(default=None, description="A request to the app.")
    approve: bool = Field(default=False, description="Approve the current recommendation.")
    pin: SiteName | None = Field(default=None, description="Pin the app to this site.")
    unpin: bool = Field(default=False, description="Remove the pin.")
    replication_lag: dict[SiteKey, float] = Field(
        default_factory=dict,
        max_length=16,
        description="site: replication lag in seconds (0: caught up).",
    )
    capacity: dict[SiteKey, Capacity] = Field(
        default_factory=dict,
        max_length=16,
        description="site: at most this many instances come up Ready, or ready (no cap).",
    )

    rules, model_config = with_rules(
        Rule(
            cel="!has(self.capacity) || self.capacity.all(k, "
            "type(self.capacity[k]) == string ? self.capacity[k] == 'ready' "
            ": (self.capacity[k] >= 0 && self.capacity[k] <= 160000))",
            message="capacity takes a number of instances (0..160000) or ready",
            check=lambda e: all(_capacity_ok(v) for v in e.capacity.values()),
        ),
        Rule(
            cel="!has(self.replicationLag) || self.replicationLag.all(k, "
            "self.replicationLag[k] >= 0.0 && self.replicationLag[k] <= 86400.0)",
            message="replicationLag takes seconds between 0 and 86400",
            check=lambda e: all(0 <= v <= MAX_TIMELINE_SECONDS for v in e.replication_lag.values()),
        ),
        Rule(
            cel="!has(self.zones) || self.zones.all(k, k.matches('^[^/]+/[^/]+$'))",
            message="zones are written site/zone",
            check=lambda e: all(_slashed(k) for k in e.zones),
        ),
        Rule(
            cel="!has(self.api) || self.api.all(k, k.matches('^[^/]+/[^/]+$'))",
            message="API planes are written provider/region",
            check=lambda e: all(_slashed(k) for k in e.api),
        ),
        Rule(
            cel="!(has(self.pin) && has(self.unpin) && self.unpin)",
            message="an entry cannot both pin and unpin",
            check=lambda e: not (e.pin is not None and e.unpin),
        ),
        Rule(
            cel="!has(self.request) || self.request.op != 'failover' || has(self.request.site)",
            message="a failover request names the site to move to",
            check=lambda e: e.request is None or e.request.op != "failover" or bool(e.request.site),
        ),
    )


class ObserveTimeline(Model):
    """A scripted fault timeline (the format of ``lifeboat simulate``'s timeline file)."""

    duration: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMELINE_SECONDS,
        description="Seconds to simulate (default: 60 after the last entry).",
    )
    timeline: list[ObserveEntry] = Field(
        default_factory=list,
        max_length=MAX_TIMELINE_ENTRIES,
        description="The changes of the world, each from its time on.",
    )

    rules, model_config = with_rules(
        Rule(
            cel="!has(self.duration) || !has(self.timeline) || "
            "self.timeline.all(e, e.at <= self.duration)",
            message="duration ends before the last entry of the timeline",
            check=lambda t: t.duration is None or all(e.at <= t.duration for e in t.timeline),
        ),
    )


class ObserveExpect(Model):
    """What an Observe run must see for it to succeed (none given: it always succeeds)."""

    failover_within_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMELINE_SECONDS,
        description="A failover is decided within this many seconds of the timeline's start.",
    )
    target_site: SiteName | None = Field(
        default=None, description="The first failover moves the app to this site."
    )
    no_failover: bool = Field(default=False, description="No failover is decided at all.")

    rules, model_config = with_rules(
        Rule(
            cel="!(has(self.noFailover) && self.noFailover) || "
            "(!has(self.failoverWithinSeconds) && !has(self.targetSite))",
            message="expect.noFailover excludes failoverWithinSeconds and targetSite",
            check=lambda x: (
                not x.no_failover or (x.failover_within_seconds is None and x.target_site is None)
            ),
        ),
    )


class FailoverDrillSpec(Model):
    """A practice failover of a ResilientApp of the same namespace."""

    app: ObjectName = Field(description="The ResilientApp to drill (same namespace).")
    kind: DrillKind = Field(
        description="Switchover: move the app to targetSite, hold, move it back. "
        "ZoneEvacuation: take zone of the app's active site out of traffic, hold, put it "
        "back. Observe: replay timeline against the app's spec, acting on nothing."
    )
    target_site: SiteName | None = Field(
        default=None, description="Switchover: the standby site to move the app to."
    )
    zone: CloudName | None = Field(
        default=None,
        description="ZoneEvacuation: the zone of the app's active site to take out of "
        "traffic (it must be a zone of the site active when the run starts).",
    )
    schedule: DrillSchedule = Field(description="When the drill runs.")
    hold_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="How long the app stays on the target site before it is moved back.",
    )
    step_timeout_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="How long a move may take (from the request to traffic moved) before "
        "the drill gives up on it.",
    )
    abort: DrillAbort = Field(default=DrillAbort(), description="Abort conditions.")
    timeline: ObserveTimeline | None = Field(
        default=None, description="Observe: the scripted fault timeline to replay."
    )
    expect: ObserveExpect | None = Field(
        default=None, description="Observe: what the replay must decide for the run to succeed."
    )
    suspend: bool = Field(default=False, description="Start no new run while true.")

    rules, model_config = with_rules(
        Rule(
            cel="self.kind != 'ZoneEvacuation' || has(self.zone)",
            message="a ZoneEvacuation drill needs zone",
            check=lambda s: s.kind != "ZoneEvacuation" or s.zone is not None,
        ),
        Rule(
            cel="self.kind == 'ZoneEvacuation' || !has(self.zone)",
            message="zone is for ZoneEvacuation drills only",
            check=lambda s: s.kind == "ZoneEvacuation" or s.zone is None,
        ),
        Rule(
            cel="self.kind != 'ZoneEvacuation' || !has(self.targetSite)",
            message="a ZoneEvacuation drill takes a zone of the active site, not targetSite",
            check=lambda s: s.kind != "ZoneEvacuation" or s.target_site is None,
        ),
        Rule(
            cel="self.kind != 'Observe' || has(self.timeline)",
            message="an Observe drill needs timeline",
            check=lambda s: s.kind != "Observe" or s.timeline is not None,
        ),
        Rule(
            cel="self.kind != 'Switchover' || has(self.targetSite)",
            message="a Switchover drill needs targetSite",
            check=lambda s: s.kind != "Switchover" or s.target_site is not None,
        ),
    )


class DrillStep(Model):
    """One step of a run, with its times."""

    name: str = Field(
        max_length=63,
        description="preflight, switch, hold, revert (Switchover); preflight, evacuate, hold, "
        "restore, verify (ZoneEvacuation); observe (Observe).",
    )
    started_time: Timestamp = Field(description="When it started.")
    finished_time: Timestamp | None = Field(default=None, description="When it ended.")
    result: StepResult = Field(description="Running, Succeeded, Failed or Skipped.")
    message: str = Field(default="", max_length=1024, description="What happened.")


class DataCheck(Model):
    """A check of the app's data at the switch, from its replication figures."""

    name: str = Field(max_length=63, description="What was checked.")
    result: CheckResult = Field(description="Passed, Failed or Unknown.")
    message: str = Field(default="", max_length=1024, description="The figures.")


class ObservedDecision(Model):
    """One round of an Observe run in which the core decided something."""

    time: float = Field(ge=0, description="Seconds from the timeline's start.")
    rule: str = Field(default="", max_length=63, description="The rule that decided.")
    phase: str = Field(default="", max_length=63, description="The app's phase then.")
    active_site: str = Field(default="", max_length=63, description="The active site then.")
    actions: str = Field(default="", max_length=512, description="What it would have done.")
    reason: str = Field(default="", max_length=512, description="Why.")


class FailoverDrillStatus(Model):
    """The drill's last run, its report, and when it runs next."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation seen.")
    phase: DrillPhase | None = Field(
        default=None,
        description="Scheduled (no run yet), Running, or the result of the last run.",
    )
    run: int = Field(default=0, ge=0, description="Runs started so far.")
    next_run_time: Timestamp | None = Field(default=None, description="When it runs next.")
    last_schedule_time: Timestamp | None = Field(
        default=None, description="The scheduled time the last run started for."
    )
    started_time: Timestamp | None = Field(default=None, description="Start of the last run.")
    finished_time: Timestamp | None = Field(default=None, description="End of the last run.")
    origin_site: str | None = Field(
        default=None, max_length=63, description="Where the app stood when the run started."
    )
    target_site: str | None = Field(default=None, max_length=63, description="Where it moved.")
    zone: str | None = Field(
        default=None, max_length=127, description="ZoneEvacuation: the zone taken out (site/zone)."
    )
    origin_epoch: int | None = Field(default=None, ge=0, description="Epoch at the start.")
    steps: tuple[DrillStep, ...] = Field(
        default=(),
        max_length=16,
        description="Steps of the last run.",
        json_schema_extra=list_map("name"),
    )
    rto_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Measured RTO: from the switch request to traffic moved (ZoneEvacuation: "
        "from the evacuate request to the DNS change without the zone).",
    )
    revert_rto_seconds: float | None = Field(
        default=None,
        ge=0,
        description="From the revert request to traffic moved back (ZoneEvacuation: from the "
        "restore request to the DNS change with the zone).",
    )
    rpo_seconds: float | None = Field(
        default=None,
        ge=0,
        description="The app's largest replication RPO at the switch (empty: it replicates "
        "nothing, or not known).",
    )
    data_checks: tuple[DataCheck, ...] = Field(
        default=(), max_length=16, description="Data checks at the switch."
    )
    decisions: tuple[ObservedDecision, ...] = Field(
        default=(),
        max_length=MAX_OBSERVED_DECISIONS,
        description="Observe: the decisions of the replay (the first ones and the last).",
    )
    decisions_total: int | None = Field(
        default=None, ge=0, description="Observe: rounds that decided something, in all."
    )
    first_failover_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Observe: when the replay first decided a failover (seconds from its start).",
    )
    result: DrillResult | None = Field(default=None, description="Result of the last run.")
    abort_reason: str | None = Field(
        default=None, max_length=1024, description="Why the last run aborted."
    )
    message: str = Field(default="", max_length=1024, description="Summary of the last run.")
    pending_request: str | None = Field(
        default=None, max_length=256, description="ID of the app request in flight."
    )
    request_time: Timestamp | None = Field(
        default=None, description="When the request in flight was made."
    )
    last_successful_time: Timestamp | None = Field(
        default=None, description="End of the last run that succeeded."
    )
    conditions: Conditions
