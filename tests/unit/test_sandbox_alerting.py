"""The sandbox's Prometheus and Alertmanager configuration (sandbox.alerting), without
running them: test_alerting_e2e runs them."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import yaml

from hack import monitoring
from sandbox.alerting import (
    AlertmanagerServer,
    AlertWebhook,
    Notification,
    PrometheusServer,
    with_package_share,
)
from tests.monitoring import ROOT


def test_alertmanager_notifies_the_webhook_at_once_with_lifeboats_inhibition_rules(
    tmp_path: Path,
) -> None:
    server = AlertmanagerServer(webhook="http://127.0.0.1:9999/alerts", workdir=tmp_path)
    config = server.config()
    assert config["inhibit_rules"] == monitoring.inhibit_rules(ROOT)
    [receiver] = config["receivers"]
    assert receiver["webhook_configs"] == [
        {"url": "http://127.0.0.1:9999/alerts", "send_resolved": True}
    ]
    assert config["route"]["receiver"] == receiver["name"]
    assert config["route"]["group_by"] == ["..."]
    assert config["route"]["group_wait"] == "1s"
    assert (
        "webhook_configs"
        not in AlertmanagerServer(webhook=None, workdir=tmp_path).config()["receivers"][0]
    )


def test_prometheus_scrapes_the_operator_with_the_generated_rules(tmp_path: Path) -> None:
    server = PrometheusServer(
        targets=["127.0.0.1:8080"],
        alertmanager="http://127.0.0.1:9093",
        workdir=tmp_path,
        settings=monitoring.AlertSettings(pending_for="2s"),
    )
    files = server.rule_files()
    assert [p.name for p in files] == [p.name for p in monitoring.rule_files(ROOT)]
    groups = yaml.safe_load(files[0].read_text(encoding="utf-8"))["groups"]
    assert {r["for"] for g in groups for r in g["rules"] if "for" in r} == {"2s"}
    config = server.config(files)
    assert config["rule_files"] == [str(p) for p in files]
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]
    assert config["alerting"]["alertmanagers"][0]["static_configs"] == [
        {"targets": ["127.0.0.1:9093"]}
    ]
    assert config["global"]["evaluation_interval"] == "1s"


def test_the_demo_scrapes_and_evaluates_at_its_own_interval(tmp_path: Path) -> None:
    server = PrometheusServer(
        targets=["127.0.0.1:8080"], alertmanager=None, workdir=tmp_path, interval="500ms"
    )
    config = server.config([])
    assert config["global"] == {"scrape_interval": "500ms", "evaluation_interval": "500ms"}
    assert config["scrape_configs"][0]["scrape_timeout"] == "500ms"


@pytest.mark.parametrize("target", ["10.0.0.1:8080", "example.com:80"])
def test_only_loopback_targets(tmp_path: Path, target: str) -> None:
    with pytest.raises(ValueError, match=r"loopback|IPv4"):
        PrometheusServer(targets=[target], alertmanager=None, workdir=tmp_path)


def test_the_package_share_lies_over_usr_share_in_a_mount_namespace_of_its_own(
    tmp_path: Path,
) -> None:
    root = tmp_path / "prometheus-2.42"
    (root / "usr" / "share" / "prometheus").mkdir(parents=True)
    binary = root / "usr" / "bin" / "prometheus"
    argv = with_package_share(binary, [str(binary), "--version"])
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    separator = argv.index("--")
    assert argv[separator + 1 : separator + 3] == ["sh", "-c"]
    assert 'lowerdir=$1" /usr/share' in argv[separator + 3]
    layers = f"{root / 'usr' / 'share'}:/usr/share"
    assert argv[separator + 4 :] == ["sh", layers, str(binary), "--version"]
    with_libraries = with_package_share(binary, [str(binary)], [Path("/js/a"), Path("/js/b")])
    assert with_libraries[-2] == f"{root / 'usr' / 'share'}:/js/a:/js/b:/usr/share"


def test_a_binary_without_a_package_share_runs_as_it_is(tmp_path: Path) -> None:
    binary = tmp_path / "bin" / "prometheus"  # e.g. $PROMETHEUS, an upstream build
    assert with_package_share(binary, [str(binary), "--version"]) == [str(binary), "--version"]


def test_the_webhook_keeps_every_alert_it_is_sent_and_passes_each_on() -> None:
    payload = {
        "status": "firing",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "LifeboatZoneDown", "zone": "a"}},
            {"status": "resolved", "labels": {"alertname": "LifeboatZoneDown", "zone": "b"}},
        ],
    }
    seen: list[Notification] = []
    with AlertWebhook(on_alert=seen.append) as webhook:
        request = urllib.request.Request(  # noqa: S310 - loopback
            webhook.endpoint,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            assert response.status == 200
        assert webhook.payloads() == [payload]
    assert [n.labels["zone"] for n in webhook.firing("LifeboatZoneDown")] == ["a"]
    assert [(n.name, n.status) for n in seen] == [
        ("LifeboatZoneDown", "firing"),
        ("LifeboatZoneDown", "resolved"),
    ]
