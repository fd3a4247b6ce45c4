"""FailoverDrills: the schedule and the state machine of a run. Pure: no I/O, no clock.

A run of a ``Switchover`` drill goes through four steps:

* ``preflight``: the app must be fit for a drill (Healthy, not Frozen, not inside its dwell,
  budget left, no failover under way, no request waiting, no other drill on it, the target
  site's zones Healthy); else the run fails at once and nothing moves;
* ``switch``: a failover request to the target site (``planned``, ``drill``: the same safety
  checks and epoch fencing as any request); done when the app's traffic is on the target;
* ``hold``: ``holdSeconds`` on the target, the abort conditions checked at every tick;
* ``revert``: a failover request back to the site the app started on.

A run of a ``ZoneEvacuation`` drill takes one zone of the app's active site out of
traffic and puts it back, through the app's request annotation as well (``evacuate`` and
``restore`` requests, answered by the app's worker: the decision core evacuates the zone
exactly as it evacuates a failed one, and keeps it out as the drill's until the drill puts
it back or a real outage ends the drill's claim, :mod:`controller.core.decide`):

* ``preflight``: the Switchover's checks of the app, and the zone: of the active site, in
  traffic, Healthy, with the zones left Healthy and enough of them to carry the traffic
  (``failover.minHealthyTargetZones``, at least 1), the zone with DNS values of its own;
* ``evacuate``: an ``evacuate`` request; done when the app's status has the zone out of
  traffic and no DNS change outstanding;
* ``hold``: ``holdSeconds``, the abort conditions checked at every tick (the zones of the
  site still serving, the RPO, the app's phase), and the drill's claim on the zone: when
  the app took it back (a real outage, a failover) the run aborts;
* ``restore``: a ``restore`` request; done when the zone is back in traffic;
* ``verify``: the app's DNS carries the zone again (no DNS change outstanding, the record
  read back not out of sync).

A run of an ``Observe`` drill is one step, ``observe``, in one tick: the drill's timeline
replayed against the app's spec by the simulation engine (:mod:`controller.core.observe`),
judged against its ``expect``; it acts on nothing (no Move, no Release).

:func:`step` takes the drill's spec and status, a view of its app and the time, and returns
the new status and the actions the operator carries out (annotate the app with a request,
release it, post Events, count the result). An aborted run always ends with the app asked
back to where it started, if it ever left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter
from pydantic import ValidationError

from controller.api.annotations import REQUEST, ManualOperations, Request, RequestOp
from controller.api.conditions import ConditionType, parse_rfc3339, rfc3339, set_condition
from controller.api.events import EventReason
from controller.api.models import (
    CloudProviderSpec,
    DataCheck,
    DrillSchedule,
    DrillStep,
    FailoverDrillSpec,
    FailoverDrillStatus,
    ResilientAppSpec,
    ResilientAppStatus,
)
from controller.api.models.drill import DrillResult, StepResult
from controller.api.names import DRILL_ANNOTATION
from controller.core.model import HOUR
from controller.core.observe import observe

OBSERVE = "observe"

PREFLIGHT, SWITCH, HOLD, REVERT = "preflight", "switch", "hold", "revert"
EVACUATE, RESTORE, VERIFY = "evacuate", "restore", "verify"
ZONE_EVACUATION = "ZoneEvacuation"
LEASE_MARGIN_SECONDS = 120.0
"""Added to the longest a ZoneEvacuation run may take to make its lease on the zone."""
UNFIT_PHASES = ("Degraded", "Frozen", "Down")
"""App phases that abort a running drill (``abort.onDegraded``)."""
FINAL_STEPS = (REVERT, RESTORE, VERIFY)
"""Steps that put things back: an abort condition tripping then changes nothing."""
REVERT_RETRY_SECONDS = 10.0
"""A refused revert is asked again after this long (until the step times out)."""


# --------------------------------------------------------------------------- the app


@dataclass(frozen=True)
class LastFailover:
    epoch: int
    from_site: str
    to_site: str
    decided_at: float
    completed_at: float | None
    unguarded: bool
    """Forced or made by a drill: it started no dwell."""


@dataclass(frozen=True)
class AppView:
    """What a drill reads of its app, at one moment (see :func:`app_view`)."""

    mode: str
    phase: str | None
    active_site: str | None
    epoch: int
    traffic_epoch: int
    sites: tuple[str, ...]
    pinned: str | None = None
    min_dwell_seconds: float = 0.0
    max_failovers_per_hour: int = 3
    recent_failovers: tuple[float, ...] = ()
    last_failover: LastFailover | None = None
    last_request: tuple[str, bool, str] | None = None
    """(id, accepted, reason) of the last request the app answered."""
    waiting_request: str | None = None
    """ID of a request annotated on the app that it has not answered yet."""
    zones: tuple[tuple[str, str, str], ...] = ()
    """(site, zone, state) of every zone."""
    rpo: tuple[tuple[str, str, float | None, int], ...] = ()
    """(dataset, destination, RPO seconds or None, pending objects) per replication flow."""
    holder: str | None = None
    """The FailoverDrill running on the app (its annotation), if that drill is running."""
    out_of_traffic: tuple[tuple[str, str], ...] = ()
    """(site, zone) of every zone out of traffic."""
    drill_zone: tuple[str, str, str] | None = None
    """(drill, site, zone) of the zone a ZoneEvacuation drill holds out (the app's
    ``status.drillEvacuation``)."""
    dns_pending: str | None = None
    """A DNS change the app has not carried out yet (its state and reason), if any."""
    dns_out_of_sync: str | None = None
    """The message of the app's DNSInSync condition when it is False."""
    traffic_applied_at: float | None = None
    """When the app's DNS was last changed."""
    last_decision: str = ""
    """The summary of the app's latest decision."""
    spec: ResilientAppSpec | None = field(default=None, compare=False)
    """The app's spec as it stands (what an Observe drill replays its timeline against)."""
    providers: Mapping[str, CloudProviderSpec] = field(default_factory=dict, compare=False)
    """The app's CloudProviders' specs by name, where the operator read them (an Observe
    drill judges API planes with their thresholds; defaults for the others)."""

    def unhealthy_zones(self, site: str) -> list[str]:
        return [f"{z}={state}" for s, z, state in self.zones if s == site and state != "Healthy"]

    def largest_rpo(self) -> float | None:
        known = [r for _, _, r, _ in self.rpo if r is not None]
        return max(known) if known else None

    def in_traffic(self, site: str, zone: str) -> bool:
        return (site, zone) not in self.out_of_traffic

    def dns_settled(self) -> bool:
        """Whether DNS holds what the app's state calls for: no change outstanding, the
        current epoch applied, and the record read back not out of sync."""
        return (
            self.dns_pending is None
            and self.dns_out_of_sync is None
            and self.traffic_epoch >= self.epoch
        )

    def traffic_on(self, site: str) -> bool:
        """Whether the app is on ``site`` with its traffic moved there (no failover under
        way)."""
        return self.active_site == site and self.traffic_epoch >= self.epoch


