"""`lifeboat simulate`: timelines in, decisions out, deterministic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.api.models import ResilientAppSpec
from controller.cli.main import main
from controller.cli.simulate import TimelineError, run
from controller.core.simulate import Timeline, simulate

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
        (
            "timeline: [{at: 1, zones: {use1: fail}}]",
            "timeline entry 1 (at 1): zones: zone 'use1' must be written site/zone",
        ),
        (
            "timeline: [{at: 1, zones: {use1/us-east-1a: sideways}}]",
            "timeline entry 1 (at 1): zones: zone outcome 'sideways': use ok, fail",
        ),
        ("timeline: [{at: -1}]", "timeline entry 1 (at -1): at: Input should be greater than"),
        ("timeline: [{at: 1, when: 2}]", "timeline entry 1 (at 1): when: Extra inputs are not"),
        (
            "timeline: [{at: 1}, {at: 5, zones: {use1/us-east-1z: fail}}]",
            "timeline entry 2 (at 5): zones.use1/us-east-1z: site use1 has no zone 'us-east-1z'",
        ),
        (
            "timeline: [{at: 5, zones: {euw1/eu-west-1a: fail}}]",
            "timeline entry 1 (at 5): zones.euw1/eu-west-1a: the app has no site 'euw1' "
            "(sites: use1, usw2)",
        ),
        ("timeline: [{at: 5, zones: {use1/us-east-1a: 'slow:-5'}}]", "zone outcome 'slow:-5'"),
        ("timeline: [{at: 5, zones: {use1/us-east-1a: 'slow:nan'}}]", "zone outcome 'slow:nan'"),
        ("timeline: [{at: 5, zones: {use1/us-east-1a: 'flaky:inf'}}]", "'flaky:inf'"),
        ("timeline: [{at: 5, replicationLag: {usw2: .nan}}]", "entry 1 (at 5): replicationLag"),
        ("timeline: [{at: 5, replicationLag: {usw2: -3}}]", "lag of usw2 must be between 0"),
        ("timeline: [{at: 5, replicationLag: {eu: 3}}]", "replicationLag.eu: the app has no site"),
        ("duration: .inf", "duration: Input should be a finite number"),
        ("duration: 1e9", "duration: Input should be less than or equal to 86400"),
        ("timeline: [{at: 1e9}]", "at: Input should be less than or equal to 86400"),
        ("duration: 10\ntimeline: [{at: 50}]", "duration: 10 s ends before the last entry"),
        ("timeline: [{at: 5, api: {aws-prod/eu-west-1: [ok]}}]", "api.aws-prod/eu-west-1: not a"),
        ("timeline: [{at: 5, api: {aws-prod/us-east-1: [sideways]}}]", "api.aws-prod/us-east-1.0"),
        ("timeline: [{at: 5, pin: nowhere}]", "pin: the app has no site 'nowhere'"),
        ("timeline: [{at: 5, capacity: {eu: 3}}]", "capacity.eu: the app has no site 'eu'"),
        ("timeline: [{at: 5, capacity: {usw2: -1}}]", "capacity of usw2 must be between 0"),
        ("timeline: [{at: 5, capacity: {usw2: lots}}]", "entry 1 (at 5): capacity.usw2"),
        ("timeline: [{at: 5, request: {op: failover}}]", "request.site: a failover request"),
        ("timeline: [{at: 5, request: {op: sideways}}]", "request.op: Input should be"),
        ("timeline: [{at: 5, request: {op: failover, site: x}}]", "request.site: the app has no"),
        ("timeline: 3", "timeline: Input should be a valid list"),
        ("- 1\n- 2", "expected a timeline (a mapping), got list"),
        ("timeline: [{at: 1}", "not YAML: line 1, column 19: expected ',' or ']'"),
    ],
)
def test_bad_timelines_are_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("\\n", "\n"))
    with pytest.raises(TimelineError) as caught:
        run(DOCS / "app.yaml", path)
    error = str(caught.value)
    assert "\n" not in error
    assert error.startswith(f"{path}: ")
    assert message in error
    assert "pydantic" not in error


def test_bad_apps_and_binary_files_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    assert main(["simulate", str(DOCS / "app.yaml"), str(binary)]) == 2
    err = capsys.readouterr().err
    assert err == f"lifeboat simulate: {binary}: not UTF-8 text (byte 0x80 at offset 128)\n"
    assert main(["simulate", str(binary), str(DOCS / "noisy.yaml")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    control = tmp_path / "control.yaml"
    control.write_bytes(b"timeline: [{at: 1}]\x00\x07")
    assert main(["simulate", str(DOCS / "app.yaml"), str(control)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    app = tmp_path / "app.yaml"
    app.write_text(
        (DOCS / "app.yaml").read_text().replace("intervalSeconds: 10", "intervalSeconds: x")
    )
    with pytest.raises(TimelineError) as caught:
        run(app, DOCS / "noisy.yaml")
    assert str(caught.value) == (
        f"{app}: spec.health.intervalSeconds: Input should be a valid integer, unable to parse "
        "string as an integer"
    )
    missing = tmp_path / "missing.yaml"
    assert main(["simulate", str(DOCS / "app.yaml"), str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"lifeboat simulate: {missing}: cannot read")


# --------------------------------------------------------------------------- as the operator


def test_replication_lag_holds_an_automatic_failback(tmp_path: Path) -> None:
    """Regression: the RPO target was not passed, so lag never held a failback and the
    reason claimed replication had caught up."""
    app = (DOCS / "app.yaml").read_text()
    app = app.replace("failback: {mode: Manual}", "failback: {mode: Automatic, stableSeconds: 60}")
    app = app.replace(
        "  traffic:\n",
        "  replication:\n    rpoTargetSeconds: 30\n"
        "    objects:\n      - name: media\n        locations:\n"
        "          - {site: use1, bucket: media-use1}\n"
        "          - {site: usw2, bucket: media-usw2}\n"
        "  traffic:\n",
    )
    (tmp_path / "app.yaml").write_text(app)
    (tmp_path / "t.yaml").write_text(
        """
