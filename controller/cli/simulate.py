"""``lifeboat simulate APP.yaml TIMELINE.yaml``: the pure decision core on a scripted timeline.

Nothing is contacted: the simulator plays the operator's part, probing every zone each
``health.intervalSeconds`` (``suspectIntervalSeconds`` while a zone is in doubt) with the
outcome the timeline prescribes, judging each region's API plane from the call outcomes
the timeline prescribes (with the CloudProvider's thresholds, default ones unless
``--provider`` files are given), passing requests and approvals on, and carrying out every
action at once. It prints the decisions as JSON and
a short human summary — the way to tune a policy offline and to test it in CI.

Timeline format (YAML)::

    duration: 120            # seconds to simulate (default: 60 after the last entry)
    timeline:                # each entry changes the world from its time on
      - at: 10
        zones:               # site/zone: ok | fail | timeout | slow:<seconds> | flaky:<share>
          use1/us-east-1a: fail  #            | status:<HTTP code>
      - at: 20
        api:                 # provider/region: outcomes of the calls of each round
          aws-prod/us-east-1: [throttled, throttled, ok]
      - at: 40
        request: {op: failover, site: usw2, force: false}   # planned: true: stop writes,
                                                           # drain replication, then move
      - at: 45
        approve: true        # approve the current recommendation (Manual mode)
      - at: 50
        pin: use1            # later: unpin: true
      - at: 60
        replicationLag: {use1: 12.5}
      - at: 70
        capacity: {usw2: 2}  # site: at most this many instances come up Ready | ready

A planned switchover (``planned: true``) waits for replication to the new site to drain:
each destination's ``replicationLag`` (0 when not given) stands for a flow with that
much data pending, so it drains once the destination's lag is 0 after writes were stopped;
the write fence answers at once.

Capacity comes up Ready at once unless the timeline caps a site's (``capacity: {usw2: 2}``:
at most 2 instances of it are ever Ready, as with a scale-up that fails; ``ready`` lifts the
cap); every site's capacity is read every round, as the operator's drivers would be read,
and the same rules judge standby readiness, capacity coming up, and the old site's shrink
waiting for it.

Zones and regions not mentioned answer ``ok``. ``status:<code>`` makes the zone's endpoints
answer with that HTTP status, judged as the operator judges it: healthy when the endpoint's
``http.expectedStatus`` (or ``health.http``'s; default 200-299) lists it, so ``status:302``
shows what a redirecting health endpoint does to an app (tcp:// endpoints only connect: the
status does not matter to them). ``flaky`` outcomes are pseudo-random but
reproducible (the same timeline always gives the same decisions).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controller.api.models import CloudProviderSpec, ResilientAppSpec
from controller.core.simulate import (
    MAX_INSTANCES,
    MAX_SECONDS,
    MAX_SLOW_SECONDS,
    Entry,
    RequestEntry,
    Timeline,
    entry_problem,
    injected,
    simulate,
)

__all__ = [
    "MAX_INSTANCES",
    "MAX_SECONDS",
    "MAX_SLOW_SECONDS",
    "Entry",
    "RequestEntry",
    "Result",
    "Timeline",
    "TimelineError",
    "injected",
    "run",
    "simulate",
    "simulation",
    "summarize",
    "table",
]


class TimelineError(ValueError):
    """The app or the timeline cannot be used; the message (one line) names the file, the
    entry and the field, and says why."""


# --------------------------------------------------------------------------- loading


def _one_line(path: Path, error: ValidationError, document: Any, prefix: tuple[Any, ...]) -> str:
    """A validation error as one line: the file, the entry, the field, why."""
    errors = error.errors()
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    where = _where(prefix + loc, document)
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return _flat(f"{path}: {where}: {message}{more}")


def _where(loc: tuple[Any, ...], document: Any) -> str:
    """``timeline entry 3 (at 40): zones.use1/us-east-1z`` for a timeline's location,
    ``spec.sites[0].zones`` for an app's."""
    if len(loc) >= 2 and loc[0] == "timeline" and isinstance(loc[1], int):
        entry = f"timeline entry {loc[1] + 1}"
        raw = document.get("timeline") if isinstance(document, dict) else None
        if isinstance(raw, list) and loc[1] < len(raw) and isinstance(raw[loc[1]], dict):
            at = raw[loc[1]].get("at")
            if isinstance(at, int | float) and not isinstance(at, bool):
                entry += f" (at {at:g})"
        rest = ".".join(str(part) for part in loc[2:])
        return f"{entry}: {rest}" if rest else entry
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "document"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _yaml(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TimelineError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TimelineError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or type(error).__name__
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise TimelineError(_flat(f"{path}: not YAML: {where}{problem}")) from None
    except (ValueError, RecursionError) as error:  # e.g. absurd nesting
        raise TimelineError(_flat(f"{path}: not YAML: {error}")) from None


def _load_app(path: Path) -> ResilientAppSpec:
    document = _yaml(path)
    if not isinstance(document, dict):
        raise TimelineError(f"{path}: expected a ResilientApp (a mapping), got {_kind(document)}")
    spec, prefix = (document["spec"], ("spec",)) if "spec" in document else (document, ())
    try:
        return ResilientAppSpec.model_validate(spec)
    except ValidationError as error:
        raise TimelineError(_one_line(path, error, spec, prefix)) from None


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _load_timeline(path: Path, spec: ResilientAppSpec | None = None) -> Timeline:
    document = _yaml(path)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise TimelineError(f"{path}: expected a timeline (a mapping), got {_kind(document)}")
    try:
        timeline = Timeline.model_validate(document)
    except ValidationError as error:
        raise TimelineError(_one_line(path, error, document, ())) from None
    if spec is not None:
        for index, entry in enumerate(timeline.timeline):
            problem = entry_problem(entry, spec)
            if problem is not None:
                field_name, why = problem
                where = f"timeline entry {index + 1} (at {entry.at:g}): {field_name}"
                raise TimelineError(_flat(f"{path}: {where}: {why}"))
        last = max((e.at for e in timeline.timeline), default=0.0)
        if timeline.duration is not None and timeline.duration < last:
            raise TimelineError(
                f"{path}: duration: {timeline.duration:g} s ends before the last entry "
                f"(at {last:g})"
            )
    return timeline


def _load_provider(path: Path) -> tuple[str, CloudProviderSpec]:
    document = _yaml(path)
    if not isinstance(document, dict) or not isinstance(document.get("metadata"), dict):
        raise TimelineError(f"{path}: not a CloudProvider (no metadata.name)")
    name = document["metadata"].get("name")
    if not isinstance(name, str) or not name:
        raise TimelineError(f"{path}: not a CloudProvider (no metadata.name)")
    raw = document.get("spec")
    try:
        return name, CloudProviderSpec.model_validate(raw)
    except ValidationError as error:
        raise TimelineError(_one_line(path, error, raw, ("spec",))) from None


# --------------------------------------------------------------------------- output


def summarize(decisions: list[dict[str, Any]]) -> str:
    """A few lines a person reads: where the app ended, and every move on the way."""
    if not decisions:
        return "no rounds simulated"
    lines = []
    for row in decisions:
        moved = [n for n in row["notes"] if n["kind"] not in ("ZoneStateChanged",)]
        for note in moved:
            lines.append(f"t={row['time']:>7.1f}s  {note['kind']}: {note['message']}")
    lines.append(_end(decisions[-1]))
    return "\n".join(lines)


def _end(last: Mapping[str, Any]) -> str:
    epochs = last["epoch"] - 1
    return (
        f"end: active site {last['activeSite']}, epoch {last['epoch']} "
        f"({epochs} failover{'s' if epochs != 1 else ''}), phase {last['phase']}"
    )


def _describe_injection(change: Mapping[str, Any]) -> str:
    parts = []
    for name, value in change.items():
        if name == "at":
            continue
        if isinstance(value, dict) and name != "request":
            inner = ", ".join(
                f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in value.items()
            )
            parts.append(f"{name} {inner}")
        elif name == "request":
            force = " --force" if value.get("force") else ""
            to = f" to {value['site']}" if value.get("site") else ""
            parts.append(f"request {value['op']}{to}{force}")
        elif value is True:
            parts.append(name)
        else:
            parts.append(f"{name} {value}")
    return "; ".join(parts) or "(nothing)"


def table(events: list[dict[str, Any]], decisions: list[dict[str, Any]]) -> str:
    """The injected events and the decisions, interleaved in time, for a person."""
    lines: list[str] = []
    merged = sorted(
        [(e["time"], 0, e) for e in events] + [(d["time"], 1, d) for d in decisions],
        key=lambda item: (item[0], item[1]),
    )
    previous: Mapping[str, Any] | None = None
    for time, kind, item in merged:
        stamp = f"{time:>8.1f}s"
        if kind == 0:
            lines.append(f"{stamp}  >> {_describe_injection(item['inject'])}")
            continue
        indent = " " * 12
        lines.append(
            f"{stamp}  {item['phase']:<11} {item['rule']:<24} active {item['activeSite']} "
            f"(epoch {item['epoch']})"
        )
        lines.append(f"{indent}why: {item['reason']}")
        if previous is None or previous["apiPlanes"] != item["apiPlanes"]:
            planes = ", ".join(f"{k} {v}" for k, v in item["apiPlanes"].items())
            lines.append(f"{indent}API planes: {planes}")
        if item["dns"] and (previous is None or previous["dns"] != item["dns"]):
            dns = "; ".join(
                f"{d['site']} {d['weight']} [{', '.join(d['zones'])}]" for d in item["dns"]
            )
            lines.append(f"{indent}DNS: {dns}")
        if item["standby"] and (previous is None or previous["standby"] != item["standby"]):
            standby = "; ".join(
                f"{site} " + ("ready" if s["ready"] else "not ready: " + ", ".join(s["reasons"]))
                for site, s in item["standby"].items()
            )
            lines.append(f"{indent}standby: {standby}")
        lines.extend(f"{indent}do: {a['target']}" for a in item["actions"])
        lines.extend(f"{indent}held: {h['target']}: {h['reason']}" for h in item["held"])
        lines.extend(f"{indent}{n['kind']}: {n['message']}" for n in item["notes"])
        previous = item
    lines.append(_end(decisions[-1]) if decisions else "no rounds simulated")
    return "\n".join(lines)


@dataclass(frozen=True)
class Result:
    events: list[dict[str, Any]]
    decisions: list[dict[str, Any]]

    def json(self) -> str:
        return json.dumps({"events": self.events, "decisions": self.decisions}, indent=2)

    def table(self) -> str:
        return table(self.events, self.decisions)

    def summary(self) -> str:
        return summarize(self.decisions)


def simulation(app: Path, timeline: Path, providers: Iterable[Path] = ()) -> Result:
    """Load and check the files, and run the timeline (a :class:`TimelineError` names the
    file, entry and field of anything wrong)."""
    spec = _load_app(app)
    named = dict(_load_provider(p) for p in providers)
    plan = _load_timeline(timeline, spec)
    return Result(injected(plan), simulate(spec, plan, named))


def run(app: Path, timeline: Path, providers: Iterable[Path] = ()) -> tuple[str, str]:
    """(JSON document, human summary) for the files given."""
    result = simulation(app, timeline, providers)
    return result.json(), result.summary()
