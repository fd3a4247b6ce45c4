"""ZoneEvacuation drills: the drill's pure core against the app's real decision core.

The app here is the decision core itself (:func:`controller.core.decide.decide`), round
by round, with its status written by :func:`controller.core.status.status_from_state` and
read by the drill through :func:`controller.core.drill.app_view`, and the drill's Move and
Release carried out on the app's annotations as the operator does: the whole pure path of
a zone drill, without the API server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.annotations import REQUEST, ManualOperations
from controller.api.conditions import parse_rfc3339, rfc3339
from controller.api.events import EventReason
from controller.api.models import (
    FailoverDrillSpec,
    FailoverDrillStatus,
    ResilientAppSpec,
    ResilientAppStatus,
)
from controller.api.names import DRILL_ANNOTATION
from controller.core import drill as d
from controller.core import model as m
from controller.core.health import ZoneKey
from controller.core.status import state_from_status, status_from_state
from tests.factories import app_spec
from tests.unit.test_decide import Run, values

T0 = parse_rfc3339("2026-03-03T10:00:00Z")
B = ZoneKey("use1", "us-east-1b")
ALL = ("192.0.2.1", "192.0.2.2", "192.0.2.3")
WITHOUT_B = ("192.0.2.1", "192.0.2.3")


def raw_spec(**failover: Any) -> dict[str, Any]:
    raw = app_spec()
    for index, site in enumerate(raw["sites"]):
        site["zoneTargets"] = [
            {"zone": zone, "values": [f"192.0.{index + 2}.{i + 1}"]}
            for i, zone in enumerate(site["zones"])
        ]
        site["trafficTargets"] = []
    raw["failover"] = {
        "mode": "Automatic",
        "minDwellSeconds": 0,
        "zonalEvacuation": {"restoreAfterSeconds": 5},
        **failover,
    }
    return raw


def zone_drill(**overrides: Any) -> FailoverDrillSpec:
    raw: dict[str, Any] = {
        "app": "web",
        "kind": "ZoneEvacuation",
        "zone": "us-east-1b",
        "schedule": {"once": rfc3339(T0)},
        "holdSeconds": 20,
        "stepTimeoutSeconds": 30,
        **overrides,
    }
    return FailoverDrillSpec.model_validate(raw)


@dataclass
class CoreApp:
    """The app: the decision core, its status and its annotations."""

    raw: dict[str, Any] = field(default_factory=raw_spec)
    annotations: dict[str, str] = field(default_factory=dict)
    status: ResilientAppStatus = field(default_factory=ResilientAppStatus)
    run: Run = field(init=False)

    def __post_init__(self) -> None:
        self.run = Run(spec=ResilientAppSpec.model_validate(self.raw), t=T0 - 10)
        for _ in range(5):
            self.round(self.run.t)

    def body(self) -> dict[str, Any]:
        return {
            "spec": self.raw,
            "status": self.status.to_merge_patch(),
            "metadata": {"annotations": dict(self.annotations)},
        }

    def view(self) -> d.AppView:
        return d.app_view(self.body())

    def apply(self, name: str, actions: tuple[d.Action, ...]) -> None:
        """What the operator does with a drill's actions."""
        for action in actions:
            if isinstance(action, d.Move):
                self.annotations[REQUEST] = action.request.serialise()
                self.annotations[DRILL_ANNOTATION] = name
            elif isinstance(action, d.Release) and self.annotations.get(DRILL_ANNOTATION) == name:
                del self.annotations[DRILL_ANNOTATION]

    def round(self, now: float, down: set[str] | frozenset[str] = frozenset()) -> m.Decision:
        """One round of the app's worker at ``now``."""
        self.run.t = now
        asked = ManualOperations.from_annotations(self.annotations)
        extra: dict[str, Any] = {
            "request": asked.request,
            "drill": self.annotations.get(DRILL_ANNOTATION),
        }
        decision = self.run.round(down=down, **extra)
        obs = self.run.obs_of(down=down, **extra)
        self.status = status_from_state(
            replace_state(decision, self.run.state),
            self.run.spec,
            self.status,
            observations=obs,
            running=None,
            generation=1,
            now=now,
        )
        return decision

    def published(self) -> tuple[str, ...]:
        """use1's DNS values as last set."""
        shifts = [a for a in self.run.actions() if isinstance(a, m.ShiftTraffic)]
        return values(shifts[-1], "use1")


def replace_state(decision: m.Decision, state: m.AppState) -> m.Decision:
    """The decision with the state after its actions were carried out (as the worker
    writes the status once its actions are done)."""
    return m.Decision(
        state, (), (), decision.trace, decision.notes, decision.phase, decision.outcome
    )


