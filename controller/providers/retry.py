"""The one retry policy every cloud call goes through (tenacity).

Exponential backoff with full jitter, a bounded number of attempts and an overall deadline;
only transient outcomes (throttling, 5xx, timeouts, unreachable endpoints) are retried.
The SDKs' own retries are switched off (see ``aws.connector``) so that this is the only
place deciding how hard Lifeboat leans on a cloud's API plane.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from controller.providers.outcomes import classify

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    deadline_seconds: float = 30.0
    base_seconds: float = 0.2
    max_backoff_seconds: float = 5.0


DEFAULT_POLICY = RetryPolicy()


def _transient(error: BaseException) -> bool:
    return classify(error).outcome.transient


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.info(
        "retrying %s after %s, attempt %d",
        getattr(state.fn, "__name__", "call"),
        type(error).__name__,
        state.attempt_number,
    )


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy = DEFAULT_POLICY,
    retryable: Callable[[BaseException], bool] = _transient,
) -> T:
    """Run ``call`` under ``policy``; the last error propagates once retries are spent.

    ``retryable`` decides per error whether another attempt may follow (by default: the
    error is transient); the caller can fold a retry budget into it.
    """
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline_seconds),
        wait=wait_random_exponential(
            multiplier=policy.base_seconds, max=policy.max_backoff_seconds
        ),
        retry=retry_if_exception(retryable),
        before_sleep=_log_retry,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover
