"""Failover-path benchmark: detection and RTO over many outages, and a fleet of apps on one
operator. Not a test: ``python -m bench.failover --report bench/RESULTS.md``
(``make bench-failover``; ``--help`` for the knobs).

Everything runs on the sandbox (a real kube-apiserver + etcd, moto behind fault proxies,
zonal HTTP endpoints) with ``lifeboat run`` as a process of its own, under the operator's
ServiceAccount, as in a pod.

* **Detection and RTO** (``--reps`` outages per setting): one app (the sandbox example's
  sites and zones, ``intervalSeconds`` 1, ``failureThreshold`` 3, no dwell), every zone of its
  active site stopped (``stopped``: connections refused) or hanging (``hanging``: accepted,
  never answered); measured on the bench's clock from the moment the zones fail: the first
  zone the status reports Down (*detection*), and the moment Route 53 (moto) holds the new
  weights (*DNS moved*); beside them the operator's own figures from ``status.lastFailover``
  (detection and RTO counted from the last good probe). Then the failed zones come back and
  the next outage hits the site now active, so traffic goes back and forth. The peer figure
  is what Route 53's own health checks need for the same failure: request interval x
  failure threshold (10 s x 3 fast, 30 s x 3 standard), before DNS TTLs.
* **Fleet** (``--fleet``, e.g. 10 100 1000): that many apps of 6 zones, probing 6 shared
  zonal endpoints every second (:mod:`bench.probe_target` in a process of its own, on
  ``127.21.<site>.<zone>``: endpoints in the bench's own process starved at 100 apps and
  answered in 0.8 s, past the probes' timeout), and one more app with zones of its own
  (the sandbox's switchable endpoints), to fail; the apps are
  created before the operator starts. Reported: time from the operator's start to every
  app's first decision in status, then over ``--window`` seconds of steady state: the
  operator's RSS and CPU seconds per minute, the kube-apiserver's CPU seconds per minute,
  kube-apiserver requests per app per minute (``apiserver_request_total`` from the
  apiserver's own ``/metrics``, read before and after the window; the bench sends none
  meanwhile), probes/s the endpoints received against those the apps ask for; finally the
  RTO (outage → DNS moved) of the one app whose zones then fail while the rest are steady.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from bench.probes import _free_port, process
from bench.report import commit, machine, process_cpu, write_section
from controller.operator.shards import Shard
from sandbox.assets import ensure_assets
from sandbox.procs import free_loopback_port
from sandbox.world import CONTROLLER_NAMESPACE, HOSTED_ZONE, Sandbox
from sandbox.zones import ZoneFleet

GROUP, VERSION, PLURAL = "lifeboat.dev", "v1alpha1", "resilientapps"
NAMESPACE = "bench"
TITLE = "# Benchmarks"
ROUTE53_CHECKS = {"fast": 10 * 3, "standard": 30 * 3}
"""Route 53 health checks: request interval x failure threshold (seconds)."""


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def spread(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"{min(values):.2f} / {statistics.median(values):.2f} / "
        f"{percentile(values, 99):.2f} / {max(values):.2f}"
    )


# --------------------------------------------------------------------------- the world


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int = 0

    def round_lag(self) -> dict[float, float]:
        """``lifeboat_probe_round_lag_seconds``: cumulative count by bucket bound."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        buckets: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith("lifeboat_probe_round_lag_seconds_bucket{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
        return buckets

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "MALLOC_MMAP_THRESHOLD_": "131072",
}
"""glibc malloc's settings as the operator's image sets them (Dockerfile ``ENV``), so that
the operators measured here allocate as in production (tests/unit/test_malloc_env.py)."""

LOG_LEVEL = os.environ.get("BENCH_OPERATOR_LOG_LEVEL", "warning")
"""The operators' log level (``BENCH_OPERATOR_LOG_LEVEL=info`` to see every decision)."""


@contextmanager
def operator(sandbox: Sandbox, workdir: Path, *extra: str) -> Iterator[Operator]:
    log = workdir / f"operator-{time.monotonic_ns()}.log"
    metrics_port = free_loopback_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("lifeboat")),
                f"--log-level={LOG_LEVEL}",
                "run",
                f"--kubeconfig={sandbox.operator_kubeconfig}",
                f"--controller-namespace={CONTROLLER_NAMESPACE}",
                "--metrics-address=127.0.0.1",
                f"--metrics-port={metrics_port}",
                f"--health-endpoint=http://127.0.0.1:{free_loopback_port()}/healthz",
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **MALLOC_ENV, "KUBECONFIG": "/nonexistent"},
        )
    running = Operator(process, log, metrics_port)
    try:
        yield running
    finally:
        running.stop()


