"""The decision core end to end: real API server, moto, fault layer, zonal endpoints.

(a) one zone down -> evacuated inside the region, no failover;
(b) a zone down while the region's API answers with throttling -> region failover, and once
    the impairment is detected not one mutating call reaches that region's endpoint;
(c) API throttling alone -> Frozen, no failover, the app keeps serving;
(d) probes failing at random 5 % of the time -> no action;
(e) recovery -> no failback in Manual, failback in Automatic after the stable period;
plus Manual mode with approval, manual requests, and an operator restart mid-failover.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from controller.cli import commands
from sandbox.faults import FaultSpec
from sandbox.fleets import group_state
from sandbox.world import Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = pytest.mark.integration


def failover_policy(**policy: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["spec"]["failover"] = {**body["spec"].get("failover", {}), **policy}

    return mutate


def zone(status: dict[str, Any], site: str, name: str) -> dict[str, Any]:
    return next(z for z in status["zones"] if z["site"] == site and z["zone"] == name)


def record_values(sandbox: Sandbox, apps: Apps, ns: str, name: str, site: str) -> list[str]:
    route53 = sandbox.aws_client("route53")
    hosted = route53.list_hosted_zones_by_name(DNSName="example.test.")["HostedZones"][0]
    sets = route53.list_resource_record_sets(HostedZoneId=hosted["Id"])["ResourceRecordSets"]
    wanted = apps.record(ns, name)
    return sorted(
        r["Value"]
        for s in sets
        if s["Name"] == wanted and s.get("SetIdentifier") == site
        for r in s["ResourceRecords"]
    )


def region_state(apps: Apps, region: str) -> str | None:
    regions = (apps.provider("aws-sandbox").get("status") or {}).get("regions", [])
    return next((r["apiPlane"] for r in regions if r["name"] == region), None)


def traffic_epoch(apps: Apps, ns: str, name: str) -> int:
    return int((apps.status(ns, name).get("traffic") or {}).get("epoch", 0))


def test_a_lone_zone_is_evacuated_inside_its_region(apps: Apps, sandbox: Sandbox) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    fleet = sandbox.fleets["use1"]
    assert group_state(sandbox.aws_client, fleet) == (6, {"us-east-1a", "us-east-1b", "us-east-1c"})

    sandbox.zones.endpoint("use1", "us-east-1b").down()
    wait_for(
        lambda: not zone(apps.status(ns, name), "use1", "us-east-1b")["inTraffic"],
        30,
        "us-east-1b out of traffic",
    )
    wait_for(
        lambda: record_values(sandbox, apps, ns, name, "use1") == ["192.0.2.11", "192.0.2.13"],
        30,
        "us-east-1b's address gone from DNS",
    )
    wait_for(
        lambda: group_state(sandbox.aws_client, fleet) == (6, {"us-east-1a", "us-east-1c"}),
        30,
        "the group to leave us-east-1b, keeping its size",
    )
    status = apps.status(ns, name)
    assert status["activeSite"] == "use1"
    assert status["epoch"] == 1
    assert status["lastDecision"]["rule"] in ("lone-zone-failure", "healthy-but-noisy", "steady")
    assert "ZoneEvacuated" in [r for _, r, _ in apps.events(ns, name)]


def test_a_cascade_fails_over_without_touching_the_failing_region(
    apps: Apps, sandbox: Sandbox
) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    east = sandbox.proxies["us-east-1"]
    east.set_faults(FaultSpec(throttle=1.0, seed=7))
    try:
        wait_for(lambda: region_state(apps, "us-east-1") == "Impaired", 40, "us-east-1 Impaired")
        wait_for(
            lambda: (
                next(s["apiPlane"] for s in apps.status(ns, name)["sites"] if s["name"] == "use1")
                == "Impaired"
            ),
            20,
            "the app to see it",
        )
        mutating_before = east.count(mutating=True)
        sandbox.zones.endpoint("use1", "us-east-1a").down()
        wait_for(lambda: traffic_epoch(apps, ns, name) == 2, 40, "the failover to be applied")
        status = apps.status(ns, name)
        assert status["activeSite"] == "usw2"
        assert status["lastFailover"]["reason"].endswith("a cascade")
        wait_for(
            lambda: group_state(sandbox.aws_client, sandbox.fleets["usw2"])[0] == 6,
            30,
            "the new site scaled from standby to full size",
        )
        time.sleep(3)  # a few more rounds: still nothing towards us-east-1
        assert east.count(mutating=True) == mutating_before
        held = [a for a in apps.status(ns, name)["actions"] if a["state"] == "Held"]
        assert all("us-east-1" in a["reason"] for a in held)
    finally:
        east.clear_faults()


def test_throttling_alone_freezes_and_the_app_keeps_serving(apps: Apps, sandbox: Sandbox) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    east = sandbox.proxies["us-east-1"]
    east.set_faults(FaultSpec(throttle=1.0, seed=3))
    try:
        wait_for(lambda: apps.status(ns, name).get("phase") == "Frozen", 40, "the app Frozen")
        time.sleep(3)
        status = apps.status(ns, name)
        assert status["activeSite"] == "use1"
        assert status["epoch"] == 1
        assert status["healthyZones"] == "6/6"
        ready = apps.condition(ns, name, "Ready")
        assert ready is not None
        assert ready["status"] == "True"
        assert "RegionFrozen" in [r for _, r, _ in apps.events(ns, name)]
        assert apps.dns_weights(ns, name) == {"use1": 100, "usw2": 0}
    finally:
        east.clear_faults()


def test_noisy_probes_never_act(apps: Apps, sandbox: Sandbox) -> None:
    def patient(body: dict[str, Any]) -> None:
        body["spec"]["health"]["failureThreshold"] = 4

    ns, name = apps.create(patient)
    apps.wait_serving(ns, name)
    for seed, endpoint in enumerate(sandbox.zones.endpoints):
        endpoint.flaky(0.05, seed=seed)
    time.sleep(60)
    status = apps.status(ns, name)
    assert status["epoch"] == 1
    assert all(z["inTraffic"] for z in status["zones"])
    reasons = {r for _, r, _ in apps.events(ns, name)}
    assert not reasons & {"ZoneEvacuated", "FailoverStarted", "ShiftTrafficFailed"}


def test_recovery_does_not_fail_back_in_manual(apps: Apps, sandbox: Sandbox) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.down()
    wait_for(lambda: traffic_epoch(apps, ns, name) == 2, 40, "the failover")
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.serve()
    wait_for(lambda: apps.status(ns, name).get("healthyZones") == "6/6", 30, "recovery")
    time.sleep(8)
    assert apps.status(ns, name)["activeSite"] == "usw2"


def test_recovery_fails_back_in_automatic_after_the_stable_period(
    apps: Apps, sandbox: Sandbox
) -> None:
    ns, name = apps.create(failover_policy(failback={"mode": "Automatic", "stableSeconds": 5}))
    apps.wait_serving(ns, name)
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.down()
    wait_for(lambda: traffic_epoch(apps, ns, name) == 2, 40, "the failover")
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.serve()
    wait_for(lambda: traffic_epoch(apps, ns, name) == 3, 60, "the failback")
    status = apps.status(ns, name)
    assert status["activeSite"] == "use1"
    assert "FailbackStarted" in [r for _, r, _ in apps.events(ns, name)]
    assert apps.dns_weights(ns, name) == {"use1": 100, "usw2": 0}


def test_manual_mode_waits_for_approval(apps: Apps, sandbox: Sandbox) -> None:
    ns, name = apps.create(failover_policy(mode="Manual"))
    apps.wait_serving(ns, name)
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.down()
    recommendation = wait_for(
        lambda: apps.status(ns, name).get("recommendation"), 40, "a recommendation"
    )
    assert recommendation["response"] == "region-failover"
    assert recommendation["target"] == "usw2"
    time.sleep(3)
    assert apps.status(ns, name)["activeSite"] == "use1"  # nothing moved on its own
    cluster = commands.Cluster(sandbox.kube.api_client())
    assert commands.approve(cluster, ns, name, None) == commands.EXIT_OK
    wait_for(lambda: traffic_epoch(apps, ns, name) == 2, 40, "the approved failover")


def test_manual_requests_are_checked_and_answered(apps: Apps, sandbox: Sandbox) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    cluster = commands.Cluster(sandbox.kube.api_client())
    # usw2 is healthy: the request is carried out.
    assert commands.request(cluster, ns, name, "failover", "usw2", force=False, wait=30) == 0
    wait_for(lambda: traffic_epoch(apps, ns, name) == 2, 30, "the requested failover")
    # Back to a site with no healthy zone is refused, with the reason.
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.down()
    wait_for(
        lambda: all(
            z["state"] != "Healthy" for z in apps.status(ns, name)["zones"] if z["site"] == "use1"
        ),
        30,
        "use1 unhealthy",
    )
    assert commands.request(cluster, ns, name, "failback", None, force=False, wait=30) == 1
    refusal = apps.status(ns, name)["lastRequest"]
    assert refusal["accepted"] is False
    assert "RequestRefused" in [r for _, r, _ in apps.events(ns, name)]


def test_a_restarted_operator_resumes_and_never_repeats_a_step(
    apps: Apps, sandbox: Sandbox
) -> None:
    ns, name = apps.create()
    apps.wait_serving(ns, name)
    west = sandbox.proxies["us-west-2"]
    west.clear_records()
    dns = sandbox.proxies["global"]
    dns.set_faults(FaultSpec(timeout=1.0, max_hold=5.0, service="route53", mutating_only=True))
    try:
        for endpoint in sandbox.zones.site_endpoints("use1"):
            endpoint.down()
        wait_for(
            lambda: any(a["state"] == "Running" for a in apps.status(ns, name).get("actions", [])),
            40,
            "the DNS change to be in flight",
        )
    finally:
        apps.stop_operator()
        dns.clear_faults()
    status = apps.status(ns, name)
    assert status["epoch"] == 2  # decided and on record before anything moved
    assert traffic_epoch(apps, ns, name) == 1
    assert apps.operator is not None
    apps.operator.start()
    wait_for(lambda: traffic_epoch(apps, ns, name) == 2, 40, "the failover to resume")
    wait_for(
        lambda: group_state(sandbox.aws_client, sandbox.fleets["usw2"])[0] == 6,
        30,
        "usw2 scaled up",
    )
    time.sleep(3)
    updates = west.count(service="autoscaling", action="UpdateAutoScalingGroup")
    assert updates == 1  # the scale-up happened once, and only once
