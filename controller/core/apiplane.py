"""API-plane health of a cloud region, from the outcomes of calls made to it.

Pure: the calls (with their times) and ``now`` come in as arguments.

Every call Lifeboat makes to a region — its cheap probes and its own working calls — is
evidence. Over a sliding window the share of errors, the share of throttled calls and
the latency percentiles are compared with two levels:

=========  ==================================================================
state      when
=========  ==================================================================
Unknown    fewer than ``min_calls`` calls in the window, and no verdict before
Impaired   error share, throttle share or p99 latency at or above ``impaired``
Degraded   any of them at or above ``degraded``
Healthy    all of them below ``degraded``
=========  ==================================================================

Hysteresis: a region leaves a worse state only once its figures are below *half* of the
level that put it there, so a region hovering at a threshold does not flap. With too few
calls in the window the previous verdict stands (silence is not recovery).

Errors are server errors, timeouts, unreachable endpoints and capacity errors
(``InsufficientInstanceCapacity``, ``ResourceLimitExceeded``, Nova "No valid host": the
2012 us-east-1 symptom). Throttling is counted on its own. Auth and client errors say
nothing about the API plane's health and count in neither share.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from controller.api.models import ApiPlaneLevels, ApiPlanePolicy


class CallOutcome(StrEnum):
    OK = "ok"
    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    AUTH_ERROR = "auth_error"
    CAPACITY_ERROR = "capacity_error"
    CLIENT_ERROR = "client_error"

    @property
    def transient(self) -> bool:
        """Worth retrying: the same call may well succeed a moment later."""
        return self in _TRANSIENT

    @property
    def error(self) -> bool:
        """Counts against the API plane's error share."""
        return self in _ERRORS


_TRANSIENT = frozenset(
    {CallOutcome.THROTTLED, CallOutcome.SERVER_ERROR, CallOutcome.TIMEOUT, CallOutcome.UNREACHABLE}
)
_ERRORS = frozenset(
    {
        CallOutcome.SERVER_ERROR,
        CallOutcome.TIMEOUT,
        CallOutcome.UNREACHABLE,
        CallOutcome.CAPACITY_ERROR,
    }
)


class ApiPlaneState(StrEnum):
    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    IMPAIRED = "Impaired"


_RANK = {
    ApiPlaneState.UNKNOWN: 0,
    ApiPlaneState.HEALTHY: 1,
    ApiPlaneState.DEGRADED: 2,
    ApiPlaneState.IMPAIRED: 3,
}


@dataclass(frozen=True)
class CallRecord:
    """One call to a region's API and how it went."""

    at: float
    outcome: CallOutcome
    latency: float
    probe: bool = False
    mutating: bool = False
    transfer: bool = False
    """A call that carries an object's bytes: its latency measures the size of the body
    and the link, not the API plane, so it counts for errors and throttling only."""
    observed: bool = False
    """Not a call's own outcome but one the cloud reported later about work it took on (an
    Auto Scaling activity that failed, a Nova boot that ended in "No valid host"): it counts
    for errors only, it has no latency."""


@dataclass(frozen=True)
class Levels:
    error_share: float
    throttle_share: float
    latency_p99: float

    @classmethod
    def of(cls, levels: ApiPlaneLevels) -> Levels:
        return cls(levels.error_share, levels.throttle_share, levels.latency_p99_seconds)

    def scaled(self, factor: float) -> Levels:
        return Levels(
            self.error_share * factor, self.throttle_share * factor, self.latency_p99 * factor
        )


@dataclass(frozen=True)
class ApiPlaneThresholds:
    """How a region's API plane is judged: a CloudProvider's ``apiPlane`` policy, as the
    core reads it (the figures and their defaults are the policy's)."""

    window: float
    min_calls: int
    degraded: Levels
    impaired: Levels
    recovery: float = 0.5
    """A worse state is left only below ``recovery`` times the level that caused it."""
    stale_after: float | None = None
    """A Degraded or Impaired verdict with no call at all in the window for this long
    (default: two windows) decays to Unknown: a gate that nothing probes, and that refuses
    every other call, must not stay Impaired for ever on old evidence. The next calls let
    through judge it again (a half-open circuit breaker)."""

    @classmethod
    def of(cls, policy: ApiPlanePolicy | None = None) -> ApiPlaneThresholds:
        """The thresholds ``policy`` sets (default: the API's defaults)."""
        policy = policy or ApiPlanePolicy()
        return cls(
            window=float(policy.window_seconds),
            min_calls=policy.min_calls,
            degraded=Levels.of(policy.degraded),
            impaired=Levels.of(policy.impaired),
        )


