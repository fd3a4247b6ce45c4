"""Standby readiness and capacity verification end to end: the operator on the real
kube-apiserver, Auto Scaling groups in moto (server mode) behind the fault layer.

moto launches every instance a group asks for at once and keeps no scaling activities, so
what it cannot do is made at the edges, never by faking Lifeboat's side:

* an instance failing its health checks: the group marks it Unhealthy (SetInstanceHealth,
  which moto implements and which is what EC2 status checks and ELB checks do in AWS);
* a scale-up that fails for want of capacity: the region's fault proxy answers
  UpdateAutoScalingGroup without carrying it out and DescribeScalingActivities with the
  failed activity (sandbox.faults.failed_scale_up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller import metrics
from controller.api.conditions import parse_rfc3339
from sandbox.faults import failed_scale_up
from sandbox.fleets import group_state
from sandbox.world import Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = pytest.mark.integration

WEST = "us-west-2"
EAST = "us-east-1"
NO_CAPACITY = (
    "We currently do not have sufficient t3.micro capacity in the Availability Zone you "
    "requested (us-west-2b). Our system will be working on provisioning additional capacity. "
    "Launching EC2 instance failed. (InsufficientInstanceCapacity)"
)


def readiness(**settings: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["spec"]["failover"] = {
            **body["spec"].get("failover", {}),
            "minDwellSeconds": 0,
            "readiness": settings,
        }

    return mutate


def site(apps: Apps, ns: str, name: str, which: str) -> dict[str, Any]:
    return next(s for s in apps.status(ns, name).get("sites", []) if s["name"] == which)


def condition(apps: Apps, ns: str, name: str, type_: str) -> dict[str, Any]:
    return apps.condition(ns, name, type_) or {}


def stop_site(sandbox: Sandbox, name: str) -> None:
    for endpoint in sandbox.zones.site_endpoints(name):
        endpoint.down()


def capacity_errors(region: str) -> float:
    labels = {
        "provider": "aws-sandbox",
        "region": region,
        "service": "autoscaling",
        "outcome": "capacity_error",
    }
    return metrics.REGISTRY.get_sample_value("lifeboat_cloud_api_calls_total", labels) or 0.0


def updates(sandbox: Sandbox, region: str) -> list[float]:
    """When the operator's UpdateAutoScalingGroup calls to ``region`` arrived."""
    return [
        r.time
        for r in sandbox.proxies[region].records()
        if r.service == "autoscaling" and r.action == "UpdateAutoScalingGroup"
    ]


@pytest.fixture
def healthy_groups(sandbox: Sandbox) -> Iterator[None]:
    """Every instance of the sandbox's groups Healthy again after the test."""
    yield
    for fleet in sandbox.fleets.values():
        scaling = sandbox.aws_client("autoscaling", fleet.region)
        group = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[fleet.group])
        for instance in group["AutoScalingGroups"][0].get("Instances", []):
            scaling.set_instance_health(InstanceId=instance["InstanceId"], HealthStatus="Healthy")


def test_a_standby_short_of_healthy_capacity_is_reported_not_ready_before_a_failover(
    apps: Apps, sandbox: Sandbox, healthy_groups: None
) -> None:
    ns, name = apps.create(readiness(intervalSeconds=5))
    apps.wait_serving(ns, name)
    wait_for(
        lambda: condition(apps, ns, name, "StandbyReady").get("status") == "True",
        30,
        "the standby reported ready",
    )
    fleet = sandbox.fleets["usw2"]
    scaling = sandbox.aws_client("autoscaling", WEST)
    group = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[fleet.group])
    members = [i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]]
    assert len(members) == 3  # the standby runs standbyPerZone (1) in each of its 3 zones
    for instance in members[1:]:  # two fail their health checks
        scaling.set_instance_health(InstanceId=instance, HealthStatus="Unhealthy")

    standby = wait_for(
        lambda: (c := condition(apps, ns, name, "StandbyReady")).get("status") == "False" and c,
        30,
        "the standby reported not ready",
    )
    assert standby["reason"] == "StandbyNotReady"
    assert (
        "usw2: not ready: 1/3 instances InService (standby runs 1 per zone)" in standby["message"]
    )
    status = apps.status(ns, name)
    assert (status["activeSite"], status["epoch"]) == ("use1", 1)  # said before any failover
    shown = site(apps, ns, name, "usw2")["readiness"]
    assert shown["ready"] == "False"
    assert (shown["readyInstances"], shown["standbyInstances"]) == (1, 3)
    assert (shown["failoverInstances"], shown["maxSize"]) == (6, 12)
    said = [(t, m) for t, r, m in apps.events(ns, name) if r == "StandbyNotReady"]
    assert said and said[-1][0] == "Warning" and "1/3 instances InService" in said[-1][1]
    ready = metrics.REGISTRY.get_sample_value(
        "lifeboat_standby_ready", {"namespace": ns, "app": name, "site": "usw2"}
    )
    assert ready == 0.0


