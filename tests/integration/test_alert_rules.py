"""The alert rules with Prometheus' own tools: `promtool check rules` (syntax, PromQL, label
templates) and `promtool test rules` (tests/promtool: each alert fires when it should, with
the labels and annotations it should, and stays quiet when it should); the inhibition rules
with Alertmanager's: `amtool check-config`.

Marked integration: promtool and amtool are fetched from Debian's packages on first use.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hack import monitoring
from tests.monitoring import PROMTOOL_TESTS, ROOT, RULES

pytestmark = pytest.mark.integration


def promtool_run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def test_rules_pass_promtool_check(promtool: Path) -> None:
    result = promtool_run(promtool, "check", "rules", str(RULES), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_generated_prometheus_rule_groups_pass_promtool_check(
    promtool: Path, tmp_path: Path
) -> None:
    manifest = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
    spec = next(yaml.safe_load_all(manifest.read_text(encoding="utf-8")))["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = promtool_run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_their_unit_tests(promtool: Path) -> None:
    result = promtool_run(promtool, "test", "rules", PROMTOOL_TESTS.name, cwd=PROMTOOL_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails_the_unit_tests(promtool: Path, tmp_path: Path) -> None:
    """The unit tests check annotations exactly: a changed word is caught."""
    rules = tmp_path / "charts" / "lifeboat" / "rules"
    rules.mkdir(parents=True)
    shutil.copy(RULES, rules / RULES.name)
    tests = tmp_path / "tests" / "promtool"
    tests.mkdir(parents=True)
    text = PROMTOOL_TESTS.read_text(encoding="utf-8")
    assert "is Impaired: region frozen" in text
    (tests / PROMTOOL_TESTS.name).write_text(
        text.replace("is Impaired: region frozen", "is Impaired: region thawed"), encoding="utf-8"
    )
    result = promtool_run(promtool, "test", "rules", PROMTOOL_TESTS.name, cwd=tests)
    assert result.returncode != 0
    assert "LifeboatApiPlaneImpaired" in result.stdout + result.stderr


def test_rules_with_every_chart_setting_pass_promtool_check(promtool: Path, tmp_path: Path) -> None:
    settings = monitoring.AlertSettings(
        disabled=("LifeboatZoneDown",),
        labels={"team": "sre", "cluster": "prod-1"},
        runbook_url_base="https://wiki.example/runbooks/",
        pending_for="2s",
    )
    (tmp_path / "rules.yaml").write_text(
        monitoring.rules_document(RULES, settings), encoding="utf-8"
    )
    result = promtool_run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    groups = monitoring.alert_groups(yaml.safe_load(RULES.read_text("utf-8"))["groups"], settings)
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups)} rules found" in result.stdout


def test_inhibition_rules_pass_amtool_check(amtool: Path, tmp_path: Path) -> None:
    config = {
        "route": {"receiver": "nobody"},
        "receivers": [{"name": "nobody"}],
        "inhibit_rules": monitoring.inhibit_rules(ROOT),
    }
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [str(amtool), "check-config", "alertmanager.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f" - {len(config['inhibit_rules'])} inhibit rules" in result.stdout
