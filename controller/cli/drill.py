"""``lifeboat drill run|status|abort``: FailoverDrills from the command line.

``run`` creates a FailoverDrill that runs once, now (the operator carries it out: the same
safety checks and fencing as a real failover) and, with ``--wait``, follows it to its end
by polling the drill's own status; ``status`` shows drills and a drill's report; ``abort``
asks the operator to stop a running drill and move the app back where it started.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from controller.api.names import ABORT_ANNOTATION, FAILOVER_DRILL, GROUP, VERSION
from controller.cli.commands import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    Cluster,
    CommandError,
    human_duration,
)

PLURAL = FAILOVER_DRILL.plural
ENDED = ("Succeeded", "Failed", "Aborted")


def _stamp(now: float) -> str:
    return datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def get(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    body = cluster.call(
        f"read FailoverDrill {namespace}/{name}",
        lambda: cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        ),
        missing=f"FailoverDrill {namespace}/{name} not found",
    )
    assert isinstance(body, dict)
    return body


def run(
    cluster: Cluster,
    namespace: str,
    app: str,
    *,
    kind: str,
    site: str | None,
    hold: int,
    name: str | None,
    wait: float,
    timeline: dict[str, Any] | None = None,
    expect: dict[str, Any] | None = None,
    zone: str | None = None,
    out: TextIO = sys.stdout,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Create a drill that runs once, now; with ``wait`` > 0 follow it to its end.

    An Observe drill takes ``timeline`` (a timeline document, as ``lifeboat simulate``'s)
    and ``expect``; ``site`` is then the expected target, not a place to move to. A
    ZoneEvacuation drill takes ``zone``, a zone of the app's active site."""
    found = cluster.app(namespace, app)
    sites = [s["name"] for s in (found.get("spec") or {}).get("sites", [])]
    if site is not None and site not in sites:
        raise CommandError(
            f"no site {site!r} in {namespace}/{app} (sites: {', '.join(sites)})", EXIT_USAGE
        )
    if zone is not None:
        active = (found.get("status") or {}).get("activeSite")
        zones = [
            z
            for s in (found.get("spec") or {}).get("sites", [])
            if s.get("name") == active
            for z in s.get("zones", [])
        ]
        if active and zone not in zones:
            raise CommandError(
                f"{zone!r} is not a zone of {namespace}/{app}'s active site {active} "
                f"(zones: {', '.join(zones)})",
                EXIT_USAGE,
            )
    now = clock()
    drill_name = name or f"{app}-{kind.lower()}-{datetime.fromtimestamp(now, UTC):%Y%m%d%H%M%S}"
    spec: dict[str, Any] = {
        "app": app,
        "kind": kind,
        "schedule": {"once": _stamp(now)},
        "holdSeconds": hold,
    }
    if kind == "Observe":
        spec.pop("holdSeconds")
        spec["timeline"] = timeline or {}
        wanted = dict(expect or {})
        if site is not None:
            wanted["targetSite"] = site
        if wanted:
            spec["expect"] = wanted
    elif kind == "ZoneEvacuation":
        spec["zone"] = zone
    elif site is not None:
        spec["targetSite"] = site
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": FAILOVER_DRILL.kind,
        "metadata": {"name": drill_name, "namespace": namespace},
        "spec": spec,
    }
    cluster.call(
        f"create FailoverDrill {namespace}/{drill_name}",
        lambda: cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        ),
        missing=f"the FailoverDrill API ({PLURAL}.{GROUP}/{VERSION}) is not installed: "
        "install Lifeboat's CRDs first",
    )
    out.write(f"created FailoverDrill {namespace}/{drill_name}: {kind} of {app}")
    if kind == "Observe":
        out.write(": replaying the timeline, acting on nothing\n")
    elif kind == "ZoneEvacuation":
        out.write(f": {zone} out of traffic, hold {hold}s\n")
    else:
        out.write(f" to {site}, hold {hold}s\n" if site else f", hold {hold}s\n")
    if wait <= 0:
        return EXIT_OK
    return follow(cluster, namespace, drill_name, wait, out=out, clock=clock, sleep=sleep)


def timeline_document(path: Path) -> dict[str, Any]:
    """An Observe drill's timeline read from ``path`` (lifeboat simulate's format),
    checked as ``lifeboat simulate`` checks it (a :class:`CommandError` names the file,
    entry and field)."""
    from controller.cli import simulate

    try:
        simulate._load_timeline(path)
        document = simulate._yaml(path)
    except simulate.TimelineError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    return dict(document or {})


def follow(
    cluster: Cluster,
    namespace: str,
    name: str,
    wait: float,
    *,
    run_number: int = 1,
    out: TextIO = sys.stdout,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll the drill's status until run ``run_number`` ends; print each step as it ends."""
    deadline = clock() + wait
    said: set[tuple[str, str]] = set()
    while True:
        status = get(cluster, namespace, name).get("status") or {}
        if status.get("run", 0) >= run_number:
            for step in status.get("steps") or []:
                key = (step.get("name", ""), step.get("result", ""))
                if key not in said and key[1] != "Running":
                    said.add(key)
                    out.write(f"  {key[0]}: {key[1]} {step.get('message', '')}\n")
            if status.get("run", 0) > run_number or status.get("phase") in ENDED:
                out.write(report(status))
                return EXIT_OK if status.get("result") == "Succeeded" else EXIT_REFUSED
        if clock() >= deadline:
            out.write(
                f"the drill has not ended within {wait:.0f}s (phase "
                f"{status.get('phase') or 'not yet seen by the operator'}); is the operator "
                "running?\n"
            )
            return EXIT_TIMEOUT
        sleep(1.0)


def report(status: dict[str, Any]) -> str:
    """The report of a drill's last run, for a person."""
    lines = [f"result: {status.get('result') or status.get('phase') or '-'}"]
    if status.get("message"):
        lines.append(f"  {status['message']}")
    if status.get("originSite") and status.get("originEpoch") is None:  # an Observe run
        first = status.get("firstFailoverSeconds")
        lines.append(
            f"replay from {status['originSite']}: "
            + (
                f"first failover at t={float(first):g}s to {status.get('targetSite')}"
                if first is not None
                else "no failover"
            )
            + f", {status.get('decisionsTotal') or 0} decision(s)"
        )
    elif status.get("zone"):
        lines.append(
            f"zone: {status['zone']} out of traffic and back (epoch at start "
            f"{status.get('originEpoch')})"
        )
    elif status.get("originSite"):
        lines.append(
            f"route: {status['originSite']} -> {status.get('targetSite')} -> "
            f"{status['originSite']} (epoch at start {status.get('originEpoch')})"
        )
    labels = (
        (("rtoSeconds", "zone out (request to DNS)"), ("revertRtoSeconds", "zone back"))
        if status.get("zone")
        else (("rtoSeconds", "RTO"), ("revertRtoSeconds", "RTO of the revert"))
    )
    for field, label in (*labels, ("rpoSeconds", "RPO at the switch")):
        if status.get(field) is not None:
            lines.append(f"{label}: {float(status[field]):.1f}s")
    if status.get("abortReason"):
        lines.append(f"aborted: {status['abortReason']}")
    steps = status.get("steps") or []
    if steps:
        lines.append("steps:")
        for step in steps:
            lines.append(
                f"  {step.get('name', ''):<10} {step.get('result', ''):<10} "
                f"{step.get('startedTime', '')} -> {step.get('finishedTime') or '...'}  "
                f"{step.get('message', '')}"
            )
    decisions = status.get("decisions") or []
    if decisions:
        lines.append("decisions:")
        for row in decisions:
            what = row.get("actions") or row.get("reason", "")
            lines.append(
                f"  t={float(row.get('time', 0)):>7.1f}s  {row.get('phase', ''):<11} "
                f"{row.get('rule', ''):<22} {row.get('activeSite', ''):<8} {what}"
            )
    checks = status.get("dataChecks") or []
    if checks:
        lines.append("data checks:")
        for check in checks:
            lines.append(
                f"  {check.get('name', ''):<18} {check.get('result', ''):<8} "
                f"{check.get('message', '')}"
            )
    if status.get("nextRunTime"):
        lines.append(f"next run: {status['nextRunTime']}")
    return "\n".join(lines) + "\n"


def status(
    cluster: Cluster,
    namespace: str,
    name: str | None,
    *,
    output: str = "table",
    out: TextIO = sys.stdout,
    clock: Callable[[], float] = time.time,
) -> int:
    """A table of the namespace's drills, or one drill's report."""
    if name is not None:
        body = get(cluster, namespace, name)
        if output == "json":
            out.write(json.dumps(body.get("status") or {}, indent=2) + "\n")
            return EXIT_OK
        spec = body.get("spec") or {}
        out.write(
            f"FailoverDrill {namespace}/{name}: {spec.get('kind')} of {spec.get('app')}"
            f"{' to ' + spec['targetSite'] if spec.get('targetSite') else ''}"
            f"{', zone ' + spec['zone'] if spec.get('zone') else ''}, run "
            f"{(body.get('status') or {}).get('run', 0)}\n"
        )
        out.write(report(body.get("status") or {}))
        return EXIT_OK
    listing = cluster.call(
        f"list FailoverDrills in namespace {namespace}",
        lambda: cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL),
        missing=f"the FailoverDrill API ({PLURAL}.{GROUP}/{VERSION}) is not installed",
    )
    items = sorted(
        (listing.get("items") or []) if isinstance(listing, dict) else [],
        key=lambda d: d["metadata"]["name"],
    )
    if output == "json":
        out.write(
            json.dumps(
                [{"name": d["metadata"]["name"], **(d.get("status") or {})} for d in items],
                indent=2,
            )
            + "\n"
        )
        return EXIT_OK
    now = clock()
    rows = [["DRILL", "APP", "KIND", "PHASE", "RUNS", "RTO", "LAST SUCCESS", "NEXT"]]
    for item in items:
        spec, st = item.get("spec") or {}, item.get("status") or {}
        rto = st.get("rtoSeconds")
        rows.append(
            [
                item["metadata"]["name"],
                str(spec.get("app", "")),
                str(spec.get("kind", "")),
                str(st.get("phase") or "-"),
                str(st.get("run", 0)),
                f"{float(rto):.1f}s" if rto is not None else "-",
                _age(st.get("lastSuccessfulTime"), now),
                str(st.get("nextRunTime") or "-"),
            ]
        )
    if len(rows) == 1:
        out.write(f"No FailoverDrills in namespace {namespace}.\n")
        return EXIT_OK
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return EXIT_OK