def app_view(body: Mapping[str, Any], holder_running: bool = True) -> AppView:
    """The view of an app object (as the API server returns it). ``holder_running``: whether
    the drill the app's drill annotation names is running (a stale annotation, left by a
    deleted drill, holds nothing)."""
    spec = ResilientAppSpec.model_validate(body.get("spec") or {})
    try:
        status = ResilientAppStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = ResilientAppStatus()
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    manual = ManualOperations.from_annotations(annotations)
    last = status.last_failover
    answered = status.last_request
    waiting = manual.request.id if manual.request is not None else None
    held = status.drill_evacuation
    shift = next((a for a in status.actions if a.kind == "ShiftTraffic"), None)
    sync = next((c for c in status.conditions if c.type == ConditionType.DNS_IN_SYNC), None)
    if answered is not None and waiting == answered.id:
        waiting = None
    elif waiting is None and REQUEST in manual.unreadable:
        waiting = "(unreadable)"
    return AppView(
        mode=spec.failover.mode,
        phase=status.phase,
        active_site=status.active_site,
        epoch=status.epoch or 1,
        traffic_epoch=(status.traffic.epoch if status.traffic else 0),
        sites=tuple(s.name for s in spec.sites),
        pinned=manual.pin,
        min_dwell_seconds=float(spec.failover.min_dwell_seconds),
        max_failovers_per_hour=spec.failover.max_failovers_per_hour,
        recent_failovers=tuple(parse_rfc3339(t) for t in status.recent_failovers),
        last_failover=(
            LastFailover(
                last.epoch,
                last.from_site,
                last.to_site,
                parse_rfc3339(last.decided_time),
                parse_rfc3339(last.completed_time) if last.completed_time else None,
                last.forced or last.drill,
            )
            if last is not None
            else None
        ),
        last_request=(
            (answered.id, answered.accepted, answered.reason) if answered is not None else None
        ),
        waiting_request=waiting,
        zones=tuple((z.site, z.zone, z.state) for z in status.zones),
        rpo=tuple(
            (r.dataset, r.destination, r.rpo_seconds, r.pending_objects) for r in status.replication
        ),
        holder=(annotations.get(DRILL_ANNOTATION) or None) if holder_running else None,
        out_of_traffic=tuple((z.site, z.zone) for z in status.zones if not z.in_traffic),
        drill_zone=(held.drill, held.site, held.zone) if held is not None else None,
        dns_pending=(
            f"{shift.state}" + (f": {shift.reason}" if shift.reason else "")
            if shift is not None
            else None
        ),
        dns_out_of_sync=(sync.message or "out of sync")
        if sync and sync.status == "False"
        else None,
        traffic_applied_at=(
            parse_rfc3339(status.traffic.applied_time)
            if status.traffic and status.traffic.applied_time
            else None
        ),
        last_decision=status.last_decision.summary if status.last_decision else "",
        spec=spec,
    )


# --------------------------------------------------------------------------- the schedule


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def next_fire(schedule: DrillSchedule, after: float) -> float | None:
    """The first time strictly after ``after`` the schedule fires (None: never again)."""
    if schedule.cron is not None:
        return float(croniter(schedule.cron, _at(after)).get_next(float))
    assert schedule.once is not None
    once = parse_rfc3339(schedule.once)
    return once if once > after else None


def due_slot(
    schedule: DrillSchedule, last_slot: float | None, created: float, now: float
) -> float | None:
    """The scheduled time a run is due for now (None: none is due): the latest time the
    schedule fired at or before ``now`` and after the last run's slot (or, for a cron
    schedule that has not run yet, after the drill was created). Times missed while no
    operator ran are not made up: one run stands for all of them."""
    if schedule.once is not None:
        once = parse_rfc3339(schedule.once)
        return once if once <= now and last_slot != once else None
    assert schedule.cron is not None
    anchor = last_slot if last_slot is not None else created
    latest = float(croniter(schedule.cron, _at(now + 1.0)).get_prev(float))
    # get_prev from just after now: a fire time equal to now counts as fired.
    if latest <= now and latest > anchor:
        return latest
    return None


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Move:
    """Annotate the app with ``request`` and mark it as held by this drill."""

    request: Request


@dataclass(frozen=True)
class Release:
    """Clear the app's drill annotation (if it still names this drill)."""


@dataclass(frozen=True)
class Notice:
    """An Event on the drill."""

    reason: EventReason
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Finished:
    """A run ended (for ``lifeboat_drill_runs_total``)."""

    result: DrillResult


Action = Move | Release | Notice | Finished


@dataclass
class _Run:
    """One tick's work: the status being built and the actions so far."""

    name: str
    spec: FailoverDrillSpec
    status: FailoverDrillStatus
    app: AppView | None
    now: float
    generation: int | None
    actions: list[Action] = field(default_factory=list)

    def update(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)

    def stamp(self) -> str:
        return rfc3339(self.now, precise=True)

    def steps(self) -> list[DrillStep]:
        return list(self.status.steps)

    def open_step(self, name: str, message: str = "") -> None:
        step = DrillStep(name=name, started_time=self.stamp(), result="Running", message=message)
        self.update(steps=(*[s for s in self.status.steps if s.name != name], step))

    def close_step(self, name: str, result: StepResult, message: str) -> None:
        steps = [
            s.model_copy(
                update={"finished_time": self.stamp(), "result": result, "message": message[:1024]}
            )
            if s.name == name and s.result == "Running"
            else s
            for s in self.status.steps
        ]
        self.update(steps=tuple(steps))

    def current(self) -> DrillStep | None:
        return next((s for s in reversed(self.status.steps) if s.result == "Running"), None)

    def notice(self, reason: EventReason, message: str, warning: bool = False) -> None:
        self.actions.append(Notice(reason, message[:1024], warning))


def request_id(name: str, run: int, step: str, attempt: int = 0) -> str:
    """The ID of a drill's request: unique per drill, run, step and attempt (so that the
    same tick computed twice asks for the same thing, and the app answers it once)."""
    suffix = f"-{attempt}" if attempt else ""
    return f"drill/{name}/{run}/{step}{suffix}"


def _attempt(request: str | None) -> int:
    if not request:
        return 0
    last = request.rsplit("/", 1)[-1]
    number = last.rsplit("-", 1)[-1] if "-" in last else "0"
    return int(number) if number.isdigit() else 0


# --------------------------------------------------------------------------- the step


def step(
    name: str,
    spec: FailoverDrillSpec,
    status: FailoverDrillStatus,
    app: AppView | None,
    now: float,
    *,
    created: float,
    generation: int | None = None,
    abort: str | None = None,
) -> tuple[FailoverDrillStatus, tuple[Action, ...]]:
    """One tick of the drill ``name``: the new status and what to do.

    ``app``: its app as it stands (None: not found); ``created``: when the drill was
    created (a cron schedule counts from it); ``abort``: the value of the drill's abort
    annotation (the number of the run to abort)."""
    work = _Run(name, spec, status, app, now, generation)
    if status.phase == "Running":
        abort_asked = abort is not None and abort.strip() == str(status.run)
        _advance(work, "aborted by a user (lifeboat drill abort)" if abort_asked else None)
    elif not spec.suspend:
        last = parse_rfc3339(status.last_schedule_time) if status.last_schedule_time else None
        slot = due_slot(spec.schedule, last, created, now)
        if slot is not None:
            _start(work, slot)
    _schedule(work, created)
    _conditions(work)
    return work.status, tuple(work.actions)


def needs_app(
    spec: FailoverDrillSpec, status: FailoverDrillStatus, now: float, *, created: float
) -> bool:
    """Whether :func:`step` reads the app this tick: a run is under way or due (an idle
    drill costs its operator no read of its app)."""
    if status.phase == "Running":
        return True
    if spec.suspend:
        return False
    last = parse_rfc3339(status.last_schedule_time) if status.last_schedule_time else None
    return due_slot(spec.schedule, last, created, now) is not None


def _schedule(work: _Run, created: float) -> None:
    if work.status.phase is None:
        work.update(phase="Scheduled")
    nxt: float | None = None
    if not work.spec.suspend:
        if work.spec.schedule.once is not None:
            once = parse_rfc3339(work.spec.schedule.once)
            ran = work.status.last_schedule_time is not None and (
                parse_rfc3339(work.status.last_schedule_time) == once
            )
            nxt = None if ran else once
        else:
            nxt = next_fire(work.spec.schedule, max(work.now, created))
    work.update(
        next_run_time=rfc3339(nxt) if nxt is not None else None,
        observed_generation=work.generation,
    )


def _conditions(work: _Run) -> None:
    status = work.status
    running = status.phase == "Running"
    conditions = set_condition(
        status.conditions,
        ConditionType.RUNNING,
        "True" if running else "False",
        "Running" if running else "Idle",
        f"run {status.run}: {_step_words(status)}" if running else "no run under way",
        generation=work.generation,
        now=work.now,
    )
    if status.result is not None:
        ok = status.result == "Succeeded"
        conditions = set_condition(
            conditions,
            ConditionType.SUCCEEDED,
            "True" if ok else "False",
            status.result,
            status.message or status.result,
            generation=work.generation,
            now=work.now,
        )
    work.update(conditions=conditions)


def _step_words(status: FailoverDrillStatus) -> str:
    running = [s.name for s in status.steps if s.result == "Running"]
    return f"step {running[-1]}" if running else "starting"


# --------------------------------------------------------------------------- preflight


