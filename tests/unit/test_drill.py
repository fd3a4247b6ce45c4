"""FailoverDrills' pure core: the schedule, the run's state machine step by step, and its
invariants over random histories of an app that answers (or refuses) the drill's requests,
turns Degraded, loses zones of the target and takes its time to move traffic."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.api.annotations import Request, RequestOp
from controller.api.conditions import parse_rfc3339, rfc3339
from controller.api.events import EventReason
from controller.api.models import FailoverDrillSpec, FailoverDrillStatus
from controller.core import drill as d

T0 = parse_rfc3339("2026-03-03T10:00:00Z")
SITES = ("use1", "usw2")


def drill_spec(**overrides: Any) -> FailoverDrillSpec:
    raw: dict[str, Any] = {
        "app": "web",
        "kind": "Switchover",
        "targetSite": "usw2",
        "schedule": {"once": rfc3339(T0)},
        "holdSeconds": 60,
        "stepTimeoutSeconds": 120,
    }
    raw.update(overrides)
    return FailoverDrillSpec.model_validate(raw)


@dataclass
class FakeApp:
    """An app as drills see it, answering requests as the decision core does (accepted
    unless refused; traffic moves ``lag`` seconds after the decision)."""

    active: str = "use1"
    epoch: int = 1
    traffic_epoch: int = 1
    phase: str = "Healthy"
    unhealthy: dict[str, str] = field(default_factory=dict)
    """zone of usw2 -> state."""
    last_request: tuple[str, bool, str] | None = None
    waiting: Request | None = None
    last_failover: d.LastFailover | None = None
    holder: str | None = None
    recent: tuple[float, ...] = ()
    rpo: float | None = None
    lag: float = 3.0
    refuse: bool = False
    pinned: str | None = None

    def view(self) -> d.AppView:
        zones = tuple(
            (site, f"{site}-{z}", self.unhealthy.get(z, "Healthy") if site == "usw2" else "Healthy")
            for site in SITES
            for z in ("a", "b", "c")
        )
        return d.AppView(
            mode="Automatic",
            phase=self.phase,
            active_site=self.active,
            epoch=self.epoch,
            traffic_epoch=self.traffic_epoch,
            sites=SITES,
            pinned=self.pinned,
            min_dwell_seconds=600,
            max_failovers_per_hour=3,
            recent_failovers=self.recent,
            last_failover=self.last_failover,
            last_request=self.last_request,
            waiting_request=self.waiting.id if self.waiting else None,
            zones=zones,
            rpo=(("files", "usw2", self.rpo, 0),) if self.rpo is not None else (),
            holder=self.holder,
        )

    def apply(self, name: str, actions: tuple[d.Action, ...]) -> None:
        for action in actions:
            if isinstance(action, d.Move):
                assert self.holder in (None, name), "a drill moved an app another one holds"
                self.holder = name
                self.waiting = action.request
            elif isinstance(action, d.Release) and self.holder == name:
                self.holder = None

    def round(self, now: float) -> None:
        """One round of the app's worker."""
        request, self.waiting = self.waiting, None
        if request is not None:
            if self.refuse or request.site == self.active:
                self.last_request = (request.id, False, "refused by the safety checks")
            else:
                self.last_request = (request.id, True, "failing over")
                self.failover(request.site or "", now, drill=request.drill)
        last = self.last_failover
        if (
            self.traffic_epoch < self.epoch
            and last is not None
            and now - last.decided_at >= self.lag
        ):
            self.traffic_epoch = self.epoch
            self.last_failover = replace(last, completed_at=now)

    def failover(self, site: str, now: float, drill: bool = False) -> None:
        self.last_failover = d.LastFailover(self.epoch + 1, self.active, site, now, None, drill)
        self.epoch += 1
        self.active = site
        if not drill:
            self.recent = (*self.recent, now)


def tick(
    name: str,
    spec: FailoverDrillSpec,
    status: FailoverDrillStatus,
    app: FakeApp | None,
    now: float,
    abort: str | None = None,
) -> tuple[FailoverDrillStatus, tuple[d.Action, ...]]:
    new, actions = d.step(
        name, spec, status, app.view() if app else None, now, created=T0 - 3600, abort=abort
    )
    if app is not None:
        app.apply(name, actions)
    return new, actions


