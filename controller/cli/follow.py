"""Following an operation to its end (``--wait``), as ``kubectl rollout status`` does.

``lifeboat failover|failback|approve ... --wait`` (and ``drill run --wait``) do not stop at
the operator's answer: they follow the app's status until the operation is done, printing
one line per step reached:

* the operator's answer (``status.lastRequest``; an approval: the recommendation carried
  out);
* a planned switchover: writes stopped at the old site, replication to the new one drained
  (``status.plannedSwitchover``);
* the failover decided under its new epoch (``status.lastFailover``);
* DNS in sync: the change that sends the traffic to the new site is applied and in sync
  (``lastFailover.completedTime``; Lifeboat records it only once the DNS service says the
  change is in sync);
* capacity Ready at the new site (``sites[].capacity.readyTime``, set after the failover),
  when the site has a capacity driver;
* a planned switchover: writes resumed at the new site.

:func:`progress` reads one snapshot of the app (pure); :func:`follow` polls until the
operation ends or the time is up, and gives the exit code (:data:`EXIT_CODES` in
:mod:`controller.cli.main`): 0 done, 1 refused, 4 not done in time, 5 failed (accepted but
it did not complete: the capacity was not Ready within ``capacityTimeoutSeconds``, or
another failover overtook it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

EXIT_OK, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_FAILED = 0, 1, 4, 5


@dataclass(frozen=True)
class Operation:
    """What is followed: the answer to a request (``request_id``), or an approval of a
    recommendation (``approval``); ``epoch``: the app's epoch before it was asked for (a
    failover it causes raises it)."""

    epoch: int
    request_id: str | None = None
    approval: str | None = None
    site: str | None = None
    """The site it moves the app to, when known beforehand (a request)."""


@dataclass(frozen=True)
class Progress:
    """Where an operation stands in one snapshot of the app."""

    lines: tuple[str, ...] = ()
    """The steps reached, in order (each says what happened, with its figure)."""
    outcome: int | None = None
    """Its exit code once it is over (None: under way)."""
    waiting: str = ""
    """What it waits for now."""


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (here, not from the API package: the
    CLI's cluster commands load no resource models)."""
    return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).timestamp()


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass
class _Reading:
    status: Mapping[str, Any]
    spec: Mapping[str, Any]
    lines: list[str] = field(default_factory=list)

    def done(self, code: int, line: str) -> Progress:
        self.lines.append(line)
        return Progress(tuple(self.lines), code)

    def wait(self, what: str) -> Progress:
        return Progress(tuple(self.lines), None, what)


def progress(app: Mapping[str, Any], op: Operation) -> Progress:
    """Where ``op`` stands in ``app`` (a ResilientApp as read). Pure."""
    read = _Reading(_dict(app.get("status")), _dict(app.get("spec")))
    status = read.status
    if op.request_id is not None:
        planned = _dict(status.get("plannedSwitchover"))
        if planned.get("id") == op.request_id:
            _planned_steps(read, planned)
        answer = _dict(status.get("lastRequest"))
        if answer.get("id") != op.request_id:
            return read.wait(f"the operator's answer to request {op.request_id}")
        if not answer.get("accepted"):
            return read.done(EXIT_REFUSED, f"refused: {answer.get('reason', '')}")
        read.lines.append(f"accepted: {answer.get('reason', '')}")
    else:
        recommendation = _dict(status.get("recommendation"))
        if recommendation.get("id") == op.approval:
            return read.wait(f"the operator to carry out {op.approval}")
        read.lines.append(f"approved recommendation {op.approval} carried out")
    record = _dict(status.get("lastFailover"))
    moved = int(record.get("epoch") or 0)
    if moved <= op.epoch:
        if op.request_id is None:  # an approval that moved nothing: an evacuation, a restore
            return _capacity_steps(read, None, None) or read.done(EXIT_OK, "done")
        return read.wait("the failover to be recorded")
    to = str(record.get("toSite") or op.site or "")
    read.lines.append(f"failover {record.get('fromSite')} -> {to} decided, epoch {moved}")
    now_epoch = int(status.get("epoch") or 0)
    if now_epoch > moved:
        return read.done(
            EXIT_FAILED,
            f"failed: overtaken by another failover (epoch {now_epoch}, active site "
            f"{status.get('activeSite')})",
        )
    if not record.get("completedTime"):
        return read.wait(f"DNS to send the traffic to {to} (change in sync)")
    rto = record.get("rtoSeconds")
    figure = f", RTO {float(rto):.1f} s" if rto is not None else ""
    read.lines.append(f"DNS in sync: {to} takes the traffic (epoch {moved}{figure})")
    decided = record.get("decidedTime")
    pending = _capacity_steps(read, to, parse_rfc3339(decided) if decided else None)
    if pending is not None:
        return pending
    planned = _dict(status.get("plannedSwitchover"))
    if op.request_id is not None and planned.get("id") == op.request_id:
        if planned.get("step") != "Done":
            return read.wait(f"writes to resume at {to}")
        said = planned.get("fenceAnswer") or ""
        read.lines.append(f"writes resumed at {to}" + (f" ({said})" if said else ""))
        rpo = record.get("rpoSeconds")
        read.lines.append(f"RPO {float(rpo):g} s" if rpo is not None else "RPO not measured")
    return read.done(EXIT_OK, f"done: {to} serves the app (epoch {moved})")


