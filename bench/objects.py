"""Object replication benchmark: Lifeboat's engine against ``rclone sync``, same run.

Run with ``make bench`` (or ``python -m bench.objects --help``). Not part of the tests.

What it does, on loopback servers it starts itself:

* moto (S3, two regions: ``us-east-1`` → ``us-west-2``) and real Swift behind real
  Keystone (``RegionOne``), each behind a counting proxy (our fault proxy, no faults);
* writes ``--objects`` objects into a source bucket (mostly small, ``--large`` of them
  large enough to go multipart);
* for each pair (S3→S3 across regions, S3→Swift across providers) and each tool, a full
  initial sync into an empty destination, then — after ``--changed`` of the objects were
  rewritten — an incremental pass. Each tool runs as its own process, so wall time and
  peak memory (``ru_maxrss``) are measured the same way; requests are counted at the
  proxies. rclone runs with ``--checksum`` (compare size and hash from listings, as
  Lifeboat does) and ``--transfers``/``--checkers`` equal to Lifeboat's concurrency;
* the event-driven path: Lifeboat follows S3 event notifications (SQS) while a writer
  puts objects at a steady rate; the time from each write to the object's appearance at
  the destination is the RPO distribution (rclone has no event path: its RPO is the
  interval between its runs plus a run's duration).

Figures are printed and, with ``--report``, written to a Markdown file with the machine,
the command and the date.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import random
import secrets
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig

from bench import report
from bench.rclone import ensure_rclone
from bench.report import commit, machine
from sandbox.faults import MOTO_UNVERSIONED_BUCKETS, FaultProxy
from sandbox.moto_server import MotoServer
from sandbox.openstack.cloud import OpenStackWorld
from sandbox.openstack.env import ensure_openstack_env

EAST, WEST = "us-east-1", "us-west-2"
SWIFT_REGION = "RegionOne"
KiB, MiB = 1024, 1024 * 1024
ACCESS_KEY, SECRET_KEY = "AKIDLIFEBOATBENCH", secrets.token_urlsafe(24)


# ----------------------------------------------------------------------------- the world


@dataclass
class World:
    """The servers of one benchmark run."""

    moto: MotoServer
    s3_proxy: FaultProxy
    openstack: OpenStackWorld

    def s3(self, region: str, *, direct: bool = True) -> Any:
        return boto3.client(
            "s3",
            region_name=region,
            endpoint_url=self.moto.url if direct else self.s3_proxy.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def swift_proxy(self) -> FaultProxy:
        return self.openstack.proxy(SWIFT_REGION, "object-store")

    def clear_counts(self) -> None:
        self.s3_proxy.clear_records()
        self.swift_proxy().clear_records()

    def requests(self) -> int:
        return self.s3_proxy.total_requests + self.swift_proxy().total_requests


@contextmanager
def world() -> Iterator[World]:
    with ExitStack() as stack:
        moto = MotoServer()
        moto.start()
        stack.callback(moto.stop)
        # moto alone names a "null" version of each multipart upload and then refuses a
        # HEAD of it, which made rclone (it checks each upload by its version) fail those
        # objects and list everything again; S3 names no version in unversioned buckets.
        proxy = FaultProxy(
            moto.url,
            name="bench-s3",
            max_records=1,
            drop_answer_headers=MOTO_UNVERSIONED_BUCKETS,
        )
        proxy.start()
        stack.callback(proxy.stop)
        openstack = OpenStackWorld(ensure_openstack_env(), swift_proxy_process=True)
        openstack.start()
        stack.callback(openstack.stop)
        yield World(moto, proxy, openstack)


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    keys: tuple[str, ...]
    sizes: Mapping[str, int]

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())


def make_sizes(count: int, large: int, seed: int) -> dict[str, int]:
    """Mostly small objects (0.5-64 KiB, skewed small), ``large`` of 16-40 MiB."""
    rng = random.Random(seed)
    sizes: dict[str, int] = {}
    large_indexes = set(rng.sample(range(count), min(large, count)))
    for index in range(count):
        key = f"data/{index // 1000:03d}/{index:07d}.bin"
        if index in large_indexes:
            sizes[key] = rng.randint(16 * MiB, 40 * MiB)
        else:
            sizes[key] = int(min(64 * KiB, 512 + rng.expovariate(1 / (6 * KiB))))
    return sizes


def body(key: str, size: int, version: int = 0) -> bytes:
    seed = f"{key}:{version}".encode()
    block = (seed * (4096 // len(seed) + 1))[:4096]
    return (block * (size // 4096 + 1))[:size]


def put_all(
    client: Any, bucket: str, sizes: Mapping[str, int], versions: Mapping[str, int] | None = None
) -> None:
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)

    def put(item: tuple[str, int]) -> None:
        key, size = item
        if size >= 8 * MiB:
            client.upload_fileobj(
                io.BytesIO(body(key, size, (versions or {}).get(key, 0))),
                bucket,
                key,
                Config=config,
            )
        else:
            client.put_object(
                Bucket=bucket, Key=key, Body=body(key, size, (versions or {}).get(key, 0))
            )

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for _ in pool.map(put, sizes.items()):
            pass


def create_bucket(client: Any, name: str, region: str) -> None:
    if region == EAST:
        client.create_bucket(Bucket=name)
    else:
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})


# ----------------------------------------------------------------------------- runs


@dataclass
class Run:
    tool: str
    pair: str
    phase: str
    objects: int
    """Objects the pass had to copy (all of them in a full sync, the changed ones after)."""
    bytes: int
    checked: int
    """Objects in the dataset: what the pass had to compare."""
    seconds: float
    peak_rss_bytes: int
    requests: int
    exit_code: int
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def objects_per_second(self) -> float:
        return self.objects / self.seconds if self.seconds else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes / MiB / self.seconds if self.seconds else 0.0

    @property
    def requests_per_object(self) -> float:
        return self.requests / self.checked if self.checked else 0.0


def measured(command: Sequence[str], env: Mapping[str, str]) -> tuple[int, float, int, str]:
    """Run ``command``; (exit code, wall seconds, peak RSS bytes, stdout).

    The peak is the process's own ``VmHWM``, read from ``/proc`` while it runs (its last
    reading before exit): ``ru_maxrss`` would count the pages of this (large) process that
    the child shared between fork and exec.
    """
    started = time.monotonic()
    # Loopback servers speak plain HTTP; a CA bundle from the environment only confuses
    # the AWS SDK inside rclone (it refuses to start), so neither tool gets one.
    base = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    process = subprocess.Popen(
        list(command), env={**base, **env}, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while not done.is_set():
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                return
            done.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out = process.stdout.read()
    code = process.wait()
    elapsed = time.monotonic() - started
    done.set()
    watcher.join()
    return code, elapsed, peak[0], out


@dataclass(frozen=True)
class Pair:
    name: str
    source_bucket: str
    destination_kind: str  # "s3" or "swift"
    destination_region: str


class Tools:
    """How each tool is started against the world."""

    def __init__(self, world: World, concurrency: int) -> None:
        self.world = world
        self.concurrency = concurrency
        self.rclone = ensure_rclone()
        creds = world.openstack.credentials
        self.swift_auth = {
            "auth_url": creds.auth_url,
            "username": creds.username,
            "password": creds.password,
            "project_name": creds.project_name,
            "user_domain_name": creds.user_domain_name,
            "project_domain_name": creds.project_domain_name,
        }

    def rclone_env(self) -> dict[str, str]:
        creds = self.swift_auth
        env = {"RCLONE_CONFIG": "/dev/null"}
        for name, region in (("SRC", EAST), ("DSTS3", WEST)):
            env.update(
                {
                    f"RCLONE_CONFIG_{name}_TYPE": "s3",
                    f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
                    f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": ACCESS_KEY,
                    f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": SECRET_KEY,
                    f"RCLONE_CONFIG_{name}_ENDPOINT": self.world.s3_proxy.url,
                    f"RCLONE_CONFIG_{name}_REGION": region,
                    f"RCLONE_CONFIG_{name}_FORCE_PATH_STYLE": "true",
                }
            )
        env.update(
            {
                "RCLONE_CONFIG_DSTSWIFT_TYPE": "swift",
                "RCLONE_CONFIG_DSTSWIFT_AUTH": creds["auth_url"],
                "RCLONE_CONFIG_DSTSWIFT_AUTH_VERSION": "3",
                "RCLONE_CONFIG_DSTSWIFT_USER": creds["username"],
                "RCLONE_CONFIG_DSTSWIFT_KEY": creds["password"],
                "RCLONE_CONFIG_DSTSWIFT_TENANT": creds["project_name"],
                "RCLONE_CONFIG_DSTSWIFT_DOMAIN": creds["user_domain_name"],
                "RCLONE_CONFIG_DSTSWIFT_TENANT_DOMAIN": creds["project_domain_name"],
                "RCLONE_CONFIG_DSTSWIFT_REGION": SWIFT_REGION,
            }
        )
        return env

    def rclone_command(self, pair: Pair, destination: str) -> list[str]:
        remote = "DSTS3" if pair.destination_kind == "s3" else "DSTSWIFT"
        return [
            str(self.rclone),
            "sync",
            f"SRC:{pair.source_bucket}",
            f"{remote}:{destination}",
            "--checksum",
            "--fast-list",
            f"--transfers={self.concurrency}",
            f"--checkers={self.concurrency}",
            "--s3-upload-cutoff=8M",
            "--s3-chunk-size=8M",
            "--swift-chunk-size=8M",
            "--retries=3",
            "--low-level-retries=3",
            "--stats=0",
            "--quiet",
        ]

    def lifeboat_job(self, pair: Pair, destination: str, mode: str, **extra: Any) -> dict[str, Any]:
        return {
            "mode": mode,
            "s3_endpoint": self.world.s3_proxy.url,
            "source": {"kind": "s3", "region": EAST, "bucket": pair.source_bucket},
            "destination": {
                "kind": pair.destination_kind,
                "region": pair.destination_region,
                "bucket": destination,
            },
            "concurrency": self.concurrency,
            **extra,
        }

    def lifeboat_env(self) -> dict[str, str]:
        return {
            "BENCH_AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "BENCH_AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "BENCH_OPENSTACK_CLOUDS_YAML": self.world.openstack.clouds_yaml(),
        }

    def lifeboat_command(self, job: Mapping[str, Any]) -> list[str]:
        return [sys.executable, "-m", "bench.lifeboat_pass", json.dumps(job)]

    def run(
        self, tool: str, pair: Pair, destination: str, phase: str, data: Dataset, moved: Dataset
    ) -> Run:
        if tool == "rclone":
            command, env = self.rclone_command(pair, destination), self.rclone_env()
        else:
            command = self.lifeboat_command(self.lifeboat_job(pair, destination, "pass"))
            env = self.lifeboat_env()
        self.world.clear_counts()
        code, seconds, rss, out = measured(command, env)
        requests = self.world.requests()
        detail = json.loads(out) if tool == "lifeboat" and out.strip() else {}
        return Run(
            tool,
            pair.name,
            phase,
            len(moved.keys),
            moved.bytes,
            len(data.keys),
            seconds,
            rss,
            requests,
            code,
            detail,
        )


def verify(
    world: World, pair: Pair, destination: str, data: Dataset, version: Mapping[str, int]
) -> None:
    """Every object is at the destination with the right size (content checked by sample)."""
    sizes: dict[str, int] = {}
    if pair.destination_kind == "s3":
        client = world.s3(pair.destination_region)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=destination):
            for item in page.get("Contents", []):
                sizes[item["Key"]] = item["Size"]
    else:
        conn = world.openstack.direct_connection(SWIFT_REGION)
        for item in conn.object_store.objects(destination):
            sizes[item.name] = int(item.content_length)
    sizes = {k: v for k, v in sizes.items() if not k.startswith(".lifeboat/")}
    missing = [k for k in data.keys if sizes.get(k) != data.sizes[k]]
    if pair.destination_kind == "swift":  # a DLO manifest lists as 0 bytes: ask the object
        conn = world.openstack.direct_connection(SWIFT_REGION)
        missing = [
            k
            for k in missing
            if k not in sizes
            or int(conn.object_store.get_object_metadata(k, destination).content_length)
            != data.sizes[k]
        ]
    if missing:
        raise SystemExit(
            f"{destination}: {len(missing)} objects missing or wrong, e.g. {missing[:3]}"
        )
    sample = random.Random(7).sample(list(data.keys), min(50, len(data.keys)))
    for key in sample:
        if pair.destination_kind == "s3":
            got = (
                world.s3(pair.destination_region)
                .get_object(Bucket=destination, Key=key)["Body"]
                .read()
            )
        else:
            got = world.openstack.direct_connection(SWIFT_REGION).object_store.download_object(
                key, container=destination
            )
        if got != body(key, data.sizes[key], version.get(key, 0)):
            raise SystemExit(f"{destination}/{key}: content differs from the source")


# ----------------------------------------------------------------------------- event path


def event_rpo(world: World, tools: Tools, rate: float, seconds: float) -> dict[str, Any]:
    """RPO samples of Lifeboat's event-driven path under a steady write load (S3→S3)."""
    source, destination = (
        f"bench-ev-src-{secrets.token_hex(3)}",
        f"bench-ev-dst-{secrets.token_hex(3)}",
    )
    create_bucket(world.s3(EAST), source, EAST)
    create_bucket(world.s3(WEST), destination, WEST)
    pair = Pair("s3-s3", source, "s3", WEST)
    job = tools.lifeboat_job(pair, destination, "follow", seconds=seconds + 30, scan_interval=3600)
    process = subprocess.Popen(
        tools.lifeboat_command(job),
        env={**os.environ, **tools.lifeboat_env()},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(process)
        written: dict[str, float] = {}
        seen: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:
            client = world.s3(WEST)
            while not stop.is_set():
                now = time.time()
                for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=destination, Prefix="ev/"
                ):
                    for item in page.get("Contents", []):
                        seen.setdefault(item["Key"], now)
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        client = world.s3(EAST)
        started = time.monotonic()
        index = 0
        while time.monotonic() - started < seconds:
            key = f"ev/{index:06d}"
            client.put_object(Bucket=source, Key=key, Body=body(key, 4 * KiB))
            written[key] = time.time()
            index += 1
            time.sleep(max(0.0, started + index / rate - time.monotonic()))
        deadline = time.monotonic() + 60
        while len(seen) < len(written) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        watcher.join()
    finally:
        process.terminate()
        process.wait(30)
    samples = sorted(seen[k] - written[k] for k in written if k in seen)
    lost = len(written) - len(samples)
    if not samples:
        return {"written": len(written), "replicated": 0}
    quantiles = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "written": len(written),
        "replicated": len(samples),
        "not_replicated_within_60s": lost,
        "rate_per_second": rate,
        "p50_seconds": quantiles[49],
        "p99_seconds": quantiles[98],
        "max_seconds": samples[-1],
        "watch_resolution_seconds": 0.1,
    }