def refusals(spec: FailoverDrillSpec, name: str, app: AppView | None, now: float) -> list[str]:
    """Why a run may not start now (empty: it may), each cause with its figure."""
    if app is None:
        return [f"ResilientApp {spec.app} not found"]
    causes: list[str] = []
    target = spec.target_site
    if app.mode == "Observe":
        causes.append("the app is in Observe mode: it never acts on requests")
    if app.phase != "Healthy":
        causes.append(f"the app is {app.phase or 'not yet observed'}, not Healthy")
    if app.active_site is None:
        causes.append("the app has no active site yet")
    elif target == app.active_site:
        causes.append(f"{target} is already the active site")
    if target is not None and target not in app.sites:
        causes.append(f"the app has no site named {target}")
    if app.pinned is not None:
        causes.append(f"the app is pinned to {app.pinned}")
    last = app.last_failover
    if last is not None and not last.unguarded and now - last.decided_at < app.min_dwell_seconds:
        ago = max(0.0, now - last.decided_at)
        causes.append(f"the app is inside its dwell: {ago:.0f} s of {app.min_dwell_seconds:.0f} s")
    recent = [t for t in app.recent_failovers if now - t < HOUR]
    if len(recent) >= app.max_failovers_per_hour:
        causes.append(
            f"the failover budget is spent: {len(recent)} of {app.max_failovers_per_hour} "
            "in the last hour"
        )
    if app.traffic_epoch < app.epoch:
        causes.append(
            f"a failover is under way (epoch {app.epoch}, traffic at {app.traffic_epoch})"
        )
    if app.waiting_request is not None:
        causes.append(f"the app has a request waiting ({app.waiting_request})")
    if app.holder is not None and app.holder != name:
        causes.append(f"FailoverDrill {app.holder} is running on the app")
    if target is not None and target in app.sites:
        unhealthy = app.unhealthy_zones(target)
        if unhealthy:
            causes.append(f"target site {target} has zones not Healthy: {', '.join(unhealthy)}")
    if spec.kind == ZONE_EVACUATION:
        causes.extend(zone_refusals(spec, app))
    return causes


def zone_refusals(spec: FailoverDrillSpec, app: AppView) -> list[str]:
    """Why the zone of a ZoneEvacuation drill may not be taken out now, with figures: it
    must be a zone of the active site, in traffic, Healthy, with DNS values of its own; the
    zones left must all be Healthy, and enough of them to carry the traffic (as many as a
    failover target needs, ``failover.minHealthyTargetZones``, and at least 1)."""
    site_name, zone = app.active_site, spec.zone
    site = app.spec.site(site_name) if app.spec is not None and site_name else None
    if site is None or zone is None:
        return []  # no active site: said already
    if zone not in site.zones:
        return [f"{zone} is not a zone of the active site {site.name} ({', '.join(site.zones)})"]
    causes: list[str] = []
    if app.drill_zone is not None:
        causes.append(f"zone {app.drill_zone[1]}/{app.drill_zone[2]} is out for a drill already")
    if not app.in_traffic(site.name, zone):
        causes.append(f"zone {site.name}/{zone} is out of traffic already")
    states = {z: state for s, z, state in app.zones if s == site.name}
    if states.get(zone, "Unknown") != "Healthy":
        causes.append(f"zone {site.name}/{zone} is {states.get(zone, 'Unknown')}, not Healthy")
    left = [z for z in site.zones if z != zone and app.in_traffic(site.name, z)]
    healthy = [z for z in left if states.get(z) == "Healthy"]
    needed = max(1, app.spec.failover.min_healthy_target_zones) if app.spec else 1
    if len(healthy) < needed:
        causes.append(
            f"without {zone}, {site.name} would serve from {len(healthy)} Healthy zone(s)"
            f" ({', '.join(healthy) or 'none'}); needs {needed} (failover.minHealthyTargetZones)"
        )
    failing = [f"{z}={states.get(z, 'Unknown')}" for z in left if z not in healthy]
    if failing:
        causes.append(f"zones of {site.name} left to serve not Healthy: {', '.join(failing)}")
    if app.spec is not None and not app.spec.failover.zonal_evacuation.enabled:
        causes.append("zonal evacuation is disabled (failover.zonalEvacuation.enabled)")
    if not site.values(set(left)):
        causes.append(f"the zones of {site.name} left to serve have no DNS values")
    elif site.values(set(left)) == site.values({*left, zone}):
        causes.append(
            f"zone {zone} has no DNS values of its own (zoneTargets of {site.name}): taking "
            "it out would change no DNS"
        )
    return causes


def _start(work: _Run, slot: float) -> None:
    run = work.status.run + 1
    work.update(
        phase="Running",
        run=run,
        last_schedule_time=rfc3339(slot, precise=True),
        started_time=work.stamp(),
        finished_time=None,
        origin_site=work.app.active_site if work.app else None,
        target_site=work.spec.target_site,
        zone=(
            f"{work.app.active_site}/{work.spec.zone}"
            if work.spec.kind == ZONE_EVACUATION and work.app and work.app.active_site
            else None
        ),
        origin_epoch=work.app.epoch if work.app else None,
        steps=(),
        rto_seconds=None,
        revert_rto_seconds=None,
        rpo_seconds=None,
        data_checks=(),
        result=None,
        abort_reason=None,
        message="",
        pending_request=None,
        request_time=None,
        decisions=(),
        decisions_total=None,
        first_failover_seconds=None,
    )
    if work.spec.kind == "Observe":
        _observe(work)
        return
    work.open_step(PREFLIGHT)
    causes = refusals(work.spec, work.name, work.app, work.now)
    if causes:
        words = "; ".join(causes)
        work.close_step(PREFLIGHT, "Failed", words)
        work.notice(EventReason.DRILL_REFUSED, f"run {run} refused: {words}", warning=True)
        _finish(work, "Failed", f"refused: {words}", release=False)
        return
    app, target = work.app, work.spec.target_site
    if work.spec.kind == ZONE_EVACUATION:
        assert app is not None and work.status.zone is not None
        zone = work.status.zone
        work.close_step(
            PREFLIGHT, "Succeeded", f"{zone} out of {app.active_site}, epoch {app.epoch}"
        )
        work.notice(
            EventReason.DRILL_STARTED,
            f"run {run}: zone evacuation of {zone} of {work.spec.app}, hold "
            f"{work.spec.hold_seconds} s",
        )
        _ask(work, EVACUATE)
        return
    assert app is not None and target is not None
    work.close_step(PREFLIGHT, "Succeeded", f"{app.active_site} -> {target}, epoch {app.epoch}")
    work.notice(
        EventReason.DRILL_STARTED,
        f"run {run}: switchover of {work.spec.app} from {app.active_site} to {target}, "
        f"hold {work.spec.hold_seconds} s",
    )
    _ask(work, SWITCH)