@dataclass(frozen=True)
class SharedZones:
    """The fleet's shared zonal endpoints: :mod:`bench.probe_target` listening on one
    address per zone and one port, answering every path with 200."""

    port: int
    hosts: dict[tuple[str, str], str]

    def url(self, site: str, zone: str) -> str:
        return f"http://{self.hosts[site, zone]}:{self.port}/healthz"

    def answered(self) -> int:
        """Requests answered so far, over every address."""
        host = next(iter(self.hosts.values()))
        with urllib.request.urlopen(f"http://{host}:{self.port}/__count", timeout=5) as answer:
            return int(answer.read())


@contextmanager
def shared_zones(sandbox: Sandbox) -> Iterator[SharedZones]:
    hosts = {
        (layout.site, zone): f"127.21.{s}.{z}"
        for s, layout in enumerate(sandbox.layout, start=1)
        for z, zone in enumerate(layout.zones, start=1)
    }
    port = _free_port()
    command = [sys.executable, "-m", "bench.probe_target", f"--port={port}", *hosts.values()]
    with process(command):
        yield SharedZones(port, hosts)


@contextmanager
def operators(sandbox: Sandbox, workdir: Path, shards: int) -> Iterator[list[Operator]]:
    """One operator, or ``shards`` of them (``--shard I/N``), the operator's Role granted
    the shards' Leases meanwhile (as docs/operations.md#shards says)."""
    if shards == 1:
        with operator(sandbox, workdir) as one:
            yield [one]
        return
    with sandbox.shard_leases(shards), ExitStack() as stack:
        yield [
            stack.enter_context(operator(sandbox, workdir, f"--shard={i}/{shards}"))
            for i in range(shards)
        ]


def _custom(sandbox: Sandbox) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(sandbox.kube.api_client())


def app_body(
    sandbox: Sandbox, name: str, zones: ZoneFleet | SharedZones | None = None
) -> dict[str, Any]:
    """The sandbox example app as ``name`` in the bench namespace, with its own DNS name,
    no dwell and a budget large enough for every repetition; its endpoints those of
    ``zones`` when given (same site and zone names as the sandbox's)."""
    example = next(d for d in sandbox.example_documents() if d.get("kind") == "ResilientApp")
    body: dict[str, Any] = copy.deepcopy(example)
    body["metadata"] = {"name": name, "namespace": NAMESPACE}
    spec = body["spec"]
    spec["failover"].update(
        {"minDwellSeconds": 0, "maxFailoversPerHour": 100, "failback": {"mode": "Manual"}}
    )
    spec["traffic"]["recordName"] = f"{name}.{HOSTED_ZONE}"
    for site in spec["sites"]:
        site.pop("capacity", None)
        if zones is not None:
            for endpoint in site["endpoints"]:
                endpoint["url"] = zones.url(site["name"], endpoint["zone"])
    return body


def create_apps(sandbox: Sandbox, bodies: Sequence[dict[str, Any]]) -> None:
    api = _custom(sandbox)
    for body in bodies:
        api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)


def items_of(api: kubernetes.client.CustomObjectsApi) -> list[dict[str, Any]]:
    listing = cast(
        dict[str, Any], api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    )
    return cast(list[dict[str, Any]], listing["items"])


def delete_apps_quietly(sandbox: Sandbox) -> None:
    """Delete the apps with no operator to take their finalizers off."""
    api = _custom(sandbox)
    for item in items_of(api):
        name = item["metadata"]["name"]
        api.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, name, {"metadata": {"finalizers": None}}
        )
    delete_apps(sandbox)


def delete_apps(sandbox: Sandbox) -> None:
    api = _custom(sandbox)
    api.delete_collection_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not items_of(api):
            return
        time.sleep(0.5)


def status_of(sandbox: Sandbox, name: str) -> dict[str, Any]:
    try:
        body = cast(
            dict[str, Any],
            _custom(sandbox).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name),
        )
    except ApiException:
        return {}
    status = body.get("status") or {}
    assert isinstance(status, dict)
    return status


