"""Standby readiness, capacity coming up, and the old site shrinking only once the new one's
capacity is Ready (issue 20 items 2 and 3, issue 19's sequencing): the core's rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.models import ResilientAppStatus
from controller.core import decide as core
from controller.core import model as m
from controller.core.capacity import (
    CapacityReading,
    ZoneReading,
    capacity_causes,
    per_zone_counts,
    standby_readiness,
)
from controller.core.status import state_from_status, status_from_state
from tests.unit.test_decide import SPEC, Run, spec_of

USE1, USW2 = SPEC.sites


def settled(run: Run) -> None:
    """Rounds until both sites run what they are asked (and their drivers said so)."""
    run.rounds(3)


def shrinks(decision: m.Decision, site: str, before: int) -> bool:
    return any(
        isinstance(a, m.SetCapacity) and a.site == site and sum(n for _, n in a.zones) < before
        for a in decision.actions
    )


def fail_over(run: Run) -> m.Decision:
    """use1 goes Down (three failed rounds): the app fails over to usw2."""
    for _ in range(3):
        decision = run.round(down=["use1"])
    assert run.state.active_site == "usw2"
    return decision


# --------------------------------------------------------------------------- readiness


def test_a_standby_with_too_little_capacity_is_said_not_ready_before_any_failover() -> None:
    run = Run(cap={"usw2": 1})
    decision = run.rounds(3)
    (readiness,) = decision.readiness
    assert readiness.site == "usw2" and readiness.ready is False
    assert readiness.causes == ("1/2 instances Ready (standby runs 1 per zone)",)
    assert (readiness.ready_instances, readiness.wanted, readiness.failover_needs) == (1, 2, 4)
    assert run.state.epoch == 1  # nothing has failed over
    said = run.notes(m.NoteKind.STANDBY_NOT_READY)
    assert said == ["standby usw2: not ready: 1/2 instances Ready (standby runs 1 per zone)"]

    run.cap.clear()
    decision = run.rounds(2)
    assert decision.readiness[0].ready is True
    assert run.notes(m.NoteKind.STANDBY_READY) == [
        "standby usw2: ready (2/2 instances Ready, a failover asks 4)"
    ]
    assert len(run.notes(m.NoteKind.STANDBY_NOT_READY)) == 1  # said once, not every round


def test_readiness_is_unknown_until_capacity_is_read_and_names_every_cause() -> None:
    site = USW2
    unknown = standby_readiness(site, None, None)
    assert unknown.ready is None and unknown.causes == ("capacity not read yet",)
    unreadable = standby_readiness(site, CapacityReading(5.0, error="AccessDenied"), None)
    assert unreadable.ready is None
    assert unreadable.causes == ("capacity unreadable: AccessDenied",)
    zones_down = standby_readiness(site, None, "0/2 zones Healthy (needs 1)")
    assert zones_down.ready is False
    assert zones_down.causes == ("0/2 zones Healthy (needs 1)", "capacity not read yet")

    reading = CapacityReading(
        7.0,
        (ZoneReading("us-west-2a", 1, 1), ZoneReading("us-west-2b", 1, 1)),
        maximum=3,
        headroom=1,
        failures=("Launching a new EC2 instance: InsufficientInstanceCapacity",),
        unit="instances InService",
    )
    ready, causes, count = capacity_causes(site, reading)
    assert (ready, count) == (False, 2)
    assert causes == (
        "scale-up failed: Launching a new EC2 instance: InsufficientInstanceCapacity",
        "headroom: the quota allows 1 more instance(s), a failover needs 2 more (4 in all)",
    )


@given(
    per_zone=st.integers(0, 6),
    standby=st.integers(0, 6),
    ready=st.lists(st.integers(0, 8), min_size=2, max_size=2),
    headroom=st.none() | st.integers(0, 20),
)
def test_ready_means_every_figure_suffices(
    per_zone: int, standby: int, ready: list[int], headroom: int | None
) -> None:
    raw = USW2.model_dump(by_alias=True)
    raw["capacity"] = {
        "perZone": per_zone,
        "standbyPerZone": standby,
        "autoScalingGroup": {"name": "web"},
    }
    site = type(USW2).model_validate(raw)
    zones = tuple(ZoneReading(z, n, n) for z, n in zip(site.zones, ready, strict=True))
    reading = CapacityReading(1.0, zones, headroom=headroom)
    verdict, causes, count = capacity_causes(site, reading)
    wanted = sum(per_zone_counts(site, standby).values())
    counted = sum(ready) if standby > 0 else 0  # zones asked to run nothing do not count
    assert count == counted
    more = per_zone * 2 - sum(ready)
    fits = headroom is None or more <= headroom
    assert verdict is (counted >= wanted and fits)
    assert bool(causes) is not verdict


# --------------------------------------------------------------------------- coming up


def test_capacity_coming_up_after_a_failover_is_reported_with_its_time() -> None:
    run = Run()
    settled(run)
    decided = fail_over(run)
    record = run.state.last_failover
    assert record is not None
    run.rounds(3)
    ready = run.notes(m.NoteKind.CAPACITY_READY)
    words = "capacity of usw2 (us-west-2) Ready: 4/4 instances Ready"
    assert any(n.startswith(words) for n in ready)
    applied = run.state.capacity["usw2"]
    assert applied.ready_at is not None and applied.total == 4
    asked = core.capacity_asked_at(run.state, "usw2", applied.applied_at)
    assert asked == record.decided_at
    status = status_from_state(
        run.decisions[-1],
        SPEC,
        ResilientAppStatus(),
        observations=run.obs_of(down=["use1"]),
        running=None,
        generation=1,
        now=run.t,
    )
    site = next(s for s in status.sites if s.name == "usw2")
    assert site.capacity is not None and site.capacity.ready_seconds == pytest.approx(
        applied.ready_at - record.decided_at, abs=1e-3
    )
    capacity = next(c for c in status.conditions if c.type == "CapacityReady")
    assert (capacity.status, capacity.reason) == ("True", "CapacityReady")
    assert decided.trace.rule.rule is m.Rule.SITE_DOWN


def test_the_old_site_shrinks_only_once_the_new_capacity_is_ready() -> None:
    run = Run(spec=spec_of(readiness={"capacityTimeoutSeconds": 600}), cap={"usw2": 2})
    settled(run)
    run.cap.clear()
    run.rounds(2)
    run.cap["usw2"] = 2  # the failover's scale-up of usw2 (2 -> 4) never comes up
    fail_over(run)
    for _ in range(5):
        decision = run.round(down=["use1"])
        assert not shrinks(decision, "use1", 6)
    held = {h.action.site: h.reason for h in decision.held if isinstance(h.action, m.SetCapacity)}
    assert held["use1"] == (
        "waits for the capacity of usw2 to be Ready (2/4 Ready) before use1 shrinks, "
        "at most 600 s after it was set"
    )
    assert run.state.capacity["use1"].total == 6

    run.cap.clear()  # the scale-up completes: Ready at the next reading, then use1 shrinks
    decision = run.round(down=["use1"])
    assert run.state.capacity["usw2"].ready_at is not None
    assert shrinks(decision, "use1", 6)


def test_after_the_bounded_wait_the_old_site_shrinks_and_says_why() -> None:
    run = Run(spec=spec_of(readiness={"capacityTimeoutSeconds": 20}))
    settled(run)
    run.cap["usw2"] = 2
    fail_over(run)
    shrunk_at = None
    for _ in range(40):
        decision = run.round(down=["use1"])
        if shrinks(decision, "use1", 6):
            shrunk_at = run.t - 1
            break
    applied = run.state.capacity["usw2"]
    assert shrunk_at is not None and shrunk_at - applied.applied_at >= 20
    facts = dict(decision.trace.facts)
    assert facts["capacity"].startswith(
        "use1 shrinks although the capacity of usw2 is not Ready after 2"
    )
    (late,) = run.notes(m.NoteKind.CAPACITY_NOT_READY)
    assert late.startswith("capacity not Ready: usw2: 2/4 instances Ready after 2")
    assert late.endswith(
        "; use1 no longer wait(s) for it and shrink(s) now (readiness.capacityTimeoutSeconds 20)"
    )
    status = status_from_state(
        decision,
        run.spec,
        ResilientAppStatus(),
        observations=run.obs_of(down=["use1"]),
        running=None,
        generation=1,
        now=run.t,
    )
    condition = next(c for c in status.conditions if c.type == "CapacityReady")
    assert (condition.status, condition.reason) == ("False", "CapacityNotReady")
    assert condition.message == "usw2: 2/4 instances Ready after 20 s"


def test_the_old_site_waits_without_bound_while_the_new_sites_scale_up_is_not_carried_out() -> None:
    """The bound counts from when the new site's capacity was set: while that change is
    not carried out (held, or failing every round), the old site keeps its capacity."""
    run = Run(spec=spec_of(readiness={"capacityTimeoutSeconds": 20}))
    settled(run)
    run.apply = False
    for _ in range(100):  # five times the bound
        decision = run.round(down=["use1"])
        assert not shrinks(decision, "use1", 6)
        for action in decision.actions:
            if not (isinstance(action, m.SetCapacity) and action.site == "usw2"):
                run.state = core.complete(run.state, action, run.t - 0.5, "C")
    assert run.state.active_site == "usw2" and run.state.capacity["use1"].total == 6
    held = {h.action.site: h.reason for h in decision.held if isinstance(h.action, m.SetCapacity)}
    assert held["use1"] == "waits for usw2 to reach its capacity before use1 shrinks"


def test_a_timeout_of_0_shrinks_the_old_site_once_the_new_capacity_is_set() -> None:
    """0 does not mean "never": the old site shrinks as soon as the new site's capacity
    was set, without waiting for it to be Ready (docs/how-it-decides.md)."""
    run = Run(spec=spec_of(readiness={"capacityTimeoutSeconds": 0}))
    settled(run)
    run.cap["usw2"] = 2  # never Ready
    fail_over(run)
    decision = run.round(down=["use1"])
    assert shrinks(decision, "use1", 6)
    assert run.state.capacity["usw2"].ready_at is None


def test_capacity_not_ready_is_said_once_across_a_restart() -> None:
    """A restarted operator rebuilt its state from the status, which did not keep that the
    capacity was said not Ready, and sent the CapacityNotReady Event a second time."""
    run = Run(spec=spec_of(readiness={"capacityTimeoutSeconds": 5}))
    settled(run)
    run.cap["usw2"] = 2
    fail_over(run)
    for _ in range(8):
        decision = run.round(down=["use1"])
    assert len(run.notes(m.NoteKind.CAPACITY_NOT_READY)) == 1
    status = status_from_state(
        decision,
        run.spec,
        ResilientAppStatus(),
        observations=run.obs_of(down=["use1"]),
        running=None,
        generation=1,
        now=run.t,
    )
    run.state = state_from_status(ResilientAppStatus.model_validate(status.to_wire()), run.spec)
    assert run.state.capacity["usw2"].overdue
    run.rounds(3, down=["use1"])
    assert len(run.notes(m.NoteKind.CAPACITY_NOT_READY)) == 1


@settings(max_examples=60, deadline=None)
@given(
    caps=st.lists(st.none() | st.integers(0, 4), min_size=1, max_size=40),
    timeout=st.integers(0, 30),
)
def test_serving_capacity_never_falls_before_ready_or_the_bound(
    caps: list[int | None], timeout: int
) -> None:
    """Whatever the new site's driver reports, the old site's shrink comes only after a
    reading counted the new site's capacity Ready, or once the bound has passed."""
    run = Run(spec=spec_of(readiness={"capacityTimeoutSeconds": timeout}))
    settled(run)
    fail_over(run)
    for cap in caps:
        if cap is None:
            run.cap.pop("usw2", None)
        else:
            run.cap["usw2"] = cap
        before = run.state.capacity["use1"].total
        decision = run.round(down=["use1"])
        if shrinks(decision, "use1", before):
            applied = decision.state.capacity["usw2"]
            assert applied.ready_at is not None or run.t - 1 - applied.applied_at >= timeout


