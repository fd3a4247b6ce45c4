"""The FailoverDrill kind: a practice run against a ResilientApp (spec), and its report
(status). See docs/drills.md and docs/adr/0014-failover-drills.md."""

from __future__ import annotations

from typing import Literal

from croniter import croniter
from pydantic import Field

from controller.api.models.common import (
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

NOT_YET: tuple[str, ...] = ("ZoneEvacuation", "Observe")
"""Kinds the API names but this release does not run yet: refused at admission."""


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
        description="Zones of the target site that may be other than Healthy (probes "
        "failing) while the app runs there; one more aborts the drill.",
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


class FailoverDrillSpec(Model):
    """A practice failover of a ResilientApp of the same namespace."""

    app: ObjectName = Field(description="The ResilientApp to drill (same namespace).")
    kind: DrillKind = Field(
        description="Switchover: move the app to targetSite, hold, move it back. "
        "ZoneEvacuation and Observe are reserved: this release refuses them."
    )
    target_site: SiteName | None = Field(
        default=None, description="Switchover: the standby site to move the app to."
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
    suspend: bool = Field(default=False, description="Start no new run while true.")

    rules, model_config = with_rules(
        Rule(
            cel="self.kind != 'ZoneEvacuation' && self.kind != 'Observe'",
            message="only Switchover drills are implemented in this release (ZoneEvacuation "
            "and Observe drills are planned, see docs/drills.md)",
            check=lambda s: s.kind not in NOT_YET,
        ),
        Rule(
            cel="self.kind != 'Switchover' || has(self.targetSite)",
            message="a Switchover drill needs targetSite",
            check=lambda s: s.kind != "Switchover" or s.target_site is not None,
        ),
    )


class DrillStep(Model):
    """One step of a run, with its times."""

    name: str = Field(max_length=63, description="preflight, switch, hold or revert.")
    started_time: Timestamp = Field(description="When it started.")
    finished_time: Timestamp | None = Field(default=None, description="When it ended.")
    result: StepResult = Field(description="Running, Succeeded, Failed or Skipped.")
    message: str = Field(default="", max_length=1024, description="What happened.")


class DataCheck(Model):
    """A check of the app's data at the switch, from its replication figures."""

    name: str = Field(max_length=63, description="What was checked.")
    result: CheckResult = Field(description="Passed, Failed or Unknown.")
    message: str = Field(default="", max_length=1024, description="The figures.")


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
    origin_epoch: int | None = Field(default=None, ge=0, description="Epoch at the start.")
    steps: tuple[DrillStep, ...] = Field(
        default=(),
        max_length=16,
        description="Steps of the last run.",
        json_schema_extra=list_map("name"),
    )
    rto_seconds: float | None = Field(
        default=None, ge=0, description="Measured RTO: from the switch request to traffic moved."
    )
    revert_rto_seconds: float | None = Field(
        default=None, ge=0, description="From the revert request to traffic moved back."
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
