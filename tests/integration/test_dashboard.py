"""The Grafana dashboard passes Grafana's dashboard linter (all rules, strict: warnings
fail too), and the linter does catch a broken panel.

Marked integration: the linter is built from its Go module on first use.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.monitoring import DASHBOARD, dashboard, panels

# Sample values for Grafana's variables, so that the queries are plain PromQL.
SAMPLES = {"__rate_interval": "1m", "__range": "6h", "__interval": "30s"}

pytestmark = pytest.mark.integration


def lint(linter: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(linter), "lint", "--strict", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_dashboard_lints_clean(dashboard_linter: Path) -> None:
    result = lint(dashboard_linter, DASHBOARD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "❌" not in result.stdout
    assert "⚠" not in result.stdout


def test_the_linter_catches_a_panel_without_job_matcher(
    dashboard_linter: Path, tmp_path: Path
) -> None:
    board = dashboard()
    panel = next(p for p in board["panels"] if p["type"] == "timeseries")
    panel["targets"][0]["expr"] = "rate(lifeboat_decisions_total[5m])"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(board), encoding="utf-8")
    result = lint(dashboard_linter, broken)
    assert result.returncode != 0
    assert "job selector not found" in result.stdout


def test_every_panel_and_annotation_query_is_valid_promql(promtool: Path, tmp_path: Path) -> None:
    """Checked by Prometheus' own parser (`promtool check rules` on recording rules made of
    the queries): the linter does not look at annotation queries."""
    board = dashboard()
    queries = [t["expr"] for p in panels(board) for t in p.get("targets", ())]
    queries += [a["expr"] for a in board["annotations"]["list"]]

    def concrete(expr: str) -> str:
        return re.sub(r"\$\{?([A-Za-z_]+)\}?", lambda m: SAMPLES.get(m.group(1), m.group(1)), expr)

    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": concrete(q)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = subprocess.run(
        [str(promtool), "check", "rules", "queries.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout
