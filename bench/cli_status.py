"""How long ``kubectl lifeboat status`` takes, start to answer, against a real API server.

Starts a kube-apiserver + etcd (the sandbox's), installs the CRDs and one ResilientApp,
then runs ``status -A`` as the kubectl plugin does (a fresh Python process each time) from
one or more source trees, so that a change can be measured against the tree before it::

    python -m bench.cli_status                         # this tree
    python -m bench.cli_status --source /path/to/main  # and another checkout beside it

Reports wall time and CPU (user + system of the process) per run, as median and range,
and the heavy modules each tree's ``status`` imports; writes its section of
bench/RESULTS.md (``--no-report`` to only print).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.report import commit, machine, write_section
from sandbox.assets import ensure_assets
from sandbox.kube import KubeControlPlane

HERE = Path(__file__).resolve().parent.parent
HEAVY = ("boto3", "botocore", "openstack", "kopf", "aiohttp", "kubernetes")
SCRIPT = f"""
import sys, json
sys.path.insert(0, sys.argv[1])
from controller.cli.main import main
code = main(["status", "-A", "--kubeconfig", sys.argv[2]], prog="kubectl lifeboat")
heavy = [m for m in {HEAVY!r} if m in sys.modules]
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def _once(source: Path, kubeconfig: Path) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(source), str(kubeconfig)],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0 or "web" not in done.stdout:
        raise SystemExit(f"status failed ({done.returncode}): {done.stdout}{done.stderr}")
    return wall, cpu, done.stderr.strip().splitlines()[-1]


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--source", action="append", type=Path, default=[])
    options.add_argument("--runs", type=int, default=15)
    options.add_argument("--no-report", action="store_true")
    args = options.parse_args(argv)
    sources = [HERE, *args.source]
    with KubeControlPlane(ensure_assets(print)) as kube:
        for crd in sorted((HERE / "manifests" / "crds").glob("*.yaml")):
            kube.kubectl("apply", "--server-side", f"--filename={crd}")
        kube.kubectl("wait", "--for=condition=Established", "crd/resilientapps.lifeboat.dev")
        app = (
            (HERE / "docs" / "simulate" / "app.yaml")
            .read_text()
            .replace("  name: checkout\n", "  name: web\n  namespace: default\n", 1)
        )
        kube.kubectl("apply", "--filename=-", input=app)
        for source in sources:
            _once(source, kube.kubeconfig_path)  # warm the file cache
        # Runs alternate between the trees, so that a busy moment costs them alike.
        runs: dict[Path, list[tuple[float, float, str]]] = {s: [] for s in sources}
        for _ in range(args.runs):
            for source in sources:
                runs[source].append(_once(source, kube.kubeconfig_path))
        rows = []
        for source in sources:
            label = "this tree" if source == HERE else str(source)
            rev = subprocess.run(
                ["git", "rev-parse", "--short=12", "HEAD"],
                cwd=source,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            mine = runs[source]
            rows.append(
                f"| {label} ({rev}) | {_spread([w for w, _, _ in mine])} | "
                f"{_spread([c for _, c, _ in mine])} | {mine[-1][2]} |"
            )
    section = "\n".join(
        [
            f"## `kubectl lifeboat status` start to answer ({time.strftime('%Y-%m-%d')})",
            "",
            f"Machine: {machine()}. Commit: {commit()}. Command: "
            f"`python -m bench.cli_status {' '.join(f'--source {s}' for s in args.source)}`"
            f" ({args.runs} runs per tree, alternating; a fresh process each, against a "
            "local kube-apiserver with one app; median and range).",
            "",
            "| tree | wall | CPU (user+sys) | exit code, heavy modules imported |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print(section)
    if not args.no_report:
        write_section(
            HERE / "bench" / "RESULTS.md", "cli-status", section, title="# Benchmark results"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
