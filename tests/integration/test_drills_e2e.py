"""FailoverDrills end to end on the sandbox: the real kube-apiserver, moto (Route 53), the
zonal endpoints, and the operator in-process as its ServiceAccount.

A scheduled Switchover drill moves the app to its standby, holds, moves it back, and its
status holds the full report; a drill whose abort condition trips (the standby's zone stops
answering during the hold) aborts and the app ends where it started; a ZoneEvacuation drill
takes one zone's DNS value out of Route 53, holds, puts it back, and one aborts when
another zone of the site stops answering; the CLI runs a drill and aborts one; the API
server refuses drills that are not well formed.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from controller import metrics
from controller.api.conditions import parse_rfc3339, rfc3339
from controller.api.names import DRILL_ANNOTATION, GROUP, VERSION
from controller.cli import drill as cli
from controller.cli.commands import Cluster
from sandbox.world import Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = pytest.mark.integration

PLURAL = "failoverdrills"


def create_drill(apps: Apps, namespace: str, name: str, **spec: Any) -> None:
    full = {"app": "web", "kind": "Switchover", "targetSite": "usw2", **spec}
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FailoverDrill",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {k: v for k, v in full.items() if v is not None},
    }
    apps.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def drill(apps: Apps, namespace: str, name: str) -> dict[str, Any]:
    found = apps.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert isinstance(found, dict)
    return found


def drill_status(apps: Apps, namespace: str, name: str) -> dict[str, Any]:
    status = drill(apps, namespace, name).get("status") or {}
    assert isinstance(status, dict)
    return status


def ended(apps: Apps, namespace: str, name: str) -> dict[str, Any] | None:
    status = drill_status(apps, namespace, name)
    return status if status.get("result") else None


def step(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in status.get("steps", []) if s["name"] == name)


def running_step(apps: Apps, namespace: str, name: str, wanted: str) -> dict[str, Any] | None:
    status = drill_status(apps, namespace, name)
    steps = [s for s in status.get("steps", []) if s["result"] == "Running"]
    return status if steps and steps[-1]["name"] == wanted else None


def drill_events(apps: Apps, namespace: str, name: str) -> list[tuple[str, str, str]]:
    items = apps.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=FailoverDrill"
    ).items
    items.sort(key=lambda e: str(e.metadata.name if e.metadata else ""))
    return [(str(e.type), str(e.reason), str(e.message)) for e in items]


def sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def wait_released(apps: Apps, ns: str, app: str) -> None:
    """The drill's hold on the app is released just after its final status is written
    (status first, then the app); an ended drill's leftover annotation holds nothing."""
    wait_for(
        lambda: DRILL_ANNOTATION not in (apps.get(ns, app)["metadata"].get("annotations") or {}),
        15,
        "the app released",
    )


def use1_values(apps: Apps, ns: str, app: str) -> set[str]:
    """The values of the app's use1 record set in Route 53 (moto), read directly."""
    route53 = apps.sandbox.aws_client("route53")
    zone_id = route53.list_hosted_zones_by_name(DNSName=apps.zone)["HostedZones"][0]["Id"]
    sets = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    record = apps.record(ns, app)
    found = [r for r in sets if r["Name"] == record and r.get("SetIdentifier") == "use1"]
    assert len(found) == 1, found
    return {v["Value"] for v in found[0]["ResourceRecords"]}


ALL_USE1 = {"192.0.2.11", "192.0.2.12", "192.0.2.13"}


