"""Peer publication benchmark: what one peer's heartbeat costs its own kube-apiserver and
each reader, by the number of apps it publishes. Not a test:
``python -m bench.peers --report bench/RESULTS.md`` (``make bench-peers``).

One real kube-apiserver + etcd (the sandbox's) with the CRDs and ``LifeboatPeers/lifeboat``.
For each count of apps (two sites, six zones each, names ``team-NN/app-NNNN``) the peer
link (:class:`controller.operator.peers.Peers`, through the ``kubernetes`` client as in the
operator) publishes once with the whole apps list, then ``--writes`` steady heartbeats
(the sequence only). Reported: the apps list's size (compact JSON, the bound's measure),
the bodies of the first and of a steady PATCH, the object a reader's GET returns, the
median and worst latency of a steady write and of a reader's GET (with parsing, as a peer
reads), and the kube-apiserver's CPU seconds per steady write (from ``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.report import commit, machine, process_cpu, write_section
from controller.api.digest import canonical_json
from controller.api.models import LifeboatPeersSpec
from controller.core.health import ZoneKey, ZoneState
from controller.operator import peers as peers_module
from controller.operator.peers import ClusterPeersObject, Peers
from sandbox.assets import ensure_assets
from sandbox.kube import KubeControlPlane
from sandbox.world import manifests_dir

TITLE = "# Benchmarks"
ZONES = {
    ZoneKey(site, f"{region}{zone}"): ZoneState.HEALTHY
    for site, region in (("use1", "us-east-1"), ("usw2", "us-west-2"))
    for zone in "abc"
}
SPEC: dict[str, Any] = {
    "heartbeatSeconds": 10,  # deadlines of 5 s: the bench measures, it does not judge
    "peers": [
        {"name": "use1"},
        {"name": "usw2", "kubeconfigSecretRef": {"name": "lifeboat-peer-usw2"}},
        {"name": "euc1", "kubeconfigSecretRef": {"name": "lifeboat-peer-euc1"}},
    ],
}


def apiserver_pid(plane: KubeControlPlane) -> int:
    port = plane.server_url.rsplit(":", 1)[1]
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


async def measure(plane: KubeControlPlane, apps: int, writes: int) -> dict[str, Any]:
    api = plane.api_client()
    own = ClusterPeersObject(api)
    spec = LifeboatPeersSpec.model_validate(SPEC)
    writer = Peers("use1", spec, own, {"usw2": own, "euc1": own})
    for i in range(apps):
        writer.publish(f"team-{i % 20:02d}/app-{i:04d}", "f" * 64, ZONES)
    listed, size, left_out = writer._apps()
    full = writer._body()
    if not await writer.publish_once():
        raise RuntimeError(f"{apps} apps: the first publication failed")
    steady = writer._body()
    pid = apiserver_pid(plane)
    cpu_before = process_cpu(pid)
    write_seconds = []
    for _ in range(writes):
        started = time.perf_counter()
        if not await writer.publish_once():
            raise RuntimeError(f"{apps} apps: a steady publication failed")
        write_seconds.append(time.perf_counter() - started)
    cpu = (process_cpu(pid) - cpu_before) / writes
    # A reader: the other peer's GET and parse, as its heartbeat does.
    reader = Peers("usw2", spec, own, {"use1": own, "euc1": own})
    read_seconds = []
    for _ in range(writes):
        started = time.perf_counter()
        await reader.read_once("use1")
        read_seconds.append(time.perf_counter() - started)
    got = await own.get(5.0)
    api.close()  # type: ignore[no-untyped-call]
    return {
        "apps": apps,
        "published": len(listed),
        "left_out": left_out,
        "list_bytes": size,
        "full_patch_bytes": len(json.dumps(full)),
        "steady_patch_bytes": len(json.dumps(steady)),
        "get_bytes": len(json.dumps(got)),
        "managed_fields_bytes": len(json.dumps((got.get("metadata") or {}).get("managedFields"))),
        "write_ms": [round(s * 1000, 1) for s in write_seconds],
        "read_ms": [round(s * 1000, 1) for s in read_seconds],
        "apiserver_cpu_ms_per_write": round(cpu * 1000, 1),
    }


def _median_max(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} / {max(values):.0f}"


def section(rows: list[dict[str, Any]], command: str, load: str) -> str:
    per_app = len(canonical_json(peers_module._entry("team-00/app-0000", "f" * 64, ZONES))) + 1
    lines = [
        f"## Peer publication: size and cost per heartbeat ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {machine()}; load average {load} (shared). Commit {commit()}. "
        f"Command: `{command}`.",
        "",
        f"Apps of two sites and six zones, {per_app} bytes each in the published list "
        f"(bound {peers_module.MAX_PUBLISHED_BYTES // 1024} KiB). A steady heartbeat "
        "PATCHes the sequence only; the API server still decodes, validates and stores the "
        "whole object, and each other peer GETs it whole.",
        "",
        "| apps | published / left out | list (KiB) | first PATCH / steady PATCH (bytes) "
        "| GET (KiB; managedFields bytes) | steady write (ms, median / max) "
        "| reader's GET + parse (ms, median / max) | kube-apiserver CPU per steady write (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['apps']} | {row['published']} / {row['left_out']} "
            f"| {row['list_bytes'] / 1024:.0f} "
            f"| {row['full_patch_bytes']:,} / {row['steady_patch_bytes']} "
            f"| {row['get_bytes'] / 1024:.0f}; {row['managed_fields_bytes']:,} "
            f"| {_median_max(row['write_ms'])} | {_median_max(row['read_ms'])} "
            f"| {row['apiserver_cpu_ms_per_write']} |"
        )
    lines += [
        "",
        "<details><summary>Raw figures (JSON)</summary>",
        "",
        "```json",
        json.dumps(rows, indent=1),
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines)


async def run(counts: list[int], writes: int) -> list[dict[str, Any]]:
    rows = []
    with KubeControlPlane(ensure_assets(lambda m: print(m, file=sys.stderr))) as plane:
        plane.install_crds([manifests_dir() / "crds"])
        document = {
            "apiVersion": "lifeboat.dev/v1alpha1",
            "kind": "LifeboatPeers",
            "metadata": {"name": "lifeboat"},
            "spec": SPEC,
        }
        for apps in counts:
            plane.kubectl("delete", "lifeboatpeers", "lifeboat", "--ignore-not-found")
            plane.kubectl("apply", "-f", "-", input=json.dumps(document))
            row = await measure(plane, apps, writes)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("_ms")}))
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--apps", type=int, nargs="+", default=[10, 100, 1000, 1500])
    parser.add_argument("--writes", type=int, default=20, help="steady writes (and reads)")
    parser.add_argument("--report", type=Path, help="write the section into this file")
    args = parser.parse_args(argv)
    command = "python -m bench.peers " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = asyncio.run(run(args.apps, args.writes))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = section(rows, command.strip(), load)
    print(text)
    if args.report:
        write_section(args.report, "peers", text, title=TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
