"""Lifeboat's alerts through a real Prometheus and a real Alertmanager (sandbox.alerting).

`lifeboat run` runs as a process against the sandbox; Prometheus (Debian's build) scrapes
its /metrics every second with the chart's alert rules, every `for` shortened to two
seconds by the rule generator (hack/monitoring.py: the shipped rules are not edited);
Alertmanager (Debian's build) has the chart's inhibition rules and notifies a webhook on
loopback. The fault: us-east-1's API answers every call with throttling, then a zone of
the app's primary site there goes down. LifeboatApiPlaneImpaired must reach the webhook;
LifeboatZoneDown must fire in Prometheus and reach Alertmanager with the site's provider
and region, and be inhibited there by the impaired region (never notified), while the
app's LifeboatCascadeDetected, raised after it, is notified.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hack.monitoring import AlertSettings
from sandbox.alerting import Alerting, Notification
from sandbox.faults import FaultSpec
from sandbox.world import Sandbox
from tests.fixtures.process import OperatorProcess
from tests.fixtures.world import Apps

pytestmark = pytest.mark.integration

PENDING_FOR = "2s"
REGION = {"provider": "aws-sandbox", "region": "us-east-1"}


@pytest.fixture
def operator_process(sandbox: Sandbox, tmp_path: Path) -> Iterator[OperatorProcess]:
    operator = OperatorProcess.start(sandbox, tmp_path / "operator.log")
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture
def alerting(
    operator_process: OperatorProcess, prometheus: Path, alertmanager: Path, tmp_path: Path
) -> Iterator[Alerting]:
    """Prometheus scraping the operator, Alertmanager, the webhook (the binaries fetched
    before the test's clock starts, by the fixtures of their names). Started once the
    operator serves its metrics as the leader: with every `for` at two seconds, a slow
    start would otherwise be a real LifeboatControllerDown."""
    operator_process.wait_for(
        lambda: leading(operator_process.metrics_port), 60, "the operator to lead"
    )
    with Alerting(
        [f"127.0.0.1:{operator_process.metrics_port}"],
        settings=AlertSettings(pending_for=PENDING_FOR),
        workdir=tmp_path / "alerting",
    ) as world:
        yield world


def leading(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            body = response.read().decode()
    except OSError:
        return False
    return any(
        sample.name == "lifeboat_leader" and sample.value == 1
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    )


def labelled(alert: dict[str, Any], name: str, **labels: str) -> bool:
    have = alert.get("labels", {})
    return bool(have.get("alertname") == name and all(have.get(k) == v for k, v in labels.items()))


def notified(notifications: list[Notification], name: str, **labels: str) -> bool:
    return any(
        n.name == name and all(n.labels.get(k) == v for k, v in labels.items())
        for n in notifications
    )


def test_an_impaired_region_alerts_and_inhibits_the_zone_alerts_of_that_region(
    operator_process: OperatorProcess,
    alerting: Alerting,
    app_harness: Apps,
    sandbox: Sandbox,
) -> None:
    operator, prometheus = operator_process, alerting.prometheus
    am, webhook = alerting.alertmanager, alerting.webhook
    ns, name = app_harness.create()
    app = {"namespace": ns, "app": name}
    east = sandbox.proxies["us-east-1"]
    try:
        app_harness.wait_serving(ns, name, timeout=45)
        # Prometheus has the operator's series: the primary site's provider and region.
        operator.wait_for(
            lambda: prometheus.query(
                f'lifeboat_site_info{{namespace="{ns}",app="{name}",site="use1"}}'
            ),
            20,
            "Prometheus to scrape the app's sites",
        )
        [site] = prometheus.query(f'lifeboat_site_info{{namespace="{ns}",site="use1"}}')
        assert {k: site["metric"][k] for k in REGION} == REGION
        assert not webhook.firing("LifeboatApiPlaneImpaired")
        assert not webhook.firing("LifeboatControllerDown")

        east.set_faults(FaultSpec(throttle=1.0, seed=11))
        impaired = operator.wait_for(
            lambda: [
                n
                for n in webhook.firing("LifeboatApiPlaneImpaired")
                if all(n.labels.get(k) == v for k, v in REGION.items())
            ],
            60,
            "LifeboatApiPlaneImpaired of us-east-1 at the webhook",
        )[0]
        assert impaired.labels["provider"] == "aws-sandbox"
        assert impaired.labels["severity"] == "critical"
        assert impaired.annotations["runbook_url"].endswith("/LifeboatApiPlaneImpaired.md")
        operator.wait_for(
            lambda: any(
                s["name"] == "use1" and s.get("apiPlane") == "Impaired"
                for s in app_harness.status(ns, name).get("sites", [])
            ),
            20,
            "the app to see its primary region Impaired",
        )

        sandbox.zones.endpoint("use1", "us-east-1a").down()
        zone = {**app, "site": "use1", "zone": "us-east-1a", **REGION}
        operator.wait_for(
            lambda: any(
                labelled(a, "LifeboatZoneDown", **zone) and a["state"] == "firing"
                for a in prometheus.alerts()
            ),
            45,
            "LifeboatZoneDown firing in Prometheus, with the site's provider and region",
        )

        def suppressed() -> dict[str, Any] | None:
            found = [a for a in am.alerts() if labelled(a, "LifeboatZoneDown", **zone)]
            return found[0] if found and found[0]["status"]["state"] == "suppressed" else None

        inhibited = operator.wait_for(suppressed, 20, "LifeboatZoneDown inhibited in Alertmanager")
        assert inhibited["status"]["inhibitedBy"]
        # The app's cascade (its zone down in an impaired region), raised after the zone
        # went down, reaches the webhook: notifications flowed all along, the zone's did not.
        operator.wait_for(
            lambda: notified(webhook.notifications(), "LifeboatCascadeDetected", **app),
            45,
            "LifeboatCascadeDetected at the webhook",
        )
        assert not notified(webhook.notifications(), "LifeboatZoneDown")
        assert suppressed() is not None
    finally:
        east.clear_faults()
        for endpoint in sandbox.zones.endpoints:
            endpoint.serve()
        app_harness.delete_all()  # while the operator runs, so its finalizer is released


def test_prometheus_pages_load_every_asset_and_alertmanager_answers(
    prometheus: Path, alertmanager: Path, tmp_path: Path
) -> None:
    """What `make sandbox` tells a person to open: Prometheus' pages with every script and
    style sheet they load (Debian's libjs-* packages under the overlay), Alertmanager's."""
    with Alerting(["127.0.0.1:1"], workdir=tmp_path / "alerting") as world:
        base = world.prometheus.url
        for page in ("/classic/alerts", "/classic/rules", "/classic/graph"):
            html = fetch(f"{base}{page}")
            assets = re.findall(r'(?:src|href)="(/classic/static/[^"?]+)', html)
            assert len(assets) >= 8, page
            for asset in assets:
                assert fetch(f"{base}{asset}"), asset
        assert "LifeboatZoneDown" in fetch(f"{base}/classic/alerts")
        assert "<h1>Alertmanager</h1>" in fetch(world.alertmanager.url)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
        assert response.status == 200, url
        return str(response.read().decode(errors="replace"))