def test_a_zone_evacuation_takes_the_zone_out_holds_puts_it_back_and_reports(
    apps: Apps,
) -> None:
    ns, app = apps.create()
    apps.wait_serving(ns, app)
    assert use1_values(apps, ns, app) == ALL_USE1
    create_drill(
        apps,
        ns,
        "zone-b",
        kind="ZoneEvacuation",
        targetSite=None,
        zone="us-east-1b",
        schedule={"once": rfc3339(time.time())},
        holdSeconds=6,
    )

    # The hold: zone b's address is out of the use1 record, the app knows it as the drill's,
    # and it still counts as Healthy (on purpose, no trouble); no failover, no epoch.
    holding = wait_for(lambda: running_step(apps, ns, "zone-b", "hold"), 60, "the hold")
    assert holding["zone"] == "use1/us-east-1b"
    assert use1_values(apps, ns, app) == {"192.0.2.11", "192.0.2.13"}
    during = apps.get(ns, app)
    assert during["status"]["drillEvacuation"]["drill"] == "zone-b"
    assert during["status"]["drillEvacuation"]["zone"] == "us-east-1b"
    zone_b = next(z for z in during["status"]["zones"] if z["zone"] == "us-east-1b")
    assert zone_b["inTraffic"] is False
    assert during["status"]["phase"] == "Healthy"
    assert (during["status"]["activeSite"], during["status"]["epoch"]) == ("use1", 1)
    assert apps.dns_weights(ns, app) == {"use1": 100, "usw2": 0}
    assert during["metadata"]["annotations"][DRILL_ANNOTATION] == "zone-b"

    status = wait_for(lambda: ended(apps, ns, "zone-b"), 60, "the drill to end")
    assert status["result"] == status["phase"] == "Succeeded", status
    assert [(s["name"], s["result"]) for s in status["steps"]] == [
        ("preflight", "Succeeded"),
        ("evacuate", "Succeeded"),
        ("hold", "Succeeded"),
        ("restore", "Succeeded"),
        ("verify", "Succeeded"),
    ]
    for entry in status["steps"]:
        assert parse_rfc3339(entry["finishedTime"]) >= parse_rfc3339(entry["startedTime"])
    hold = step(status, "hold")
    assert parse_rfc3339(hold["finishedTime"]) - parse_rfc3339(hold["startedTime"]) >= 6
    assert 0 <= status["rtoSeconds"] < 30 and 0 <= status["revertRtoSeconds"] < 30
    assert "abortReason" not in status
    assert use1_values(apps, ns, app) == ALL_USE1
    after = apps.get(ns, app)
    assert "drillEvacuation" not in after["status"]
    assert all(z.get("inTraffic", True) for z in after["status"]["zones"])
    assert (after["status"]["activeSite"], after["status"]["epoch"]) == ("use1", 1)
    assert after["status"].get("recentFailovers", []) == []
    wait_released(apps, ns, app)

    reasons = [r for _, r, _ in drill_events(apps, ns, "zone-b")]
    assert reasons[:4] == [
        "DrillStarted",
        "DrillZoneEvacuated",
        "DrillZoneRestored",
        "DrillSucceeded",
    ]
    labels = {"namespace": ns, "app": app, "drill": "zone-b", "kind": "ZoneEvacuation"}
    assert sample("lifeboat_drill_runs_total", **labels, result="Succeeded") == 1
    assert sample("lifeboat_drill_running", **labels) == 0
    cluster = Cluster.connect(str(apps.sandbox.kube.kubeconfig_path), None)
    out = io.StringIO()
    assert cli.status(cluster, ns, "zone-b", out=out) == 0
    assert "zone: use1/us-east-1b out of traffic and back" in out.getvalue()


def test_a_zone_evacuation_aborts_when_a_zone_left_serving_fails_and_puts_it_back(
    apps: Apps, sandbox: Sandbox
) -> None:
    ns, app = apps.create()
    apps.wait_serving(ns, app)
    cluster = Cluster.connect(str(apps.sandbox.kube.kubeconfig_path), None)
    out = io.StringIO()
    code = cli.run(
        cluster,
        ns,
        app,
        kind="ZoneEvacuation",
        site=None,
        zone="us-east-1b",
        hold=300,
        name="zone-risky",
        wait=0,
        out=out,
    )
    assert code == 0, out.getvalue()
    wait_for(lambda: running_step(apps, ns, "zone-risky", "hold"), 60, "the hold")
    assert use1_values(apps, ns, app) == {"192.0.2.11", "192.0.2.13"}

    # Zone c, one of the two left serving, stops answering: the drill aborts and puts b back.
    sandbox.zones.endpoint("use1", "us-east-1c").down()
    status = wait_for(lambda: ended(apps, ns, "zone-risky"), 60, "the drill to abort")
    assert status["result"] == "Aborted", status
    assert "zones of use1 still serving" in status["abortReason"]
    assert "us-east-1c" in status["abortReason"]
    assert [(s["name"], s["result"]) for s in status["steps"]] == [
        ("preflight", "Succeeded"),
        ("evacuate", "Succeeded"),
        ("hold", "Failed"),
        ("restore", "Succeeded"),
        ("verify", "Succeeded"),
    ]
    hold = step(status, "hold")
    assert parse_rfc3339(hold["finishedTime"]) - parse_rfc3339(hold["startedTime"]) < 60
    assert "192.0.2.12" in use1_values(apps, ns, app)
    # Zone c is Down for real: the automatic rules evacuate it, b carries the traffic.
    wait_for(
        lambda: use1_values(apps, ns, app) == {"192.0.2.11", "192.0.2.12"},
        30,
        "zone c evacuated for real",
    )
    after = apps.status(ns, app)
    assert "drillEvacuation" not in after
    assert (after["activeSite"], after["epoch"]) == ("use1", 1)
    events = drill_events(apps, ns, "zone-risky")
    assert ("Warning", "DrillAborting") in [(t, r) for t, r, _ in events]
    assert ("Warning", "DrillAborted") in [(t, r) for t, r, _ in events]
    labels = {"namespace": ns, "app": app, "drill": "zone-risky", "kind": "ZoneEvacuation"}
    assert sample("lifeboat_drill_runs_total", **labels, result="Aborted") == 1


