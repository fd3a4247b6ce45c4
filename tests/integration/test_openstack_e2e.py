"""End to end with an OpenStack cloud: the real kube-apiserver, the operator in-process (as
its ServiceAccount), and the sandbox's OpenStack world (real Keystone and Swift, emulated
Nova, Designate and Cinder, a fault proxy per catalog endpoint).

The CloudProvider and its clouds.yaml Secret come from manifests/examples/sandbox-openstack;
apps are made from that set's ResilientApp, each with a Designate zone of its own in
RegionOne. Outcomes are read back from the resources' status and Events, and from what
Designate's name servers answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest

from controller import metrics
from sandbox.faults import FaultSpec
from sandbox.openstack.cloud import COMPUTE, OpenStackWorld
from sandbox.openstack.nova import IMAGES
from sandbox.world import OPENSTACK_EXAMPLES, Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.openstack]

PROVIDER = "openstack-sandbox"
ONE, TWO = "RegionOne", "RegionTwo"


def provider_status(apps: Apps) -> dict[str, Any]:
    status = apps.provider(PROVIDER).get("status") or {}
    assert isinstance(status, dict)
    return status


def region(status: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next((r for r in status.get("regions", []) if r["name"] == name), {})
    return found


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == kind), {})
    return found


@pytest.fixture
def designate_zone(openstack_world: OpenStackWorld) -> Iterator[str]:
    """A Designate zone of its own in RegionOne, removed after the test."""
    name = f"e2e-{uuid.uuid4().hex[:8]}.test."
    dns = openstack_world.direct_connection(ONE).dns
    zone = dns.create_zone(name=name, email="ops@lifeboat.test", ttl=300)
    wait_for(lambda: dns.get_zone(zone.id).status == "ACTIVE", 30, f"zone {name} active")
    try:
        yield name
    finally:
        dns.delete_zone(zone, ignore_missing=True)


@pytest.fixture
def os_apps(
    openstack_sandbox: Sandbox, openstack_operator: None, designate_zone: str
) -> Iterator[Apps]:
    """Apps from the OpenStack example, with the operator running; deleted afterwards."""
    harness = Apps(openstack_sandbox, examples=OPENSTACK_EXAMPLES, zone=designate_zone)
    try:
        yield harness
    finally:
        for endpoint in openstack_sandbox.zones.endpoints:
            endpoint.serve()
        harness.delete_all()


def test_provider_is_ready_and_reports_each_regions_api_plane(
    openstack_sandbox: Sandbox, openstack_operator: None, openstack_world: OpenStackWorld
) -> None:
    apps = Apps(openstack_sandbox)

    def healthy() -> dict[str, Any] | None:
        status = provider_status(apps)
        ready = condition(status, "Ready").get("status") == "True"
        planes = {region(status, r).get("apiPlane") for r in (ONE, TWO)}
        return status if ready and planes == {"Healthy"} else None

    status = wait_for(healthy, 90, "the OpenStack CloudProvider Ready with healthy regions")
    ready = condition(status, "Ready")
    assert ready["reason"] == "CredentialsVerified"
    project = openstack_world.connection(ONE).current_project_id
    assert status["account"] == f"project {project}"  # Keystone says whose they are
    for name in (ONE, TWO):
        zones = {z["name"]: z["state"] for z in region(status, name)["zones"]}
        assert zones == dict.fromkeys(openstack_world.zones(name), "available")  # Nova's
        assert region(status, name)["calls"] > 0
    assert condition(status, "ApiPlaneHealthy")["status"] == "True"


def test_app_publishes_the_active_site_in_designate_and_fails_over(
    os_apps: Apps, openstack_sandbox: Sandbox
) -> None:
    apps = os_apps
    ns, name = apps.create(lambda body: body["spec"]["traffic"].update(hostedZoneName=apps.zone))
    record = apps.record(ns, name)
    apps.wait_serving(ns, name, timeout=60)
    status = wait_for(
        lambda: (s := apps.status(ns, name)).get("traffic", {}).get("epoch") == 1 and s,
        30,
        "the first DNS publication",
    )
    assert (status["activeSite"], status["epoch"]) == ("os1", 1)
    assert openstack_sandbox.designate_values(record) == ("192.0.2.110",)

    for endpoint in openstack_sandbox.zones.site_endpoints("os1"):
        endpoint.down()
    status = wait_for(
        lambda: (s := apps.status(ns, name)).get("traffic", {}).get("epoch") == 2 and s,
        60,
        "the failover to be applied",
    )
    assert (status["activeSite"], status["epoch"]) == ("os2", 2)
    failover = status["lastFailover"]
    assert (failover["fromSite"], failover["toSite"]) == ("os1", "os2")
    assert 0 < failover["detectionSeconds"] <= failover["rtoSeconds"]
    # Designate has no weights: the record set holds the active site's value alone.
    assert openstack_sandbox.designate_values(record) == ("198.51.100.120",)
    events = wait_for(
        lambda: [m for _, r, m in apps.events(ns, name) if r == "TrafficShifted" and "os2" in m],
        30,
        "the TrafficShifted event",
    )
    assert f"DNS {record} now routes to os2" in events[-1]


def test_throttled_compute_makes_its_region_impaired(
    openstack_sandbox: Sandbox, openstack_operator: None, openstack_world: OpenStackWorld
) -> None:
    apps = Apps(openstack_sandbox)
    openstack_world.proxy(ONE, COMPUTE).set_faults(FaultSpec(throttle=1.0))
    try:

        def impaired() -> dict[str, Any] | None:
            status = provider_status(apps)
            return status if region(status, ONE).get("apiPlane") == "Impaired" else None

        status = wait_for(impaired, 90, f"{ONE} Impaired in the CloudProvider's status")
    finally:
        openstack_world.proxy(ONE, COMPUTE).clear_faults()
    one = region(status, ONE)
    assert "throttle share" in one["reason"]
    assert one["throttleShare"] >= 0.3
    # The region fails alone: RegionTwo sees no throttling and no errors. (On a loaded
    # machine its latency alone may make it Degraded, never Impaired.)
    two = region(status, TWO)
    assert two["apiPlane"] != "Impaired"
    assert (two.get("throttleShare", 0), two.get("errorShare", 0)) == (0, 0)
    plane = condition(status, "ApiPlaneHealthy")
    assert (plane["status"], plane["reason"]) == ("False", "ApiPlaneImpaired")

    core = kubernetes.client.CoreV1Api(openstack_sandbox.kube.api_client())

    def warned() -> list[str] | None:
        events = core.list_event_for_all_namespaces(
            field_selector=f"involvedObject.name={PROVIDER},reason=ApiPlaneImpaired"
        ).items
        return [str(e.message) for e in events] or None

    messages = wait_for(warned, 30, "the ApiPlaneImpaired event")
    assert any(f"region {ONE} API plane" in m and "only probes" in m for m in messages)


def test_a_standby_nova_cannot_place_is_reported_not_ready_and_counted_against_its_region(
    os_apps: Apps, openstack_world: OpenStackWorld
) -> None:
    """The 2012 symptom on OpenStack, before any failover: the standby's servers in one
    zone find no valid host. The standby is said not ready (status, condition, Event), and
    the failed boots count as capacity errors against RegionTwo's API plane."""
    apps = os_apps
    image = IMAGES[0].id

    def with_servers(body: dict[str, Any]) -> None:
        body["spec"]["traffic"].update(hostedZoneName=apps.zone)
        body["spec"]["failover"] = {"mode": "Automatic", "readiness": {"intervalSeconds": 5}}
        prefix = f"e2e-{uuid.uuid4().hex[:6]}"
        for site in body["spec"]["sites"]:
            site["capacity"] = {
                "perZone": 1,
                "openstackServers": {
                    "namePrefix": f"{prefix}-{site['name']}",
                    "flavor": "1",
                    "image": image,
                },
            }

    labels = {
        "provider": PROVIDER,
        "region": TWO,
        "service": "compute",
        "outcome": "capacity_error",
    }
    before = metrics.REGISTRY.get_sample_value("lifeboat_cloud_api_calls_total", labels) or 0.0
    nova = openstack_world.nova(TWO)
    nova.set_zone_capacity("az-2b", 0)
    try:
        ns, name = apps.create(with_servers)
        # (Its region's API plane may be judged Impaired meanwhile, a cause said first.)
        short = "2/3 servers ACTIVE (standby runs 1 per zone)"

        def standby_short() -> dict[str, Any] | None:
            found = apps.condition(ns, name, "StandbyReady") or {}
            ok = found.get("status") == "False" and short in found.get("message", "")
            return found if ok else None

        standby = wait_for(standby_short, 90, "the standby reported short of one server")
        assert standby["reason"] == "StandbyNotReady"
        assert "os2: not ready: " in standby["message"]
        status = apps.status(ns, name)
        assert (status["activeSite"], status["epoch"]) == ("os1", 1)
        readiness = next(s for s in status["sites"] if s["name"] == "os2")["readiness"]
        assert readiness["ready"] == "False"
        assert (readiness["readyInstances"], readiness["standbyInstances"]) == (2, 3)
        said = [m for _, r, m in apps.events(ns, name) if r == "StandbyNotReady"]
        assert said and "os2: not ready" in said[0]

        def errors() -> float | None:
            now = metrics.REGISTRY.get_sample_value("lifeboat_cloud_api_calls_total", labels)
            return ((now or 0.0) - before) or None

        counted = wait_for(
            errors,
            30,
            "No valid host counted against RegionTwo",
        )
        assert counted >= 1
    finally:
        nova.set_zone_capacity("az-2b", None)
