"""Every metric the alert rules and the dashboard use is exported by a running operator.

`lifeboat run` runs as a process against the sandbox (real API server, moto behind the
fault layer); an app with an object dataset is applied, reconciled, replicated, and failed
over; the operator's /metrics endpoint is scraped like Prometheus would. Before the first
failover the series the alerts watch with increase() already exist at 0; after it, every
metric name found in the rules' and the dashboard's PromQL has samples.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.sandbox.procs import free_loopback_port
from controller.sandbox.world import CONTROLLER_NAMESPACE, Sandbox
from tests.fixtures.world import Apps, wait_for
from tests.integration.test_replication_objects import Buckets, entry, replication
from tests.monitoring import dashboard, dashboard_texts, metric_names, rule_texts

pytestmark = pytest.mark.integration

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Operator:
    metrics_port: int
    health_port: int
    log: Path

    def wait_for(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """wait_for, with the operator's last log lines when it times out."""
        try:
            return wait_for(check, timeout, what)
        except AssertionError as error:
            tail = "\n".join(self.log.read_text(encoding="utf-8").splitlines()[-40:])
            raise AssertionError(f"{error}\noperator log (tail):\n{tail}") from None


@pytest.fixture
def operator_process(sandbox: Sandbox, tmp_path: Path) -> Iterator[Operator]:
    """`lifeboat run` with metrics and health on loopback."""
    metrics_port, health_port = free_loopback_port(), free_loopback_port()
    log = (tmp_path / "operator.log").open("w+")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("lifeboat")),
            "run",
            f"--kubeconfig={sandbox.operator_kubeconfig}",
            f"--controller-namespace={CONTROLLER_NAMESPACE}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics_port}",
            f"--health-endpoint=http://127.0.0.1:{health_port}/healthz",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "KUBECONFIG": "/nonexistent"},
    )
    try:
        yield Operator(metrics_port, health_port, tmp_path / "operator.log")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        log.close()


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
        return response.status, response.read().decode()


def scrape(port: int) -> Samples:
    _, body = fetch(f"http://127.0.0.1:{port}/metrics")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def referenced() -> set[str]:
    return metric_names(rule_texts()) | metric_names(dashboard_texts(dashboard()))


def missing(samples: Samples) -> set[str]:
    exported = {name for name, _ in samples}
    return referenced() - exported


def test_every_metric_of_the_alerts_and_dashboard_is_exported(
    operator_process: Operator, app_harness: Apps, sandbox: Sandbox
) -> None:
    operator = operator_process
    metrics_port, health_port = operator.metrics_port, operator.health_port
    buckets = Buckets(sandbox)
    buckets.put("use1", "index.html", b"<h1>hello</h1>")
    ns, name = app_harness.create(replication(buckets.names, rpoTargetSeconds=60))
    app = {"namespace": ns, "app": name}

    operator.wait_for(
        lambda: app_harness.status(ns, name).get("healthyZones") == "6/6", 45, "probing"
    )
    app_harness.wait_serving(ns, name)
    operator.wait_for(
        lambda: fetch(f"http://127.0.0.1:{health_port}/healthz")[0] == 200, 20, "health"
    )

    def replicated() -> dict[str, Any] | None:
        found = entry(app_harness.status(ns, name), "usw2")
        return found if found.get("copiedObjects", 0) >= 1 else None

    operator.wait_for(replicated, 45, "the object replicated to usw2")

    # Before anything happened: the series alerts watch with increase() exist, at 0.
    before = scrape(metrics_port)
    assert value(before, "lifeboat_leader") == 1.0
    for from_site, to_site in (("use1", "usw2"), ("usw2", "use1")):
        pair = {"from_site": from_site, "to_site": to_site}
        assert value(before, "lifeboat_failovers_total", **app, **pair) == 0.0
    for rule in ("cascade", "multi-zone-failure", "site-down"):
        assert value(before, "lifeboat_decisions_total", **app, rule=rule, outcome="failover") == 0
    assert value(before, "lifeboat_action_failures_total", **app, kind="ShiftTraffic") == 0.0
    assert value(before, "lifeboat_last_failover_timestamp_seconds", **app) == 0.0
    assert value(before, "lifeboat_app_phase", **app, phase="Healthy") == 1.0
    assert value(before, "lifeboat_app_phase", **app, phase="FailingOver") == 0.0
    assert value(before, "lifeboat_app_healthy_standby_sites", **app) == 1.0
    assert value(before, "lifeboat_app_standby_sites", **app) == 1.0
    steady = value(before, "lifeboat_decisions_total", **app, rule="steady", outcome="none")
    assert steady is not None
    assert steady >= 1

    # A region failover: the primary's zones all go down.
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.stop()
    operator.wait_for(
        lambda: (app_harness.status(ns, name).get("lastFailover") or {}).get("rtoSeconds"),
        60,
        "the failover to complete with its RTO measured",
    )
    absent: set[str] = set()

    def complete() -> Samples | None:
        samples = scrape(metrics_port)
        absent.clear()
        absent.update(missing(samples))
        return samples if not absent else None

    try:
        after = operator.wait_for(complete, 60, "every metric the rules and dashboard use")
    except AssertionError:
        pytest.fail(f"used by the rules or the dashboard, never exported: {sorted(absent)}")
    assert value(after, "lifeboat_failovers_total", **app, from_site="use1", to_site="usw2") == 1
    assert value(after, "lifeboat_decisions_total", **app, rule="site-down", outcome="failover")
    assert value(after, "lifeboat_app_epoch", **app) == 2.0
    assert value(after, "lifeboat_app_active_site", **app, site="usw2") == 1.0
    assert (value(after, "lifeboat_last_failover_timestamp_seconds", **app) or 0) > 0
    assert (value(after, "lifeboat_last_failover_rto_seconds", **app) or 0) > 0
    assert value(after, "lifeboat_app_healthy_standby_sites", **app) == 0.0
    rounds = [
        value(samples, "lifeboat_last_reconcile_timestamp_seconds", **app) or 0.0
        for samples in (before, after)
    ]
    assert 0 < rounds[0] < rounds[1]

    app_harness.delete_all()  # while the operator runs, so its finalizer is released
