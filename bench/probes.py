"""Probe engine benchmark: Lifeboat's prober against Prometheus' blackbox_exporter.

Run with ``python -m bench.probes --report bench/RESULTS.md`` (``--help`` for the knobs).
Not part of the tests. On loopback, in one run:

* the target: :mod:`bench.probe_target`, a fast HTTP endpoint in its own process, on six
  addresses (``127.20.0.1``-``.6``: one per zone of an app);
* **throughput** at each ``--concurrency``: that many probes in flight at all times for
  ``--seconds``, round-robin over the six endpoints, every probe a new connection and a
  ``GET``, healthy on 2xx:

  - Lifeboat: :class:`~controller.operator.probes.HttpProber` in its own process (as in
    the operator: on uvloop; ``lifeboat-asyncio``: on asyncio's own loop);
  - blackbox_exporter (Debian's package, module ``http_2xx``: ``GET``, 2xx, redirects not
    followed, IPv4), driven like Prometheus drives it (``/probe?target=...`` over kept-alive
    connections, that many requests in flight) by a driver process of ours;

  probes/s, CPU seconds per 1,000 probes of the prober's process (``getrusage`` for
  Lifeboat, ``/proc/<pid>/stat`` for blackbox_exporter; the driver's own CPU is reported
  beside it), and the probes that failed;
* **schedule lag** (Lifeboat): ``--apps`` apps of six endpoints each, every app probing
  all its endpoints once per ``--interval`` on its :class:`~controller.operator.probes.
  RoundSchedule` slots, as the operator's workers do; each probe's lag is the time from
  its slot to its start. Reported as p50/p99/max after the first two intervals, with the
  probes/s achieved against those offered. blackbox_exporter has no schedule of its own
  (Prometheus keeps it), so it has no such figure.

Each setting runs ``--repeat`` times (interleaved: all settings once, then again), and the
report gives the median and the range (min-max) of the runs, so a noisy machine shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import commit, machine, process_cpu, write_section

ADDRESSES = tuple(f"127.20.0.{i}" for i in range(1, 7))
TITLE = "# Benchmarks"
BLACKBOX_CONFIG = """modules:
  http_2xx:
    prober: http
    timeout: {timeout}s
    http:
      method: GET
      follow_redirects: false
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
"""


# ----------------------------------------------------------------------------- figures


@dataclass
class Run:
    """One measured run of one tool at one setting."""

    tool: str
    mode: str  # "throughput" | "schedule"
    concurrency: int  # probes in flight (throughput); apps x endpoints (schedule)
    seconds: float
    probes: int
    failed: int
    cpu: float
    driver_cpu: float = 0.0
    offered: float = 0.0  # schedule: probes/s asked for
    lag: dict[str, float] = field(default_factory=dict)  # schedule: p50, p99, max (seconds)
    repeat: int = 0

    @property
    def rate(self) -> float:
        return self.probes / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu / self.probes * 1000 if self.probes else float("nan")


# ----------------------------------------------------------------------------- the engine


def _raise_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _spec(name: str, urls: Sequence[str], interval: float, limit: float) -> Any:
    from controller.api.models import ResilientAppSpec

    zones = [f"zone-{i}" for i in range(len(urls))]
    return ResilientAppSpec.model_validate(
        {
            "sites": [
                {
                    "name": "bench",
                    "provider": "bench",
                    "region": "bench-1",
                    "role": "primary",
                    "zones": zones,
                    "endpoints": [{"zone": z, "url": u} for z, u in zip(zones, urls, strict=True)],
                    "trafficTargets": ["192.0.2.1"],
                }
            ],
            "health": {
                "intervalSeconds": max(1, math.ceil(max(interval, limit))),
                "timeoutSeconds": limit,
            },
            "traffic": {
                "provider": "bench",
                "hostedZoneName": "example.test.",
                "recordName": f"{name}.example.test.",
            },
        }
    )


async def engine_throughput(
    urls: Sequence[str], concurrency: int, seconds: float, limit: float
) -> dict[str, Any]:
    """``concurrency`` probes in flight for ``seconds``; counts and CPU."""
    from controller.operator.probes import HttpProber

    prober = HttpProber(clock=time.monotonic)
    targets = await prober.targets(_spec("bench", urls, 1.0, limit))
    loop = asyncio.get_running_loop()
    probes = failed = 0
    stop = 0.0

    async def worker(first: int) -> None:
        nonlocal probes, failed
        index = first
        while loop.time() < stop:
            result = await prober.probe(targets[index % len(targets)], limit)
            index += 1
            probes += 1
            failed += not result.ok

    cpu, started = _cpu(), loop.time()
    stop = started + seconds
    await asyncio.gather(*[worker(i) for i in range(concurrency)])
    took = loop.time() - started
    return {"probes": probes, "failed": failed, "seconds": took, "cpu": _cpu() - cpu}


async def engine_schedule(
    urls: Sequence[str], apps: int, interval: float, seconds: float, limit: float
) -> dict[str, Any]:
    """``apps`` apps, each probing every endpoint once per ``interval`` on its slots."""
    from controller.operator.probes import HttpProber, RoundSchedule

    prober = HttpProber(clock=time.monotonic)
    schedule = RoundSchedule()
    specs = {f"bench/app-{i}": _spec(f"app-{i}", urls, interval, limit) for i in range(apps)}
    lags: list[float] = []
    probes = failed = 0
    begin = time.monotonic()
    measure_from, end = begin + 2 * interval, begin + 2 * interval + seconds
    cpu = 0.0

    async def app(name: str, spec: Any) -> None:
        nonlocal probes, failed
        due = time.monotonic()
        while due < end:
            started = time.monotonic()
            results = await prober.probe_app(spec, "bench", name)
            if due >= measure_from:
                lags.extend(r.at - due for r in results)
                probes += len(results)
                failed += sum(not r.ok for r in results)
            due = schedule.after(name, interval, max(started, due))
            while (left := due - time.monotonic()) > 0:  # noqa: ASYNC110 - never early, as the worker
                await asyncio.sleep(left)

    async def cpu_at_start() -> None:
        nonlocal cpu
        await asyncio.sleep(measure_from - time.monotonic())
        cpu = _cpu()

    await asyncio.gather(cpu_at_start(), *[app(name, spec) for name, spec in specs.items()])
    used = _cpu() - cpu
    lags.sort()
    return {
        "probes": probes,
        "failed": failed,
        "seconds": seconds,
        "cpu": used,
        "offered": apps * len(urls) / interval,
        "lag": {
            "p50": lags[len(lags) // 2] if lags else float("nan"),
            "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else float("nan"),
            "max": lags[-1] if lags else float("nan"),
        },
    }


def engine_main(args: argparse.Namespace) -> int:
    _raise_file_limit()
    if args.mode == "throughput":
        work = engine_throughput(args.urls, args.concurrency, args.seconds, args.timeout)
    else:
        work = engine_schedule(args.urls, args.apps, args.interval, args.seconds, args.timeout)
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(work)
    else:
        result = asyncio.run(work)
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    print(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- the driver


async def drive_blackbox(
    exporter: str, urls: Sequence[str], concurrency: int, seconds: float, limit: float
) -> dict[str, Any]:
    """Prometheus' part: ``concurrency`` /probe requests in flight for ``seconds``."""
    import aiohttp

    loop = asyncio.get_running_loop()
    probes = failed = 0
    stop = 0.0
    queries = [f"{exporter}/probe?module=http_2xx&target={url}" for url in urls]
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": f"{limit + 0.5:g}"}
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(first: int) -> None:
            nonlocal probes, failed
            index = first
            while loop.time() < stop:
                async with session.get(queries[index % len(queries)]) as answer:
                    text = await answer.text()
                index += 1
                probes += 1
                failed += "\nprobe_success 1" not in text

        cpu, started = _cpu(), loop.time()
        stop = started + seconds
        await asyncio.gather(*[worker(i) for i in range(concurrency)])
        took = loop.time() - started
    return {"probes": probes, "failed": failed, "seconds": took, "driver_cpu": _cpu() - cpu}


