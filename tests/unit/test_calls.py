"""CloudCalls: the region gate, the retry budget and the impaired-region fence."""

from __future__ import annotations

import pytest

from controller.api.models import ApiPlanePolicy, RetryBudget
from controller.core.apiplane import ApiPlaneState, ApiPlaneThresholds, CallOutcome, CallRecord
from controller.providers.calls import (
    EAGER_JUDGE_CALLS,
    JUDGE_INTERVAL,
    CloudCalls,
    RegionGate,
    RegionImpaired,
    TokenBucket,
)
from controller.providers.outcomes import classify
from controller.providers.retry import RetryPolicy
from tests.factories import client_error

FAST = RetryPolicy(attempts=5, deadline_seconds=5, base_seconds=0.001, max_backoff_seconds=0.002)


def calls(tokens: int = 10, refill_per_minute: float = 0.0) -> CloudCalls:
    budget = RetryBudget(tokens=tokens, refill_per_minute=refill_per_minute)
    return CloudCalls(
        "aws-test",
        classify,
        api_plane=ApiPlanePolicy(window_seconds=60, min_calls=4, retry_budget=budget),
        retry_policy=FAST,
    )


def state_of(gate: RegionGate) -> ApiPlaneState:
    return gate.health.state


def test_budget_refills_up_to_its_scaled_capacity() -> None:
    budget = TokenBucket(capacity=4, refill_per_second=1.0)
    budget.stamp = 0.0
    assert [budget.take(0.0) for _ in range(5)] == [True] * 4 + [False]
    assert budget.level(2.0) == 2.0
    budget.scale = 0.25
    assert budget.level(100.0) == 1.0  # a quarter of 4


async def test_retries_stop_when_the_budget_is_spent() -> None:
    cloud = calls(tokens=2)
    sent = 0

    def throttled() -> None:
        nonlocal sent
        sent += 1
        raise client_error("Throttling", 400)

    with pytest.raises(Exception, match="Throttling"):
        await cloud.call("us-east-1", "ec2", "DescribeInstances", throttled)
    assert sent == 3  # the first attempt and two budgeted retries, not FAST.attempts
    sent = 0
    with pytest.raises(Exception, match="Throttling"):
        await cloud.call("us-east-1", "ec2", "DescribeInstances", throttled)
    assert sent == 1  # no tokens left: no retry at all


async def test_impaired_region_gets_probes_only() -> None:
    cloud = calls()
    for _ in range(6):
        with pytest.raises(Exception, match="RequestLimitExceeded"):
            await cloud.call(
                "us-east-1",
                "ec2",
                "DescribeAvailabilityZones",
                lambda: (_ for _ in ()).throw(client_error("RequestLimitExceeded", 503)),
                probe=True,
            )
    gate = cloud.gate("us-east-1")
    assert state_of(gate) is ApiPlaneState.IMPAIRED
    sent: list[str] = []
    with pytest.raises(RegionImpaired, match="us-east-1: API plane impaired"):
        await cloud.call(
            "us-east-1", "autoscaling", "UpdateAutoScalingGroup", lambda: sent.append("x")
        )
    with pytest.raises(RegionImpaired):
        await cloud.call("us-east-1", "ec2", "DescribeInstances", lambda: sent.append("x"))
    assert sent == []
    assert gate.refused == 2
    # another region is not affected
    assert await cloud.call("us-west-2", "ec2", "RunInstances", lambda: "ok") == "ok"
    # probes still go out, and their success brings the region back
    for _ in range(60):
        await cloud.call("us-east-1", "ec2", "DescribeAvailabilityZones", lambda: "ok", probe=True)
    assert state_of(gate) is ApiPlaneState.DEGRADED  # one step at a time


async def test_outcomes_are_recorded_with_mutating_inferred() -> None:
    cloud = calls()
    await cloud.call("us-east-1", "ec2", "DescribeInstances", lambda: None)
    await cloud.call("us-east-1", "ec2", "RunInstances", lambda: None)
    records = list(cloud.gate("us-east-1")._calls)
    assert [(r.outcome, r.mutating) for r in records] == [
        (CallOutcome.OK, False),
        (CallOutcome.OK, True),
    ]


def test_a_busy_region_is_judged_at_most_every_interval() -> None:
    """Few calls: every call is judged. Many: the verdict is refreshed at most every
    JUDGE_INTERVAL, so a call never pays for a large window, and it still turns."""
    now = [1000.0]
    gate = RegionGate(
        "aws-test",
        "us-east-1",
        ApiPlaneThresholds.of(ApiPlanePolicy(window_seconds=60, min_calls=4)),
        clock=lambda: now[0],
    )
    for _ in range(4):
        gate.record(CallRecord(now[0], CallOutcome.SERVER_ERROR, 0.01))
    assert state_of(gate) is ApiPlaneState.IMPAIRED  # judged at once

    now[0] += 61  # the errors leave the window
    for _ in range(EAGER_JUDGE_CALLS + 1):
        gate.record(CallRecord(now[0], CallOutcome.OK, 0.01))
    assert state_of(gate) is ApiPlaneState.HEALTHY
    for _ in range(EAGER_JUDGE_CALLS):
        gate.record(CallRecord(now[0], CallOutcome.THROTTLED, 0.01))
    assert state_of(gate) is ApiPlaneState.HEALTHY  # not judged again yet
    now[0] += JUDGE_INTERVAL
    gate.record(CallRecord(now[0], CallOutcome.THROTTLED, 0.01))
    assert state_of(gate) is ApiPlaneState.IMPAIRED
    assert gate.health.figures.calls == 2 * EAGER_JUDGE_CALLS + 2


def test_a_bucket_and_thresholds_follow_the_providers_policy() -> None:
    """The API's defaults are the only ones: the bucket and thresholds read the policy."""
    assert TokenBucket.of().capacity == RetryBudget().tokens
    bucket = TokenBucket.of(RetryBudget(tokens=6, refill_per_minute=90))
    assert (bucket.capacity, bucket.refill_per_second, bucket.tokens) == (6.0, 1.5, 6.0)
    default = ApiPlaneThresholds.of()
    assert (default.window, default.min_calls) == (120.0, 4)
    assert default.impaired.error_share == ApiPlanePolicy().impaired.error_share
    gate = calls(tokens=3, refill_per_minute=60).gate("us-east-1")
    assert (gate.budget.capacity, gate.budget.refill_per_second) == (3.0, 1.0)
    assert gate.thresholds.window == 60.0
