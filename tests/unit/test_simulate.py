"""`lifeboat simulate`: timelines in, decisions out, deterministic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.cli.main import main
from controller.cli.simulate import TimelineError, run

DOCS = Path(__file__).resolve().parents[2] / "docs" / "simulate"


def decisions(timeline: str, tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "timeline.yaml"
    path.write_text(timeline)
    document, _ = run(DOCS / "app.yaml", path)
    rows: list[dict[str, Any]] = json.loads(document)["decisions"]
    return rows


def test_the_2012_cascade_is_evacuated_then_failed_over() -> None:
    document, summary = run(DOCS / "app.yaml", DOCS / "us-east-1-2012.yaml")
    rows = json.loads(document)["decisions"]
    rules = [r["rule"] for r in rows]
    assert rules.index("lone-zone-failure") < rules.index("cascade")
    cascade = next(r for r in rows if r["rule"] == "cascade")
    assert cascade["activeSite"] == "usw2"
    assert cascade["epoch"] == 2
    assert {a["kind"] for a in cascade["actions"]} == {"ShiftTraffic", "SetCapacity"}
    assert all("us-east-1" not in a["target"] for a in cascade["actions"][1:])
    assert "FailoverStarted" in summary
    assert summary.endswith("end: active site usw2, epoch 2 (1 failover), phase Degraded")


def test_noise_changes_nothing() -> None:
    document, _ = run(DOCS / "app.yaml", DOCS / "noisy.yaml")
    rows = json.loads(document)["decisions"]
    assert all(r["epoch"] == 1 for r in rows)
    assert not any(r["rule"] in ("lone-zone-failure", "site-down") for r in rows)


def test_same_timeline_same_decisions() -> None:
    assert run(DOCS / "app.yaml", DOCS / "noisy.yaml") == run(
        DOCS / "app.yaml", DOCS / "noisy.yaml"
    )


def test_requests_pins_and_approvals(tmp_path: Path) -> None:
    rows = decisions(
        """
duration: 120
timeline:
  - at: 10
    pin: use1
  - at: 20
    zones: {use1/us-east-1a: fail, use1/us-east-1b: fail, use1/us-east-1c: fail}
  - at: 80
    request: {op: failover, site: usw2}
  - at: 90
    unpin: true
  - at: 100
    request: {op: failover, site: usw2}
""",
        tmp_path,
    )
    refused = next(r for r in rows if r["time"] == 80)
    assert refused["activeSite"] == "use1"
    assert any("pinned" in n["message"] for n in refused["notes"])
    accepted = next(r for r in rows if r["time"] == 100)
    assert accepted["activeSite"] == "usw2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timeline: [{at: 1, zones: {use1: fail}}]", "site/zone"),
        ("timeline: [{at: 1, zones: {use1/us-east-1a: sideways}}]", "zone outcome 'sideways'"),
        ("timeline: [{at: -1}]", "greater than or equal to 0"),
        ("timeline: [{at: 1, when: 2}]", "Extra inputs are not permitted"),
    ],
)
def test_bad_timelines_are_refused_clearly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TimelineError, match=message):
        run(DOCS / "app.yaml", path)


def test_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["simulate", str(DOCS / "app.yaml"), str(DOCS / "noisy.yaml")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["decisions"]
    assert "end: active site use1" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("timeline: 3")
    assert main(["simulate", str(DOCS / "app.yaml"), str(bad)]) == 2