def test_capacity_coming_up_after_a_failover_is_reported_and_the_old_site_shrinks_after(
    apps: Apps, sandbox: Sandbox
) -> None:
    ns, name = apps.create(readiness(intervalSeconds=5))
    apps.wait_serving(ns, name)
    sandbox.proxies[EAST].clear_records()
    stop_site(sandbox, "use1")
    wait_for(lambda: apps.status(ns, name).get("activeSite") == "usw2", 30, "the failover")
    record = apps.status(ns, name)["lastFailover"]
    decided = parse_rfc3339(record["decidedTime"])

    def scaled_up_and_ready() -> dict[str, Any] | None:
        # The standby's own capacity (1 per zone, Ready long ago) stays in the status until
        # the round after the decision sets the failover size: wait for that one.
        c: dict[str, Any] = site(apps, ns, name, "usw2").get("capacity", {})
        applied = c.get("appliedTime")
        fresh = applied is not None and parse_rfc3339(applied) >= decided
        return c if fresh and c.get("readyTime") else None

    usw2 = wait_for(scaled_up_and_ready, 30, "usw2's capacity Ready")
    assert [z["count"] for z in usw2["zones"]] == [2, 2, 2]
    took = usw2["readySeconds"]
    ready_at = parse_rfc3339(usw2["readyTime"])
    assert took == pytest.approx(ready_at - parse_rfc3339(record["decidedTime"]), abs=0.01)
    assert 0 < took < 30
    said = [m for _, r, m in apps.events(ns, name) if r == "CapacityReady" and "usw2" in m]
    assert any(
        m.startswith("capacity of usw2 (us-west-2) Ready: 6/6 instances InService")
        and m.endswith("s after it was asked for")
        for m in said
    )
    wait_for(
        lambda: group_state(sandbox.aws_client, sandbox.fleets["use1"])[0] == 3,
        30,
        "use1 shrunk to its standby size",
    )
    shrinks = updates(sandbox, EAST)
    assert len(shrinks) == 1 and shrinks[0] >= ready_at  # only once usw2 was Ready
    wait_for(  # use1's smaller capacity is Ready at its next read
        lambda: condition(apps, ns, name, "CapacityReady").get("status") == "True",
        20,
        "CapacityReady True",
    )
    gauge = metrics.REGISTRY.get_sample_value(
        "lifeboat_capacity_ready_seconds", {"namespace": ns, "app": name, "site": "usw2"}
    )
    assert gauge == pytest.approx(took, abs=0.01)


def test_a_failed_scale_up_is_reported_counted_against_the_api_plane_and_waited_for(
    apps: Apps, sandbox: Sandbox
) -> None:
    ns, name = apps.create(readiness(intervalSeconds=5, capacityTimeoutSeconds=15))
    apps.wait_serving(ns, name)
    before = capacity_errors(WEST)
    west, east = sandbox.proxies[WEST], sandbox.proxies[EAST]
    east.clear_records()
    west.set_faults(*failed_scale_up(sandbox.fleets["usw2"].group, NO_CAPACITY))
    stop_site(sandbox, "use1")
    wait_for(lambda: apps.status(ns, name).get("activeSite") == "usw2", 30, "the failover")
    asked = wait_for(lambda: updates(sandbox, WEST), 30, "usw2's scale-up asked for")[0]
    assert group_state(sandbox.aws_client, sandbox.fleets["usw2"])[0] == 3  # nothing launched

    # Not Ready: use1 keeps its instances, and the app says what it waits for.
    def waiting() -> list[str]:
        return [
            a["reason"]
            for a in apps.status(ns, name).get("actions", [])
            if a["state"] == "Held" and a["target"].startswith("capacity of use1")
        ]

    reason = (
        "waits for the capacity of usw2 to be Ready (3/6 Ready) before use1 shrinks, at most "
        "15 s after it was set"
    )
    wait_for(lambda: reason in waiting(), 20, "use1's shrink held for usw2's capacity")
    assert updates(sandbox, EAST) == []
    shown = wait_for(
        lambda: (c := condition(apps, ns, name, "CapacityReady")).get("status") == "False" and c,
        40,
        "CapacityReady False",
    )
    assert shown["reason"] == "CapacityNotReady"
    assert shown["message"].startswith("usw2: 3/6 instances InService after 15 s; scale-up failed")
    assert "InsufficientInstanceCapacity" in shown["message"]
    late = [(t, m) for t, r, m in apps.events(ns, name) if r == "CapacityNotReady"]
    assert len(late) == 1 and late[0][0] == "Warning"
    assert "use1 no longer wait(s) for it and shrink(s) now" in late[0][1]

    # The bounded wait is over: use1 shrinks, after it and not before.
    wait_for(
        lambda: group_state(sandbox.aws_client, sandbox.fleets["use1"])[0] == 3,
        30,
        "use1 shrunk anyway",
    )
    assert updates(sandbox, EAST)[0] - asked >= 15
    # The failed activity counted against us-west-2's API plane, once.
    assert capacity_errors(WEST) - before == 1
    time.sleep(6)  # read again: the same activity is not counted twice
    assert capacity_errors(WEST) - before == 1
    west.clear_faults()
