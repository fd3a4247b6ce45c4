"""The alert rules, their runbooks and tests, the dashboard and the generated monitoring
manifests: structure and consistency (promtool and the dashboard linter run in
tests/integration/test_alert_rules.py and test_dashboard.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from controller import metrics
from hack import monitoring
from tests.monitoring import (
    PROMTOOL_TESTS,
    ROOT,
    RUNBOOK_BASE,
    RUNBOOKS,
    alert_rules,
    dashboard,
    dashboard_texts,
    metric_names,
    panels,
    rule_groups,
    rule_texts,
    variable_query,
)

ALERTS = [rule["alert"] for rule in alert_rules()]
RUNBOOK_SECTIONS = ("## Meaning", "## Impact", "## How to check", "## What to do", "## Escalate")
GRAFANA_GLOBALS = {"__rate_interval", "__interval", "__range", "__range_s", "__range_ms"}
_VARIABLE = re.compile(
    r"\$(?:\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|([A-Za-z0-9_]+))|\[\[([A-Za-z0-9_]+)\]\]"
)


def _declared_samples() -> set[str]:
    """Every sample name the metrics module can export."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
        "gauge": ("",),
    }
    families: list[Metric] = list(metrics.REGISTRY.collect())
    return {f.name + suffix for f in families for suffix in suffixes[f.type]}


# --------------------------------------------------------------------------- alert rules


def test_alert_names_are_unique_and_stable() -> None:
    assert len(ALERTS) == len(set(ALERTS))
    assert all(re.fullmatch(r"Lifeboat[A-Z][A-Za-z]+", name) for name in ALERTS)
    assert {
        "LifeboatZoneDown",
        "LifeboatApiPlaneDegraded",
        "LifeboatApiPlaneImpaired",
        "LifeboatCascadeDetected",
        "LifeboatFailoverStarted",
        "LifeboatFailoverFailed",
        "LifeboatFailoverStuck",
        "LifeboatNoHealthyStandby",
        "LifeboatStandbyNotReady",
        "LifeboatCapacityNotReady",
        "LifeboatRPOBreached",
        "LifeboatRPOUnknown",
        "LifeboatReplicationStalled",
        "LifeboatUnreplicatedObjects",
        "LifeboatControllerDown",
        "LifeboatNotReconciling",
    } <= set(ALERTS)


@pytest.mark.parametrize("rule", alert_rules(), ids=ALERTS)
def test_every_alert_has_severity_summary_description_and_its_runbook(
    rule: dict[str, Any],
) -> None:
    assert rule["labels"]["severity"] in ("warning", "critical")
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert "{{" in annotations["summary"] or rule["alert"] == "LifeboatControllerDown"
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{rule['alert']}.md"
    runbook = (RUNBOOKS / f"{rule['alert']}.md").read_text(encoding="utf-8")
    assert runbook.startswith(f"# {rule['alert']}\n")
    positions = [runbook.find(section) for section in RUNBOOK_SECTIONS]
    assert all(p > 0 for p in positions), f"{rule['alert']}: sections {RUNBOOK_SECTIONS}"
    assert positions == sorted(positions)
    assert "```promql" in runbook


def test_every_runbook_belongs_to_an_alert_and_is_indexed() -> None:
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == set(ALERTS)
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for alert in ALERTS:
        assert f"[{alert}]({alert}.md)" in index
        assert f"docs/runbooks/{alert}.md" in readme


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["../../charts/lifeboat/rules/lifeboat-alerts.yaml"]
    cases = [case for group in tests["tests"] for case in group["alert_rule_test"]]
    for alert in ALERTS:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert} never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{alert} never tested quiet"
        for case in mine:
            for expected in case["exp_alerts"]:
                assert set(expected["exp_annotations"]) == {"summary", "description", "runbook_url"}


def test_rules_and_dashboard_use_only_declared_metrics() -> None:
    declared = _declared_samples()
    used = metric_names(rule_texts()) | metric_names(dashboard_texts(dashboard()))
    assert used - declared == set()
    assert len(used) > 30  # the extraction finds the metrics (not an empty set)


def test_generated_prometheus_rule_holds_the_rule_groups() -> None:
    documents = list(
        yaml.safe_load_all(
            (ROOT / "manifests" / "monitoring" / "prometheusrule.yaml").read_text(encoding="utf-8")
        )
    )
    assert [d["kind"] for d in documents] == ["PrometheusRule"]
    assert documents[0]["apiVersion"] == "monitoring.coreos.com/v1"
    assert documents[0]["spec"]["groups"] == rule_groups()
    assert (ROOT / "manifests" / "monitoring" / "prometheusrule.yaml").read_text(
        encoding="utf-8"
    ) == monitoring.prometheus_rule(ROOT)


# --------------------------------------------------------------------------- dashboard


def test_dashboard_has_a_stable_identity_and_templated_datasource() -> None:
    board = dashboard()
    assert board["uid"] == "lifeboat-overview"
    assert board["title"] == "Lifeboat"
    assert board["editable"] is False
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("cluster", "job", "instance", "namespace", "app", "provider"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    # All on namespace and app (the fleet table lists every app); every query matches them
    # with =~, so a multi-value selection works everywhere.
    for name in ("cluster", "namespace", "app"):
        assert variables[name]["multi"] is True and variables[name]["includeAll"] is True
    assert variables["cluster"]["allValue"] == ".*"  # also series without a cluster label
    names = list(variables)
    assert names.index("cluster") < names.index("job")


def test_the_fleet_row_lists_every_app_first() -> None:
    board = dashboard()
    row, table = board["panels"][0], board["panels"][1]
    assert (row["type"], row["title"]) == ("row", "Fleet")
    assert table["type"] == "table" and table["gridPos"]["y"] == 1
    metrics = " ".join(t["expr"] for t in table["targets"])
    for metric in (
        "lifeboat_app_phase",
        "lifeboat_app_active_site",
        "lifeboat_zone_healthy",
        "lifeboat_replication_rpo_seconds",
        "lifeboat_last_failover_timestamp_seconds",
    ):
        assert metric in metrics, metric
    assert all(t["format"] == "table" and t["instant"] for t in table["targets"])
    renamed = table["transformations"][1]["options"]["renameByName"]
    assert {"Phase", "Active site", "Healthy zones", "Zones", "RPO"} <= set(renamed.values())
    for panel in panels(board):
        for target in panel.get("targets", ()):
            assert 'namespace="$namespace"' not in target["expr"], panel["title"]
            assert 'app="$app"' not in target["expr"], panel["title"]
            assert 'cluster=~"$cluster"' in target["expr"], panel["title"]


def test_every_panel_is_described_and_uses_the_templated_datasource() -> None:
    board = dashboard()
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        where = panel["title"]
        assert panel["title"] and panel["description"], where
        assert panel["datasource"]["uid"] == "${datasource}", where
        assert panel["targets"], where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", where
            assert 'job=~"$job"' in target["expr"], where
            assert 'instance=~"$instance"' in target["expr"], where


def test_panels_do_not_overlap_and_fit_the_grid() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels(dashboard()):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_panels_reference_only_existing_variables() -> None:
    board = dashboard()
    names = {v["name"] for v in board["templating"]["list"]} | GRAFANA_GLOBALS
    texts = [json.dumps(p) for p in panels(board)]
    texts += [json.dumps(a) for a in board["annotations"]["list"]]
    texts += [variable_query(v) for v in board["templating"]["list"]]
    used = {next(g for g in m.groups() if g) for text in texts for m in _VARIABLE.finditer(text)}
    assert used, "no variable found: the pattern is broken"
    assert used - names == set()
    assert {"namespace", "app", "datasource", "job", "instance"} <= used


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    used = metric_names(dashboard_texts(dashboard()))
    for name in (
        "lifeboat_app_active_site",
        "lifeboat_app_phase",
        "lifeboat_app_epoch",
        "lifeboat_zone_state",
        "lifeboat_cloud_api_call_duration_seconds_bucket",
        "lifeboat_cloud_api_calls_total",
        "lifeboat_api_plane_throttle_ratio",
        "lifeboat_replication_rpo_seconds",
        "lifeboat_replication_rpo_target_seconds",
        "lifeboat_replication_pending_objects",
        "lifeboat_reconcile_errors_total",
        "lifeboat_leader",
    ):
        assert name in used
    annotations = dashboard()["annotations"]["list"]
    assert any("lifeboat_failovers_total" in a.get("expr", "") for a in annotations)


def test_generated_dashboard_configmap_holds_the_dashboard_for_the_sidecar() -> None:
    documents = list(
        yaml.safe_load_all(
            (ROOT / "manifests" / "monitoring" / "grafana-dashboards.yaml").read_text(
                encoding="utf-8"
            )
        )
    )
    assert len(documents) == 1
    configmap = documents[0]
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["lifeboat.json"]) == dashboard()