def run_to_end(
    spec: FailoverDrillSpec, app: FakeApp, start: float = T0, limit: float = 3600
) -> tuple[FailoverDrillStatus, list[d.Action]]:
    status, seen = FailoverDrillStatus(), list[d.Action]()
    now = start
    while now < start + limit:
        status, actions = tick("dr", spec, status, app, now)
        seen.extend(actions)
        if status.result is not None:
            return status, seen
        app.round(now)
        now += 1.0
    raise AssertionError(f"the run did not end: {status}")


# --------------------------------------------------------------------------- the spec


def test_a_zone_evacuation_names_its_zone_and_no_target_site() -> None:
    spec = drill_spec(kind="ZoneEvacuation", targetSite=None, zone="us-east-1b")
    assert spec.zone == "us-east-1b"
    with pytest.raises(ValidationError, match="a ZoneEvacuation drill needs zone"):
        drill_spec(kind="ZoneEvacuation", targetSite=None)
    with pytest.raises(ValidationError, match="takes a zone of the active site, not targetSite"):
        drill_spec(kind="ZoneEvacuation", zone="us-east-1b")
    with pytest.raises(ValidationError, match="zone is for ZoneEvacuation drills only"):
        drill_spec(zone="us-east-1b")


def test_a_switchover_needs_a_target_and_a_schedule_takes_one_of_cron_and_once() -> None:
    with pytest.raises(ValidationError, match="needs targetSite"):
        drill_spec(targetSite=None)
    with pytest.raises(ValidationError, match="exactly one of cron and once"):
        drill_spec(schedule={"cron": "0 10 * * 2", "once": rfc3339(T0)})
    with pytest.raises(ValidationError, match="five fields"):
        drill_spec(schedule={"cron": "0 10 * * 2 2026"})


# --------------------------------------------------------------------------- the schedule


def test_once_is_due_at_its_time_and_only_once() -> None:
    schedule = drill_spec().schedule
    assert d.due_slot(schedule, None, T0 - 10, T0 - 1) is None
    assert d.due_slot(schedule, None, T0 - 10, T0) == T0
    assert d.due_slot(schedule, T0, T0 - 10, T0 + 100) is None
    assert d.next_fire(schedule, T0 - 1) == T0
    assert d.next_fire(schedule, T0) is None


def test_cron_fires_after_creation_and_after_each_run_and_makes_up_no_missed_run() -> None:
    schedule = drill_spec(schedule={"cron": "*/15 * * * *"}).schedule
    created = T0 + 60  # 10:01
    assert d.due_slot(schedule, None, created, T0 + 600) is None  # 10:10: nothing fired yet
    assert d.due_slot(schedule, None, created, T0 + 900) == T0 + 900  # 10:15 exactly
    assert d.due_slot(schedule, T0 + 900, created, T0 + 1000) is None
    # Down for an hour: one run, for the latest time it fired.
    assert d.due_slot(schedule, T0 + 900, created, T0 + 4600) == T0 + 4500
    assert d.next_fire(schedule, T0 + 900) == T0 + 1800


def test_the_next_run_time_is_in_the_status_and_suspend_starts_nothing() -> None:
    spec = drill_spec(schedule={"cron": "0 * * * *"})
    status, actions = tick("dr", spec, FailoverDrillStatus(), FakeApp(), T0 - 10)
    assert status.phase == "Scheduled" and not actions
    assert status.next_run_time == "2026-03-03T10:00:00Z"
    status, actions = tick("dr", spec, status, FakeApp(), T0 + 10)
    assert status.phase == "Running" and status.last_schedule_time == "2026-03-03T10:00:00.000Z"
    assert status.next_run_time == "2026-03-03T11:00:00Z"
    suspended = drill_spec(schedule={"cron": "0 * * * *"}, suspend=True)
    status, actions = tick("dr", suspended, FailoverDrillStatus(), FakeApp(), T0 + 3600)
    assert status.phase == "Scheduled" and not actions and status.next_run_time is None


# --------------------------------------------------------------------------- a run


