"""Observe drills: a scripted fault timeline replayed against the app's spec by the
simulation engine, judged against the drill's expectations, acting on nothing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from controller.api.conditions import parse_rfc3339, rfc3339
from controller.api.models import FailoverDrillSpec, FailoverDrillStatus, ResilientAppSpec
from controller.api.models.drill import MAX_OBSERVED_DECISIONS, ObserveExpect, ObserveTimeline
from controller.core import drill as d
from controller.core.observe import observe
from controller.operator.drills import DrillTicker
from tests.factories import app_spec
from tests.unit.test_drill_ticker import NOW, FakeApi, app_body

T0 = parse_rfc3339("2026-03-03T10:00:00Z")
USE1_DOWN = {f"use1/us-east-1{z}": "fail" for z in "abc"}


def spec() -> ResilientAppSpec:
    return ResilientAppSpec.model_validate(app_spec())


def timeline(*entries: dict[str, Any], duration: float = 60) -> ObserveTimeline:
    return ObserveTimeline.model_validate({"duration": duration, "timeline": list(entries)})


def expect(**raw: Any) -> ObserveExpect:
    return ObserveExpect.model_validate(raw)


def drill(**overrides: Any) -> FailoverDrillSpec:
    raw: dict[str, Any] = {
        "app": "web",
        "kind": "Observe",
        "schedule": {"once": rfc3339(T0)},
        "timeline": {"duration": 60, "timeline": [{"at": 10, "zones": USE1_DOWN}]},
        "expect": {"failoverWithinSeconds": 30, "targetSite": "usw2"},
    }
    raw.update(overrides)
    return FailoverDrillSpec.model_validate(raw)


# --------------------------------------------------------------------------- the replay


def test_a_region_down_fails_over_in_time_to_the_expected_site() -> None:
    report = observe(
        spec(), timeline({"at": 10, "zones": USE1_DOWN}), expect(failoverWithinSeconds=30)
    )
    assert report.result == "Succeeded", report.message
    assert report.origin_site == "use1" and report.target_site == "usw2"
    assert report.first_failover_seconds is not None and 10 < report.first_failover_seconds < 30
    assert any(x.rule == "site-down" and "usw2" in x.actions for x in report.decisions)


def test_an_expectation_that_fails_says_which_rule_held_the_app_and_why() -> None:
    impaired = {"aws-sandbox/us-west-2": ["server_error"] * 5}
    report = observe(
        spec(),
        timeline({"at": 10, "zones": USE1_DOWN, "api": impaired}),
        expect(failoverWithinSeconds=30),
    )
    assert report.result == "Failed"
    assert report.message.startswith("no failover within 30 s: ")
    assert "site-down-held" in report.message and "API plane of us-west-2" in report.message
    assert report.first_failover_seconds is None and report.target_site is None


def test_one_zone_down_is_no_failover_and_the_wrong_target_fails() -> None:
    one = timeline({"at": 10, "zones": {"use1/us-east-1a": "fail"}})
    assert observe(spec(), one, expect(noFailover=True)).result == "Succeeded"
    down = timeline({"at": 10, "zones": USE1_DOWN})
    report = observe(spec(), down, expect(noFailover=True))
    assert report.result == "Failed"
    assert "expected no failover, but first failover" in report.message
    wrong = observe(spec(), down, expect(targetSite="use1"))
    assert wrong.result == "Failed" and "expected a failover to use1" in wrong.message


def test_no_expectations_always_succeeds_and_reports_what_it_saw() -> None:
    report = observe(spec(), timeline({"at": 10, "zones": USE1_DOWN}), None)
    assert report.result == "Succeeded" and "first failover at t=" in report.message


def test_a_timeline_naming_what_the_app_lacks_fails_with_the_entry_and_field() -> None:
    report = observe(spec(), timeline({"at": 5, "zones": {"euw1/eu-west-1a": "fail"}}), None)
    assert report.result == "Failed"
    assert report.message.startswith("timeline entry 1 (at 5): zones.euw1/eu-west-1a: ")
    slow = observe(spec(), timeline({"at": 5, "zones": {"use1/us-east-1a": "slow:99999"}}), None)
    assert slow.result == "Failed" and "slow" in slow.message


def test_the_report_keeps_a_bounded_number_of_decisions_and_the_last_one() -> None:
    entries = [
        {"at": float(t), "zones": {"use1/us-east-1a": "fail" if t % 20 else "ok"}}
        for t in range(0, 640, 10)
    ]
    report = observe(spec(), timeline(*entries, duration=700), None)
    assert report.decisions_total > MAX_OBSERVED_DECISIONS
    assert len(report.decisions) == MAX_OBSERVED_DECISIONS
    assert report.decisions[-1].time > 630  # the last change, after the first ones


# --------------------------------------------------------------------------- the drill


def app_view() -> d.AppView:
    body = app_body()
    return d.app_view(body)


def test_an_observe_run_ends_in_its_tick_and_acts_on_nothing() -> None:
    new, actions = d.step("obs", drill(), FailoverDrillStatus(), app_view(), T0, created=T0 - 60)
    assert new.phase == new.result == "Succeeded", new.message
    assert new.run == 1 and new.last_successful_time is not None
    assert [s.name for s in new.steps] == ["observe"] and new.steps[0].result == "Succeeded"
    assert new.target_site == "usw2" and new.first_failover_seconds is not None
    assert new.decisions and new.pending_request is None
    assert not any(isinstance(a, d.Move | d.Release) for a in actions)
    assert [a.result for a in actions if isinstance(a, d.Finished)] == ["Succeeded"]
    # Done for a once schedule: nothing due any more.
    again, more = d.step("obs", drill(), new, app_view(), T0 + 10, created=T0 - 60)
    assert again.run == 1 and more == ()


def test_a_failed_observe_run_is_a_failed_drill_with_the_reason() -> None:
    held = drill(expect={"noFailover": True})
    new, actions = d.step("obs", held, FailoverDrillStatus(), app_view(), T0, created=T0 - 60)
    assert new.phase == "Failed" and "expected no failover" in new.message
    assert [a.result for a in actions if isinstance(a, d.Finished)] == ["Failed"]
    assert any(isinstance(a, d.Notice) and a.reason == "DrillFailed" for a in actions)


def test_an_observe_drill_without_its_app_fails() -> None:
    new, _ = d.step("obs", drill(), FailoverDrillStatus(), None, T0, created=T0 - 60)
    assert new.phase == "Failed" and "not found" in new.message


def test_an_observe_drill_never_writes_to_the_app_at_the_operator_edge() -> None:
    app = app_body()
    body = {
        "metadata": {
            "name": "obs",
            "namespace": "ns",
            "resourceVersion": "5",
            "generation": 1,
            "creationTimestamp": rfc3339(NOW - 60),
        },
        "spec": drill(schedule={"once": rfc3339(NOW - 1)}).model_dump(
            mode="json", by_alias=True, exclude_none=True
        ),
    }
    api = FakeApi({("resilientapps", "web"): app, ("failoverdrills", "obs"): body})
    before = copy.deepcopy(app)
    events = DrillTicker(api, clock=lambda: NOW).tick("ns", "obs")
    assert [(call, plural) for call, plural, _ in api.calls] == [("patch_status", "failoverdrills")]
    assert api.objects[("resilientapps", "web")] == before
    status = api.objects[("failoverdrills", "obs")]["status"]
    assert status["phase"] == "Succeeded" and status["targetSite"] == "usw2"
    assert [reason for _, reason, _ in events] == ["DrillStarted", "DrillSucceeded"]
    DrillTicker(api, clock=lambda: NOW + 5).tick("ns", "obs")
    assert api.objects[("resilientapps", "web")] == before


# --------------------------------------------------------------------------- admission


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timeline": None}, "an Observe drill needs timeline"),
        ({"kind": "ZoneEvacuation"}, "a ZoneEvacuation drill needs zone"),
        (
            {"timeline": {"timeline": [{"at": 1, "zones": {"use1": "fail"}}]}},
            "zones are written site/zone",
        ),
        (
            {"timeline": {"timeline": [{"at": 1, "zones": {"use1/a": "broken"}}]}},
            "String should match pattern",
        ),
        ({"timeline": {"duration": 5, "timeline": [{"at": 10}]}}, "duration ends before"),
        ({"timeline": {"timeline": [{"at": 1, "capacity": {"usw2": "lots"}}]}}, "capacity"),
        ({"timeline": {"timeline": [{"at": 1, "request": {"op": "failover"}}]}}, "names the site"),
        ({"timeline": {"timeline": [{"at": 1}] * 65}}, "at most 64"),
        ({"expect": {"noFailover": True, "targetSite": "usw2"}}, "noFailover excludes"),
    ],
)
def test_a_bad_observe_drill_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        drill(**change)


def test_the_example_observe_drill_holds_against_the_example_app() -> None:
    examples = Path(__file__).parents[2] / "manifests" / "examples" / "aws"
    drill_doc = yaml.safe_load((examples / "failoverdrill-observe.yaml").read_text())
    app_doc = yaml.safe_load((examples / "resilientapp.yaml").read_text())
    spec_ = FailoverDrillSpec.model_validate(drill_doc["spec"])
    app = ResilientAppSpec.model_validate(app_doc["spec"])
    assert spec_.timeline is not None
    shadow = observe(app, spec_.timeline, spec_.expect)  # the example app is in Observe mode
    assert shadow.result == "Failed" and "failover.mode is Observe" in shadow.message
    acting = app.model_copy(
        update={"failover": app.failover.model_copy(update={"mode": "Automatic"})}
    )
    report = observe(acting, spec_.timeline, spec_.expect)
    assert report.result == "Succeeded", report.message


def test_the_cli_reads_a_timeline_file_as_lifeboat_simulate_does(tmp_path: Path) -> None:
    from controller.cli import drill as cli
    from controller.cli.commands import CommandError

    good = tmp_path / "good.yaml"
    good.write_text("duration: 30\ntimeline:\n  - at: 5\n    zones: {use1/us-east-1a: fail}\n")
    assert cli.timeline_document(good)["timeline"][0]["zones"] == {"use1/us-east-1a": "fail"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("timeline:\n  - at: 5\n    zones: {use1/us-east-1a: broken}\n")
    with pytest.raises(CommandError, match=r"timeline entry 1 \(at 5\): zones"):
        cli.timeline_document(bad)


def test_the_report_of_an_observe_run_shows_the_replay_and_its_decisions() -> None:
    from controller.cli import drill as cli

    new, _ = d.step("obs", drill(), FailoverDrillStatus(), app_view(), T0, created=T0 - 60)
    text = cli.report(new.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert "replay from use1: first failover at t=" in text and "to usw2" in text
    assert "decisions:" in text and "site-down" in text


def test_the_operator_judges_api_planes_with_the_apps_cloudproviders_thresholds() -> None:
    from tests.factories import provider_spec

    impaired = {"aws-sandbox/us-west-2": ["server_error"] * 5}
    within = {"failoverWithinSeconds": 30}
    entries = [{"at": 10, "zones": USE1_DOWN, "api": impaired}]

    def run(providers: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
        app = app_body()
        body = {
            "metadata": {
                "name": "obs",
                "namespace": "ns",
                "resourceVersion": "5",
                "generation": 1,
                "creationTimestamp": rfc3339(NOW - 60),
            },
            "spec": drill(
                schedule={"once": rfc3339(NOW - 1)},
                timeline={"duration": 60, "timeline": entries},
                expect=within,
            ).model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        objects = {("resilientapps", "web"): app, ("failoverdrills", "obs"): body, **providers}
        api = FakeApi(objects)
        DrillTicker(api, clock=lambda: NOW).tick("ns", "obs")
        status: dict[str, Any] = api.objects[("failoverdrills", "obs")]["status"]
        return status

    # Default thresholds: the standby's API plane is Impaired, the failover is held.
    assert run({})["phase"] == "Failed"
    # Its CloudProvider wants more calls for a verdict than the timeline makes: no verdict.
    lax = provider_spec(apiPlane={"minCalls": 1000})
    provider = {("cloudproviders", "aws-sandbox"): {"metadata": {}, "spec": lax}}
    assert run(provider)["phase"] == "Succeeded"