@dataclass(frozen=True)
class Figures:
    """The window's numbers."""

    calls: int = 0
    errors: int = 0
    throttled: int = 0
    p50: float | None = None
    p99: float | None = None

    @property
    def error_share(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def throttle_share(self) -> float:
        return self.throttled / self.calls if self.calls else 0.0

    def reaches(self, levels: Levels) -> str | None:
        """Which figure reaches ``levels`` (as words for the trace), or None."""
        if self.error_share >= levels.error_share:
            return f"error share {self.error_share:.0%} >= {levels.error_share:.0%}"
        if self.throttle_share >= levels.throttle_share:
            return f"throttle share {self.throttle_share:.0%} >= {levels.throttle_share:.0%}"
        if self.p99 is not None and self.p99 >= levels.latency_p99:
            return f"p99 latency {self.p99:.2f}s >= {levels.latency_p99:g}s"
        return None


@dataclass(frozen=True)
class ApiPlaneHealth:
    state: ApiPlaneState = ApiPlaneState.UNKNOWN
    since: float | None = None
    figures: Figures = Figures()
    reason: str = "no calls yet"


def figures(calls: Iterable[CallRecord], now: float, window: float) -> Figures:
    """The figures of the calls made within ``window`` seconds before ``now``."""
    recent = [c for c in calls if now - window <= c.at <= now]
    if not recent:
        return Figures()
    latencies = sorted(c.latency for c in recent if not (c.transfer or c.observed))
    return Figures(
        calls=len(recent),
        errors=sum(1 for c in recent if c.outcome.error),
        throttled=sum(1 for c in recent if c.outcome is CallOutcome.THROTTLED),
        p50=_percentile(latencies, 0.50) if latencies else None,
        p99=_percentile(latencies, 0.99) if latencies else None,
    )


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def assess(
    previous: ApiPlaneHealth,
    calls: Iterable[CallRecord],
    thresholds: ApiPlaneThresholds,
    now: float,
) -> ApiPlaneHealth:
    """The region's API-plane health at ``now``."""
    numbers = figures(calls, now, thresholds.window)
    if numbers.calls < thresholds.min_calls:
        stale_after = thresholds.stale_after or 2 * thresholds.window
        bad = previous.state in (ApiPlaneState.DEGRADED, ApiPlaneState.IMPAIRED)
        if bad and numbers.calls == 0 and now - (previous.since or now) >= stale_after:
            reason = (
                f"no call for {thresholds.window:g}s: the {previous.state} verdict of "
                f"{now - (previous.since or now):.0f}s ago no longer stands"
            )
            return ApiPlaneHealth(ApiPlaneState.UNKNOWN, now, numbers, reason)
        if previous.state is not ApiPlaneState.UNKNOWN:
            return replace(previous, figures=numbers)  # too little evidence to change
        reason = (
            f"{numbers.calls} call(s) in the last {thresholds.window:g}s, "
            f"fewer than {thresholds.min_calls}"
        )
        return replace(previous, figures=numbers, reason=reason)
    state, reason = _verdict(numbers, thresholds)
    if _RANK[state] < _RANK[previous.state]:
        state, reason = _recovery(previous.state, numbers, thresholds, state, reason)
    since = previous.since if state is previous.state and previous.since is not None else now
    return ApiPlaneHealth(state, since, numbers, reason)


def _verdict(numbers: Figures, t: ApiPlaneThresholds) -> tuple[ApiPlaneState, str]:
    if why := numbers.reaches(t.impaired):
        return ApiPlaneState.IMPAIRED, why
    if why := numbers.reaches(t.degraded):
        return ApiPlaneState.DEGRADED, why
    return ApiPlaneState.HEALTHY, f"{numbers.calls} calls, all figures below the degraded level"


def _recovery(
    previous: ApiPlaneState,
    numbers: Figures,
    t: ApiPlaneThresholds,
    candidate: ApiPlaneState,
    candidate_reason: str,
) -> tuple[ApiPlaneState, str]:
    """Step down from ``previous`` one level at a time, each only when the figures are
    below ``recovery`` times that level."""
    state = previous
    while _RANK[state] > _RANK[candidate]:
        level = t.impaired if state is ApiPlaneState.IMPAIRED else t.degraded
        if why := numbers.reaches(level.scaled(t.recovery)):
            figure = why.split(" >=")[0]
            return state, f"recovering: {figure}, not yet below {t.recovery:g}x the {state} level"
        state = ApiPlaneState.DEGRADED if state is ApiPlaneState.IMPAIRED else ApiPlaneState.HEALTHY
    return state, candidate_reason if state is candidate else f"recovering ({candidate_reason})"