def driver_main(args: argparse.Namespace) -> int:
    _raise_file_limit()
    import uvloop

    work = drive_blackbox(args.exporter, args.urls, args.concurrency, args.seconds, args.timeout)
    print(json.dumps(uvloop.run(work)))
    return 0


# ----------------------------------------------------------------------------- the world


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def process(command: Sequence[str], ready: str | None = None) -> Iterator[subprocess.Popen[str]]:
    """Run ``command`` for the block; with ``ready``, wait for that URL to answer (else for
    the line ``ready`` on its output)."""
    child = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        deadline = time.monotonic() + 30
        if ready is None:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{command[0]} did not start")
        else:
            while True:
                try:
                    with urllib.request.urlopen(ready, timeout=1):  # noqa: S310 - loopback
                        break
                except OSError:
                    if time.monotonic() > deadline or child.poll() is not None:
                        raise RuntimeError(f"{command[0]} did not start") from None
                    time.sleep(0.1)
        yield child
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.probes", *args]


def _measure(command: Sequence[str]) -> dict[str, Any]:
    done = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed: {done.stderr.strip()[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def lifeboat_run(
    tool: str, urls: Sequence[str], concurrency: int, args: argparse.Namespace, profile: str = ""
) -> Run:
    loop = "asyncio" if tool == "lifeboat-asyncio" else "uvloop"
    command = _python(
        "engine",
        "--mode=throughput",
        f"--loop={loop}",
        f"--concurrency={concurrency}",
        f"--seconds={args.seconds}",
        f"--timeout={args.timeout}",
        *([f"--profile={profile}"] if profile else []),
        *urls,
    )
    figures = _measure(command)
    return Run(tool, "throughput", concurrency, **figures)


def schedule_run(urls: Sequence[str], apps: int, args: argparse.Namespace) -> Run:
    command = _python(
        "engine",
        "--mode=schedule",
        "--loop=uvloop",
        f"--apps={apps}",
        f"--interval={args.interval}",
        f"--seconds={args.seconds}",
        f"--timeout={args.timeout}",
        *urls,
    )
    figures = _measure(command)
    return Run("lifeboat", "schedule", apps * len(urls), **figures)


def blackbox_run(
    exporter: subprocess.Popen[str],
    address: str,
    urls: Sequence[str],
    concurrency: int,
    args: argparse.Namespace,
) -> Run:
    command = _python(
        "driver",
        f"--exporter={address}",
        f"--concurrency={concurrency}",
        f"--seconds={args.seconds}",
        f"--timeout={args.timeout}",
        *urls,
    )
    before = process_cpu(exporter.pid)
    figures = _measure(command)
    cpu = process_cpu(exporter.pid) - before
    return Run("blackbox_exporter", "throughput", concurrency, cpu=cpu, **figures)


# ----------------------------------------------------------------------------- the report


def _spread(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "-"
    middle = format(statistics.median(values), fmt)
    if len(values) == 1:
        return middle
    return f"{middle} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def throughput_table(runs: Sequence[Run]) -> str:
    rows = [
        "| concurrency | prober | probes/s | CPU s / 1,000 probes | driver CPU s / 1,000 "
        "| failed | Lifeboat ÷ blackbox_exporter (probes/s) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    by = {(r.tool, r.concurrency, r.repeat): r for r in runs if r.mode == "throughput"}
    tools = list(dict.fromkeys(r.tool for r in runs if r.mode == "throughput"))
    for concurrency in sorted({r.concurrency for r in runs if r.mode == "throughput"}):
        for tool in tools:
            mine = [r for (t, c, _), r in by.items() if t == tool and c == concurrency]
            ratios = [
                r.rate / peer.rate
                for r in mine
                if tool != "blackbox_exporter"
                and (peer := by.get(("blackbox_exporter", concurrency, r.repeat)))
                and peer.rate
            ]
            driver = [r.driver_cpu / r.probes * 1000 for r in mine if r.driver_cpu and r.probes]
            rows.append(
                f"| {concurrency:,} | {tool} | {_spread([r.rate for r in mine], ',.0f')} "
                f"| {_spread([r.cpu_per_1000 for r in mine], '.3f')} "
                f"| {_spread(driver, '.3f')} | {sum(r.failed for r in mine):,} "
                f"| {_spread(ratios, '.2f') + 'x' if ratios else ''} |"
            )
    return "\n".join(rows)


def schedule_table(runs: Sequence[Run]) -> str:
    rows = [
        "| endpoints (apps x 6) | offered probes/s | achieved probes/s | lag p50 ms "
        "| lag p99 ms | lag max ms | CPU s / 1,000 probes | failed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for endpoints in sorted({r.concurrency for r in runs if r.mode == "schedule"}):
        mine = [r for r in runs if r.mode == "schedule" and r.concurrency == endpoints]
        rows.append(
            f"| {endpoints:,} ({endpoints // len(ADDRESSES):,} x 6) | {mine[0].offered:,.0f} "
            f"| {_spread([r.rate for r in mine], ',.0f')} "
            f"| {_spread([r.lag['p50'] * 1000 for r in mine], '.1f')} "
            f"| {_spread([r.lag['p99'] * 1000 for r in mine], '.1f')} "
            f"| {_spread([r.lag['max'] * 1000 for r in mine], '.1f')} "
            f"| {_spread([r.cpu_per_1000 for r in mine], '.3f')} "
            f"| {sum(r.failed for r in mine):,} |"
        )
    return "\n".join(rows)


def render(
    runs: Sequence[Run],
    args: argparse.Namespace,
    *,
    command: str,
    started_at: datetime,
    engine: str,
    peer: str,
    notes: str = "",
) -> str:
    lines = [
        f"## Probe engine: Lifeboat and blackbox_exporter ({started_at:%Y-%m-%d})",
        "",
        f"- date: {started_at:%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- load average when the run started: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        " (1, 5, 15 min)",
        f"- command: `{command}`",
        f"- Lifeboat: the probe engine of commit {engine} (`HttpProber`, in its own process)",
        f"- peer: {peer}, module `http_2xx` (GET, 2xx, redirects not followed, IPv4), driven "
        "over kept-alive connections by a Python driver (aiohttp on uvloop) in its own process",
        f"- target: `bench/probe_target.py` (asyncio Protocol on uvloop, one process) on "
        f"{ADDRESSES[0]}-{ADDRESSES[-1].rsplit('.', 1)[1]}; every probe a new connection",
        f"- {args.seconds:g} s per run, {args.repeat} runs of each setting, interleaved; "
        "figures are the median (min-max) of the runs",
        "",
        "### Throughput",
        "",
        throughput_table(runs),
        "",
        "### Schedule lag (Lifeboat)",
        "",
        f"Apps of six endpoints, each probing all of them every {args.interval:g} s on its "
        "`RoundSchedule` slots as the operator's workers do; lag = a probe's start minus its "
        "slot, over all probes after the first two intervals.",
        "",
        schedule_table(runs),
    ]
    if notes:
        lines += ["", notes]
    lines += [
        "",
        "<details><summary>Raw figures</summary>",
        "",
        "```json",
        json.dumps([asdict(r) for r in runs], indent=1),
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines)


def profile_summary(path: str, top: int = 12) -> str:
    """The functions that took the most time (own time) in a profiled engine run."""
    stream = io.StringIO()
    stats = pstats.Stats(path, stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    return stream.getvalue()


def blackbox_version(binary: Path) -> str:
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    first = (done.stdout + done.stderr).strip().splitlines()
    return first[0] if first else "blackbox_exporter"


# ----------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(
        prog="python -m bench.probes", description=__doc__.split("\n\n")[0]
    )
    sub = options.add_subparsers(dest="part")
    engine = sub.add_parser("engine", help="(internal) Lifeboat's prober, in its own process")
    engine.add_argument("--mode", choices=("throughput", "schedule"), required=True)
    engine.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    engine.add_argument("--concurrency", type=int, default=512)
    engine.add_argument("--apps", type=int, default=500)
    engine.add_argument("--interval", type=float, default=1.0)
    engine.add_argument("--seconds", type=float, default=10.0)
    engine.add_argument("--timeout", type=float, default=2.0)
    engine.add_argument("--profile", default="", help="write cProfile stats here")
    engine.add_argument("urls", nargs="+")
    driver = sub.add_parser("driver", help="(internal) drives blackbox_exporter")
    driver.add_argument("--exporter", required=True)
    driver.add_argument("--concurrency", type=int, default=512)
    driver.add_argument("--seconds", type=float, default=10.0)
    driver.add_argument("--timeout", type=float, default=2.0)
    driver.add_argument("urls", nargs="+")

    options.add_argument("--concurrency", default="64,512,2048", help="probes in flight")
    options.add_argument(
        "--apps", default="500,1000", help="apps of 6 endpoints for the schedule-lag runs"
    )
    options.add_argument("--interval", type=float, default=1.0, help="schedule: probe interval")
    options.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    options.add_argument("--timeout", type=float, default=1.0, help="probe timeout")
    options.add_argument("--repeat", type=int, default=3, help="runs of each setting")
    options.add_argument(
        "--tools",
        default="lifeboat,lifeboat-asyncio,blackbox_exporter",
        help="probers to measure (lifeboat: on uvloop, as the operator runs)",
    )
    options.add_argument("--profile", default="", help="profile Lifeboat at 512 into this file")
    options.add_argument("--report", type=Path, help="write the section into this Markdown file")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.part == "engine":
        return engine_main(args)
    if args.part == "driver":
        return driver_main(args)

    from sandbox.tools import ensure_blackbox_exporter

    command = shlex.join(["python", "-m", "bench.probes", *(argv or sys.argv[1:])])
    started_at, engine = datetime.now(UTC), commit()
    tools = args.tools.split(",")
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    apps = [int(a) for a in args.apps.split(",") if a]
    binary = ensure_blackbox_exporter(print) if "blackbox_exporter" in tools else None
    port = _free_port()
    urls = [f"http://{address}:{port}/healthz" for address in ADDRESSES]
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            process([sys.executable, "-m", "bench.probe_target", f"--port={port}", *ADDRESSES])
        )
        exporter, exporter_url = None, ""
        if binary is not None:
            config = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "blackbox.yml"
            config.write_text(BLACKBOX_CONFIG.format(timeout=f"{args.timeout:g}"))
            bb_port = _free_port()
            exporter_url = f"http://127.0.0.1:{bb_port}"
            exporter = stack.enter_context(
                process(
                    [
                        str(binary),
                        f"--config.file={config}",
                        f"--web.listen-address=127.0.0.1:{bb_port}",
                        "--log.level=warn",
                    ],
                    ready=f"{exporter_url}/metrics",
                )
            )
        for repeat in range(args.repeat):
            for concurrency in concurrencies:
                for tool in tools:
                    print(
                        f"run {repeat + 1}/{args.repeat}: {tool} at {concurrency} ...", flush=True
                    )
                    if tool == "blackbox_exporter":
                        assert exporter is not None
                        run = blackbox_run(exporter, exporter_url, urls, concurrency, args)
                    else:
                        profile = (
                            args.profile
                            if args.profile
                            and repeat == 0
                            and concurrency == 512
                            and tool == "lifeboat"
                            else ""
                        )
                        run = lifeboat_run(tool, urls, concurrency, args, profile)
                    run.repeat = repeat
                    runs.append(run)
                    print(
                        f"  {run.rate:,.0f} probes/s, {run.cpu_per_1000:.3f} CPU s/1000, "
                        f"{run.failed} failed",
                        flush=True,
                    )
            if "lifeboat" in tools:
                for count in apps:
                    print(f"run {repeat + 1}/{args.repeat}: schedule, {count} apps ...", flush=True)
                    run = schedule_run(urls, count, args)
                    run.repeat = repeat
                    runs.append(run)
                    print(
                        f"  {run.rate:,.0f}/{run.offered:,.0f} probes/s, lag p99 "
                        f"{run.lag['p99'] * 1000:.1f} ms",
                        flush=True,
                    )
    peer = blackbox_version(binary) if binary is not None else "none"
    section = render(runs, args, command=command, started_at=started_at, engine=engine, peer=peer)
    print(section)
    if args.profile:
        print(profile_summary(args.profile))
    if args.report:
        write_section(args.report, "probes", section, title=TITLE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