def test_a_switchover_moves_holds_moves_back_and_reports() -> None:
    app = FakeApp(rpo=2.5)
    status, actions = run_to_end(drill_spec(), app)
    assert status.result == status.phase == "Succeeded"
    assert app.active == "use1" and app.epoch == 3 and app.holder is None
    assert [(s.name, s.result) for s in status.steps] == [
        ("preflight", "Succeeded"),
        ("switch", "Succeeded"),
        ("hold", "Succeeded"),
        ("revert", "Succeeded"),
    ]
    assert all(s.finished_time is not None for s in status.steps)
    hold = status.steps[2]
    assert parse_rfc3339(hold.finished_time or "") - parse_rfc3339(hold.started_time) >= 60
    assert status.rto_seconds == pytest.approx(3.0)
    assert status.revert_rto_seconds == pytest.approx(3.0)
    assert status.rpo_seconds == 2.5
    assert {c.name: c.result for c in status.data_checks} == {
        "pending-at-switch": "Passed",
        "rpo-measured": "Passed",
    }
    assert (status.origin_site, status.target_site, status.origin_epoch) == ("use1", "usw2", 1)
    assert status.last_successful_time == status.finished_time
    assert status.abort_reason is None
    moves = [a.request for a in actions if isinstance(a, d.Move)]
    assert [(r.site, r.planned, r.drill, r.force) for r in moves] == [
        ("usw2", True, True, False),
        ("use1", True, True, False),
    ]
    assert d.Finished("Succeeded") in actions and d.Release() in actions
    reasons = [a.reason for a in actions if isinstance(a, d.Notice)]
    assert reasons == [
        EventReason.DRILL_STARTED,
        EventReason.DRILL_SWITCHED,
        EventReason.DRILL_SUCCEEDED,
    ]
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Running"].status == "False"
    assert conditions["Succeeded"].status == "True"
    assert app.recent == ()  # the drill's moves spent no budget


@pytest.mark.parametrize(
    ("app", "words"),
    [
        (FakeApp(phase="Degraded"), "the app is Degraded, not Healthy"),
        (FakeApp(phase="Frozen"), "the app is Frozen, not Healthy"),
        (
            FakeApp(last_failover=d.LastFailover(1, "usw2", "use1", T0 - 100, T0 - 95, False)),
            "inside its dwell: 100 s of 600 s",
        ),
        (FakeApp(recent=(T0 - 10, T0 - 20, T0 - 30)), "failover budget is spent: 3 of 3"),
        (FakeApp(holder="other"), "FailoverDrill other is running on the app"),
        (FakeApp(unhealthy={"b": "Down"}), "target site usw2 has zones not Healthy: usw2-b=Down"),
        (FakeApp(pinned="use1"), "pinned to use1"),
        (FakeApp(active="usw2"), "usw2 is already the active site"),
        (FakeApp(epoch=2), "a failover is under way"),
    ],
)
def test_a_run_does_not_start_on_an_unfit_app(app: FakeApp, words: str) -> None:
    before = replace(app)
    status, actions = tick("dr", drill_spec(), FailoverDrillStatus(), app, T0)
    assert status.result == "Failed"
    assert words in status.message
    assert [(s.name, s.result) for s in status.steps] == [("preflight", "Failed")]
    assert not any(isinstance(a, d.Move) for a in actions)
    assert (app.active, app.epoch, app.holder) == (before.active, before.epoch, before.holder)
    assert [a.reason for a in actions if isinstance(a, d.Notice)] == [EventReason.DRILL_REFUSED]
    # It does not run again for the same time.
    status, actions = tick("dr", drill_spec(), status, app, T0 + 30)
    assert status.run == 1 and not actions


def test_an_unhealthy_target_during_the_hold_aborts_and_moves_the_app_back() -> None:
    app, spec = FakeApp(), drill_spec(holdSeconds=600)
    status, now = FailoverDrillStatus(), T0
    while not any(s.name == "hold" for s in status.steps):
        status, _ = tick("dr", spec, status, app, now)
        app.round(now)
        now += 1
    app.unhealthy = {"a": "Down"}
    seen: list[d.Action] = []
    while status.result is None:
        status, actions = tick("dr", spec, status, app, now)
        seen.extend(actions)
        app.round(now)
        now += 1
    assert status.result == "Aborted"
    assert "target site usw2: 1 zone(s) not Healthy (usw2-a=Down)" in (status.abort_reason or "")
    assert app.active == "use1" and app.holder is None
    assert [(s.name, s.result) for s in status.steps][2:] == [
        ("hold", "Failed"),
        ("revert", "Succeeded"),
    ]
    assert now - T0 < 100  # it did not sit out the hold
    assert EventReason.DRILL_ABORTING in [a.reason for a in seen if isinstance(a, d.Notice)]