def _wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    if "ready" not in line:
        raise SystemExit(f"Lifeboat's follower did not start: {line!r}")


# ----------------------------------------------------------------------------- report


def summary(run: Run) -> str:
    """One pass's figures on one line, as the run goes."""
    return (
        f"{run.seconds:.1f}s, {run.objects_per_second:.1f} objects/s, "
        f"{run.mb_per_second:.2f} MiB/s, peak RSS {run.peak_rss_bytes / MiB:.0f} MiB, "
        f"{run.requests_per_object:.2f} requests/object, exit {run.exit_code}"
    )


def table(runs: Sequence[Run]) -> str:
    header = (
        "| pair | phase | tool | objects copied | MiB copied | wall s | objects/s | MiB/s "
        "| peak RSS MiB | requests per object in the dataset | exit |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {r.pair} | {r.phase} | {r.tool} | {r.objects} | {r.bytes / MiB:.0f} | "
        f"{r.seconds:.1f} | {r.objects_per_second:.0f} | {r.mb_per_second:.1f} | "
        f"{r.peak_rss_bytes / MiB:.0f} | {r.requests_per_object:.2f} | {r.exit_code} |"
        for r in runs
    ]
    return header + "\n".join(rows)


def ratios(runs: Sequence[Run]) -> str:
    lines = [
        "| pair | phase | wall time Lifeboat / rclone | peak RSS Lifeboat / rclone "
        "| requests Lifeboat / rclone |",
        "|---|---|---:|---:|---:|",
    ]
    for pair in dict.fromkeys(r.pair for r in runs):
        for phase in dict.fromkeys(r.phase for r in runs):
            mine = next(
                (r for r in runs if (r.pair, r.phase, r.tool) == (pair, phase, "lifeboat")), None
            )
            peer = next(
                (r for r in runs if (r.pair, r.phase, r.tool) == (pair, phase, "rclone")), None
            )
            if mine and peer and peer.seconds and peer.peak_rss_bytes and peer.requests:
                lines.append(
                    f"| {pair} | {phase} | {mine.seconds / peer.seconds:.2f} | "
                    f"{mine.peak_rss_bytes / peer.peak_rss_bytes:.2f} | "
                    f"{mine.requests / peer.requests:.2f} |"
                )
    return "\n".join(lines)


