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
    observability = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    for alert in ALERTS:
        assert f"[{alert}]({alert}.md)" in index
        assert f"(runbooks/{alert}.md)" in observability


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["../../charts/lifeboat/rules/lifeboat-alerts.yaml"]
    cases = [case for group in tests["tests"] for case in group.get("alert_rule_test", ())]
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


# --------------------------------------------------------------------------- alert settings


def test_default_alert_settings_leave_the_shipped_groups_unchanged() -> None:
    assert monitoring.alert_groups(rule_groups(), monitoring.AlertSettings()) == rule_groups()
    assert monitoring.RUNBOOK_BASE == RUNBOOK_BASE


def test_alert_settings_leave_out_label_and_rebase_every_alert() -> None:
    settings = monitoring.AlertSettings(
        disabled=("LifeboatZoneDown", "LifeboatPeerUnheard"),
        labels={"team": "sre", "severity": "page"},
        runbook_url_base="https://wiki.example/runbooks/",
    )
    rules = [r for g in monitoring.alert_groups(rule_groups(), settings) for r in g["rules"]]
    assert {r["alert"] for r in rules} == set(ALERTS) - {"LifeboatZoneDown", "LifeboatPeerUnheard"}
    for rule in rules:
        original = next(r for r in alert_rules() if r["alert"] == rule["alert"])
        assert rule["labels"] == {"team": "sre", "severity": original["labels"]["severity"]}
        assert rule["annotations"]["runbook_url"] == (
            f"https://wiki.example/runbooks/{rule['alert']}.md"
        )
        assert rule["expr"] == original["expr"] and rule.get("for") == original.get("for")
    assert alert_rules()[0]["labels"] == {"severity": "warning"}  # the source is not touched


def test_alerts_off_drops_every_alert_and_groups_left_empty_but_keeps_recording_rules() -> None:
    groups = [
        {"name": "alerts", "rules": [{"alert": "A", "expr": "up == 0", "for": "5m"}]},
        {"name": "mixed", "rules": [{"record": "r:up", "expr": "up"}, {"alert": "B", "expr": "1"}]},
    ]
    off = monitoring.alert_groups(groups, monitoring.AlertSettings(enabled=False))
    assert off == [{"name": "mixed", "rules": [{"record": "r:up", "expr": "up"}]}]


def test_pending_for_shortens_every_for_and_adds_none() -> None:
    settings = monitoring.AlertSettings(pending_for="2s")
    rules = [r for g in monitoring.alert_groups(rule_groups(), settings) for r in g["rules"]]
    for rule in rules:
        original = next(r for r in alert_rules() if r["alert"] == rule["alert"])
        assert rule.get("for") == ("2s" if "for" in original else None), rule["alert"]
    assert any("for" not in r for r in rules)  # LifeboatCascadeDetected has none


@pytest.mark.parametrize(
    "settings",
    [{"runbook_url_base": "https://wiki.example/runbooks"}, {"pending_for": "soon"}],
)
def test_alert_settings_refuse_what_the_chart_schema_refuses(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must end with /|not a Prometheus duration"):
        monitoring.AlertSettings(**settings)


def test_rules_document_is_what_prometheus_loads() -> None:
    document = yaml.safe_load(
        monitoring.rules_document(
            ROOT / "charts" / "lifeboat" / "rules" / "lifeboat-alerts.yaml",
            monitoring.AlertSettings(pending_for="1s"),
        )
    )
    assert [g["name"] for g in document["groups"]] == [g["name"] for g in rule_groups()]
    assert {r["for"] for g in document["groups"] for r in g["rules"] if "for" in r} == {"1s"}


# --------------------------------------------------------------------------- inhibition


def _labels_of_alerts() -> dict[str, set[str]]:
    """Every label each alert is expected to carry in its promtool tests."""
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text(encoding="utf-8"))
    seen: dict[str, set[str]] = {}
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", ()):
            for expected in case["exp_alerts"]:
                seen.setdefault(case["alertname"], set()).update(expected["exp_labels"])
    return seen


def _matching(matchers: list[dict[str, str]]) -> set[str]:
    names = set(ALERTS)
    for matcher in matchers:
        if matcher["name"] != "alertname":
            continue
        hits = {n for n in ALERTS if re.fullmatch(matcher["value"], n)}
        names &= {
            "=": {matcher["value"]},
            "!=": set(ALERTS) - {matcher["value"]},
            "=~": hits,
            "!~": set(ALERTS) - hits,
        }[matcher["matchType"]]
    return names


def test_inhibition_rules_join_alerts_that_exist_on_labels_they_carry() -> None:
    carried = _labels_of_alerts()
    rules = monitoring.alertmanager_config_rules(ROOT)
    assert len(rules) == len(monitoring.inhibit_rules(ROOT)) >= 4
    for rule in rules:
        sources, targets = _matching(rule["sourceMatch"]), _matching(rule["targetMatch"])
        assert sources and targets, rule
        assert not sources & targets, f"an alert would inhibit itself: {rule}"
        assert rule["equal"][0] == "cluster"
        for alert in sources | targets:
            assert set(rule["equal"][1:]) <= carried[alert], (alert, rule["equal"])
        for side, alerts in (("sourceMatch", sources), ("targetMatch", targets)):
            for matcher in rule[side]:
                if matcher["name"] != "alertname":
                    assert all(matcher["name"] in carried[a] for a in alerts), matcher
    controller = next(r for r in rules if _matching(r["sourceMatch"]) == {"LifeboatControllerDown"})
    assert _matching(controller["targetMatch"]) == set(ALERTS) - {"LifeboatControllerDown"}
    zones = next(r for r in rules if _matching(r["targetMatch"]) == {"LifeboatZoneDown"})
    assert _matching(zones["sourceMatch"]) == {"LifeboatApiPlaneImpaired"}
    assert zones["equal"] == ["cluster", "provider", "region"]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('alertname="LifeboatZoneDown"', ("alertname", "=", "LifeboatZoneDown")),
        ('alertname=~"Lifeboat.+"', ("alertname", "=~", "Lifeboat.+")),
        (' kind != "Cloud\\"Provider" ', ("kind", "!=", 'Cloud"Provider')),
        ('severity!~"warning|info"', ("severity", "!~", "warning|info")),
    ],
)
def test_matchers_parse_into_the_operator_form(text: str, parsed: tuple[str, str, str]) -> None:
    matcher = monitoring.parse_matcher(text)
    assert (matcher["name"], matcher["matchType"], matcher["value"]) == parsed


@pytest.mark.parametrize("text", ["alertname=LifeboatZoneDown", '="x"', 'a=="x"', ""])
def test_a_matcher_of_another_form_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a matcher"):
        monitoring.parse_matcher(text)


def test_the_chart_alertmanager_config_template_is_generated_from_the_rules_file() -> None:
    template = (ROOT / "charts" / "lifeboat" / "templates" / "alertmanagerconfig.yaml").read_text(
        encoding="utf-8"
    )
    assert template == monitoring.alertmanager_config_template(ROOT)
    assert "{{- if .Values.alertmanagerConfig.enabled }}" in template
