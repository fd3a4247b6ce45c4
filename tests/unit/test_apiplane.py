"""API-plane health: thresholds, hysteresis and the evidence rules, by table and property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.apiplane import (
    ApiPlaneHealth,
    ApiPlaneState,
    ApiPlaneThresholds,
    CallOutcome,
    CallRecord,
    assess,
    figures,
)

T = (
    ApiPlaneThresholds.of()
)  # the API's defaults: window 120 s, min 4 calls, degraded 5 %/5 %/2 s, impaired 30 %/30 %/10 s
OK, THROTTLED, ERROR = CallOutcome.OK, CallOutcome.THROTTLED, CallOutcome.SERVER_ERROR


def calls(*outcomes: CallOutcome, latency: float = 0.05, start: float = 0.0) -> list[CallRecord]:
    return [CallRecord(start + i, o, latency) for i, o in enumerate(outcomes)]


def verdict(records: list[CallRecord], now: float = 100.0) -> ApiPlaneHealth:
    return assess(ApiPlaneHealth(), records, T, now)


@pytest.mark.parametrize(
    ("records", "state"),
    [
        (calls(OK, OK, OK), ApiPlaneState.UNKNOWN),  # too few calls for a verdict
        (calls(*[OK] * 20), ApiPlaneState.HEALTHY),
        (calls(*[OK] * 19, THROTTLED), ApiPlaneState.DEGRADED),  # 5 % throttled
        (calls(*[OK] * 19, ERROR), ApiPlaneState.DEGRADED),
        (calls(*[OK] * 7, *[THROTTLED] * 3), ApiPlaneState.IMPAIRED),  # 30 % throttled
        (calls(*[OK] * 7, *[CallOutcome.CAPACITY_ERROR] * 3), ApiPlaneState.IMPAIRED),
        (calls(*[OK] * 10, latency=3.0), ApiPlaneState.DEGRADED),
        (calls(*[OK] * 10, latency=12.0), ApiPlaneState.IMPAIRED),
        (calls(*[OK] * 10, *[CallOutcome.AUTH_ERROR] * 10), ApiPlaneState.HEALTHY),
        (calls(*[OK] * 10, *[CallOutcome.CLIENT_ERROR] * 10), ApiPlaneState.HEALTHY),
    ],
)
def test_levels(records: list[CallRecord], state: ApiPlaneState) -> None:
    assert verdict(records).state is state


def test_calls_outside_the_window_do_not_count() -> None:
    old = calls(*[ERROR] * 10, start=0.0)
    recent = calls(*[OK] * 10, start=500.0)
    assert figures(old + recent, now=510.0, window=120.0).errors == 0
    assert verdict(old + recent, now=510.0).state is ApiPlaneState.HEALTHY


def test_hysteresis_holds_impaired_until_well_below_the_level() -> None:
    impaired = verdict(calls(*[OK] * 6, *[THROTTLED] * 4))
    assert impaired.state is ApiPlaneState.IMPAIRED
    # 20 % throttled: below the impaired level (30 %) but not below half of it (15 %).
    holding = assess(impaired, calls(*[OK] * 8, *[THROTTLED] * 2), T, 100.0)
    assert holding.state is ApiPlaneState.IMPAIRED
    assert holding.since == impaired.since
    # 10 %: below half of impaired, still above degraded (5 %) -> one step down only.
    stepping = assess(holding, calls(*[OK] * 9, THROTTLED), T, 101.0)
    assert stepping.state is ApiPlaneState.DEGRADED
    # all fine, but Degraded is left only below half of its level: 0 % is.
    healthy = assess(stepping, calls(*[OK] * 10), T, 102.0)
    assert healthy.state is ApiPlaneState.HEALTHY


def test_silence_is_not_recovery() -> None:
    impaired = verdict(calls(*[THROTTLED] * 10))
    later = assess(impaired, calls(OK), T, 100.0)  # one call: not enough evidence
    assert later.state is ApiPlaneState.IMPAIRED


def test_a_verdict_with_no_evidence_for_two_windows_decays_to_unknown() -> None:
    """Reproduced: an Impaired gate that nothing probes refuses every call, so no evidence
    ever came to lift it (the global DNS gate stayed Impaired for a day)."""
    impaired = verdict(calls(*[THROTTLED] * 10))
    assert impaired.state is ApiPlaneState.IMPAIRED and impaired.since == 100.0
    quiet = assess(impaired, [], T, 100.0 + 2 * T.window - 1)
    assert quiet.state is ApiPlaneState.IMPAIRED  # not yet
    decayed = assess(impaired, [], T, 100.0 + 2 * T.window)
    assert decayed.state is ApiPlaneState.UNKNOWN
    assert "no longer stands" in decayed.reason
    # Healthy never decays (it is no reason to refuse anything).
    healthy = verdict(calls(*[OK] * 10))
    assert assess(healthy, [], T, 10_000.0).state is ApiPlaneState.HEALTHY


def test_percentiles_nearest_rank() -> None:
    records = [*calls(*[OK] * 100, latency=0.1), CallRecord(50.5, OK, 9.0)]
    numbers = figures(records, 100.0, 120.0)
    assert numbers.p50 == 0.1
    assert numbers.p99 == 0.1  # 1 slow call in 101 is the 100th percentile, not the 99th


outcomes = st.lists(st.sampled_from(list(CallOutcome)), min_size=0, max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.lists(outcomes, min_size=1, max_size=8))
def test_impaired_only_on_evidence_and_deterministic(rounds: list[list[CallOutcome]]) -> None:
    health, now = ApiPlaneHealth(), 0.0
    history: list[CallRecord] = []
    for batch in rounds:
        history += [CallRecord(now + i * 0.01, o, 0.05) for i, o in enumerate(batch)]
        now += 1.0
        again = assess(health, history, T, now)
        health = assess(health, history, T, now)
        assert again == health
        numbers = figures(history, now, T.window)
        if health.state is ApiPlaneState.IMPAIRED and numbers.calls >= T.min_calls:
            # Impaired is either reached now or held by hysteresis above half the level.
            assert (
                numbers.error_share >= T.impaired.error_share * T.recovery
                or numbers.throttle_share >= T.impaired.throttle_share * T.recovery
            )


def test_transfers_count_for_errors_but_not_for_latency() -> None:
    """A slow upload of a large object says nothing about the API plane; its failure does."""
    now = 100.0
    slow_uploads = [CallRecord(now, CallOutcome.OK, 60.0, transfer=True) for _ in range(10)]
    quick_reads = [CallRecord(now, CallOutcome.OK, 0.05) for _ in range(10)]
    numbers = figures([*slow_uploads, *quick_reads], now, 60)
    assert (numbers.calls, numbers.p99) == (20, 0.05)
    only_transfers = figures(slow_uploads, now, 60)
    assert only_transfers.p99 is None and only_transfers.p50 is None
    failed = [CallRecord(now, CallOutcome.TIMEOUT, 60.0, transfer=True) for _ in range(10)]
    assert figures(failed, now, 60).errors == 10
