"""Memory per app: what each ResilientApp's worker holds in the operator (issue #22).

Not a test: ``python -m bench.app_memory`` (``--report bench/RESULTS.md`` writes its
section there).

N :class:`~controller.operator.app.AppWorker` s run over in-memory fakes (the ones of
tests/fixtures/worker.py, made lean: they keep no history of what they were asked, so
that what is measured is the worker's memory, not the fakes'), each app the fleet
benchmark's (the sandbox example: 2 sites of 3 zones, zone targets, no capacity; every app
probing the same 6 endpoints). Probing is the real :class:`~controller.operator.probes.HttpProber`
(its per-app compiled targets), with every probe answered OK at once instead of over the
network. Every app runs ``--rounds`` rounds (its first DNS publication included).

Measured at ``--base`` apps and again at ``--base + --more``, each in a process of its own:

* ``trace``: ``tracemalloc`` snapshots at both sizes (after ``gc.collect()``): the
  Python memory added per app, and the lines that added it (``compare_to``, grouped by
  line and by file);
* ``rss``: the process's RSS at both sizes, without tracemalloc (which costs memory of
  its own);
* Prometheus series (children of every labelled metric, ``controller.metrics._ALL``) and
  the values they hold (a histogram series: one per bucket, and its sum), per app.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import string
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench.report import commit, machine, write_section
from controller import metrics
from controller.core.health import ProbeOutcome, ProbeResult
from controller.operator.app import AppContext, AppWorker
from controller.operator.kube import EventType, ObjectRef
from controller.operator.probes import HttpProber, Target
from controller.providers.protocols import DnsReading, TrafficChange, TrafficPlan
from tests.fixtures.worker import FakeProviders, FakeTraffic, merge_patch

TITLE = "# Benchmarks"
EXAMPLE = Path(__file__).resolve().parents[1] / "manifests/examples/sandbox/30-resilientapp.yaml"
NAMESPACE = "bench"
FRAMES = 8
"""Frames tracemalloc keeps per allocation (more: slower)."""


def app_spec(name: str) -> dict[str, Any]:
    """The sandbox example app as the fleet benchmark runs it (bench/failover.py
    ``app_body``): no capacity, no dwell, its own DNS name, the shared endpoints (a fresh
    copy per app, as every object kopf delivers is parsed on its own)."""
    spec = json.loads(_example_spec())
    spec["traffic"]["recordName"] = f"{name}.example.test."
    return spec  # type: ignore[no-any-return]


@functools.cache
def _example_spec() -> str:
    values: dict[str, str] = {}
    for site, region in (("USE1", "US_EAST_1"), ("USW2", "US_WEST_2")):
        for s, zone in enumerate("ABC"):
            values[f"ZONE_{site}_{region}{zone}"] = (
                f"http://127.21.{1 if site == 'USE1' else 2}.{s + 1}:8080/healthz"
            )
            values[f"SUBNET_{site}_{region}{zone}"] = f"subnet-{site}{zone}".lower()
    text = string.Template(EXAMPLE.read_text(encoding="utf-8")).substitute(values)
    example = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "ResilientApp")
    spec: dict[str, Any] = example["spec"]
    spec["failover"].update(
        {"minDwellSeconds": 0, "maxFailoversPerHour": 100, "failback": {"mode": "Manual"}}
    )
    for site in spec["sites"]:
        site.pop("capacity", None)
    return json.dumps(spec)


class Kube:
    """The API server: a status patch is merged into the app's body, as kopf's watch
    would deliver it (the worker reads the same body every round); Events are counted."""

    def __init__(self) -> None:
        self.patches = 0
        self.events = 0
        self.bodies: dict[str, dict[str, Any]] = {}

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str]:
        raise AssertionError("not used")

    async def patch_status(
        self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None = None
    ) -> None:
        self.patches += 1
        body = self.bodies[ref.uid]
        body["status"] = merge_patch(body.get("status"), json.loads(json.dumps(status)))

    async def event(
        self, ref: ObjectRef, type_: EventType, reason: str, message: str, action: str = ""
    ) -> None:
        self.events += 1


class Traffic(FakeTraffic):
    """DNS keeping one owner record per name (what the operator reads back), no history."""

    def __init__(self) -> None:
        super().__init__()
        self.owners: dict[str, Any] = {}

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        if plan.owner is not None:
            self.owners[plan.record.name] = plan.owner
        now = time.time()
        return TrafficChange("C", True, now, now)

    async def read(self, plan: TrafficPlan) -> DnsReading:
        return DnsReading(self.owners.get(plan.record.name))


class Prober(HttpProber):
    """The real prober (compiled targets kept per app), every probe answered OK at once."""

    async def probe(self, target: Target, limit: float) -> ProbeResult:
        return ProbeResult(target.key, ProbeOutcome.OK, time.time(), 0.002)


class Fleet:
    def __init__(self) -> None:
        self.kube = Kube()
        self.traffic = Traffic()
        self.prober = Prober()
        self.providers = FakeProviders(self.traffic)
        self.workers: list[tuple[AppWorker, dict[str, Any]]] = []

    def add(self, count: int) -> None:
        for n in range(len(self.workers), len(self.workers) + count):
            name = f"app-{n:04d}"
            ref = ObjectRef("ResilientApp", "resilientapps", name, NAMESPACE, f"uid-{n:08d}")
            # One context per app as in tests; what the operator shares (prober, providers,
            # schedule, kube) is shared here too.
            context = AppContext(kube=self.kube, providers=self.providers, prober=self.prober)
            body = {
                "apiVersion": "lifeboat.dev/v1alpha1",
                "kind": "ResilientApp",
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "uid": ref.uid,
                    "generation": 1,
                    "annotations": {},
                },
                "spec": app_spec(name),
                "status": {},
            }
            self.kube.bodies[ref.uid] = body
            self.workers.append((AppWorker(ref, context), body))

    async def rounds(self, count: int, first: int = 0) -> None:
        for _ in range(count):
            for worker, body in self.workers[first:]:
                worker.metrics.round_started(0.0)
                await worker.round(body)
                worker.metrics.round_done(time.time())
            # Let every started action (the first DNS publication) finish and be recorded.
            await asyncio.sleep(0)
            for worker, _ in self.workers[first:]:
                if worker.actions.task is not None:
                    await asyncio.wait({worker.actions.task}, timeout=5.0)
                await worker.pause(time.monotonic() + 0.0005, lambda: False)


def series() -> tuple[int, int, Counter[str]]:
    """Children of every labelled metric, the values they hold, and children by metric."""
    children, values, by_metric = 0, 0, Counter[str]()
    for metric in metrics._ALL:
        found = list(metric._metrics.values())
        children += len(found)
        by_metric[metric._name] += len(found)
        for child in found:
            buckets = getattr(child, "_buckets", None)
            values += 1 + (len(buckets) if buckets is not None else 0)
    return children, values, by_metric


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def settled() -> None:
    gc.collect()
    gc.collect()


async def measure(mode: str, base: int, more: int, rounds: int, top: int) -> dict[str, Any]:
    fleet = Fleet()
    if mode == "trace":
        tracemalloc.start(FRAMES)
    fleet.add(base)
    await fleet.rounds(rounds)
    settled()
    before_series = series()
    before = tracemalloc.take_snapshot() if mode == "trace" else None
    rss_before = rss_kib()
    fleet.add(more)
    await fleet.rounds(rounds, first=base)
    await fleet.rounds(1)  # one more round of the whole fleet, as steady as the first
    settled()
    rss_after = rss_kib()
    after_series = series()
    figures: dict[str, Any] = {
        "mode": mode,
        "apps": [base, base + more],
        "rss_kib": [rss_before, rss_after],
        "series_per_app": (after_series[0] - before_series[0]) / more,
        "values_per_app": (after_series[1] - before_series[1]) / more,
        "series_by_metric": {
            name: (after_series[2][name] - before_series[2][name]) / more
            for name in after_series[2]
            if after_series[2][name] != before_series[2][name]
        },
        "status_writes": fleet.kube.patches,
        "events": fleet.kube.events,
    }
    if before is not None:
        after = tracemalloc.take_snapshot()
        ignore = (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        )
        before, after = before.filter_traces(ignore), after.filter_traces(ignore)
        lines = after.compare_to(before, "lineno")
        files = after.compare_to(before, "filename")
        traced = sum(s.size_diff for s in lines)
        figures["traced_per_app"] = traced / more
        figures["by_line"] = [
            (str(s.traceback[0]), s.size_diff / more, s.count_diff / more) for s in lines[:top]
        ]
        figures["by_file"] = [
            (_short(s.traceback[0].filename), s.size_diff / more, s.count_diff / more)
            for s in files[:top]
        ]
        stacks = after.compare_to(before, "traceback")
        figures["by_stack"] = [
            (
                s.size_diff / more,
                [f"{_short(f.filename)}:{f.lineno}" for f in s.traceback if _ours(f.filename)][:6],
            )
            for s in stacks[:top]
        ]
        tracemalloc.stop()
    return figures


def _ours(filename: str) -> bool:
    return "/controller/" in filename or "/bench/" in filename or "/tests/" in filename


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/wt/mem/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def run_child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.app_memory",
        "--child",
        mode,
        "--base",
        str(args.base),
        "--more",
        str(args.more),
        "--rounds",
        str(args.rounds),
        "--top",
        str(args.top),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def report(trace: dict[str, Any], rss: dict[str, Any], command: str) -> str:
    base, total = trace["apps"]
    more = total - base
    rss_growth = (rss["rss_kib"][1] - rss["rss_kib"][0]) / more
    lines = [
        f"## Memory per app: one operator's workers (issue #22) ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"Machine: {machine()}. Commit: {commit()}. Command: `{command}`.",
        "",
        f"{base} apps, then {total}; per app = the growth divided by {more}.",
        "",
        "| per app | |",
        "|---|---|",
        f"| Python memory (tracemalloc) | {trace['traced_per_app'] / 1024:.1f} KiB |",
        f"| RSS (a run without tracemalloc) | {rss_growth:.1f} KiB |",
        f"| Prometheus series | {trace['series_per_app']:.0f} |",
        f"| Prometheus values (a histogram series: buckets + sum) | "
        f"{trace['values_per_app']:.0f} |",
        "",
        "Where the Python memory per app was allocated (top lines):",
        "",
        "| KiB per app | blocks per app | line |",
        "|---:|---:|---|",
    ]
    for where, size, count in trace["by_line"][:15]:
        lines.append(f"| {size / 1024:.1f} | {count:.0f} | `{_short(where)}` |")
    lines += ["", "Series per app, by metric:", "", "| metric | series |", "|---|---:|"]
    for name, count in sorted(trace["series_by_metric"].items(), key=lambda i: -i[1]):
        lines.append(f"| `{name}` | {count:.0f} |")
    return "\n".join(lines)


def show(figures: dict[str, Any]) -> None:
    base, total = figures["apps"]
    more = total - base
    print(f"[{figures['mode']}] apps {base} -> {total}")
    rss = figures["rss_kib"]
    growth = (rss[1] - rss[0]) / more
    print(f"  RSS {rss[0] / 1024:.1f} -> {rss[1] / 1024:.1f} MiB: {growth:.1f} KiB/app")
    print(
        f"  series/app {figures['series_per_app']:.1f}, values/app {figures['values_per_app']:.1f}"
        f"; status writes {figures['status_writes']}, events {figures['events']}"
    )
    for name, count in sorted(figures["series_by_metric"].items(), key=lambda i: -i[1]):
        print(f"    {count:6.1f}  {name}")
    if "traced_per_app" in figures:
        print(f"  traced Python memory: {figures['traced_per_app'] / 1024:.1f} KiB/app")
        print("  by file:")
        for where, size, count in figures["by_file"]:
            print(f"    {size / 1024:8.1f} KiB {count:7.1f} blocks  {where}")
        print("  by line:")
        for where, size, count in figures["by_line"]:
            print(f"    {size / 1024:8.1f} KiB {count:7.1f} blocks  {_short(where)}")
        print("  by stack (our frames, innermost first):")
        for size, frames in figures["by_stack"]:
            print(f"    {size / 1024:8.1f} KiB  {' < '.join(reversed(frames))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=10, help="apps before the first snapshot")
    parser.add_argument("--more", type=int, default=100, help="apps added before the second")
    parser.add_argument("--rounds", type=int, default=5, help="rounds each app runs")
    parser.add_argument("--top", type=int, default=25, help="lines (and files) listed")
    parser.add_argument("--report", type=Path, help="write a section into this file")
    parser.add_argument("--child", choices=("trace", "rss"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        figures = asyncio.run(measure(args.child, args.base, args.more, args.rounds, args.top))
        print(json.dumps(figures))
        return 0
    rss = run_child("rss", args)
    trace = run_child("trace", args)
    show(rss)
    show(trace)
    if args.report:
        command = "python -m bench.app_memory " + " ".join(argv or sys.argv[1:])
        write_section(args.report, "app-memory", report(trace, rss, command), title=TITLE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
