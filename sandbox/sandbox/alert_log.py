"""The alerts the demo saw, as it prints them.

:class:`AlertLog` keeps every alert of Alertmanager's webhook notifications with the time
it arrived (and the pending alerts the demo saw in Prometheus, with the time Prometheus
says they became active); :func:`format_alert` is one printed line, its time relative to
the outage: ``+4.1s FIRING   LifeboatCascadeDetected shop/web rule=site-down [critical]``.
:func:`rule_facts` reads, from the chart's rules as the sandbox's Prometheus loads them,
what decides how soon an alert fires and resolves: its ``for`` and the longest range its
expression looks back over (``increase(...[10m])`` stays above 0 for ten minutes).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from hack import monitoring
from sandbox.alerting import Notification

_HIDDEN = frozenset({"alertname", "severity", "namespace", "app", "job", "instance"})
_RANGE = re.compile(r"\[([0-9]+(?:ms|s|m|h|d|w|y)(?:[0-9]+(?:ms|s|m|h|d|w|y))*)\]")
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}

Identity = tuple[tuple[str, str], ...]


def seconds(duration: str) -> float:
    """A Prometheus duration (``1m30s``) in seconds."""
    parts = _PART.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNIT[u] for n, u in parts)


@dataclass(frozen=True)
class RuleFacts:
    """How soon an alert can fire and resolve."""

    name: str
    pending_for: str | None
    """The rule's ``for`` (None: it fires at the first evaluation that finds it)."""
    lookback: str | None
    """The longest range selector of its expression (None: it reads current values)."""
    shipped: bool = True
    """Whether ``pending_for`` is the chart's own (else shortened for the sandbox)."""

    def why_still_firing(self) -> str:
        if self.lookback is None:
            return "its condition still holds"
        return (
            f"its expression looks back [{self.lookback}]: it resolves about "
            f"{self.lookback} after what set it off"
        )

    def why_pending(self) -> str:
        if not self.pending_for:
            return ""
        origin = "as the chart ships it" if self.shipped else "shortened for the sandbox"
        return f"for: {self.pending_for}, {origin}"


def rule_facts(
    root: Path, settings: monitoring.AlertSettings | None = None
) -> dict[str, RuleFacts]:
    """Every alert of the chart's rules (with ``settings``, as Prometheus loads them)."""
    facts = {}
    settings = settings or monitoring.AlertSettings()
    shipped = settings.pending_for is None
    for path in monitoring.rule_files(root):
        groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for group in monitoring.alert_groups(groups, settings):
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                ranges = _RANGE.findall(str(rule["expr"]))
                longest = max(ranges, key=seconds) if ranges else None
                name = rule["alert"]
                facts[name] = RuleFacts(name, rule.get("for"), longest, shipped)
    return facts


def identity(labels: Mapping[str, str]) -> Identity:
    return tuple(sorted(labels.items()))


def describe(labels: Mapping[str, str]) -> str:
    """The alert's name, app and distinguishing labels, and severity."""
    parts = [labels.get("alertname", "?")]
    if "namespace" in labels and "app" in labels:
        parts.append(f"{labels['namespace']}/{labels['app']}")
    hidden = _HIDDEN | ({"provider", "region"} if "app" in labels else set())
    parts += [f"{k}={v}" for k, v in sorted(labels.items()) if k not in hidden]
    if "severity" in labels:
        parts.append(f"[{labels['severity']}]")
    return " ".join(parts)


def format_alert(offset: float, status: str, labels: Mapping[str, str], note: str = "") -> str:
    """One line: seconds from the outage, status, the alert (and a note)."""
    line = f"{offset:+7.1f}s {status.upper():<8} {describe(labels)}"
    return f"{line} ({note})" if note else line


@dataclass(frozen=True)
class Seen:
    """An alert's status at ``at`` (unix time), and where the demo saw it."""

    at: float
    status: str
    labels: Mapping[str, str]
    source: str = "alertmanager"

    def line(self, origin: float, note: str = "") -> str:
        return format_alert(self.at - origin, self.status, self.labels, note)


class AlertLog:
    """What the demo saw of the alerts, in the order it saw it (thread-safe: the webhook
    adds from its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._pending: set[Identity] = set()

    def notified(self, notification: Notification, at: float | None = None) -> Seen:
        """An alert of a webhook notification, arrived at ``at`` (default: now)."""
        seen = Seen(time.time() if at is None else at, notification.status, notification.labels)
        with self._lock:
            self._seen.append(seen)
        return seen

    def pending(self, labels: Mapping[str, str], active_at: float) -> Seen | None:
        """A pending alert found in Prometheus, active since ``active_at``; None if it was
        already logged as pending (or was notified)."""
        key = identity(labels)
        with self._lock:
            if key in self._pending or any(identity(s.labels) == key for s in self._seen):
                return None
            self._pending.add(key)
            seen = Seen(active_at, "pending", dict(labels), "prometheus")
            self._seen.append(seen)
        return seen

    def seen(self) -> list[Seen]:
        with self._lock:
            return sorted(self._seen, key=lambda s: s.at)

    def firing(self) -> list[Seen]:
        """Alerts whose latest notification says firing (not resolved since)."""
        latest: dict[Identity, Seen] = {}
        for seen in self.seen():
            if seen.source == "alertmanager":
                latest[identity(seen.labels)] = seen
        return [s for s in latest.values() if s.status == "firing"]

    def notified_names(self) -> set[str]:
        return {s.labels.get("alertname", "") for s in self.seen() if s.source == "alertmanager"}