def _observe(work: _Run) -> None:
    """An Observe run, whole in one tick: the timeline replayed against the app's spec as it
    stands, judged against the expectations. It acts on nothing: no request, no claim on
    the app (no Move, no Release), only the drill's own status, Events and metrics."""
    run, app, timeline = work.status.run, work.app, work.spec.timeline
    work.open_step(OBSERVE, "replaying the timeline against the app's spec")
    if app is None or app.spec is None:
        work.close_step(OBSERVE, "Failed", f"ResilientApp {work.spec.app} not found")
        _finish(work, "Failed", f"ResilientApp {work.spec.app} not found", release=False)
        return
    if timeline is None:  # admission requires it
        _finish(work, "Failed", "an Observe drill needs timeline", release=False)
        return
    report = observe(app.spec, timeline, work.spec.expect, app.providers)
    work.update(
        origin_site=report.origin_site,
        target_site=report.target_site,
        origin_epoch=None,
        decisions=report.decisions,
        decisions_total=report.decisions_total,
        first_failover_seconds=report.first_failover_seconds,
    )
    work.close_step(OBSERVE, report.result, report.message)
    work.notice(EventReason.DRILL_STARTED, f"run {run}: replayed the timeline (acting on nothing)")
    _finish(work, report.result, report.message, release=False)


def _request(work: _Run, step_name: str, rid: str) -> Request:
    """The request of ``step_name``: a planned failover to the target (switch) or back to
    the origin (revert); the zone out (evacuate) or back (restore)."""
    status = work.status
    if step_name in (EVACUATE, RESTORE):
        assert status.zone is not None
        site, _, zone = status.zone.partition("/")
        if step_name == RESTORE:
            return Request(rid, RequestOp.RESTORE, site=site, zone=zone, drill=True)
        spec = work.spec
        lease = spec.hold_seconds + 2 * spec.step_timeout_seconds + LEASE_MARGIN_SECONDS
        return Request(
            rid, RequestOp.EVACUATE, site=site, zone=zone, drill=True, lease_seconds=float(lease)
        )
    to = status.target_site if step_name == SWITCH else status.origin_site
    return Request(rid, RequestOp.FAILOVER, site=to, planned=True, drill=True)


_ASKED = {
    SWITCH: "asked to move to {target}",
    REVERT: "asked to move to {origin}",
    EVACUATE: "asked to take {zone} out of traffic",
    RESTORE: "asked to put {zone} back into traffic",
}


def _ask(work: _Run, step_name: str, attempt: int = 0) -> None:
    """Open ``step_name`` (unless it is open) and make its request of the app."""
    current = work.current()
    status = work.status
    if current is None or current.name != step_name:
        words = _ASKED[step_name].format(
            target=status.target_site, origin=status.origin_site, zone=status.zone
        )
        work.open_step(step_name, words)
    rid = request_id(work.name, work.status.run, step_name, attempt)
    work.update(pending_request=rid, request_time=work.stamp())
    work.actions.append(Move(_request(work, step_name, rid)))


# --------------------------------------------------------------------------- a running drill


def abort_cause(spec: FailoverDrillSpec, status: FailoverDrillStatus, app: AppView) -> str | None:
    """The abort condition the app trips now (None: none), the most telling first: a zone of
    the target, the RPO, then the app's phase (which a failing zone also turns)."""
    limits = spec.abort
    target = status.target_site
    if spec.kind == ZONE_EVACUATION and status.zone is not None:
        site, _, zone = status.zone.partition("/")
        if app.active_site != site:
            return f"the app left {site}: it is on {app.active_site}"
        serving = [
            f"{z}={state}"
            for s, z, state in app.zones
            if s == site and z != zone and app.in_traffic(s, z) and state != "Healthy"
        ]
        if len(serving) > limits.max_unhealthy_target_zones:
            return (
                f"zones of {site} still serving: {len(serving)} not Healthy "
                f"({', '.join(serving)}), more than {limits.max_unhealthy_target_zones}"
            )
    elif target is not None:
        unhealthy = app.unhealthy_zones(target)
        if len(unhealthy) > limits.max_unhealthy_target_zones:
            return (
                f"target site {target}: {len(unhealthy)} zone(s) not Healthy "
                f"({', '.join(unhealthy)}), more than {limits.max_unhealthy_target_zones}"
            )
    rpo = app.largest_rpo()
    if limits.max_rpo_seconds is not None and rpo is not None and rpo > limits.max_rpo_seconds:
        return f"RPO {rpo:.1f} s above the limit of {limits.max_rpo_seconds:g} s"
    if limits.on_degraded and app.phase in UNFIT_PHASES:
        return f"the app turned {app.phase}"
    return None


