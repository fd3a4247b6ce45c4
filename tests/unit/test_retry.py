"""The retry policy: transient errors are retried within bounds, others are not."""

from __future__ import annotations

import botocore.exceptions
import pytest

from controller.providers.retry import RetryPolicy, with_retries
from tests.factories import client_error

FAST = RetryPolicy(attempts=3, deadline_seconds=5, base_seconds=0.001, max_backoff_seconds=0.002)


def throttled() -> botocore.exceptions.ClientError:
    return client_error("Throttling", 400)


async def test_transient_error_is_retried_until_success() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise throttled()
        return "done"

    assert await with_retries(flaky, FAST) == "done"
    assert calls == 3


async def test_attempts_are_bounded_and_the_last_error_surfaces() -> None:
    calls = 0

    async def always() -> str:
        nonlocal calls
        calls += 1
        raise throttled()

    with pytest.raises(botocore.exceptions.ClientError):
        await with_retries(always, FAST)
    assert calls == FAST.attempts


async def test_permanent_error_is_not_retried() -> None:
    calls = 0

    async def denied() -> str:
        nonlocal calls
        calls += 1
        raise client_error("AccessDenied", 403)

    with pytest.raises(botocore.exceptions.ClientError):
        await with_retries(denied, FAST)
    assert calls == 1