def _planned_steps(read: _Reading, planned: Mapping[str, Any]) -> None:
    site = planned.get("fromSite")
    if planned.get("writesStoppedTime"):
        answer = planned.get("fenceAnswer") or ""
        read.lines.append(f"writes stopped at {site}" + (f" ({answer})" if answer else ""))
    if planned.get("drainedTime"):
        read.lines.append(f"replication to {planned.get('toSite')} drained")


def _capacity_steps(read: _Reading, site: str | None, since: float | None) -> Progress | None:
    """The capacity step: ``site``'s capacity set after ``since`` and Ready (any site's,
    with no ``site``: the CapacityReady condition); None once it is (or there is none)."""
    status = read.status
    condition = next(
        (
            _dict(c)
            for c in status.get("conditions") or ()
            if _dict(c).get("type") == "CapacityReady"
        ),
        {},
    )
    if site is None:
        if condition.get("status") == "False":
            message = condition.get("message", "")
            return read.done(EXIT_FAILED, f"failed: capacity not Ready: {message}")
        if condition and condition.get("status") != "True":
            return read.wait(f"capacity to be Ready: {condition.get('message', '')}")
        return None
    declared = next(
        (_dict(s) for s in read.spec.get("sites") or () if _dict(s).get("name") == site), {}
    )
    if not declared.get("capacity"):
        return None
    summary = next(
        (_dict(s) for s in status.get("sites") or () if _dict(s).get("name") == site), {}
    )
    capacity = _dict(summary.get("capacity"))
    applied = capacity.get("appliedTime")
    if not applied or (since is not None and parse_rfc3339(applied) < since):
        return read.wait(f"the capacity of {site} to be set")
    if not capacity.get("readyTime"):
        if condition.get("status") == "False" and site in str(condition.get("message", "")):
            message = condition.get("message", "")
            return read.done(EXIT_FAILED, f"failed: capacity not Ready: {message}")
        return read.wait(f"the capacity of {site} to be Ready")
    took = capacity.get("readySeconds")
    count = sum(int(_dict(z).get("count") or 0) for z in capacity.get("zones") or ())
    figure = f" after {float(took):.0f} s" if took is not None else ""
    read.lines.append(f"capacity of {site} Ready: {count} instances{figure}")
    return None


def follow(
    fetch: Callable[[], Mapping[str, Any]],
    op: Operation,
    wait: float,
    *,
    out: TextIO,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 1.0,
) -> int:
    """Poll the app (``fetch``) until ``op`` is over or ``wait`` seconds have passed,
    printing each step once as it is reached; the exit code."""
    deadline = clock() + wait
    printed: set[str] = set()
    latest = Progress()
    while True:
        latest = progress(fetch(), op)
        for line in latest.lines:
            if line not in printed:
                printed.add(line)
                out.write(f"{line}\n")
        out.flush()
        if latest.outcome is not None:
            return latest.outcome
        if clock() >= deadline:
            break
        sleep(min(interval, max(0.0, deadline - clock())))
    out.write(f"not done within {wait:.0f}s: waiting for {latest.waiting}\n")
    return EXIT_TIMEOUT
