"""End to end on the real kube-apiserver + moto + fault layer + zonal endpoints.

The operator runs in-process as its ServiceAccount (RBAC from manifests/), apps are
created through the Kubernetes API, zones fail by stopping their endpoints, and the
outcome is read back from the app's status, its Events and Route 53 in moto.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from controller.api.conditions import rfc3339
from sandbox.faults import FaultSpec
from sandbox.world import Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = pytest.mark.integration


def stop_site(sandbox: Sandbox, site: str) -> None:
    for endpoint in sandbox.zones.site_endpoints(site):
        endpoint.down()


def test_region_failover(apps: Apps, sandbox: Sandbox) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    status = apps.status(ns, name)
    assert status["activeSite"] == "use1"
    assert status["epoch"] == 1
    assert status["healthyZones"] == "6/6"
    assert status["observedGeneration"] == 1
    assert apps.dns_weights(ns, name) == {"use1": 100, "usw2": 0}

    stop_site(sandbox, "use1")
    status = wait_for(
        lambda: (s := apps.status(ns, name)).get("traffic", {}).get("epoch") == 2 and s,
        30,
        "the failover to be applied",
    )

    assert status["activeSite"] == "usw2"
    assert status["epoch"] == 2
    assert status["phase"] == "Degraded"
    assert status["healthyZones"] == "3/6"
    record = status["lastFailover"]
    assert (record["fromSite"], record["toSite"], record["epoch"]) == ("use1", "usw2", 2)
    assert "every probed zone of active site use1 is Down" in record["reason"]
    assert 0 < record["detectionSeconds"] <= record["rtoSeconds"] < 15
    zones = {(z["site"], z["zone"]): z for z in status["zones"]}
    assert all(zones[("use1", z)]["state"] == "Down" for z in ("us-east-1a", "us-east-1b"))
    assert "connection" in zones[("use1", "us-east-1a")]["message"].lower()
    sites = {s["name"]: s for s in status["sites"]}
    assert sites["usw2"]["active"] is True
    assert {k: sites["use1"][k] for k in ("active", "state", "healthyZones", "totalZones")} == {
        "active": False,
        "state": "Down",
        "healthyZones": 0,
        "totalZones": 3,
    }
    assert sites["use1"]["apiPlane"] in ("Healthy", "Unknown")
    assert record["reason"] == "every probed zone of active site use1 is Down"

    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "True"
    assert "use1/us-east-1a=Down" in conditions["Degraded"]["message"]
    assert conditions["FailingOver"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in conditions.values())

    assert apps.dns_weights(ns, name) == {"use1": 0, "usw2": 100}

    def shifted() -> list[tuple[str, str, str]] | None:
        events = apps.events(ns, name)
        return events if any(r == "TrafficShifted" and "usw2" in m for _, r, m in events) else None

    events = wait_for(shifted, 10, "the TrafficShifted event")
    reasons = [(t, r) for t, r, _ in events]
    assert ("Warning", "FailoverStarted") in reasons
    assert ("Warning", "ZoneStateChanged") in reasons
    failover = next(m for _, r, m in events if r == "FailoverStarted")
    assert "use1 -> usw2, epoch 2" in failover

    table = sandbox.kube.kubectl("get", "rapp", "-n", ns).stdout.split("\n")
    assert table[0].split() == ["NAME", "ACTIVE", "STATE", "ZONES", "AGE"]
    assert table[1].split()[:4] == [name, "usw2", "Degraded", "3/6"]


def test_recovered_primary_does_not_take_traffic_back(apps: Apps, sandbox: Sandbox) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    stop_site(sandbox, "use1")
    wait_for(lambda: apps.status(ns, name).get("epoch") == 2, 30, "the failover")
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.serve()
    wait_for(lambda: apps.status(ns, name).get("healthyZones") == "6/6", 30, "the recovery")
    status = apps.status(ns, name)
    assert status["activeSite"] == "usw2"
    assert status["epoch"] == 2
    assert status["phase"] == "Healthy"
    assert apps.dns_weights(ns, name) == {"use1": 0, "usw2": 100}


def test_one_zone_down_degrades_without_failover(apps: Apps, sandbox: Sandbox) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    sandbox.zones.endpoint("use1", "us-east-1b").hang()
    wait_for(
        lambda: any(
            z["zone"] == "us-east-1b" and z["state"] == "Down"
            for z in apps.status(ns, name).get("zones", [])
        ),
        30,
        "us-east-1b to be Down",
    )
    status = apps.status(ns, name)
    assert status["activeSite"] == "use1"
    assert status["epoch"] == 1
    assert status["phase"] == "Degraded"
    zone = next(z for z in status["zones"] if z["zone"] == "us-east-1b")
    assert "no answer" in zone["message"]
    assert apps.dns_weights(ns, name) == {"use1": 100, "usw2": 0}


def test_observe_mode_recommends_and_changes_nothing(apps: Apps, sandbox: Sandbox) -> None:
    def observe(body: dict[str, Any]) -> None:
        body["spec"]["failover"] = {"mode": "Observe"}

    ns, name = apps.create(observe)
    wait_for(lambda: apps.status(ns, name).get("healthyZones") == "6/6", 30, "healthy zones")
    stop_site(sandbox, "use1")
    events = wait_for(
        lambda: [m for _, r, m in apps.events(ns, name) if r == "ActionRecommended"],
        30,
        "the recommendation",
    )
    assert "failing over to usw2" in events[0]
    assert "Observe mode: not acting" in events[0]
    status = apps.status(ns, name)
    assert status["activeSite"] == "use1"
    assert status["epoch"] == 1
    assert apps.dns_weights(ns, name) == {}  # Observe never touches DNS


def test_missing_hosted_zone_is_reported_and_retried(apps: Apps) -> None:
    def wrong_zone(body: dict[str, Any]) -> None:
        body["spec"]["traffic"]["hostedZoneName"] = "nowhere.test."

    ns, name = apps.create(wrong_zone)
    message = wait_for(
        lambda: [m for t, r, m in apps.events(ns, name) if r == "HostedZoneNotFound"],
        30,
        "the HostedZoneNotFound event",
    )
    assert "no Route 53 hosted zone named nowhere.test." in message[0]
    assert "retrying" in message[0]
    # The read-back of DNS on start can report the missing zone before the first round has
    # written status; the condition follows from that round's failed apply.
    ready_condition = wait_for(lambda: apps.condition(ns, name, "Ready"), 30, "the Ready condition")
    assert ready_condition["status"] == "False"
    assert ready_condition["reason"] == "TrafficNotApplied"


def provider_ready(apps: Apps, name: str) -> dict[str, Any] | None:
    conditions = (apps.provider(name).get("status") or {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "Ready"), None)


def test_cloud_provider_without_its_secret_is_not_ready(apps: Apps) -> None:
    body = {
        "apiVersion": "lifeboat.dev/v1alpha1",
        "kind": "CloudProvider",
        "metadata": {"name": "aws-no-secret"},
        "spec": {
            "type": "aws",
            "regions": ["us-east-1"],
            "credentials": {"source": "Secret", "secretRef": {"name": "missing"}},
        },
    }
    apps.custom.create_cluster_custom_object("lifeboat.dev", "v1alpha1", "cloudproviders", body)
    try:
        condition = wait_for(lambda: provider_ready(apps, "aws-no-secret"), 30, "its condition")
        assert condition["status"] == "False"
        assert condition["reason"] == "SecretNotFound"
        assert "Secret lifeboat-system/missing not found" in condition["message"]
    finally:
        apps.custom.delete_cluster_custom_object(
            "lifeboat.dev", "v1alpha1", "cloudproviders", "aws-no-secret"
        )


def test_sandbox_provider_is_verified(apps: Apps) -> None:
    condition = wait_for(lambda: provider_ready(apps, "aws-sandbox"), 30, "its condition")
    assert (condition["status"], condition["reason"]) == ("True", "CredentialsVerified")
    assert apps.provider("aws-sandbox")["status"]["account"] == "123456789012"


def test_edited_traffic_targets_reach_dns(apps: Apps, sandbox: Sandbox) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    sites = apps.get(ns, name)["spec"]["sites"]
    sites[0]["trafficTargets"] = ["192.0.2.99"]
    apps.patch_spec(ns, name, {"sites": sites})

    def published() -> list[str] | None:
        route53 = sandbox.aws_client("route53")
        zone = route53.list_hosted_zones_by_name(DNSName="example.test.")["HostedZones"][0]
        values = [
            r["ResourceRecords"][0]["Value"]
            for r in route53.list_resource_record_sets(HostedZoneId=zone["Id"])[
                "ResourceRecordSets"
            ]
            if r["Name"] == apps.record(ns, name) and r.get("SetIdentifier") == "use1"
        ]
        return values if values == ["192.0.2.99"] else None

    wait_for(published, 20, "the new target in Route 53")
    assert apps.status(ns, name)["epoch"] == 1  # a content change, not a failover


def test_removed_site_loses_its_record_and_cannot_keep_weight(apps: Apps, sandbox: Sandbox) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    sites = apps.get(ns, name)["spec"]["sites"]
    standby = {**sites[1], "role": "primary"}
    apps.patch_spec(ns, name, {"sites": [standby]})  # use1 (active) is gone
    wait_for(lambda: apps.dns_weights(ns, name) == {"usw2": 100}, 20, "use1's record gone")
    status = apps.status(ns, name)
    assert status["activeSite"] == "usw2"
    assert status["epoch"] == 2  # a new epoch fences anything still acting for use1
    reasons = [r for _, r, _ in apps.events(ns, name)]
    assert "ActiveSiteReset" in reasons


def region_status(apps: Apps, provider: str, region: str) -> dict[str, Any] | None:
    regions = (apps.provider(provider).get("status") or {}).get("regions", [])
    return next((r for r in regions if r["name"] == region), None)


def test_api_plane_throttling_is_judged_per_region(apps: Apps, sandbox: Sandbox) -> None:
    started = rfc3339(time.time() + 1)

    def fresh(region: dict[str, Any] | None) -> bool:
        return region is not None and (region.get("lastProbeTime") or "") >= started

    def both_healthy() -> dict[str, Any] | None:
        east = region_status(apps, "aws-sandbox", "us-east-1")
        west = region_status(apps, "aws-sandbox", "us-west-2")
        ok = (
            fresh(east)
            and fresh(west)
            and east is not None
            and west is not None
            and east["apiPlane"] == west["apiPlane"] == "Healthy"
            and min(east["calls"], west["calls"]) >= 3
        )
        return east if ok else None

    healthy = wait_for(both_healthy, 30, "both regions to be judged Healthy")
    assert {z["name"]: z["state"] for z in healthy["zones"]}.get("us-east-1a") == "available"
    sandbox.proxies["us-east-1"].set_faults(FaultSpec(throttle=1.0, seed=1))
    try:
        impaired = wait_for(
            lambda: (
                (r := region_status(apps, "aws-sandbox", "us-east-1"))
                and r["apiPlane"] == "Impaired"
                and r
            ),
            30,
            "us-east-1 to be judged Impaired",
        )
        assert impaired["throttleShare"] >= 0.3
        assert "throttle share" in impaired["reason"]
        other = region_status(apps, "aws-sandbox", "us-west-2")
        assert other is not None
        assert other["apiPlane"] == "Healthy"
        condition = next(
            c
            for c in apps.provider("aws-sandbox")["status"]["conditions"]
            if c["type"] == "ApiPlaneHealthy"
        )
        assert (condition["status"], condition["reason"]) == ("False", "ApiPlaneImpaired")
    finally:
        sandbox.proxies["us-east-1"].clear_faults()
    wait_for(
        lambda: (
            (r := region_status(apps, "aws-sandbox", "us-east-1")) and r["apiPlane"] != "Impaired"
        ),
        60,
        "us-east-1 to recover",
    )