def _advance(work: _Run, user_abort: str | None) -> None:
    status, app = work.status, work.app
    current = work.current()
    if current is None:  # a status cut short (edited by hand): end the run cleanly
        _finish(work, "Failed", "the run's steps were lost")
        return
    if app is None:
        work.close_step(current.name, "Failed", f"ResilientApp {work.spec.app} not found")
        _finish(work, "Failed", f"ResilientApp {work.spec.app} disappeared during the run")
        return
    cause = user_abort or abort_cause(work.spec, status, app)
    if cause is None and current.name == HOLD and work.spec.kind == ZONE_EVACUATION:
        cause = _claim_lost(work)
    if cause is not None and status.abort_reason is None and current.name not in FINAL_STEPS:
        work.update(abort_reason=cause)
        work.notice(EventReason.DRILL_ABORTING, f"run {status.run} aborting: {cause}", True)
    if current.name == SWITCH:
        _switching(work, current)
    elif current.name == HOLD:
        _holding(work, current)
    elif current.name == REVERT:
        _reverting(work, current)
    elif current.name == EVACUATE:
        _evacuating(work, current)
    elif current.name == RESTORE:
        _restoring(work, current)
    elif current.name == VERIFY:
        _verifying(work, current)
    else:
        _finish(work, "Failed", f"unknown step {current.name}")


def _answer(work: _Run) -> tuple[bool, str] | None:
    """The app's answer to the drill's request in flight (None: not answered yet)."""
    app = work.app
    assert app is not None
    if app.last_request is None or app.last_request[0] != work.status.pending_request:
        return None
    return app.last_request[1], app.last_request[2]


def _elapsed(work: _Run, since: str | None) -> float:
    return work.now - parse_rfc3339(since) if since else 0.0


def _moved_away(work: _Run) -> bool:
    app = work.app
    assert app is not None
    return work.status.origin_epoch is not None and app.epoch > work.status.origin_epoch


def _nudge(work: _Run, step_name: str) -> None:
    """The request in flight is not answered and the app holds no request: ask again, the
    same request (the status that recorded it may have been written while the request
    was not: the operator writes the status first, then annotates the app)."""
    app = work.app
    assert app is not None and work.status.pending_request is not None
    if app.waiting_request is None:
        rid = work.status.pending_request
        work.actions.append(Move(_request(work, step_name, rid)))


def _first_move_ended(work: _Run, step: str, what: str, answer: tuple[bool, str] | None) -> bool:
    """The ends a drill's first move can meet before it is carried out: the app refused
    its request, or another drill took the app first. Whether the drill ended here."""
    app = work.app
    assert app is not None
    if answer is not None and not answer[0]:
        work.close_step(step, "Failed", f"refused: {answer[1]}")
        result: DrillResult = "Aborted" if work.status.abort_reason else "Failed"
        _finish(work, result, f"the {what} was refused: {answer[1]}")
        return True
    if answer is None and app.holder is not None and app.holder != work.name:
        words = f"FailoverDrill {app.holder} took the app first; nothing moved"
        work.close_step(step, "Failed", words)
        _finish(work, "Failed", words, release=False)
        return True
    return False


def _switching(work: _Run, current: DrillStep) -> None:
    status, app = work.status, work.app
    assert app is not None and status.target_site is not None
    answer = _answer(work)
    timeout = work.spec.step_timeout_seconds
    if _first_move_ended(work, SWITCH, "switch", answer):
        return
    if answer is None:
        _nudge(work, SWITCH)
    if answer is not None and status.rpo_seconds is None and not status.data_checks:
        _data_checks(work)
    if answer is not None and app.traffic_on(status.target_site) and _moved_away(work):
        rto = _rto(work, app.last_failover, status.target_site)
        work.update(rto_seconds=rto)
        moved = f"traffic on {status.target_site}, epoch {app.epoch}" + (
            f", RTO {rto:.1f} s" if rto is not None else ""
        )
        work.close_step(SWITCH, "Succeeded", moved)
        work.notice(EventReason.DRILL_SWITCHED, f"run {status.run}: {moved}")
        if work.status.abort_reason:
            _revert(work)
        else:
            work.update(pending_request=None, request_time=None)
            work.open_step(HOLD, f"holding {work.spec.hold_seconds} s")
        return
    if _elapsed(work, current.started_time) > timeout:
        why = (
            f"no answer to the switch request in {timeout} s"
            if answer is None
            else f"traffic not on {status.target_site} within {timeout} s"
        )
        work.close_step(SWITCH, "Failed", why)
        if status.abort_reason is None:
            work.update(abort_reason=why)
        if _moved_away(work) or answer is not None:
            _revert(work)
        else:
            _finish(work, "Failed", why)


def _holding(work: _Run, current: DrillStep) -> None:
    status = work.status
    if status.abort_reason is not None:
        work.close_step(HOLD, "Failed", f"aborted: {status.abort_reason}")
        _revert(work)
    elif _elapsed(work, current.started_time) >= work.spec.hold_seconds:
        work.close_step(HOLD, "Succeeded", f"held {work.spec.hold_seconds} s, no abort condition")
        _revert(work)


def _revert(work: _Run) -> None:
    """Back to where the run started: the app to its origin, the zone into traffic."""
    _ask(work, RESTORE if work.spec.kind == ZONE_EVACUATION else REVERT)


