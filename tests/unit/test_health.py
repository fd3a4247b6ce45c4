"""Zone health: the debouncing state machine, by table and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.models import HealthPolicy
from controller.core.health import (
    ProbeOutcome,
    ProbeResult,
    ZoneHealth,
    ZoneKey,
    ZoneState,
    ZoneThresholds,
    aggregate_round,
    observe,
    round_interval,
)

KEY = ZoneKey("use1", "us-east-1a")
OK, FAIL, TIMEOUT = ProbeOutcome.OK, ProbeOutcome.FAIL, ProbeOutcome.TIMEOUT


DEFAULT = ZoneThresholds(3, 2)


def run(outcomes: list[ProbeOutcome], thresholds: ZoneThresholds = DEFAULT) -> list[ZoneState]:
    health, states = ZoneHealth(), []
    for i, outcome in enumerate(outcomes):
        health = observe(health, ProbeResult(KEY, outcome, float(i), 0.01), thresholds)
        states.append(health.state)
    return states


H, S, D, R = ZoneState.HEALTHY, ZoneState.SUSPECT, ZoneState.DOWN, ZoneState.RECOVERING


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([OK], [H]),
        ([FAIL], [S]),
        ([OK, FAIL, OK], [H, S, H]),
        ([OK, FAIL, FAIL, FAIL], [H, S, S, D]),
        ([OK, TIMEOUT, TIMEOUT, TIMEOUT], [H, S, S, D]),
        ([FAIL, FAIL, FAIL, OK, OK], [S, S, D, R, H]),
        ([FAIL, FAIL, FAIL, OK, FAIL], [S, S, D, R, D]),
        ([FAIL, FAIL, OK, FAIL, FAIL], [S, S, H, S, S]),
    ],
)
def test_transitions(outcomes: list[ProbeOutcome], expected: list[ZoneState]) -> None:
    assert run(outcomes) == expected


def test_failing_since_marks_the_first_failure_of_the_streak() -> None:
    health = ZoneHealth()
    for t, outcome in [(0.0, OK), (1.0, FAIL), (2.0, FAIL), (3.0, FAIL)]:
        health = observe(health, ProbeResult(KEY, outcome, t, 0.0), ZoneThresholds(3, 2))
    assert health.state is D
    assert health.failing_since == 1.0
    assert health.since == 3.0


def test_zone_is_up_when_any_endpoint_answers() -> None:
    rows = [
        ProbeResult(KEY, FAIL, 1.0, 0.2, "refused"),
        ProbeResult(KEY, OK, 1.0, 0.05, "HTTP 200"),
    ]
    verdict = aggregate_round(KEY, rows)
    assert verdict is not None and verdict.ok


def test_zone_times_out_only_when_every_endpoint_did() -> None:
    rows = [ProbeResult(KEY, TIMEOUT, 1.0, 0.5), ProbeResult(KEY, FAIL, 1.0, 0.1, "refused")]
    verdict = aggregate_round(KEY, rows)
    assert verdict is not None and verdict.outcome is FAIL
    assert aggregate_round(KEY, []) is None


outcomes = st.lists(st.sampled_from(list(ProbeOutcome)), max_size=60)
thresholds = st.builds(ZoneThresholds, st.integers(1, 6), st.integers(1, 6))


@given(outcomes, thresholds)
def test_down_needs_threshold_failures_in_a_row(seq: list[ProbeOutcome], t: ZoneThresholds) -> None:
    health, streak = ZoneHealth(), 0
    for i, outcome in enumerate(seq):
        before = health.state
        health = observe(health, ProbeResult(KEY, outcome, float(i), 0.0), t)
        streak = 0 if outcome is OK else streak + 1
        if health.state is D and before not in (D, R):
            assert streak >= t.failure


@given(outcomes, thresholds)
def test_healthy_after_down_needs_threshold_successes(
    seq: list[ProbeOutcome], t: ZoneThresholds
) -> None:
    health, streak, was_down = ZoneHealth(), 0, False
    for i, outcome in enumerate(seq):
        health = observe(health, ProbeResult(KEY, outcome, float(i), 0.0), t)
        streak = streak + 1 if outcome is OK else 0
        was_down = was_down or health.state is D
        if health.state is H and was_down:
            assert streak >= t.success
            was_down = False


@given(outcomes, thresholds)
def test_counters_match_the_tail_of_the_sequence(
    seq: list[ProbeOutcome], t: ZoneThresholds
) -> None:
    health = ZoneHealth()
    for i, outcome in enumerate(seq):
        health = observe(health, ProbeResult(KEY, outcome, float(i), 0.0), t)
    assert health.consecutive_failures == 0 or health.consecutive_successes == 0
    tail_fail = len(seq) - len("".join("x" if o is OK else "f" for o in seq).rstrip("f"))
    assert health.consecutive_failures == tail_fail


# --------------------------------------------------------------------------- round interval


@given(
    states=st.lists(st.sampled_from(list(ZoneState)), max_size=8),
    interval=st.integers(1, 3600),
    fast=st.one_of(st.none(), st.floats(0.1, 3600)),
)
def test_rounds_are_faster_only_while_a_zone_is_suspect_or_recovering(
    states: list[ZoneState], interval: int, fast: float | None
) -> None:
    fast = None if fast is None else min(fast, float(interval))
    policy = HealthPolicy(
        interval_seconds=interval, timeout_seconds=0.1, suspect_interval_seconds=fast
    )
    got = round_interval(states, policy)
    transitional = {ZoneState.SUSPECT, ZoneState.RECOVERING} & set(states)
    assert got == (fast if fast is not None and transitional else float(interval))
    assert got <= interval


def test_a_failing_zone_is_down_two_fast_rounds_after_its_first_failure() -> None:
    """At 1 s rounds, 0.5 s while Suspect, failureThreshold 3: Down 1 s after the first
    failed probe (2 s without the faster rounds)."""
    for fast, down_at in ((0.5, 1.0), (None, 2.0)):
        policy = HealthPolicy(
            interval_seconds=1, timeout_seconds=0.5, suspect_interval_seconds=fast
        )
        health, t = observe(ZoneHealth(), ProbeResult(KEY, OK, 0.0, 0.01), DEFAULT), 1.0
        first = t
        while health.state is not ZoneState.DOWN:
            health = observe(health, ProbeResult(KEY, FAIL, t, 0.01), DEFAULT)
            t += round_interval([health.state], policy)
        assert health.since is not None and health.since - first == down_at


def test_fast_rounds_never_come_sooner_than_the_probe_timeout() -> None:
    policy = HealthPolicy(interval_seconds=5, timeout_seconds=2, suspect_interval_seconds=0.5)
    assert round_interval([ZoneState.SUSPECT], policy) == 2.0
    assert round_interval([ZoneState.HEALTHY], policy) == 5.0
