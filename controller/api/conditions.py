"""Condition helpers following the Kubernetes API conventions (metav1.Condition).

Pure: the time of the change is an argument. ``lastTransitionTime`` moves only when the
status flips; reason, message and observedGeneration are refreshed in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

from controller.api.models import Condition

Status = Literal["True", "False", "Unknown"]

REPLICATING = "Replicating"
"""True when every destination of every replicated dataset is within the RPO target."""
RPO_BREACHED = "RPOBreached"
"""True when some destination's RPO (age of its oldest unreplicated change) is above the
target; Unknown while an RPO is not measured yet."""


def rfc3339(ts: float, *, precise: bool = False) -> str:
    """Seconds since the epoch as an RFC 3339 UTC timestamp (``Z`` suffix).

    Second precision by default, like ``metav1.Time``; ``precise`` keeps milliseconds
    for measured figures such as failover times.
    """
    moment = datetime.fromtimestamp(ts, tz=UTC)
    if precise:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """The inverse of :func:`rfc3339` (accepts any RFC 3339 offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def set_condition(
    conditions: Iterable[Condition],
    type_: str,
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


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of ``type_``, if present."""
    return next((c for c in conditions if c.type == type_), None)