def _reverting(work: _Run, current: DrillStep) -> None:
    status, app = work.status, work.app
    assert app is not None and status.origin_site is not None
    origin = status.origin_site
    answer = _answer(work)
    if answer is None:
        _nudge(work, REVERT)
    if app.traffic_on(origin) and _reverted(work, answer):
        ours = answer is not None and answer[0]
        rto = _rto(work, app.last_failover, origin) if ours else None
        work.update(revert_rto_seconds=rto)
        how = "" if ours else " (it was there already: moved back by a failover, not the drill)"
        work.close_step(
            REVERT,
            "Succeeded",
            f"traffic back on {origin}, epoch {app.epoch}{how}"
            + (f", RTO {rto:.1f} s" if rto is not None else ""),
        )
        _conclude(work)
        return
    if _elapsed(work, current.started_time) > work.spec.step_timeout_seconds:
        why = f"the app was not moved back to {origin} within {work.spec.step_timeout_seconds} s"
        if answer is not None and not answer[0]:
            why += f" (refused: {answer[1]})"
        work.close_step(REVERT, "Failed", why)
        _finish(work, "Failed", f"{why}; it stands on {app.active_site}")
        return
    if answer is not None and not answer[0]:
        if _elapsed(work, status.request_time) >= REVERT_RETRY_SECONDS:
            _ask(work, REVERT, _attempt(status.pending_request) + 1)
        else:
            work.update(steps=_with_message(work, REVERT, f"refused, asking again: {answer[1]}"))


def _reverted(work: _Run, answer: tuple[bool, str] | None) -> bool:
    """Whether the app standing on its origin is the revert's doing (or, with no answer yet,
    another's: a real failover back, which leaves nothing for the revert to do)."""
    app = work.app
    assert app is not None
    if answer is not None and answer[0]:
        return True
    # Refused, or no answer to the revert yet: the app is back on its origin only if an
    # epoch after the switch put it there.
    last = app.last_failover
    return last is not None and last.to_site == work.status.origin_site and _moved_away(work)


def _with_message(work: _Run, name: str, message: str) -> tuple[DrillStep, ...]:
    return tuple(
        s.model_copy(update={"message": message[:1024]})
        if s.name == name and s.result == "Running"
        else s
        for s in work.status.steps
    )


def _conclude(work: _Run) -> None:
    status = work.status
    if work.spec.kind == ZONE_EVACUATION:
        _conclude_zone(work)
        return
    if status.abort_reason is not None:
        _finish(work, "Aborted", f"aborted: {status.abort_reason}; back on {status.origin_site}")
        return
    failed = [c for c in status.data_checks if c.result == "Failed"]
    if failed:
        words = "; ".join(f"{c.name}: {c.message}" for c in failed)
        _finish(work, "Failed", f"data checks failed: {words}")
        return
    parts = [f"switched {status.origin_site} -> {status.target_site} and back"]
    if status.rto_seconds is not None:
        parts.append(f"RTO {status.rto_seconds:.1f} s")
    if status.rpo_seconds is not None:
        parts.append(f"RPO at the switch {status.rpo_seconds:.1f} s")
    _finish(work, "Succeeded", ", ".join(parts))


def _rto(work: _Run, last: LastFailover | None, site: str) -> float | None:
    """From the request in flight to the app's traffic moved to ``site`` (as its last
    failover records it)."""
    if last is None or last.to_site != site or last.completed_at is None:
        return None
    asked = parse_rfc3339(work.status.request_time) if work.status.request_time else None
    if asked is None:
        return None
    return round(max(0.0, last.completed_at - asked), 3)


def _data_checks(work: _Run) -> None:
    """The data checks at the switch, from the app's replication figures when the switch
    was accepted."""
    app = work.app
    assert app is not None
    target = work.status.target_site
    flows = [r for r in app.rpo if r[1] == target]
    if not app.rpo:
        checks = [
            DataCheck(name="replication", result="Unknown", message="the app replicates nothing")
        ]
        work.update(data_checks=tuple(checks))
        return
    pending = sum(p for _, _, _, p in flows)
    unknown = [f"{d}" for d, _, r, _ in flows if r is None]
    checks = [
        DataCheck(
            name="pending-at-switch",
            result="Passed" if pending == 0 else "Failed",
            message=f"{pending} object(s) not yet replicated to {target} at the switch",
        ),
        DataCheck(
            name="rpo-measured",
            result="Unknown" if unknown or not flows else "Passed",
            message=(
                f"RPO not measured for {', '.join(unknown)}"
                if unknown
                else f"every dataset replicating to {target} has a measured RPO"
                if flows
                else f"no dataset replicates to {target}"
            ),
        ),
    ]
    work.update(rpo_seconds=app.largest_rpo(), data_checks=tuple(checks))


# --------------------------------------------------------------------------- zone evacuation


def _zone(work: _Run) -> tuple[str, str]:
    assert work.status.zone is not None
    site, _, zone = work.status.zone.partition("/")
    return site, zone


def _claim_lost(work: _Run) -> str | None:
    """The app no longer keeps the zone out for this drill (None: it does): a real outage of
    the site, a failover, or the end of the drill's lease ended the drill's claim."""
    app = work.app
    assert app is not None
    site, zone = _zone(work)
    if app.drill_zone == (work.name, site, zone):
        return None
    where = "back in traffic" if app.in_traffic(site, zone) else "out under the automatic rules"
    decision = f"; the app's last decision: {app.last_decision}" if app.last_decision else ""
    return f"the app took zone {work.status.zone} back from the drill ({where}){decision}"


def _dns_time(work: _Run) -> float | None:
    """From the request in flight to the app's last DNS change, if that change came after
    the request."""
    app, asked = work.app, work.status.request_time
    assert app is not None
    if app.traffic_applied_at is None or asked is None:
        return None
    seconds = app.traffic_applied_at - parse_rfc3339(asked)
    return round(max(0.0, seconds), 3) if seconds > -1.0 else None