def _age(stamp: str | None, now: float) -> str:
    if not stamp:
        return "never"
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return f"{human_duration(now - then)} ago"


def abort(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    wait: float,
    out: TextIO = sys.stdout,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Ask the operator to abort the drill's run under way (the app is moved back)."""
    body = get(cluster, namespace, name)
    st = body.get("status") or {}
    if st.get("phase") != "Running":
        raise CommandError(
            f"FailoverDrill {namespace}/{name} has no run under way (phase "
            f"{st.get('phase') or '-'})",
            EXIT_REFUSED,
        )
    number = int(st.get("run", 0))
    patch = {"metadata": {"annotations": {ABORT_ANNOTATION: str(number)}}}
    cluster.call(
        f"annotate FailoverDrill {namespace}/{name}",
        lambda: cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, patch
        ),
        missing=f"FailoverDrill {namespace}/{name} not found",
    )
    out.write(f"asked to abort run {number} of {namespace}/{name}\n")
    if wait <= 0:
        return EXIT_OK
    code = follow(
        cluster, namespace, name, wait, run_number=number, out=out, clock=clock, sleep=sleep
    )
    # The run aborted as asked: that is the command's success.
    after = (get(cluster, namespace, name).get("status") or {}).get("result")
    return EXIT_OK if code != EXIT_TIMEOUT and after == "Aborted" else code
