"""Zone (data-plane) health: raw probe results in, a debounced zone state out.

Pure: no I/O, no clock. Time arrives inside each :class:`ProbeResult`.

States and transitions (``F`` = failureThreshold, ``S`` = successThreshold)::

    Unknown    --ok-->                     Healthy      (no evidence of trouble yet)
    Unknown    --fail (<F in a row)-->     Suspect
    Healthy    --fail (<F in a row)-->     Suspect
    Suspect    --ok-->                     Healthy
    any        --fail (F in a row)-->      Down
    Down       --ok (<S in a row)-->       Recovering
    Down       --ok (S in a row)-->        Healthy
    Recovering --ok (S in a row)-->        Healthy
    Recovering --fail-->                   Down         (one relapse is enough)

so one failed probe never takes a zone down unless ``F`` is 1, and a flapping zone does
not come back until it has answered ``S`` rounds in a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple

from controller.api.models import HealthPolicy


class ZoneState(StrEnum):
    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    SUSPECT = "Suspect"
    DOWN = "Down"
    RECOVERING = "Recovering"


class ProbeOutcome(StrEnum):
    OK = "ok"
    FAIL = "fail"
    TIMEOUT = "timeout"


class ZoneKey(NamedTuple):
    site: str
    zone: str

    def __str__(self) -> str:
        return f"{self.site}/{self.zone}"


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one endpoint (or the aggregate of a zone's endpoints in a round)."""

    key: ZoneKey
    outcome: ProbeOutcome
    at: float
    latency: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is ProbeOutcome.OK


@dataclass(frozen=True)
class ZoneThresholds:
    """Rounds in a row that take a zone Down (``failure``) and bring it back (``success``):
    an app's ``health`` policy, as the core reads it."""

    failure: int
    success: int

    @classmethod
    def of(cls, policy: HealthPolicy) -> ZoneThresholds:
        return cls(policy.failure_threshold, policy.success_threshold)


@dataclass(frozen=True)
class ZoneHealth:
    """Debounced health of one zone, persisted in the app's status between rounds."""

    state: ZoneState = ZoneState.UNKNOWN
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    since: float | None = None
    failing_since: float | None = None
    last_ok: float | None = None
    last_probe: float | None = None
    last_latency: float | None = None
    last_detail: str = ""

    @property
    def down(self) -> bool:
        return self.state is ZoneState.DOWN

    @property
    def healthy(self) -> bool:
        return self.state is ZoneState.HEALTHY


TRANSITIONAL = frozenset({ZoneState.SUSPECT, ZoneState.RECOVERING})
"""States that the next rounds confirm or clear."""


def round_interval(states: Iterable[ZoneState], policy: HealthPolicy) -> float:
    """Seconds until an app's next probe round: ``suspectIntervalSeconds`` while any of its
    zones is Suspect or Recovering (set), otherwise ``intervalSeconds``. Faster rounds
    only then: a steady fleet costs what its interval says, and a failing zone reaches
    Down (or Healthy again) ``failureThreshold - 1`` (``successThreshold - 1``) fast
    rounds after its first changed answer. Never below ``timeoutSeconds``: a round that
    waits out a hanging endpoint's timeout cannot come sooner, and a shorter slot would
    only show as round lag."""
    interval = float(policy.interval_seconds)
    fast = policy.suspect_interval_seconds
    if fast is None or fast >= interval:
        return interval
    fast = min(interval, max(fast, policy.timeout_seconds))
    return fast if any(state in TRANSITIONAL for state in states) else interval


def zone_states(zones: Mapping[ZoneKey, ZoneHealth]) -> Iterable[ZoneState]:
    """The states of ``zones`` (for :func:`round_interval`)."""
    return (health.state for health in zones.values())


def aggregate_round(key: ZoneKey, results: Iterable[ProbeResult]) -> ProbeResult | None:
    """One zone's verdict for a probe round: healthy when any of its endpoints answered.

    A zone whose endpoints all failed reports ``timeout`` only if every one timed out, so
    the trace tells a hung zone from one that refuses connections. ``None`` when the zone
    has no endpoints.
    """
    rows = sorted(results, key=lambda r: (not r.ok, r.latency))
    if not rows:
        return None
    best = rows[0]
    if best.ok:
        return replace(best, key=key)
    outcome = (
        ProbeOutcome.TIMEOUT
        if all(r.outcome is ProbeOutcome.TIMEOUT for r in rows)
        else ProbeOutcome.FAIL
    )
    detail = "; ".join(r.detail for r in rows if r.detail)
    return ProbeResult(key, outcome, min(r.at for r in rows), max(r.latency for r in rows), detail)


def observe(health: ZoneHealth, result: ProbeResult, thresholds: ZoneThresholds) -> ZoneHealth:
    """The zone's health after one more probe round."""
    if result.ok:
        successes = health.consecutive_successes + 1
        state = _after_success(health.state, successes, thresholds)
        failures, failing_since = 0, None
    else:
        successes = 0
        failures = health.consecutive_failures + 1
        state = _after_failure(health.state, failures, thresholds)
        failing_since = health.failing_since if health.failing_since is not None else result.at
    since = health.since if state is health.state and health.since is not None else result.at
    return ZoneHealth(
        state=state,
        consecutive_failures=failures,
        consecutive_successes=successes,
        since=since,
        failing_since=failing_since,
        last_ok=result.at if result.ok else health.last_ok,
        last_probe=result.at,
        last_latency=result.latency,
        last_detail=result.detail,
    )


def _after_success(state: ZoneState, successes: int, t: ZoneThresholds) -> ZoneState:
    if state in (ZoneState.DOWN, ZoneState.RECOVERING):
        return ZoneState.HEALTHY if successes >= t.success else ZoneState.RECOVERING
    return ZoneState.HEALTHY


def _after_failure(state: ZoneState, failures: int, t: ZoneThresholds) -> ZoneState:
    if failures >= t.failure or state in (ZoneState.DOWN, ZoneState.RECOVERING):
        return ZoneState.DOWN
    return ZoneState.SUSPECT