def test_a_scheduled_switchover_moves_holds_reverts_and_reports(apps: Apps) -> None:
    ns, app = apps.create()
    apps.wait_serving(ns, app)
    at = time.time() + 4
    create_drill(apps, ns, "weekly", schedule={"once": rfc3339(at)}, holdSeconds=6)

    scheduled = wait_for(
        lambda: (s := drill_status(apps, ns, "weekly")).get("phase") == "Scheduled" and s,
        20,
        "the drill to be scheduled",
    )
    assert parse_rfc3339(scheduled["nextRunTime"]) == pytest.approx(at, abs=1)
    assert apps.status(ns, app)["activeSite"] == "use1"

    # The hold: the app serves from the standby, DNS says so, and the app is held by the drill.
    holding = wait_for(lambda: running_step(apps, ns, "weekly", "hold"), 60, "the hold")
    assert parse_rfc3339(holding["startedTime"]) >= at - 1
    app_now = apps.get(ns, app)
    assert app_now["status"]["activeSite"] == "usw2"
    assert app_now["metadata"]["annotations"][DRILL_ANNOTATION] == "weekly"
    assert apps.dns_weights(ns, app) == {"use1": 0, "usw2": 100}
    assert app_now["status"]["lastFailover"]["drill"] is True
    assert (
        sample("lifeboat_drill_running", namespace=ns, app=app, drill="weekly", kind="Switchover")
        == 1
    )

    status = wait_for(lambda: ended(apps, ns, "weekly"), 60, "the drill to end")
    assert status["result"] == status["phase"] == "Succeeded", status
    assert [(s["name"], s["result"]) for s in status["steps"]] == [
        ("preflight", "Succeeded"),
        ("switch", "Succeeded"),
        ("hold", "Succeeded"),
        ("revert", "Succeeded"),
    ]
    for entry in status["steps"]:
        assert parse_rfc3339(entry["finishedTime"]) >= parse_rfc3339(entry["startedTime"])
    hold = step(status, "hold")
    assert parse_rfc3339(hold["finishedTime"]) - parse_rfc3339(hold["startedTime"]) >= 6
    assert 0 < status["rtoSeconds"] < 30
    assert 0 < status["revertRtoSeconds"] < 30
    assert {c["name"]: c["result"] for c in status["dataChecks"]} == {"replication": "Unknown"}
    assert (status["originSite"], status["targetSite"], status["originEpoch"]) == (
        "use1",
        "usw2",
        1,
    )
    assert status["lastSuccessfulTime"] == status["finishedTime"]
    assert "abortReason" not in status
    assert "nextRunTime" not in status  # once: it will not run again
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Running"]["status"] == "False"

    # The app is back where it started, two epochs on, no budget spent, not held.
    after = apps.get(ns, app)
    assert after["status"]["activeSite"] == "use1"
    assert after["status"]["epoch"] == 3
    assert after["status"].get("recentFailovers", []) == []
    wait_released(apps, ns, app)
    assert apps.dns_weights(ns, app) == {"use1": 100, "usw2": 0}
    assert "requested by a FailoverDrill" in after["status"]["lastFailover"]["reason"]

    reasons = [r for _, r, _ in drill_events(apps, ns, "weekly")]
    assert reasons[:3] == ["DrillStarted", "DrillSwitched", "DrillSucceeded"]
    labels = {"namespace": ns, "app": app, "drill": "weekly", "kind": "Switchover"}
    assert sample("lifeboat_drill_runs_total", **labels, result="Succeeded") == 1
    assert sample("lifeboat_drill_runs_total", **labels, result="Failed") == 0
    assert sample("lifeboat_drill_running", **labels) == 0
    assert sample("lifeboat_drill_last_success_timestamp_seconds", **labels) == pytest.approx(
        parse_rfc3339(status["finishedTime"]), abs=1
    )
    assert (sample("lifeboat_drill_last_rto_seconds", **labels) or 0) > 0

    # `drill status` shows the report.
    cluster = Cluster.connect(str(apps.sandbox.kube.kubeconfig_path), None)
    out = io.StringIO()
    assert cli.status(cluster, ns, "weekly", out=out) == 0
    assert "result: Succeeded" in out.getvalue()
    assert "revert" in out.getvalue() and "RTO:" in out.getvalue()