@dataclass
class Drive:
    """A drill and its app, one second apart: the drill ticks, then the app decides."""

    spec: FailoverDrillSpec = field(default_factory=zone_drill)
    app: CoreApp = field(default_factory=CoreApp)
    status: FailoverDrillStatus = field(default_factory=FailoverDrillStatus)
    now: float = T0
    name: str = "zd"
    actions: list[d.Action] = field(default_factory=list)

    def second(
        self, down: set[str] | frozenset[str] = frozenset(), abort: str | None = None
    ) -> None:
        self.status, actions = d.step(
            self.name,
            self.spec,
            self.status,
            self.app.view(),
            self.now,
            created=T0 - 3600,
            abort=abort,
        )
        self.app.apply(self.name, actions)
        self.actions.extend(actions)
        self.app.round(self.now, down)
        self.now += 1.0

    def until(self, done: Any, limit: int = 300, **kwargs: Any) -> None:
        for _ in range(limit):
            if done(self):
                return
            self.second(**kwargs)
        raise AssertionError(f"not reached: {self.status}")

    def step_running(self) -> str | None:
        running = [s.name for s in self.status.steps if s.result == "Running"]
        return running[-1] if running else None

    def notices(self) -> list[EventReason]:
        return [a.reason for a in self.actions if isinstance(a, d.Notice)]

    def steps(self) -> list[tuple[str, str]]:
        return [(s.name, s.result) for s in self.status.steps]


def holding(drive: Drive) -> bool:
    return drive.step_running() == "hold"


def ended(drive: Drive) -> bool:
    return drive.status.result is not None


def test_a_zone_drill_takes_the_zone_out_holds_and_puts_it_back() -> None:
    drive = Drive()
    drive.until(holding)
    assert drive.status.zone == "use1/us-east-1b"
    assert drive.app.published() == WITHOUT_B  # the zone's DNS value is out
    assert drive.app.status.drill_evacuation is not None
    assert drive.app.status.phase == "Healthy"  # on purpose: no trouble of the app's
    assert drive.app.annotations[DRILL_ANNOTATION] == "zd"
    assert drive.status.rto_seconds is not None and 0 <= drive.status.rto_seconds < 3
    drive.until(ended)
    assert drive.status.result == "Succeeded", drive.status.message
    assert drive.steps() == [
        ("preflight", "Succeeded"),
        ("evacuate", "Succeeded"),
        ("hold", "Succeeded"),
        ("restore", "Succeeded"),
        ("verify", "Succeeded"),
    ]
    hold = next(s for s in drive.status.steps if s.name == "hold")
    assert hold.finished_time is not None
    assert parse_rfc3339(hold.finished_time) - parse_rfc3339(hold.started_time) >= 20
    assert drive.status.revert_rto_seconds is not None
    assert drive.status.message.startswith("took use1/us-east-1b out of traffic and back")
    assert drive.app.published() == ALL
    assert B not in drive.app.run.state.evacuated
    assert DRILL_ANNOTATION not in drive.app.annotations
    assert drive.notices() == [
        EventReason.DRILL_STARTED,
        EventReason.DRILL_ZONE_EVACUATED,
        EventReason.DRILL_ZONE_RESTORED,
        EventReason.DRILL_SUCCEEDED,
    ]
    assert drive.app.run.state.epoch == 1 and drive.app.run.state.failover_times == ()


def test_a_zone_of_the_site_failing_its_probes_aborts_and_restores_at_once() -> None:
    drive = Drive()
    drive.until(holding)
    drive.second(down={"use1/us-east-1c"})  # one failed probe: Suspect
    drive.until(ended, down={"use1/us-east-1c"})
    assert drive.status.result == "Aborted"
    assert drive.status.abort_reason == (
        "zones of use1 still serving: 1 not Healthy (us-east-1c=Suspect), more than 0"
    )
    assert [name for name, _ in drive.steps()] == [
        "preflight",
        "evacuate",
        "hold",
        "restore",
        "verify",
    ]
    assert dict(drive.steps())["hold"] == "Failed"
    assert B not in drive.app.run.state.evacuated
    assert EventReason.DRILL_ABORTING in drive.notices()
    assert drive.notices()[-1] is EventReason.DRILL_ABORTED


def test_a_real_outage_during_the_hold_wins_and_the_drill_reports_it() -> None:
    """Abort conditions that would catch it first left out (onDegraded off, 2 zones may
    fail): the decision core ends the drill's claim on its own, the drill sees its zone
    taken back and aborts; the failed zone c is evacuated for real, b is back."""
    spec = zone_drill(abort={"onDegraded": False, "maxUnhealthyTargetZones": 2})
    drive = Drive(spec=spec)
    drive.until(holding)
    drive.until(ended, down={"use1/us-east-1c"})
    assert drive.status.result == "Aborted"
    reason = drive.status.abort_reason or ""
    assert reason.startswith("the app took zone use1/us-east-1b back from the drill")
    assert "(back in traffic)" in reason
    state = drive.app.run.state
    assert state.evacuated == frozenset({ZoneKey("use1", "us-east-1c")})
    assert state.drill_evacuation is None
    assert drive.app.published() == ("192.0.2.1", "192.0.2.2")
    assert (
        "put back by the app, not the drill"
        in {s.name: s.message for s in drive.status.steps}["restore"]
    )


