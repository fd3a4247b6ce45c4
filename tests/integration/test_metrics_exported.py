"""Every metric the alert rules and the dashboard use is exported by a running operator.

`lifeboat run` runs as a process against the sandbox (real API server, moto behind the
fault layer); an app with an object dataset is applied, reconciled, replicated, and failed
over; the operator's /metrics endpoint is scraped like Prometheus would. Before the first
failover the series the alerts watch with increase() already exist at 0; after it, every
metric name found in the rules' and the dashboard's PromQL has samples.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller import metrics
from sandbox.world import Sandbox
from tests.fixtures.process import OperatorProcess
from tests.fixtures.world import Apps
from tests.integration.test_replication_objects import Buckets, entry, replication
from tests.monitoring import dashboard, dashboard_texts, metric_names, rule_texts

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def operator_process(sandbox: Sandbox, tmp_path: Path) -> Iterator[OperatorProcess]:
    """`lifeboat run` with metrics and health on loopback."""
    operator = OperatorProcess.start(sandbox, tmp_path / "operator.log")
    try:
        yield operator
    finally:
        operator.stop()


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


def peer_mode_only() -> set[str]:
    """Metrics only peers export (their help text says so: "With peers:", "Multi-peer
    mode:"); this single-cluster run cannot have them. test_peer_link, test_peer_vantage
    and test_peers_e2e see them exported by peers."""
    names = set()
    for family in metrics.REGISTRY.collect():
        if family.documentation.startswith(("With peers:", "Multi-peer mode:")):
            names |= {family.name, f"{family.name}_total"}
    return names


def cloud_dependent() -> set[str]:
    """Figures only some clouds give (their help text says "absent where the cloud does not
    say"): the AWS sites of this run never report quota headroom. test_metrics'
    test_the_standby_figures_a_cloud_reports_are_exported_and_the_others_absent sees them
    exported where a cloud reports them."""
    return {
        family.name
        for family in metrics.REGISTRY.collect()
        if "absent where the cloud does not say" in family.documentation
    }


def per_drill() -> set[str]:
    """Series of FailoverDrills (their help text says "Per FailoverDrill:"): this run has
    none. test_drills_e2e sees them exported as soon as a drill is seen, the runs counter
    at 0 for every result."""
    names = set()
    for family in metrics.REGISTRY.collect():
        if family.documentation.startswith("Per FailoverDrill:"):
            names |= {family.name, f"{family.name}_total"}
    return names


def missing(samples: Samples) -> set[str]:
    exported = {name for name, _ in samples}
    return referenced() - exported - peer_mode_only() - cloud_dependent() - per_drill()


def test_every_metric_of_the_alerts_and_dashboard_is_exported(
    operator_process: OperatorProcess, app_harness: Apps, sandbox: Sandbox
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
    assert value(before, "lifeboat_dns_weight", **app, site="use1") == 100.0
    assert value(before, "lifeboat_dns_weight", **app, site="usw2") == 0.0
    assert value(before, "lifeboat_app_phase", **app, phase="FailingOver") == 0.0
    assert value(before, "lifeboat_app_healthy_standby_sites", **app) == 1.0
    assert value(before, "lifeboat_app_standby_sites", **app) == 1.0
    flow = {**app, "dataset": "photos", "destination": "usw2"}
    assert value(before, "lifeboat_replication_errors_total", **flow) == 0.0
    assert (value(before, "lifeboat_replication_streamed_bytes_total", **flow) or 0) > 0
    steady = value(before, "lifeboat_decisions_total", **app, rule="steady", outcome="none")
    assert steady is not None
    assert steady >= 1

    # A region failover: the primary's zones all go down.
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.down()
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
    assert value(after, "lifeboat_dns_weight", **app, site="use1") == 0.0
    assert value(after, "lifeboat_dns_weight", **app, site="usw2") == 100.0
    assert (value(after, "lifeboat_last_failover_timestamp_seconds", **app) or 0) > 0
    assert (value(after, "lifeboat_last_failover_rto_seconds", **app) or 0) > 0
    assert value(after, "lifeboat_app_healthy_standby_sites", **app) == 0.0
    rounds = [
        value(samples, "lifeboat_last_reconcile_timestamp_seconds", **app) or 0.0
        for samples in (before, after)
    ]
    assert 0 < rounds[0] < rounds[1]

    app_harness.delete_all()  # while the operator runs, so its finalizer is released