def rclone_version(tools: Tools) -> str:
    out = subprocess.run([str(tools.rclone), "version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.objects", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=20, help="how many of them are large")
    parser.add_argument(
        "--changed", type=float, default=0.01, help="share rewritten before the incremental pass"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--pairs", default="s3-s3,s3-swift")
    parser.add_argument("--tools", default="lifeboat,rclone", help="which tools to run")
    parser.add_argument(
        "--event-rate", type=float, default=20.0, help="writes/s of the RPO run (0: skip)"
    )
    parser.add_argument("--event-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", type=Path, help="write the results as Markdown here")
    args = parser.parse_args(argv)
    command = "python -m bench.objects " + shlex.join(argv if argv is not None else sys.argv[1:])

    started_at = datetime.now(UTC)
    # Taken before the first pass writes the report, which changes the tree.
    engine = commit()
    runs: list[Run] = []
    peer = "rclone"

    def measured_pass(run: Run) -> None:
        """Keep a pass's figures at once: a run cut short still reports what it measured."""
        runs.append(run)
        print(f"  {summary(run)}", flush=True)
        if args.report:
            unfinished = "passes still to run, or the run was cut short before them"
            section = render(
                runs, {}, command, started_at, peer, args, engine=engine, unfinished=unfinished
            )
            write_section(args.report, run_key(args), section)

    with world() as w:
        tools = Tools(w, args.concurrency)
        peer = rclone_version(tools)
        sizes = make_sizes(args.objects, args.large, args.seed)
        data = Dataset(tuple(sizes), sizes)
        source = f"bench-src-{secrets.token_hex(3)}"
        create_bucket(w.s3(EAST), source, EAST)
        print(
            f"writing {len(sizes)} objects ({data.bytes / MiB:.0f} MiB) into s3://{source} ...",
            flush=True,
        )
        t0 = time.monotonic()
        put_all(w.s3(EAST), source, sizes)
        print(f"  written in {time.monotonic() - t0:.0f}s", flush=True)
        versions: dict[str, int] = {}
        rng = random.Random(args.seed + 1)
        for pair_name in args.pairs.split(","):
            kind = pair_name.split("-")[1]
            pair = Pair(pair_name, source, kind, WEST if kind == "s3" else SWIFT_REGION)
            destinations = {}
            for tool in args.tools.split(","):
                destination = f"bench-{tool}-{kind}-{secrets.token_hex(3)}"
                if kind == "s3":
                    create_bucket(w.s3(WEST), destination, WEST)
                else:
                    w.openstack.direct_connection(SWIFT_REGION).object_store.create_container(
                        destination
                    )
                destinations[tool] = destination
                print(f"{pair_name} full sync with {tool} ...", flush=True)
                measured_pass(tools.run(tool, pair, destination, "full", data, data))
                verify(w, pair, destination, data, versions)
            changed = rng.sample(list(sizes), max(1, int(len(sizes) * args.changed)))
            for key in changed:
                versions[key] = versions.get(key, 0) + 1
            print(f"rewriting {len(changed)} objects ...", flush=True)
            rewritten = Dataset(tuple(changed), {key: sizes[key] for key in changed})
            put_all(w.s3(EAST), source, rewritten.sizes, versions)
            for tool, destination in destinations.items():
                print(f"{pair_name} incremental pass with {tool} ...", flush=True)
                phase = f"incremental ({args.changed:.0%} changed)"
                measured_pass(tools.run(tool, pair, destination, phase, data, rewritten))
                verify(w, pair, destination, data, versions)
        follow = args.event_rate > 0 and "lifeboat" in args.tools.split(",")
        rpo = event_rpo(w, tools, args.event_rate, args.event_seconds) if follow else {}

    section = render(runs, rpo, command, started_at, peer, args, engine=engine)
    print(section)
    if args.report:
        write_section(args.report, run_key(args), section)
    return 0 if all(r.exit_code == 0 for r in runs) else 1


PAIR_TITLES = {"s3-s3": "S3 → S3", "s3-swift": "S3 → Swift"}

CONTEXT = """For context, the other side's published behaviour (not measured here): S3
Cross-Region Replication with Replication Time Control replicates 99.99 % of objects within
15 minutes and does not replicate deletes by default; Swift container sync visits each
container at most every 300 s; rclone's defaults are 8 checkers and 4 transfers, a full
listing every run, and on S3 a HEAD per object for its modification time unless
`--checksum`, `--size-only` or `--use-server-modtime` is given (this run gives
`--checksum`)."""


TITLE = "# Object replication benchmark: Lifeboat and rclone"


def run_key(args: argparse.Namespace) -> str:
    """What a run's section in the report is known by: its pairs, tools and size."""
    return f"pairs={args.pairs} tools={args.tools} objects={args.objects}"


def write_section(path: Path, key: str, section: str) -> None:
    """This benchmark's :func:`bench.report.write_section`."""
    report.write_section(path, key, section, title=TITLE)


def render(
    runs: Sequence[Run],
    rpo: Mapping[str, Any],
    command: str,
    started_at: datetime,
    peer: str,
    args: argparse.Namespace,
    *,
    engine: str,
    unfinished: str | None = None,
) -> str:
    """One run's section of the report (Markdown, headings from level 2). ``engine``: the
    commit measured (:func:`commit`, taken as the run starts); ``unfinished`` says why the
    section holds only some of the run's passes."""
    pairs = ", ".join(PAIR_TITLES.get(p, p) for p in args.pairs.split(","))
    lines = [
        f"## {pairs}: {args.objects:,} objects ({started_at:%Y-%m-%d})",
        "",
        *(
            [f"**Unfinished: {len(runs)} passes measured; {unfinished}.**", ""]
            if unfinished
            else []
        ),
        f"- date: {started_at:%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- command: `{command}` (`make bench` runs every pair)",
        f"- peer: {peer}, `rclone sync --checksum --fast-list "
        f"--transfers={args.concurrency} --checkers={args.concurrency}`",
        f"- Lifeboat: the replication engine of commit {engine}, concurrency {args.concurrency}",
        "- servers: moto (S3, us-east-1 → us-west-2) and real Swift + Keystone (RegionOne; "
        "Swift's proxy and its storage servers in two processes), on loopback, "
        "each behind a counting proxy; both tools talk to the same servers, one after the other",
        "- S3's counting proxy drops moto's `x-amz-version-id: null` from answers, as S3 "
        "names no version in unversioned buckets (moto refuses a HEAD of the version it "
        "named, which failed rclone's check of each multipart upload)",
        "",
        "### Sync passes",
        "",
        table(runs),
        "",
        "Ratios (below 1: Lifeboat needs less):",
        "",
        ratios(runs),
        "",
        "### Event-driven path (Lifeboat only)",
        "",
    ]
    if unfinished:
        lines.append("(not run yet)")
    elif rpo:
        lines += [
            f"Writes of 4 KiB at {rpo.get('rate_per_second')}/s for {args.event_seconds:.0f}s "
            "into the "
            "source bucket, Lifeboat following S3 event notifications (SQS); RPO of an object = "
            "time from its write until it is listed at the destination.",
            "",
            "```json",
            json.dumps(rpo, indent=2),
            "```",
            "",
            "rclone has no event-driven mode: run on a schedule, its RPO is the interval "
            "between runs plus the duration of an incremental pass (see the table).",
            "",
            CONTEXT,
        ]
    else:
        lines.append("(skipped)")
    lines += [
        "",
        "<details><summary>Raw figures</summary>",
        "",
        "```json",
        json.dumps([{**asdict(r)} for r in runs], indent=1, default=str),
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