duration: 900
timeline:
  - at: 10
    zones: {use1/us-east-1a: fail, use1/us-east-1b: fail, use1/us-east-1c: fail}
    replicationLag: {use1: 0, usw2: 0}
  - at: 100
    zones: {use1/us-east-1a: ok, use1/us-east-1b: ok, use1/us-east-1c: ok}
    replicationLag: {use1: 400}
  - at: 700
    replicationLag: {use1: 5}
"""
    )
    document, _ = run(tmp_path / "app.yaml", tmp_path / "t.yaml")
    rows = json.loads(document)["decisions"]
    failback = next(r for r in rows if r["rule"] == "failback")
    assert failback["time"] >= 700
    assert failback["activeSite"] == "use1"


def test_an_answer_slower_than_the_timeout_is_a_failure(tmp_path: Path) -> None:
    """Regression: slow:<s> above timeoutSeconds counted as healthy."""
    rows = decisions(
        "duration: 120\ntimeline: [{at: 10, zones: {use1/us-east-1a: 'slow:5'}}]", tmp_path
    )
    assert any(r["rule"] == "lone-zone-failure" for r in rows)
    notes = [n["message"] for r in rows for n in r["notes"]]
    assert any("no answer within 3s (took 5.00s)" in n for n in notes)
    rows = decisions(
        "duration: 120\ntimeline: [{at: 10, zones: {use1/us-east-1a: 'slow:2.5'}}]", tmp_path
    )
    assert all(r["rule"] == "steady" for r in rows)


# --------------------------------------------------------------------------- what is printed


def test_a_change_of_cause_is_printed_even_without_actions(tmp_path: Path) -> None:
    """Regression: an app Down for an hour held by the budget kept showing the dwell."""
    rows = decisions(
        """
duration: 3000
timeline:
  - at: 10
    zones: {use1/us-east-1a: fail, use1/us-east-1b: fail, use1/us-east-1c: fail}
  - at: 700
    zones: {use1/us-east-1a: ok, use1/us-east-1b: ok, use1/us-east-1c: ok,
            usw2/us-west-2a: fail, usw2/us-west-2b: fail}
  - at: 1000
    zones: {use1/us-east-1a: fail, use1/us-east-1b: fail, use1/us-east-1c: fail,
            usw2/us-west-2a: ok, usw2/us-west-2b: ok}