def test_an_abort_condition_trips_and_the_app_ends_where_it_started(
    apps: Apps, sandbox: Sandbox
) -> None:
    ns, app = apps.create()
    apps.wait_serving(ns, app)
    create_drill(apps, ns, "risky", schedule={"once": rfc3339(time.time())}, holdSeconds=300)
    wait_for(lambda: running_step(apps, ns, "risky", "hold"), 60, "the hold")
    assert apps.status(ns, app)["activeSite"] == "usw2"

    # One zone of the target stops answering: probes fail there, the drill aborts.
    sandbox.zones.endpoint("usw2", "us-west-2a").down()
    status = wait_for(lambda: ended(apps, ns, "risky"), 60, "the drill to abort")
    assert status["result"] == "Aborted", status
    assert "target site usw2" in status["abortReason"]
    assert "us-west-2a" in status["abortReason"]
    assert [(s["name"], s["result"]) for s in status["steps"]] == [
        ("preflight", "Succeeded"),
        ("switch", "Succeeded"),
        ("hold", "Failed"),
        ("revert", "Succeeded"),
    ]
    hold = step(status, "hold")
    assert parse_rfc3339(hold["finishedTime"]) - parse_rfc3339(hold["startedTime"]) < 60
    assert "lastSuccessfulTime" not in status
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Succeeded"]["status"], conditions["Succeeded"]["reason"]) == (
        "False",
        "Aborted",
    )

    after = apps.get(ns, app)
    assert after["status"]["activeSite"] == "use1"
    assert apps.dns_weights(ns, app) == {"use1": 100, "usw2": 0}
    wait_released(apps, ns, app)
    events = drill_events(apps, ns, "risky")
    assert ("Warning", "DrillAborting") in [(t, r) for t, r, _ in events]
    assert ("Warning", "DrillAborted") in [(t, r) for t, r, _ in events]
    labels = {"namespace": ns, "app": app, "drill": "risky", "kind": "Switchover"}
    assert sample("lifeboat_drill_runs_total", **labels, result="Aborted") == 1

    # A drill does not start while the app is Degraded (its standby zone is still down).
    wait_for(lambda: apps.status(ns, app).get("phase") == "Degraded", 30, "the app Degraded")
    create_drill(apps, ns, "refused", schedule={"once": rfc3339(time.time())}, holdSeconds=5)
    refused = wait_for(lambda: ended(apps, ns, "refused"), 30, "the refusal")
    assert refused["result"] == "Failed"
    assert "the app is Degraded, not Healthy" in refused["message"]
    assert [(s["name"], s["result"]) for s in refused["steps"]] == [("preflight", "Failed")]
    assert apps.status(ns, app)["activeSite"] == "use1"
    assert apps.status(ns, app)["epoch"] == after["status"]["epoch"]


def test_the_cli_runs_a_drill_and_aborts_one(apps: Apps) -> None:
    ns, app = apps.create()
    apps.wait_serving(ns, app)
    cluster = Cluster.connect(str(apps.sandbox.kube.kubeconfig_path), None)

    out = io.StringIO()
    code = cli.run(
        cluster, ns, app, kind="Switchover", site="usw2", hold=300, name="manual", wait=0, out=out
    )
    assert code == 0
    assert f"created FailoverDrill {ns}/manual" in out.getvalue()
    wait_for(lambda: running_step(apps, ns, "manual", "hold"), 60, "the hold")
    out = io.StringIO()
    assert cli.abort(cluster, ns, "manual", wait=60, out=out) == 0, out.getvalue()
    status = drill_status(apps, ns, "manual")
    assert status["result"] == "Aborted"
    assert status["abortReason"] == "aborted by a user (lifeboat drill abort)"
    assert "result: Aborted" in out.getvalue()
    assert apps.status(ns, app)["activeSite"] == "use1"

    out = io.StringIO()
    assert cli.status(cluster, ns, None, out=out) == 0
    table = out.getvalue().splitlines()
    assert table[0].split()[:5] == ["DRILL", "APP", "KIND", "PHASE", "RUNS"]
    assert table[1].split()[:5] == ["manual", app, "Switchover", "Aborted", "1"]

    # Nothing to abort any more.
    with pytest.raises(Exception, match="no run under way"):
        cli.abort(cluster, ns, "manual", wait=0, out=io.StringIO())