def _evacuating(work: _Run, current: DrillStep) -> None:
    status, app = work.status, work.app
    assert app is not None
    site, zone = _zone(work)
    answer = _answer(work)
    timeout = work.spec.step_timeout_seconds
    if _first_move_ended(work, EVACUATE, "evacuation", answer):
        return
    if answer is None:
        _nudge(work, EVACUATE)
    elif (lost := _claim_lost(work)) is not None:
        work.close_step(EVACUATE, "Failed", lost)
        if status.abort_reason is None:
            work.update(abort_reason=lost)
            work.notice(EventReason.DRILL_ABORTING, f"run {status.run} aborting: {lost}", True)
        _revert(work)
        return
    elif not app.in_traffic(site, zone) and app.dns_settled():
        rto = _dns_time(work)
        words = f"{status.zone} out of traffic, DNS in sync without it" + (
            f", in {rto:.1f} s" if rto is not None else ""
        )
        work.update(rto_seconds=rto)
        work.close_step(EVACUATE, "Succeeded", words)
        work.notice(EventReason.DRILL_ZONE_EVACUATED, f"run {status.run}: {words}")
        if work.status.abort_reason:
            _revert(work)
        else:
            work.update(pending_request=None, request_time=None)
            work.open_step(HOLD, f"holding {work.spec.hold_seconds} s")
        return
    if _elapsed(work, current.started_time) > timeout:
        why = (
            f"no answer to the evacuate request in {timeout} s"
            if answer is None
            else f"DNS not in sync without {status.zone} within {timeout} s"
            + (f" (DNS change {app.dns_pending})" if app.dns_pending else "")
        )
        work.close_step(EVACUATE, "Failed", why)
        if status.abort_reason is None:
            work.update(abort_reason=why)
        if answer is not None:
            _revert(work)
        else:
            _finish(work, "Failed", why)


def _restoring(work: _Run, current: DrillStep) -> None:
    status, app = work.status, work.app
    assert app is not None
    site, zone = _zone(work)
    answer = _answer(work)
    timeout = work.spec.step_timeout_seconds
    if answer is None:
        _nudge(work, RESTORE)
    ours = answer is not None and answer[0]
    if app.in_traffic(site, zone) and (ours or app.drill_zone is None):
        # Accepted as "in traffic already": the app had put it back (a real outage).
        already = answer is not None and "already" in answer[1]
        how = "" if ours and not already else " (put back by the app, not the drill)"
        words = f"{status.zone} back in traffic{how}"
        work.close_step(RESTORE, "Succeeded", words)
        work.notice(EventReason.DRILL_ZONE_RESTORED, f"run {status.run}: {words}")
        work.open_step(VERIFY, f"waiting for DNS to carry {status.zone} again")
        step = work.current()
        assert step is not None
        _verifying(work, step)
        return
    if _elapsed(work, current.started_time) > timeout:
        why = f"zone {status.zone} not back in traffic within {timeout} s"
        if answer is not None and not answer[0]:
            why += f" (refused: {answer[1]})"
        work.close_step(RESTORE, "Failed", why)
        _finish(
            work,
            "Failed",
            f"{why}; the drill lets go of the app, which puts the zone back once it is Healthy",
        )
        return
    if answer is not None and not answer[0]:
        if _elapsed(work, status.request_time) >= REVERT_RETRY_SECONDS:
            _ask(work, RESTORE, _attempt(status.pending_request) + 1)
        else:
            work.update(steps=_with_message(work, RESTORE, f"refused, asking again: {answer[1]}"))


def _verifying(work: _Run, current: DrillStep) -> None:
    status, app = work.status, work.app
    assert app is not None
    site, zone = _zone(work)
    if app.in_traffic(site, zone) and app.dns_settled():
        rto = _dns_time(work)
        work.update(revert_rto_seconds=rto)
        words = f"DNS in sync with {status.zone} carried again, epoch {app.epoch}" + (
            f", {rto:.1f} s after the restore request" if rto is not None else ""
        )
        work.close_step(VERIFY, "Succeeded", words)
        _conclude(work)
        return
    timeout = work.spec.step_timeout_seconds
    if _elapsed(work, current.started_time) > timeout:
        why = f"DNS not in sync with {status.zone} carried within {timeout} s"
        if not app.in_traffic(site, zone):
            why += ": the zone is out of traffic again"
        elif app.dns_pending:
            why += f": DNS change {app.dns_pending}"
        elif app.dns_out_of_sync:
            why += f": {app.dns_out_of_sync}"
        work.close_step(VERIFY, "Failed", why)
        _finish(work, "Failed", why)


def _conclude_zone(work: _Run) -> None:
    status = work.status
    if status.abort_reason is not None:
        _finish(work, "Aborted", f"aborted: {status.abort_reason}; {status.zone} back in traffic")
        return
    parts = [f"took {status.zone} out of traffic and back"]
    if status.rto_seconds is not None:
        parts.append(f"out in {status.rto_seconds:.1f} s")
    if status.revert_rto_seconds is not None:
        parts.append(f"back in {status.revert_rto_seconds:.1f} s")
    _finish(work, "Succeeded", ", ".join(parts))


def _finish(work: _Run, result: DrillResult, message: str, *, release: bool = True) -> None:
    status = work.status
    current = work.current()
    if current is not None:
        work.close_step(current.name, "Failed", f"ended: {message}")
    work.update(
        phase=result,
        result=result,
        finished_time=work.stamp(),
        message=message[:1024],
        pending_request=None,
        request_time=None,
        last_successful_time=work.stamp() if result == "Succeeded" else status.last_successful_time,
    )
    if release:
        work.actions.append(Release())
    reason = {
        "Succeeded": EventReason.DRILL_SUCCEEDED,
        "Aborted": EventReason.DRILL_ABORTED,
        "Failed": EventReason.DRILL_FAILED,
    }[result]
    if reason is not EventReason.DRILL_FAILED or not any(
        isinstance(a, Notice) and a.reason is EventReason.DRILL_REFUSED for a in work.actions
    ):
        work.notice(reason, f"run {status.run}: {message}", warning=result != "Succeeded")
    work.actions.append(Finished(result))
