"""An ``Observe`` drill's run: a scripted fault timeline replayed against an app's spec by
the simulation engine, and the replay judged against the drill's expectations. Pure: no
I/O, no clock (time is the timeline's); it acts on nothing.

:func:`observe` returns the report the drill's status records: the decisions (bounded in
count), the first failover's time and target, and the result with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from controller.api.models import CloudProviderSpec, ResilientAppSpec
from controller.api.models.drill import (
    MAX_OBSERVED_DECISIONS,
    ObservedDecision,
    ObserveExpect,
    ObserveTimeline,
)
from controller.core import decide as core
from controller.core.simulate import Timeline, entry_problem, simulate


@dataclass(frozen=True)
class ObserveReport:
    result: Literal["Succeeded", "Failed"]
    message: str
    origin_site: str | None
    target_site: str | None
    first_failover_seconds: float | None
    decisions: tuple[ObservedDecision, ...]
    decisions_total: int


def engine_timeline(timeline: ObserveTimeline, spec: ResilientAppSpec) -> Timeline | str:
    """The drill's timeline as the engine's (a string: why it cannot be replayed against
    ``spec``, naming the entry and field)."""
    document = timeline.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    try:
        plan = Timeline.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        why = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return f"timeline: {loc}: {why}"
    for index, entry in enumerate(plan.timeline):
        problem = entry_problem(entry, spec)
        if problem is not None:
            return f"timeline entry {index + 1} (at {entry.at:g}): {problem[0]}: {problem[1]}"
    return plan


def _summary(row: Mapping[str, Any]) -> ObservedDecision:
    actions = "; ".join(f"{a['kind']} {a['target']}" for a in row["actions"])
    notes = "; ".join(f"{n['kind']}: {n['message']}" for n in row["notes"])
    return ObservedDecision(
        time=float(row["time"]),
        rule=str(row["rule"])[:63],
        phase=str(row["phase"])[:63],
        active_site=str(row["activeSite"] or "")[:63],
        actions=(actions or notes)[:512],
        reason=str(row["reason"])[:512],
    )


def _bounded(rows: Sequence[Mapping[str, Any]]) -> tuple[ObservedDecision, ...]:
    """The first decisions and the last one, at most :data:`MAX_OBSERVED_DECISIONS`."""
    if len(rows) <= MAX_OBSERVED_DECISIONS:
        return tuple(_summary(r) for r in rows)
    kept = [*rows[: MAX_OBSERVED_DECISIONS - 1], rows[-1]]
    return tuple(_summary(r) for r in kept)


def _why_not(rows: Sequence[Mapping[str, Any]], until: float | None) -> str:
    """What held the app where it was: the last decision (up to ``until``) that held an
    action, else the last decision."""
    seen = [r for r in rows if until is None or r["time"] <= until] or list(rows)
    if not seen:
        return "no round was simulated"
    held = [r for r in seen if r["held"]]
    row = held[-1] if held else seen[-1]
    words = f"at t={row['time']:g} s the {row['rule']} rule decided: {row['reason']}"
    if row["held"]:
        h = row["held"][0]
        words += f" (held {h['kind']} {h['target']}: {h['reason']})"
    return words


def judge(
    expect: ObserveExpect | None,
    first: Mapping[str, Any] | None,
    rows: Sequence[Mapping[str, Any]],
) -> tuple[bool, str]:
    """(expectations hold, why)."""
    when = float(first["time"]) if first is not None else None
    target = str(first["activeSite"]) if first is not None else None
    seen = (
        f"first failover at t={when:g} s to {target} (rule {first['rule']})"
        if first is not None
        else "no failover"
    )
    if expect is None:
        return True, f"replayed, no expectations: {seen}"
    if expect.no_failover:
        if first is not None:
            return False, f"expected no failover, but {seen}: {first['reason']}"
        return True, "no failover, as expected"
    limit = expect.failover_within_seconds
    if limit is not None:
        if first is None:
            return False, f"no failover within {limit:g} s: {_why_not(rows, limit)}"
        assert when is not None
        if when > limit:
            return False, (f"no failover within {limit:g} s ({seen}): {_why_not(rows, limit)}")
    if expect.target_site is not None:
        if first is None:
            return False, f"no failover to {expect.target_site}: {_why_not(rows, None)}"
        if target != expect.target_site:
            return False, f"expected a failover to {expect.target_site}, but {seen}"
    return True, f"expectations hold: {seen}"


def observe(
    app: ResilientAppSpec,
    timeline: ObserveTimeline,
    expect: ObserveExpect | None,
    providers: Mapping[str, CloudProviderSpec] | None = None,
) -> ObserveReport:
    """Replay ``timeline`` against ``app`` (its CloudProviders' API-plane thresholds from
    ``providers``, defaults for the others) and judge it against ``expect``."""
    start = core.initial_state(app)
    plan = engine_timeline(timeline, app)
    if isinstance(plan, str):
        return ObserveReport("Failed", plan, start.active_site, None, None, (), 0)
    rows = simulate(app, plan, providers)
    first = next((r for r in rows if r["epoch"] > start.epoch), None)
    ok, why = judge(expect, first, rows)
    if not ok and first is None and app.failover.mode != "Automatic":
        why += (
            f" (the app's failover.mode is {app.failover.mode}: it recommends a failover "
            "and never makes one by itself)"
        )
    return ObserveReport(
        "Succeeded" if ok else "Failed",
        why,
        start.active_site,
        str(first["activeSite"]) if first is not None else None,
        float(first["time"]) if first is not None else None,
        _bounded(rows),
        len(rows),
    )
