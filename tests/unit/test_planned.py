"""Planned switchovers in the decision core: writes stopped, replication drained, then the
move with a new epoch (RPO 0), writes resumed at the new site; refused (writes resumed
where the app is) when the drain does not finish in time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.annotations import Request, RequestOp
from controller.api.models import ResilientAppSpec, ResilientAppStatus
from controller.core import model as m
from controller.core.status import state_from_status, status_from_state
from tests.unit.test_decide import Run, spec_of

HOOK = {"webhook": {"url": "http://127.0.0.1:9/fence", "timeoutSeconds": 2}}


def planned_spec(
    fence: dict[str, Any] | None = None, drain: int = 30, **more: Any
) -> ResilientAppSpec:
    """Two sites with capacity and an object dataset at both."""
    raw = spec_of().model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["failover"]["planned"] = {"writeFence": fence or HOOK, "drainTimeoutSeconds": drain}
    raw["failover"].update(more)
    raw["replication"] = {
        "rpoTargetSeconds": 60,
        "objects": [
            {
                "name": "photos",
                "locations": [{"site": "use1", "bucket": "a"}, {"site": "usw2", "bucket": "b"}],
            }
        ],
    }
    return ResilientAppSpec.model_validate(raw)


def planned(request_id: str = "p1", site: str = "usw2", **kw: Any) -> Request:
    return Request(request_id, RequestOp.FAILOVER, site, planned=True, **kw)


def flow(pending: int, caught_up_at: float | None, epoch: int = 1) -> tuple[m.FlowProgress, ...]:
    return (m.FlowProgress("photos", "usw2", "use1", epoch, pending, caught_up_at),)


def fences(decision: m.Decision) -> list[m.FenceWrites]:
    return [a for a in decision.actions if isinstance(a, m.FenceWrites)]


def step(run: Run) -> m.PlannedStep | None:
    return run.state.planned.step if run.state.planned is not None else None


def answer(run: Run) -> m.RequestOutcome | None:
    return run.state.last_request


def settled(spec: ResilientAppSpec) -> Run:
    run = Run(spec=spec)
    run.rounds(4)  # DNS published, capacity set, zones Healthy
    assert run.state.active_site == "use1" and run.state.epoch == 1
    return run


def test_writes_are_stopped_then_replication_drains_then_the_app_moves_with_rpo_0() -> None:
    run = settled(planned_spec())
    first = run.round(request=planned())
    assert [(f.site, f.stop) for f in fences(first)] == [("use1", True)]
    assert run.state.active_site == "use1" and answer(run) is None
    assert step(run) is m.PlannedStep.STOP_WRITES
    assert run.state.planned is not None
    stopped = run.state.planned.stopped_at
    assert stopped is not None  # the fence answered (completed by the Run)

    # Replication still has pending changes: no move, however long (within the timeout).
    for _ in range(5):
        d = run.round(request=planned(), replication_flows=flow(3, None))
        assert run.state.active_site == "use1"
        assert not any(isinstance(a, m.ShiftTraffic) for a in d.actions)
        assert "photos: 3 pending" in d.trace.summary
    # Caught up, but by a pass that began before writes stopped: still no move.
    run.round(request=planned(), replication_flows=flow(0, stopped - 0.1))
    assert run.state.active_site == "use1"

    moved = run.round(request=planned(), replication_flows=flow(0, stopped + 0.2))
    assert run.state.active_site == "usw2" and run.state.epoch == 2
    record = run.state.last_failover
    assert record is not None and record.planned and record.rpo_seconds == 0.0
    assert record.outage_start is None and record.manual
    accepted = answer(run)
    assert accepted is not None and accepted.accepted
    assert moved.trace.rule == m.Verdict(m.Rule.PLANNED)
    kinds = [n.kind for n in moved.notes]
    assert m.NoteKind.DRAINED in kinds and m.NoteKind.FAILOVER in kinds
    shift = next(a for a in moved.actions if isinstance(a, m.ShiftTraffic))
    assert shift.active_site == "usw2" and shift.epoch == 2
    # DNS was set in that round (the Run completes actions): writes resume at usw2 next.
    resumed = run.round(request=planned())
    assert [(f.site, f.stop, f.epoch) for f in fences(resumed)] == [("usw2", False, 2)]
    done = run.round(request=planned())
    assert step(run) is m.PlannedStep.DONE
    assert any(n.kind is m.NoteKind.PLANNED_DONE for n in done.notes)
    run.rounds(3, request=planned())
    assert not any(fences(d) for d in run.decisions[-3:])  # each call once


def test_writes_resume_at_the_new_site_only_once_dns_points_there() -> None:
    run = settled(planned_spec())
    run.round(request=planned())
    run.apply = False  # nothing is carried out from here on
    d = run.round(request=planned(), replication_flows=flow(0, run.t))
    assert run.state.active_site == "usw2"
    later = run.round(request=planned())
    assert not fences(later)
    held = [h for h in later.held if isinstance(h.action, m.FenceWrites)]
    assert held and "waits for DNS to point at usw2" in held[0].reason
    assert any(isinstance(a, m.ShiftTraffic) for a in d.actions)


def test_a_drain_that_does_not_finish_in_time_refuses_and_resumes_writes_where_it_was() -> None:
    run = settled(planned_spec(drain=10))
    run.round(request=planned())
    for _ in range(12):
        d = run.round(request=planned(), replication_flows=flow(2, None))
        if run.state.last_request is not None:
            break
    answer = run.state.last_request
    assert answer is not None and not answer.accepted
    assert "did not drain within 10 s" in answer.reason and "photos: 2 pending" in answer.reason
    assert run.state.active_site == "use1" and run.state.epoch == 1
    assert [(f.site, f.stop) for f in fences(d)] == [("use1", False)]
    assert any(n.kind is m.NoteKind.PLANNED_ABORTED for n in d.notes)
    run.round(request=planned(), replication_flows=flow(0, run.t))
    assert step(run) is m.PlannedStep.ABORTED
    assert run.state.active_site == "use1"  # a drain after the refusal moves nothing


def test_an_unanswered_write_fence_is_bounded_by_the_drain_timeout() -> None:
    run = settled(planned_spec(drain=5))
    run.apply = False  # the webhook never answers
    for _ in range(8):
        run.round(request=planned(), replication_flows=flow(0, run.t))
    answer = run.state.last_request
    assert answer is not None and not answer.accepted and "not stopped within 5 s" in answer.reason
    assert run.state.active_site == "use1"


def test_without_a_fence_the_user_stops_writes_and_the_drain_is_waited_for_at_once() -> None:
    run = settled(planned_spec(fence={"none": {}}))
    d = run.round(request=planned())
    assert not fences(d)
    assert step(run) is m.PlannedStep.DRAIN
    assert run.state.planned is not None
    assert "stopped by the user" in run.state.planned.fence_answer
    run.round(request=planned(), replication_flows=flow(1, None))
    assert run.state.active_site == "use1"
    run.round(request=planned(), replication_flows=flow(0, run.t))
    assert run.state.active_site == "usw2"
    run.rounds(2, request=planned())
    assert step(run) is m.PlannedStep.DONE


def test_an_unplanned_request_does_not_wait_for_replication() -> None:
    """Regression guard: only a planned request waits; an ordinary one moves at once,
    whatever is pending (and its record says no RPO was measured)."""
    run = settled(planned_spec())
    run.round(request=Request("u1", RequestOp.FAILOVER, "usw2"), replication_flows=flow(9, None))
    assert run.state.active_site == "usw2"
    record = run.state.last_failover
    assert record is not None and not record.planned and record.rpo_seconds is None
    assert run.state.planned is None


def test_a_planned_request_the_move_would_refuse_is_refused_before_writes_stop() -> None:
    run = settled(planned_spec())
    d = run.round(request=planned(), down=["usw2"])
    d = run.rounds(3, request=planned(), down=["usw2"])
    assert run.state.last_request is not None and not run.state.last_request.accepted
    assert "usw2" in run.state.last_request.reason
    assert run.state.planned is None and not fences(d)


def test_an_outage_while_draining_still_fails_over_and_overtakes_the_planned_move() -> None:
    spec = planned_spec()
    raw = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["sites"].append({**raw["sites"][1], "name": "usw1", "priority": 0})
    run = settled(ResilientAppSpec.model_validate(raw))
    run.round(request=planned())
    for _ in range(6):
        run.round(request=planned(), down=["use1"], replication_flows=flow(5, None))
    assert run.state.active_site != "use1"
    move = run.state.planned
    assert move is not None and move.step in (m.PlannedStep.ABORT, m.PlannedStep.ABORTED)
    assert "overtaken" in move.message
    resumed = [f for d in run.decisions[-6:] for f in fences(d) if not f.stop]
    assert resumed and all(f.site == run.state.active_site for f in resumed)


def test_another_request_while_draining_is_refused_unless_forced() -> None:
    run = settled(planned_spec())
    run.round(request=planned())
    run.round(request=Request("x", RequestOp.FAILOVER, "usw2"), replication_flows=flow(1, None))
    assert run.state.last_request is not None and run.state.last_request.id == "x"
    assert not run.state.last_request.accepted and "under way" in run.state.last_request.reason
    assert run.state.active_site == "use1"


def test_a_planned_move_under_way_survives_a_round_trip_through_status() -> None:
    spec = planned_spec()
    run = settled(spec)
    decision = run.round(request=planned())
    decision = run.round(request=planned(), replication_flows=flow(1, None))
    status = status_from_state(
        replace(decision, state=run.state),
        spec,
        ResilientAppStatus(),
        observations=m.Observations(),
        running=None,
        generation=1,
        now=run.t,
    )
    wire = ResilientAppStatus.model_validate(status.to_wire())
    assert wire.planned_switchover is not None and wire.planned_switchover.step == "Drain"
    back = state_from_status(wire, spec)
    assert back.planned is not None
    before = run.state.planned
    assert before is not None
    assert (back.planned.step, back.planned.to_site, back.planned.epoch) == (
        before.step,
        "usw2",
        1,
    )
    assert back.planned.stopped_at is not None and before.stopped_at is not None
    assert abs(back.planned.stopped_at - before.stopped_at) < 0.001
    # A restarted operator carries on: the drain completes, the move happens once.
    run.state = replace(back, zones=run.state.zones)
    run.round(request=planned(), replication_flows=flow(0, run.t))
    assert run.state.active_site == "usw2" and run.state.last_failover is not None
    assert run.state.last_failover.planned


# --------------------------------------------------------------------------- invariants


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3),  # pending
            st.sampled_from(["none", "before", "after"]),  # caught up when
            st.booleans(),  # the fence (and every other action) is carried out
        ),
        min_size=1,
        max_size=25,
    ),
    st.sampled_from([HOOK, {"none": {}}]),
)
def test_never_moves_before_the_drain_and_never_resumes_writes_off_the_active_site(
    rounds: list[tuple[int, str, bool]], fence: dict[str, Any]
) -> None:
    run = settled(planned_spec(fence=fence, drain=12))
    run.round(request=planned())
    for pending, when, carried in rounds:
        run.apply = carried
        move = run.state.planned
        assert move is not None
        stopped = move.stopped_at
        caught = {
            "none": None,
            "before": (stopped - 1.0) if stopped is not None else None,
            "after": run.t,
        }[when]
        flows = flow(pending, caught)
        before = run.state
        d = run.round(request=planned(), replication_flows=flows)
        after = run.state
        if after.active_site != before.active_site:
            # Moved: only by the planned switchover, only with writes stopped and drained.
            assert before.planned is not None and before.planned.stopped_at is not None
            assert pending == 0 and when == "after"
            assert after.last_failover is not None and after.last_failover.rpo_seconds == 0.0
        for call in fences(d):
            if call.stop:
                assert call.site == "use1" == after.active_site
            else:  # writes resume only where the traffic goes
                assert call.site == after.active_site
        answer = after.last_request
        if answer is not None and not answer.accepted:
            assert after.active_site == "use1" and after.epoch == 1
    assert run.state.active_site in ("use1", "usw2")


def test_simulate_replays_a_planned_switchover_that_waits_for_the_lag_to_reach_zero() -> None:
    from controller.cli.simulate import Timeline, simulate

    timeline = Timeline.model_validate(
        {
            "duration": 60,
            "timeline": [
                {"at": 0, "replicationLag": {"usw2": 20}},
                {"at": 10, "request": {"op": "failover", "site": "usw2", "planned": True}},
                {"at": 30, "replicationLag": {"usw2": 0}},
            ],
        }
    )
    rows = simulate(planned_spec(drain=60), timeline)
    moved = [r for r in rows if r["activeSite"] == "usw2"]
    assert moved and moved[0]["time"] >= 30  # not before the lag reached 0
    kinds = [n["kind"] for r in rows for n in r["notes"]]
    assert kinds.index("PlannedSwitchoverStarted") < kinds.index("ReplicationDrained")
    assert "PlannedSwitchoverDone" in kinds
    assert rows[-1]["activeSite"] == "usw2"


def test_a_fence_removed_from_the_spec_meanwhile_leaves_the_resume_to_the_user() -> None:
    run = settled(planned_spec())
    run.round(request=planned())
    run.round(request=planned(), replication_flows=flow(0, run.t))
    assert run.state.active_site == "usw2"
    run.spec = planned_spec(fence={"none": {}})
    d = run.rounds(2, request=planned())
    assert step(run) is m.PlannedStep.DONE and not fences(d)
    assert any("resume writes at usw2 yourself" in n for n in run.notes(m.NoteKind.PLANNED_DONE))


def test_the_drain_reads_each_flow_from_its_status_entry() -> None:
    from controller.api.models import ReplicationStatus
    from controller.replication.figures import flow_progress

    def entry(**fields: Any) -> ReplicationStatus:
        base = {"dataset": "photos", "destination": "usw2", "kind": "Objects", "source": "use1"}
        return ReplicationStatus.model_validate({**base, "epoch": 3, **fields})

    objects, estimated, volumes, stopped = flow_progress(
        (
            entry(lastSyncTime="2026-12-06T10:00:05Z", pendingObjects=0),
            entry(lastSyncTime="2026-12-06T10:00:05Z", pendingObjects=9, pendingEstimated=True),
            entry(
                kind="Volumes",
                lastSyncTime="2026-12-06T10:00:09Z",
                newestCopyTime="2026-12-06T10:00:01Z",
            ),
            entry(lastSyncTime="2026-12-06T10:00:05Z", stopped=True),
        )
    )
    assert (objects.source, objects.epoch, objects.pending) == ("use1", 3, 0)
    assert objects.caught_up_at is not None and objects.caught_up_at % 60 == 5
    assert estimated.caught_up_at is None and estimated.pending == 9  # only an upper bound
    assert volumes.caught_up_at is not None and volumes.caught_up_at % 60 == 1  # the copy's time
    assert stopped.caught_up_at is None