def test_an_observe_drill_reports_and_never_touches_the_app(apps: Apps) -> None:
    ns, app = apps.create()
    apps.wait_serving(ns, app)
    before = apps.get(ns, app)
    dns = apps.dns_weights(ns, app)
    zones = {
        f"use1/{z}": "fail"
        for site in before["spec"]["sites"]
        if site["name"] == "use1"
        for z in site["zones"]
    }
    # Through the CLI (lifeboat drill run APP --kind Observe --timeline FILE --to usw2
    # --within 40 --wait 30), followed to its end.
    cluster = Cluster.connect(str(apps.sandbox.kube.kubeconfig_path), None)
    out = io.StringIO()
    code = cli.run(
        cluster,
        ns,
        app,
        kind="Observe",
        site="usw2",
        hold=300,
        name="observe",
        wait=30,
        timeline={"duration": 60, "timeline": [{"at": 10, "zones": zones}]},
        expect={"failoverWithinSeconds": 40},
        out=out,
    )
    assert code == 0, out.getvalue()
    assert "result: Succeeded" in out.getvalue() and "first failover at t=" in out.getvalue()
    status = wait_for(lambda: ended(apps, ns, "observe"), 30, "the Observe drill to end")
    assert status["result"] == status["phase"] == "Succeeded", status
    assert status["targetSite"] == "usw2" and status["originSite"] == "use1"
    assert 10 <= status["firstFailoverSeconds"] <= 40
    assert status["decisions"] and status["steps"][0]["name"] == "observe"
    after = apps.get(ns, app)
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert after["status"]["activeSite"] == "use1"
    assert after["status"]["epoch"] == before["status"]["epoch"]
    assert "lastRequest" not in after["status"]
    assert apps.dns_weights(ns, app) == dns
    assert (
        sample(
            "lifeboat_drill_runs_total",
            namespace=ns,
            app=app,
            drill="observe",
            kind="Observe",
            result="Succeeded",
        )
        == 1
    )
    reasons = [reason for _, reason, _ in drill_events(apps, ns, "observe")]
    assert "DrillSucceeded" in reasons


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "ZoneEvacuation", "targetSite": None}, "a ZoneEvacuation drill needs zone"),
        (
            {"kind": "ZoneEvacuation", "zone": "us-east-1b"},
            "a ZoneEvacuation drill takes a zone of the active site, not targetSite",
        ),
        ({"zone": "us-east-1b"}, "zone is for ZoneEvacuation drills only"),
        ({"kind": "Observe"}, "an Observe drill needs timeline"),
        (
            {"kind": "Observe", "timeline": {"timeline": [{"at": 1, "zones": {"use1": "fail"}}]}},
            "zones are written site/zone",
        ),
        (
            {"kind": "Observe", "timeline": {"timeline": [{"at": 1, "zones": {"a/b": "meh"}}]}},
            "should match",
        ),
        (
            {"kind": "Observe", "timeline": {"timeline": [{"at": 1, "capacity": {"a": "x"}}]}},
            "capacity takes a number of instances",
        ),
        (
            {"kind": "Observe", "timeline": {"duration": 5, "timeline": [{"at": 9}]}},
            "duration ends before the last entry",
        ),
        (
            {"kind": "Observe", "timeline": {"timeline": [{"at": 1}] * 65}},
            "must have at most 64 items",
        ),
        ({"targetSite": None}, "a Switchover drill needs targetSite"),
        (
            {"schedule": {"once": "2026-01-01T00:00:00Z", "cron": "0 * * * *"}},
            "schedule takes exactly one of cron and once",
        ),
        ({"schedule": {"cron": "0 * * *"}}, "schedule.cron takes five fields"),
    ],
)
def test_the_api_server_refuses_drills_that_are_not_well_formed(
    sandbox: Sandbox, spec: dict[str, Any], message: str
) -> None:
    custom = kubernetes.client.CustomObjectsApi(sandbox.kube.api_client())
    full: dict[str, Any] = {
        "app": "web",
        "kind": "Switchover",
        "targetSite": "usw2",
        "schedule": {"once": "2026-01-01T00:00:00Z"},
        **spec,
    }
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FailoverDrill",
        "metadata": {"name": "refused", "namespace": "default"},
        "spec": {k: v for k, v in full.items() if v is not None},
    }
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, body, dry_run="All"
        )
    assert caught.value.status == 422
    assert message in json.loads(caught.value.body or "{}")["message"]