def wait(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> float:
    """Poll until ``predicate``; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(poll)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def steady(sandbox: Sandbox, name: str, site: str) -> bool:
    status = status_of(sandbox, name)
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    zones = status.get("zones", [])
    return (
        status.get("activeSite") == site
        and bool(ready)
        and ready[0]["status"] == "True"
        and bool(zones)
        and all(z["state"] == "Healthy" for z in zones)
    )


# --------------------------------------------------------------------------- detection


@dataclass
class Outage:
    setting: str
    detection: float
    dns_moved: float
    operator_detection: float | None
    operator_rto: float | None


def one_outage(sandbox: Sandbox, name: str, failing: str, other: str, setting: str) -> Outage:
    """Fail every zone of ``failing``; time the first Down zone and the DNS move."""
    wait(lambda: steady(sandbox, name, failing), 120, "the app steady")
    endpoints = sandbox.zones.site_endpoints(failing)
    start = time.monotonic()
    for endpoint in endpoints:
        if setting == "stopped":
            endpoint.down()
        else:
            endpoint.hang()

    def down() -> bool:
        zones = status_of(sandbox, name).get("zones", [])
        return any(z["state"] == "Down" and z["site"] == failing for z in zones)

    detected = wait(down, 60, "a zone Down")
    record = f"{name}.{HOSTED_ZONE}"
    moved = wait(lambda: sandbox.dns_weights(record).get(other) == 100, 60, "DNS moved")
    last = status_of(sandbox, name).get("lastFailover") or {}
    for endpoint in endpoints:
        endpoint.serve()
    return Outage(
        setting,
        detected - start,
        moved - start,
        last.get("detectionSeconds"),
        last.get("rtoSeconds"),
    )


@contextmanager
def diagnosed(sandbox: Sandbox, name: str, running: Operator) -> Iterator[None]:
    """On a timeout, say what the app's status and the operator's log held."""
    try:
        yield
    except TimeoutError as error:
        log = running.log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        raise TimeoutError(
            f"{error}\nstatus of {name}: {status_of(sandbox, name)}\noperator log (tail):\n"
            + "\n".join(log)
        ) from None


def detection_runs(
    sandbox: Sandbox,
    workdir: Path,
    reps: int,
    log: Callable[[str], None],
    suspect_interval: float | None = None,
) -> list[Outage]:
    name = "rto"
    body = app_body(sandbox, name)
    if suspect_interval is not None:
        body["spec"]["health"]["suspectIntervalSeconds"] = suspect_interval
    create_apps(sandbox, [body])
    outages: list[Outage] = []
    sites = [layout.site for layout in sandbox.layout]
    with operator(sandbox, workdir) as running, diagnosed(sandbox, name, running):
        active = sites[0]
        for setting in ("stopped", "hanging"):
            for rep in range(reps):
                other = next(s for s in sites if s != active)
                outage = one_outage(sandbox, name, active, other, setting)
                outages.append(outage)
                log(
                    f"{setting} #{rep + 1}: detection {outage.detection:.2f} s, DNS moved "
                    f"{outage.dns_moved:.2f} s"
                )
                active = other
        delete_apps(sandbox)  # while the operator runs: it takes its finalizers off
    return outages


# --------------------------------------------------------------------------- fleet


@dataclass
class FleetFigures:
    apps: int
    first_decisions: float
    rss_mib: float
    cpu_per_minute: float
    apiserver_cpu_per_minute: float
    requests_per_app_minute: float
    probes_per_second: float
    probes_expected: float
    rto: float
    interval: float = 1.0
    shards: int = 1
    lag_p99: float = float("nan")
    """p99 of how late rounds started in the window (the histogram's bucket bound)."""
    notes: list[str] = field(default_factory=list)


def lag_quantile(
    before: list[dict[float, float]], after: list[dict[float, float]], q: float
) -> float:
    """The bucket bound under which ``q`` of the window's rounds started (every shard)."""
    counts: dict[float, float] = {}
    for b, a in zip(before, after, strict=True):
        for bound, total in a.items():
            counts[bound] = counts.get(bound, 0.0) + total - b.get(bound, 0.0)
    if not counts or counts.get(float("inf"), 0.0) <= 0:
        return float("nan")
    wanted = q * counts[float("inf")]
    return next(bound for bound in sorted(counts) if counts[bound] >= wanted)


def apiserver_requests(sandbox: Sandbox) -> float:
    text = sandbox.kube.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def apiserver_pid(sandbox: Sandbox) -> int:
    port = sandbox.kube.server_url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        binary = cmdline[0].decode(errors="replace") if cmdline else ""
        if binary.endswith("kube-apiserver") and f"--secure-port={port}".encode() in cmdline:
            return int(entry.name)
    raise RuntimeError("kube-apiserver process not found")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fleet_run(
    sandbox: Sandbox,
    workdir: Path,
    apps: int,
    window: float,
    log: Callable[[str], None],
    interval: int = 1,
    shards: int = 1,
) -> FleetFigures:
    own = ZoneFleet([(layout.site, z) for layout in sandbox.layout for z in layout.zones])
    with shared_zones(sandbox) as shared, own:
        bodies = [app_body(sandbox, f"app{apps}-{i:04d}", shared) for i in range(apps)]
        for body in bodies:  # the failing app keeps the 1 s probes its RTO is measured with
            body["spec"]["health"]["intervalSeconds"] = interval
        # A DNS name of its own per fleet: the last fleet's failing app was failed over, and
        # its records (epoch 2, usw2) outlive it; a new app of that name sees another
        # owner's records and is never steady.
        failing = f"failing-{apps}"
        bodies.append(app_body(sandbox, failing, own))
        started = time.monotonic()
        create_apps(sandbox, bodies)
        log(f"fleet {apps}: {len(bodies)} apps created in {time.monotonic() - started:.1f} s")
        api = _custom(sandbox)
        # What the kube-apiserver serves without the operator (its own loopback clients,
        # this bench's one read of /metrics), subtracted from the operator's figure.
        quiet = min(window, 20.0)
        before = apiserver_requests(sandbox)
        time.sleep(quiet)
        baseline = (apiserver_requests(sandbox) - before) / quiet * 60
        with operators(sandbox, workdir, shards) as fleet:
            running = fleet[Shard(0, shards).of(NAMESPACE, failing)]
            start = time.monotonic()

            def decided() -> bool:
                items = items_of(api)
                return all((i.get("status") or {}).get("lastDecision") for i in items)

            first = wait(decided, 600, "every app's first decision", poll=1.0) - start
            wait(lambda: steady(sandbox, failing, sandbox.layout[0].site), 120, "steady")
            time.sleep(5)
            pids, apiserver = [o.pid for o in fleet], apiserver_pid(sandbox)
            answered_before = shared.answered()
            requests_before = apiserver_requests(sandbox)
            lag_before = [o.round_lag() for o in fleet]
            cpu_before = sum(process_cpu(pid) for pid in pids)
            api_cpu_before = process_cpu(apiserver)
            t0 = time.monotonic()
            time.sleep(window)
            elapsed = time.monotonic() - t0
            cpu_after = sum(process_cpu(pid) for pid in pids)
            api_cpu_after = process_cpu(apiserver)
            lag_after = [o.round_lag() for o in fleet]
            requests_after = apiserver_requests(sandbox)
            probes = shared.answered() - answered_before
            rss = sum(rss_mib(pid) for pid in pids)
            # One app fails while the rest are steady.
            active, other = sandbox.layout[0].site, sandbox.layout[1].site
            outage = time.monotonic()
            for endpoint in own.site_endpoints(active):
                endpoint.down()
            with diagnosed(sandbox, failing, running):
                moved = wait(
                    lambda: sandbox.dns_weights(f"{failing}.{HOSTED_ZONE}").get(other) == 100,
                    120,
                    "the failing app's DNS moved",
                )
            delete_apps(sandbox)  # while the operator runs: it takes its finalizers off
        minutes = elapsed / 60
        figures = FleetFigures(
            apps=apps,
            first_decisions=first,
            rss_mib=rss,
            cpu_per_minute=(cpu_after - cpu_before) / minutes,
            apiserver_cpu_per_minute=(api_cpu_after - api_cpu_before) / minutes,
            requests_per_app_minute=max(
                0.0, ((requests_after - requests_before) / minutes - baseline) / (apps + 1)
            ),
            probes_per_second=probes / elapsed,
            probes_expected=apps * 6 / interval,
            interval=interval,
            shards=shards,
            lag_p99=lag_quantile(lag_before, lag_after, 0.99),
            rto=moved - outage,
        )
        log(f"fleet {apps}: {figures}")
        return figures


# --------------------------------------------------------------------------- report


def report(
    outages: list[Outage],
    fleets: list[FleetFigures],
    command: str,
    suspect_interval: float | None = None,
) -> str:
    lines = [
        f"Machine: {machine()}. Commit {commit()}. Command: `{command}`.",
        "",
    ]
    if outages:
        lines += [
            "### Detection and RTO (seconds: min / p50 / p99 / max)",
            "",
            "One app, `intervalSeconds` 1, `timeoutSeconds` 0.5, `failureThreshold` 3"
            + (
                f", `suspectIntervalSeconds` {suspect_interval:g}"
                if suspect_interval is not None
                else ""
            )
            + "; every zone of the active site fails at t=0 (bench clock).",
            "",
            "| outage | runs | first zone Down in status | DNS moved (RTO) | operator: detection "
            "| operator: RTO | Route 53 health checks (fast / standard) "
            "| ratio (fast / our p99) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for setting in ("stopped", "hanging"):
            these = [o for o in outages if o.setting == setting]
            if not these:
                continue
            moved = [o.dns_moved for o in these]
            lines.append(
                f"| zones {setting} | {len(these)} | {spread([o.detection for o in these])} | "
                f"{spread(moved)} | "
                f"{spread([o.operator_detection for o in these if o.operator_detection])} | "
                f"{spread([o.operator_rto for o in these if o.operator_rto])} | "
                f"{ROUTE53_CHECKS['fast']} / {ROUTE53_CHECKS['standard']} | "
                f"{ROUTE53_CHECKS['fast'] / percentile(moved, 99):.1f}x |"
            )
        lines.append("")
    if fleets:
        lines += [
            "### Fleet on one operator (6 zones per app)",
            "",
            "CPU per app-round: the operator's CPU over the rounds the apps asked for "
            "(apps / interval each second; the failing app's rounds included).",
            "",
            "| apps | shards | probe interval (s) | to every first decision (s) "
            "| operator RSS (MiB, all shards) | operator CPU s/min | CPU ms per app-round "
            "| round lag p99 (s) | kube-apiserver CPU s/min "
            "| apiserver requests per app per minute | probes/s achieved / asked "
            "| RTO of one failing app (s) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for f in fleets:
            per_round = f.cpu_per_minute / 60 * 1000 / (f.apps / f.interval + 1.0)
            lines.append(
                f"| {f.apps} | {f.shards} | {f.interval:g} | {f.first_decisions:.1f} "
                f"| {f.rss_mib:.0f} | {f.cpu_per_minute:.1f} | {per_round:.1f} | {f.lag_p99:g} | "
                f"{f.apiserver_cpu_per_minute:.1f} | {f.requests_per_app_minute:.2f} | "
                f"{f.probes_per_second:.0f} / {f.probes_expected:.0f} | {f.rto:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="outages per setting")
    parser.add_argument("--fleet", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--window", type=float, default=60.0, help="steady seconds measured")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the operators' logs here")
    parser.add_argument(
        "--shards", type=int, default=1, help="operator processes (lifeboat run --shard I/N)"
    )
    parser.add_argument(
        "--interval",
        type=int,
        default=1,
        help="the fleet's probe interval (seconds; the failing app always probes every 1 s)",
    )
    parser.add_argument(
        "--suspect-interval",
        type=float,
        default=None,
        help="the outage app's health.suspectIntervalSeconds (faster rounds while a zone is "
        "Suspect or Recovering; default: not set)",
    )
    parser.add_argument("--report", type=Path, default=None, help="write a section here")
    args = parser.parse_args(argv)
    command = "python -m bench.failover " + " ".join(argv if argv is not None else sys.argv[1:])
    assets = ensure_assets(log=print)
    with (
        tempfile.TemporaryDirectory(prefix="lifeboat-bench-") as scratch,
        Sandbox(assets) as sandbox,
    ):
        tmp = str(args.log_dir) if args.log_dir is not None else scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        sandbox.apply_examples()
        sandbox.kube.kubectl("create", "namespace", NAMESPACE)
        _custom(sandbox).delete_namespaced_custom_object(GROUP, VERSION, "shop", PLURAL, "web")
        outages = (
            detection_runs(sandbox, Path(tmp), args.reps, print, args.suspect_interval)
            if args.reps
            else []
        )
        fleets: list[FleetFigures] = []
        failed: list[str] = []
        for n in args.fleet:
            try:
                fleets.append(
                    fleet_run(sandbox, Path(tmp), n, args.window, print, args.interval, args.shards)
                )
            except TimeoutError as error:  # reported, not hidden: the fleet did not keep up
                print(error)
                failed.append(f"fleet of {n} apps: {str(error).splitlines()[0]}")
                delete_apps_quietly(sandbox)
    text = report(outages, fleets, command, args.suspect_interval)
    if failed:
        text += "\nNot measured: " + "; ".join(failed) + "\n"
    print(text)
    if args.report is not None:
        section = (
            f"## Failover path: detection, RTO and a fleet ({time.strftime('%Y-%m-%d')})\n\n{text}"
        )
        write_section(args.report, "failover", section, title=TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
