"""`lifeboat run` as a user runs it: a process with a kubeconfig, metrics and liveness."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.procs import free_loopback_port
from sandbox.world import CONTROLLER_NAMESPACE, Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def lifeboat_run(
    sandbox: Sandbox, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    metrics, health = free_loopback_port(), free_loopback_port()
    log = (tmp_path / "operator.log").open("w+")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("lifeboat")),
            "--log-level=debug",
            "run",
            f"--kubeconfig={sandbox.operator_kubeconfig}",
            f"--controller-namespace={CONTROLLER_NAMESPACE}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics}",
            f"--health-endpoint=http://127.0.0.1:{health}/healthz",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "KUBECONFIG": "/nonexistent"},  # --kubeconfig must win
    )
    try:
        yield process, metrics, health
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.seek(0)
        output = log.read()
        log.close()
        # Secrets never reach the logs, even at debug level.
        assert sandbox.secret_access_key not in output


def parse(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text as {(sample name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
        return response.status, response.read().decode()


def test_run_serves_apps_metrics_and_liveness_then_stops_on_sigterm(
    lifeboat_run: tuple[subprocess.Popen[str], int, int], app_harness: Apps
) -> None:
    process, metrics_port, health_port = lifeboat_run
    namespace, name = app_harness.create()
    wait_for(
        lambda: app_harness.status(namespace, name).get("healthyZones") == "6/6",
        45,
        "the app to be probed by `lifeboat run`",
    )
    wait_for(lambda: fetch(f"http://127.0.0.1:{health_port}/healthz")[0] == 200, 20, "liveness")

    app_harness.wait_serving(namespace, name)
    _, body = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
    samples = parse(body)
    assert samples[("lifeboat_build_info", (("version", "0.1.0"),))] == 1.0
    zone = (("app", name), ("namespace", namespace), ("site", "use1"), ("zone", "us-east-1a"))
    assert samples[("lifeboat_zone_healthy", zone)] == 1.0
    route53_ok = (
        ("outcome", "ok"),
        ("provider", "aws-sandbox"),
        ("region", "global"),
        ("service", "route53"),
    )
    assert samples[("lifeboat_cloud_api_calls_total", route53_ok)] >= 1
    assert app_harness.sandbox.secret_access_key not in body

    app_harness.delete_all()  # while the operator runs, so its finalizer is released
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