""",
        tmp_path,
    )
    held = [r for r in rows if r["rule"] == "site-down-held"]
    reasons = [r["reason"].split("failover held: ")[1] for r in held]
    assert reasons[0].startswith("dwell: ")
    assert reasons[0].endswith("s of 600 s; budget: 2 failovers in the last hour (max 2)")
    assert reasons[-1] == "budget: 2 failovers in the last hour (max 2)"
    # The dwell counting down is not a change: not every held round is printed.
    assert len(held) < 10


def test_rows_carry_api_verdicts_and_the_zones_of_each_dns_target() -> None:
    document, _ = run(DOCS / "app.yaml", DOCS / "us-east-1-2012.yaml")
    rows = json.loads(document)["decisions"]
    verdicts = [r["apiPlanes"]["aws-prod/us-east-1"] for r in rows]
    assert "Degraded" in verdicts and "Impaired" in verdicts
    turned = next(r for r in rows if r["apiPlanes"]["aws-prod/us-east-1"] == "Degraded")
    assert turned["actions"] == turned["notes"] == []  # printed for the verdict alone
    assert verdicts.index("Degraded") < verdicts.index("Impaired")
    evacuated = next(r for r in rows if r["rule"] == "lone-zone-failure" and r["actions"])
    assert {d["site"]: d["zones"] for d in evacuated["dns"]} == {
        "use1": ["us-east-1a", "us-east-1c"],
        "usw2": ["us-west-2a", "us-west-2b"],
    }
    assert rows[-1]["zones"]["use1"]["us-east-1b"] == "Healthy"
    events = json.loads(document)["events"]
    assert [e["time"] for e in events] == [60, 240, 600]


def test_the_table_interleaves_injected_events_and_decisions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        main(["simulate", "-o", "table", str(DOCS / "app.yaml"), str(DOCS / "us-east-1-2012.yaml")])
        == 0
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    injected = next(
        i for i, line in enumerate(lines) if "60.0s  >> zones use1/us-east-1b=fail" in line
    )
    cascade = next(i for i, line in enumerate(lines) if " cascade " in line)
    throttled = next(i for i, line in enumerate(lines) if ">> api aws-prod/us-east-1=" in line)
    assert injected < throttled < cascade
    assert any("API planes: aws-prod/us-east-1 Impaired" in line for line in lines)
    assert any(
        line.strip().startswith("DNS: use1 0 [us-east-1a, us-east-1c]; usw2 100") for line in lines
    )
    assert lines[-1] == "end: active site usw2, epoch 2 (1 failover), phase Degraded"


def test_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["simulate", str(DOCS / "app.yaml"), str(DOCS / "noisy.yaml")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["decisions"]  # not a terminal: JSON by default
    assert "end: active site use1" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("timeline: 3")
    assert main(["simulate", str(DOCS / "app.yaml"), str(bad)]) == 2


def test_answers_are_judged_by_the_endpoints_expected_status(tmp_path: Path) -> None:
    redirecting = """
duration: 30
timeline:
  - at: 5
    zones: {use1/us-east-1a: "status:302"}