def test_a_user_abort_names_the_run_and_an_rpo_limit_aborts_too() -> None:
    spec = drill_spec(holdSeconds=600)
    app = FakeApp()
    status, now = FailoverDrillStatus(), T0
    for _ in range(10):
        status, _ = tick("dr", spec, status, app, now)
        app.round(now)
        now += 1
    status, _ = tick("dr", spec, status, app, now, abort="0")  # another run's: ignored
    assert status.abort_reason is None
    status, _ = tick("dr", spec, status, app, now, abort="1")
    assert status.abort_reason == "aborted by a user (lifeboat drill abort)"

    app = FakeApp(rpo=1.0)
    limited = drill_spec(holdSeconds=600, abort={"maxRpoSeconds": 30})
    status, now = FailoverDrillStatus(), T0
    for _ in range(10):
        status, _ = tick("dr", limited, status, app, now)
        app.round(now)
        now += 1
    app.rpo = 45.0
    status, _ = tick("dr", limited, status, app, now)
    assert status.abort_reason == "RPO 45.0 s above the limit of 30 s"


def test_a_refused_switch_fails_the_run_and_nothing_moved() -> None:
    app = FakeApp(refuse=True)
    status, actions = run_to_end(drill_spec(), app)
    assert status.result == "Failed"
    assert "the switch was refused: refused by the safety checks" in status.message
    assert app.active == "use1" and app.epoch == 1 and app.holder is None
    assert d.Release() in actions


def test_a_revert_refused_is_asked_again_and_a_timeout_says_where_the_app_stands() -> None:
    app, spec = FakeApp(), drill_spec(holdSeconds=5, stepTimeoutSeconds=60)
    status, now = FailoverDrillStatus(), T0
    asked: list[str] = []
    while not any(s.name == "revert" for s in status.steps):
        status, actions = tick("dr", spec, status, app, now)
        asked = [a.request.id for a in actions if isinstance(a, d.Move)]
        app.refuse = any(s.name == "revert" for s in status.steps)
        app.round(now)
        now += 1
    while status.result is None:
        status, actions = tick("dr", spec, status, app, now)
        asked += [a.request.id for a in actions if isinstance(a, d.Move)]
        app.round(now)
        now += 1
    assert len(asked) >= 4 and len(set(asked)) == len(asked)
    assert status.result == "Failed"
    assert "not moved back to use1 within 60 s" in status.message
    assert "it stands on usw2" in status.message


def test_a_deleted_app_fails_the_run() -> None:
    app = FakeApp()
    status, _ = tick("dr", drill_spec(), FailoverDrillStatus(), app, T0)
    status, actions = tick("dr", drill_spec(), status, None, T0 + 1)
    assert status.result == "Failed" and "disappeared" in status.message
    assert d.Finished("Failed") in actions


# --------------------------------------------------------------------------- invariants