def test_the_preflight_refuses_a_zone_that_is_not_of_the_active_site() -> None:
    drive = Drive(spec=zone_drill(zone="us-west-2a"))
    drive.until(ended)
    assert drive.status.result == "Failed"
    assert "us-west-2a is not a zone of the active site use1" in drive.status.message
    assert drive.steps() == [("preflight", "Failed")]
    assert REQUEST not in drive.app.annotations
    assert EventReason.DRILL_REFUSED in drive.notices()


def test_the_preflight_refuses_when_the_zones_left_cannot_carry_the_traffic() -> None:
    app = CoreApp(raw=raw_spec(minHealthyTargetZones=3))
    drive = Drive(app=app)
    drive.until(ended)
    assert drive.status.result == "Failed"
    assert (
        "without us-east-1b, use1 would serve from 2 Healthy zone(s) (us-east-1a, "
        "us-east-1c); needs 3 (failover.minHealthyTargetZones)"
    ) in drive.status.message
    assert drive.app.published() == ALL


def test_the_preflight_refuses_while_the_app_is_degraded() -> None:
    drive = Drive()
    for _ in range(4):
        drive.app.round(drive.app.run.t + 1, down={"usw2/us-west-2a"})
    drive.now = drive.app.run.t
    drive.spec = zone_drill(schedule={"once": rfc3339(drive.now)})
    drive.until(ended, down={"usw2/us-west-2a"})
    assert "the app is Degraded, not Healthy" in drive.status.message


def test_a_user_abort_during_the_hold_restores_the_zone() -> None:
    drive = Drive()
    drive.until(holding)
    drive.second(abort="1")
    drive.until(ended)
    assert drive.status.result == "Aborted"
    assert drive.status.abort_reason == "aborted by a user (lifeboat drill abort)"
    assert drive.app.published() == ALL


def test_an_operator_restart_mid_hold_carries_on_from_both_statuses() -> None:
    """The drill's status and the app's, written to the API server and read back by a new
    operator: the app's core is rebuilt from its status (keeping the zone out as the
    drill's), the drill carries on with its hold and puts the zone back."""
    drive = Drive()
    drive.until(holding)
    drive.second()
    drill_wire = FailoverDrillStatus.model_validate(drive.status.to_merge_patch())
    app_wire = ResilientAppStatus.model_validate(drive.app.status.to_merge_patch())
    rebuilt = state_from_status(app_wire, drive.app.run.spec)
    assert rebuilt.drill_evacuation == drive.app.run.state.drill_evacuation
    drive.status = drill_wire
    drive.app.status = app_wire
    drive.app.run.state = rebuilt
    drive.now += 60  # the operator was away longer than the hold
    drive.until(ended)
    assert drive.status.result == "Succeeded", drive.status.message
    assert drive.app.published() == ALL


def test_a_drill_deleted_mid_hold_leaves_no_zone_out() -> None:
    drive = Drive()
    drive.until(holding)
    del drive.app.annotations[DRILL_ANNOTATION]  # the operator's forget(): the drill went
    drive.app.round(drive.now)
    assert B not in drive.app.run.state.evacuated
    assert drive.app.published() == ALL


ROUND = st.tuples(
    st.sets(st.sampled_from(["use1/us-east-1a", "use1/us-east-1b", "use1/us-east-1c"])),
    st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(ROUND, min_size=1, max_size=60),
    st.integers(min_value=0, max_value=3),
    st.booleans(),
)
def test_every_zone_drill_ends_and_never_leaves_its_zone_out_while_healthy(
    history: list[tuple[set[str], bool]], allowed: int, on_degraded: bool
) -> None:
    """Whatever fails and whenever a user aborts: the run ends within its time bounds, the
    drill's claim is gone once it ended, and its zone, Healthy, is back in traffic."""
    spec = zone_drill(abort={"maxUnhealthyTargetZones": allowed, "onDegraded": on_degraded})
    drive = Drive(spec=spec)
    for down, abort in history:
        if ended(drive):
            break
        drive.second(down=down, abort="1" if abort else None)
    for _ in range(200):  # every zone answers again
        if ended(drive):
            break
        drive.second()
    assert ended(drive), drive.status
    for _ in range(10):
        drive.app.round(drive.now)
        drive.now += 1.0
    state = drive.app.run.state
    assert state.drill_evacuation is None
    assert drive.app.status.drill_evacuation is None
    if state.zone(B).healthy and state.active_site == "use1":
        assert B not in state.evacuated or drive.now - (state.zone(B).since or 0) < 5
