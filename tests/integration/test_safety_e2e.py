"""Safety under faults: DNS names have owners, the operator believes DNS over a lost status,
every API-plane gate recovers. Reproduced
defects, end to end on the sandbox (real kube-apiserver, moto with Route 53's batch
semantics, zonal endpoints)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sandbox.faults import ROUTE53_CHANGE, FaultSpec
from sandbox.world import GLOBAL, Sandbox
from tests.fixtures.world import GROUP, PLURAL, VERSION, Apps, wait_for

pytestmark = pytest.mark.integration


def condition(apps: Apps, namespace: str, name: str, type_: str) -> dict[str, Any]:
    found = apps.condition(namespace, name, type_)
    return found or {}


def test_two_apps_naming_one_record_never_touch_each_others(apps: Apps) -> None:
    """Reproduced: two ResilientApps with the same recordName deleted each other's record
    sets and health checks, and both stayed Ready."""
    first_ns, first = apps.create()
    apps.wait_serving(first_ns, first)
    record = apps.record(first_ns, first)

    def same_record(body: dict[str, Any]) -> None:
        body["spec"]["traffic"]["recordName"] = record

    second_ns, second = apps.create(same_record)
    wait_for(
        lambda: condition(apps, second_ns, second, "DNSInSync").get("reason") == "OwnedByAnother",
        30,
        "the second app to see the name is held",
    )
    assert f"{first_ns}/{first}" in condition(apps, second_ns, second, "DNSInSync")["message"]
    assert condition(apps, second_ns, second, "Ready").get("status") == "False"
    assert apps.ready(first_ns, first)
    assert apps.sandbox.dns_weights(record) == {"use1": 100, "usw2": 0}
    reasons = [r for _, r, _ in apps.events(first_ns, first)]
    assert "DNSOwnershipConflict" in reasons  # said on the owner too
    time.sleep(3)  # several rounds later, still untouched
    assert apps.sandbox.dns_weights(record) == {"use1": 100, "usw2": 0}


def test_a_status_emptied_after_a_failover_does_not_move_traffic_back(
    apps: Apps, sandbox: Sandbox
) -> None:
    """Reproduced: after a failover to usw2 (epoch 2), removing status.activeSite and
    restarting the operator moved DNS back to the failed site within 25 s."""
    namespace, name = apps.create()
    apps.wait_serving(namespace, name)
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.down()
    wait_for(
        lambda: apps.status(namespace, name).get("traffic", {}).get("epoch") == 2,
        30,
        "the failover",
    )
    changes = sandbox.proxies[GLOBAL].count(action=ROUTE53_CHANGE)
    assert changes >= 2  # published at epoch 1, moved at epoch 2
    apps.stop_operator()
    apps.custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        # Every record of the epoch goes (the failover's record alone would name it).
        {"status": {"activeSite": None, "epoch": None, "traffic": None, "lastFailover": None}},
    )
    assert apps.operator is not None
    apps.operator.start()
    wait_for(
        lambda: apps.status(namespace, name).get("activeSite") == "usw2",
        30,
        "the status to be rebuilt from DNS",
    )
    time.sleep(25)
    status = apps.status(namespace, name)
    assert (status["activeSite"], status["epoch"]) == ("usw2", 2)
    assert apps.dns_weights(namespace, name) == {"use1": 0, "usw2": 100}
    assert sandbox.proxies[GLOBAL].count(action=ROUTE53_CHANGE) == changes
    assert "DNSDiverged" in [r for _, r, _ in apps.events(namespace, name)]


def global_gate(apps: Apps) -> str | None:
    regions = apps.provider("aws-sandbox").get("status", {}).get("regions", [])
    return next((r["apiPlane"] for r in regions if r["name"] == GLOBAL), None)


def test_a_route53_throttling_burst_recovers_and_failover_works_afterwards(
    apps: Apps, sandbox: Sandbox
) -> None:
    """Reproduced: a short burst of Route 53 throttling marked the global DNS gate Impaired;
    nothing ever probed it, so every later DNS change was refused and every failover held
    until the operator restarted."""
    namespace, name = apps.create()
    apps.wait_serving(namespace, name)
    sandbox.proxies[GLOBAL].set_faults(FaultSpec(throttle=1.0, seed=3))
    apps.patch_spec(namespace, name, {"traffic": {"ttl": 45}})  # a DNS change, throttled
    wait_for(lambda: global_gate(apps) == "Impaired", 60, "the DNS gate to be judged Impaired")
    sandbox.proxies[GLOBAL].clear_faults()  # the burst is over
    wait_for(lambda: global_gate(apps) == "Healthy", 120, "the DNS gate to recover")
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.down()
    wait_for(
        lambda: apps.status(namespace, name).get("traffic", {}).get("epoch") == 2,
        60,
        "the failover to be applied after the burst",
    )
    assert apps.dns_weights(namespace, name) == {"use1": 0, "usw2": 100}