"""
    rows = decisions(redirecting, tmp_path)
    assert any(r["rule"] == "lone-zone-failure" for r in rows)  # 3xx is not healthy by default

    app = (DOCS / "app.yaml").read_text()
    app = app.replace("  health:\n", "  health:\n    http: {expectedStatus: ['200-399']}\n", 1)
    (tmp_path / "app.yaml").write_text(app)
    (tmp_path / "timeline.yaml").write_text(redirecting)
    document, _ = run(tmp_path / "app.yaml", tmp_path / "timeline.yaml")
    assert not any(
        r["rule"] == "lone-zone-failure" for r in json.loads(document)["decisions"]
    )  # unless asked


def test_the_forced_move_example_is_left_at_once() -> None:
    document, _ = run(DOCS / "app.yaml", DOCS / "forced-onto-failing.yaml")
    rows = json.loads(document)["decisions"]
    forced = next(r for r in rows if r["rule"] == "manual-failover")
    rescue = next(r for r in rows if r["epoch"] == 4)
    assert (forced["time"], forced["activeSite"]) == (90, "use1")
    assert (rescue["time"], rescue["rule"], rescue["activeSite"]) == (100, "site-down", "usw2")


def test_a_stuck_scale_up_holds_the_old_sites_shrink_for_the_bounded_wait() -> None:
    """The operator's rule, simulated: the old site shrinks only once the new site's
    capacity is Ready, or once failover.readiness.capacityTimeoutSeconds have passed (and
    then says so); the time capacity took to come up is reported."""
    document, summary = run(DOCS / "app.yaml", DOCS / "stuck-scale-up.yaml")
    rows = json.loads(document)["decisions"]
    failover = next(r for r in rows if any(n["kind"] == "FailoverStarted" for n in r["notes"]))
    after = [r for r in rows if r["time"] >= failover["time"]]
    grown = next(
        r for r in after if any(a["target"].startswith("capacity of usw2") for a in r["actions"])
    )
    shrunk = next(
        r for r in after if any(a["target"].startswith("capacity of use1") for a in r["actions"])
    )
    assert shrunk["time"] - grown["time"] >= 300
    waiting = [
        h["reason"]
        for r in rows
        if grown["time"] < r["time"] < shrunk["time"]
        for h in r["held"]
        if h["target"].startswith("capacity of use1")
    ]
    assert waiting and all(
        w == "waits for the capacity of usw2 to be Ready (6/12 Ready) before use1 shrinks, "
        "at most 300 s after it was set"
        for w in waiting
    )
    late = [n["message"] for r in rows for n in r["notes"] if n["kind"] == "CapacityNotReady"]
    assert late == [
        "capacity not Ready: usw2: 6/12 instances Ready after 300 s; use1 no longer wait(s) "
        "for it and shrink(s) now (readiness.capacityTimeoutSeconds 300)"
    ]
    ready = [
        (r["time"], n["message"])
        for r in rows
        for n in r["notes"]
        if n["kind"] == "CapacityReady" and "usw2" in n["message"]
    ]
    assert ready[-1][0] >= 700
    took = ready[-1][0] - failover["time"]
    assert ready[-1][1].endswith(f"12/12 instances Ready {took:.0f} s after it was asked for")
    assert "CapacityNotReady: capacity not Ready: usw2" in summary
    standby = [r["standby"] for r in rows if r["time"] < failover["time"]]
    assert standby and all(s == {"usw2": {"ready": True, "reasons": []}} for s in standby)


def test_simulated_rounds_come_faster_while_a_zone_is_suspect() -> None:
    """The simulation steps as the operator does: ``suspectIntervalSeconds`` while a zone is
    Suspect or Recovering, so the lone zone's failure is decided sooner."""
    document = yaml.safe_load((DOCS / "app.yaml").read_text())
    timeline = Timeline.model_validate(
        {"duration": 120, "timeline": [{"at": 15, "zones": {"use1/us-east-1a": "fail"}}]}
    )

    def decided_at(health: dict[str, Any]) -> float:
        spec = ResilientAppSpec.model_validate(document["spec"] | {"health": health})
        rows = simulate(spec, timeline)
        return float(next(r["time"] for r in rows if r["rule"] == "lone-zone-failure"))

    base = {"intervalSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3}
    assert decided_at(base) == 40.0  # failures seen at 20, 30, 40
    assert decided_at(base | {"suspectIntervalSeconds": 2}) == 24.0  # at 20, 22, 24
    # never sooner than the probe timeout: at 20, 22.5, 25 (the 2.5 s grid)
    assert decided_at(base | {"timeoutSeconds": 2.5, "suspectIntervalSeconds": 2}) == 25.0
    spec = ResilientAppSpec.model_validate(
        document["spec"] | {"health": base | {"timeoutSeconds": 0.1, "suspectIntervalSeconds": 0.1}}
    )
    times = [float(r["time"]) for r in simulate(spec, timeline)]
    assert all(round(t, 1) == t for t in times)  # on the 0.1 s grid, no float drift
    assert times[-1] % 10 == 0  # and back on the 10 s grid once the zone is settled
