"""The monitoring files (alert rules, dashboard) as tests read them, and the metric names
their PromQL uses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "charts" / "lifeboat" / "rules" / "lifeboat-alerts.yaml"
DASHBOARD = ROOT / "charts" / "lifeboat" / "dashboards" / "lifeboat.json"
PROMTOOL_TESTS = ROOT / "tests" / "promtool" / "lifeboat-alerts.test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/lifeboat-dev/lifeboat/blob/main/docs/runbooks/"

# Metric names in PromQL (and in alert templates that query): every Lifeboat metric starts
# with lifeboat_; label names and values in these files never contain that prefix.
_METRIC = re.compile(r"(?<![A-Za-z0-9_:])lifeboat_[a-z0-9_]+")


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def rule_texts() -> list[str]:
    """Every expression of the rules, and every annotation (templates may query)."""
    texts = []
    for group in rule_groups():
        for rule in group["rules"]:
            texts.append(rule["expr"])
            texts.extend(str(v) for v in rule.get("annotations", {}).values())
    return texts


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""

    def walk(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from walk(panel.get("panels", ()))

    yield from walk(board.get("panels", ()))


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return str(query.get("query", "") if isinstance(query, dict) else query)


def dashboard_texts(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets, annotations, variables."""
    texts = [t["expr"] for p in panels(board) for t in p.get("targets", ()) if "expr" in t]
    texts += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    texts += [variable_query(v) for v in board["templating"]["list"] if v.get("type") == "query"]
    return texts


def metric_names(texts: Iterable[str]) -> set[str]:
    """Lifeboat metric names used in ``texts``, as sample names (``..._bucket`` kept)."""
    return {name for text in texts for name in _METRIC.findall(text)}
