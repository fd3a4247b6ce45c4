"""Cross-field validation rules, written once and enforced twice.

Each :class:`Rule` carries a CEL expression (enforced by the Kubernetes API server at
admission through ``x-kubernetes-validations`` in the generated CRD) and the same check as
a Python predicate (enforced when a resource is parsed outside the API server: ``lifeboat
simulate``, a CRD installed by an older release, unit tests). The message is shared, so a
user sees the same words from ``kubectl apply`` and from the controller's status.

A test runs every rule's negative examples against the real API server and against the
Python models, so the two forms cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: CEL for the API server, a predicate for Python."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: str | None = None

    def as_schema(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry for this rule."""
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


class RuleViolation(ValueError):
    """Raised by model validators; the message is the rule's own."""


def enforce(rules: tuple[Rule, ...], value: Any) -> None:
    """Raise :class:`RuleViolation` with the messages of every rule ``value`` breaks."""
    broken = [rule.message for rule in rules if not rule.check(value)]
    if broken:
        raise RuleViolation("; ".join(broken))


def schema_extra(rules: tuple[Rule, ...]) -> dict[str, Any]:
    """``json_schema_extra`` for a model or field carrying ``rules``."""
    return {"x-kubernetes-validations": [rule.as_schema() for rule in rules]}


def unique(values: list[str] | tuple[str, ...]) -> bool:
    """True when no value repeats."""
    return len(set(values)) == len(values)
