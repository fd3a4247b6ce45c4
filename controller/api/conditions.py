"""Condition types, and helpers following the Kubernetes API conventions (metav1.Condition).

The types are part of the API (``kubectl wait --for=condition=Ready``, alerts), written
once here. The helpers are pure: the time of the change is an argument.
``lastTransitionTime`` moves only when the status flips; reason, message and
observedGeneration are refreshed in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from controller.api.models import Condition

Status = Literal["True", "False", "Unknown"]


class ConditionType(StrEnum):
    """Every condition type Lifeboat sets. A ResilientApp has Ready, Degraded, FailingOver,
    ConfigurationValid and, when it replicates, Replicating and RPOBreached, and with peers
    VantageAgreement and PeerSpecDrift; a CloudProvider has Ready and ApiPlaneHealthy; a
    LifeboatPeers has Complete."""

    READY = "Ready"
    """ResilientApp: serving from its active site with traffic in place. CloudProvider:
    credentials verified."""
    DEGRADED = "Degraded"
    """Some zone is failing or out of traffic, or a region's API plane is impaired."""
    FAILING_OVER = "FailingOver"
    """A failover is under way (its traffic shift is not done yet)."""
    DNS_IN_SYNC = "DNSInSync"
    """The app's DNS name, read back, holds what its status records (and is this app's)."""
    CONFIGURATION_VALID = "ConfigurationValid"
    """Every provider, region and capability the spec names exists (what the API server
    cannot check)."""
    REPLICATING = "Replicating"
    """True when every destination of every replicated dataset is within the RPO target."""
    RPO_BREACHED = "RPOBreached"
    """True when some destination's RPO (age of its oldest unreplicated change) is above
    the target; Unknown while an RPO is not measured yet."""
    API_PLANE_HEALTHY = "ApiPlaneHealthy"
    """CloudProvider: no region's API plane is Degraded or Impaired."""
    COMPLETE = "Complete"
    """LifeboatPeers: this peer's publication lists every app it serves (False, TooLarge:
    some were left out to keep it within its size bound)."""
    VANTAGE_AGREEMENT = "VantageAgreement"
    """With peers: True when the heard peers (a majority of all) see every zone alike;
    False while a minority of them sees a zone Down; Unknown while fewer than a majority of
    the peers are heard."""
    PEER_SPEC_DRIFT = "PeerSpecDrift"
    """With peers: True while some heard peer reads a different spec of the app."""
    STANDBY_READY = "StandbyReady"
    """True when every site that does not take the traffic could take it now (its zones
    qualify as a failover target, its capacity is Ready as its driver reports it, no
    scale-up failed, its quota leaves room for a failover's); False naming each site and
    cause; Unknown while some site's capacity has not been read."""
    RUNNING = "Running"
    """FailoverDrill: a run is under way."""
    SUCCEEDED = "Succeeded"
    """FailoverDrill: the last run succeeded (False: it failed or aborted, with why)."""
    CAPACITY_READY = "CapacityReady"
    """True when the capacity last set for every site is Ready as its driver reports it;
    False (CapacityNotReady) once some site's is not within
    readiness.capacityTimeoutSeconds, with the figures; Unknown (Waiting) before."""


def rfc3339(ts: float, *, precise: bool = False) -> str:
    """Seconds since the epoch as an RFC 3339 UTC timestamp (``Z`` suffix).

    Second precision by default, like ``metav1.Time``; ``precise`` keeps milliseconds
    for measured figures such as failover times.
    """
    moment = datetime.fromtimestamp(ts, tz=UTC)
    # isoformat, not strftime: "%Y" does not pad years before 1000 to four digits.
    stamp = moment.isoformat(timespec="milliseconds" if precise else "seconds")
    return stamp.removesuffix("+00:00") + "Z"


def parse_rfc3339(text: str) -> float:
    """The inverse of :func:`rfc3339` (accepts any RFC 3339 offset)."""
    return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).timestamp()


def set_condition(
    conditions: Iterable[Condition],
    type_: ConditionType,
    status: Status,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: float,
) -> tuple[Condition, ...]:
    """``conditions`` with ``type_`` set; others kept in their order."""
    result: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != type_:
            result.append(condition)
            continue
        found = True
        transition = condition.last_transition_time if condition.status == status else rfc3339(now)
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=transition,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=rfc3339(now),
            )
        )
    return tuple(result)


def get_condition(conditions: Iterable[Condition], type_: ConditionType) -> Condition | None:
    """The condition of ``type_``, if present."""
    return next((c for c in conditions if c.type == type_), None)