def test_ready_time_is_kept_in_the_status() -> None:
    run = Run()
    settled(run)
    decision = run.decisions[-1]
    status = status_from_state(
        decision,
        SPEC,
        ResilientAppStatus(),
        observations=run.obs_of(),
        running=None,
        generation=1,
        now=run.t,
    )
    wire = ResilientAppStatus.model_validate(status.to_wire())
    rebuilt = state_from_status(wire, SPEC)
    for name, applied in run.state.capacity.items():
        assert applied.ready_at is not None
        assert rebuilt.capacity[name].ready_at == pytest.approx(applied.ready_at, abs=1e-3)
    standby = next(c for c in status.conditions if c.type == "StandbyReady")
    assert (standby.status, standby.reason) == ("True", "StandbyReady")
    site = next(s for s in wire.sites if s.name == "usw2")
    assert site.readiness is not None and site.readiness.ready == "True"


def test_readings_taken_before_the_capacity_was_set_prove_nothing() -> None:
    run = Run()
    run.round()
    applied = run.state.capacity["usw2"]
    stale = CapacityReading(applied.applied_at - 0.1, (ZoneReading("us-west-2a", 9, 9),))
    extra: dict[str, Any] = {"capacity": {"usw2": stale}}
    decision = run.round(**extra)
    assert decision.state.capacity["usw2"].ready_at is None