EVENTS = st.sampled_from(
    ["nothing", "degrade", "heal", "zone-down", "zone-up", "refuse", "accept", "slow", "abort"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(EVENTS, st.integers(1, 40)), min_size=1, max_size=60),
    st.integers(0, 200),
    st.integers(0, 2),
)
def test_every_run_ends_and_a_run_that_moved_the_app_ends_with_it_asked_back(
    history: list[tuple[str, int]], hold: int, tolerated: int
) -> None:
    spec = drill_spec(holdSeconds=hold, abort={"maxUnhealthyTargetZones": tolerated})
    app = FakeApp()
    status, now = FailoverDrillStatus(), T0
    moves: list[Request] = []
    events = iter(history)
    for _ in range(2000):
        event, gap = next(events, ("nothing", 5))
        if event == "degrade":
            app.phase = "Degraded"
        elif event == "heal":
            app.phase = "Healthy"
        elif event == "zone-down":
            app.unhealthy["a"] = "Down"
        elif event == "zone-up":
            app.unhealthy.clear()
        elif event in ("refuse", "accept"):
            app.refuse = event == "refuse"
        elif event == "slow":
            app.lag = 30.0
        was_running = status.phase == "Running"
        status, actions = tick(
            "dr", spec, status, app, now, abort="1" if event == "abort" else None
        )
        moves += [a.request for a in actions if isinstance(a, d.Move)]
        if not was_running and status.run == 1 and any(isinstance(a, d.Move) for a in actions):
            # It started: the app was fit for it.
            assert app.phase == "Healthy" and not app.unhealthy
        app.round(now)
        now += gap
        if status.result is not None:
            break
    assert status.result is not None, "the run never ended"
    assert app.holder is None
    if not moves:
        assert app.epoch == 1 and status.result == "Failed"
        return
    assert moves[0].site == "usw2" and all(m.site == "use1" for m in moves[1:])
    assert all(m.drill and m.planned and not m.force for m in moves)
    if status.result in ("Succeeded", "Aborted"):
        assert app.active == "use1", "a run that did not fail ends where it started"
    if app.epoch > 1 and app.active == "usw2":
        assert status.result == "Failed" and "stands on usw2" in status.message
    if status.result == "Succeeded":
        assert status.abort_reason is None
        assert all(s.result == "Succeeded" for s in status.steps)
    if status.result == "Aborted":
        assert status.abort_reason
    assert app.recent == ()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=200), st.integers(0, 30))
def test_two_drills_never_run_on_one_app_at_once(order: list[str], hold: int) -> None:
    specs = {n: drill_spec(holdSeconds=hold) for n in ("a", "b")}
    statuses = {n: FailoverDrillStatus() for n in ("a", "b")}
    app = FakeApp()
    now = T0
    for name in order:
        # (FakeApp.apply asserts that no drill moves an app another one holds.)
        statuses[name], _ = tick(name, specs[name], statuses[name], app, now)
        running = [n for n in ("a", "b") if statuses[n].phase == "Running"]
        assert len(running) <= 1
        assert app.holder is None or running == [app.holder]
        app.round(now)
        now += 2


def test_a_drill_request_reads_back_as_written() -> None:
    request = Request("drill/dr/1/switch", RequestOp.FAILOVER, "usw2", planned=True, drill=True)
    assert Request.parse(request.serialise()) == request
    plain = Request("r1", RequestOp.FAILOVER, "usw2")
    assert "drill" not in plain.serialise()
    assert Request.parse(plain.serialise()) == plain


def test_a_request_the_app_never_got_is_asked_again_under_the_same_id() -> None:
    """The operator writes the status, then annotates the app: a crash in between leaves a
    status that waits for a request the app never got."""
    app, spec = FakeApp(), drill_spec()
    status, actions = d.step("dr", spec, FailoverDrillStatus(), app.view(), T0, created=T0 - 1)
    first = [a.request for a in actions if isinstance(a, d.Move)]
    assert len(first) == 1  # ... and it is lost: not applied to the app
    status, actions = tick("dr", spec, status, app, T0 + 2)
    again = [a.request for a in actions if isinstance(a, d.Move)]
    assert again == first
    app.round(T0 + 2)
    status, actions = tick("dr", spec, status, app, T0 + 3)
    assert not [a for a in actions if isinstance(a, d.Move)]  # answered: not asked again
    assert app.active == "usw2"


def test_a_drill_that_lost_the_app_to_another_ends_without_moving_it() -> None:
    app, spec = FakeApp(), drill_spec()
    status, actions = d.step("dr", spec, FailoverDrillStatus(), app.view(), T0, created=T0 - 1)
    assert status.phase == "Running"
    # Its claim failed: another drill annotated the app first.
    other, _ = tick("other", spec, FailoverDrillStatus(), app, T0)
    assert other.phase == "Running" and app.holder == "other"
    status, actions = tick("dr", spec, status, app, T0 + 2)
    assert status.result == "Failed"
    assert "FailoverDrill other took the app first; nothing moved" in status.message
    assert not any(isinstance(a, d.Move | d.Release) for a in actions)
    assert app.holder == "other"
