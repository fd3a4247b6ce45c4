"""The per-app worker reading capacity: standby readiness in status, Events and metrics; the
reads' cadence; capacity coming up after a failover, with its time."""

from __future__ import annotations

from typing import Any

from controller import metrics
from controller.operator.app import AppContext, AppWorker
from controller.providers.errors import ProviderUnavailable
from tests.factories import app_spec
from tests.fixtures.worker import (
    REF,
    FakeCapacity,
    FakeKube,
    FakeProber,
    FakeProviders,
    FakeTraffic,
    body,
    drain,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def spec(**readiness: Any) -> dict[str, Any]:
    raw = app_spec()
    for index, site in enumerate(raw["sites"]):
        site["zoneTargets"] = [
            {"zone": zone, "values": [f"192.0.{index + 2}.{i + 1}"]}
            for i, zone in enumerate(site["zones"])
        ]
        site["trafficTargets"] = []
        site["capacity"] = {
            "perZone": 2,
            "standbyPerZone": 1,
            "autoScalingGroup": {"name": f"web-{site['name']}"},
        }
    raw["failover"] = {"mode": "Automatic", "minDwellSeconds": 0, "readiness": readiness}
    return raw


def make() -> tuple[AppWorker, FakeKube, FakeCapacity, FakeProber, Clock]:
    clock = Clock()
    kube, prober, capacity = FakeKube(), FakeProber(clock), FakeCapacity()
    context = AppContext(
        kube=kube,
        providers=FakeProviders(FakeTraffic(clock=clock)),
        prober=prober,
        capacity=capacity,
        clock=clock,
    )
    return AppWorker(REF, context), kube, capacity, prober, clock


async def rounds(worker: AppWorker, raw: dict[str, Any], clock: Clock, n: int, step: float) -> None:
    for _ in range(n):
        await worker.round(body(raw))
        await drain(worker)
        if worker.capacity._task is not None:  # let the background read end
            await worker.capacity._task
        clock.now += step


def site_status(kube: FakeKube, name: str) -> dict[str, Any]:
    sites = kube.stored.get("sites", [])
    return next(s for s in sites if s["name"] == name)


def condition(kube: FakeKube, type_: str) -> dict[str, Any]:
    return next(c for c in kube.stored.get("conditions", []) if c["type"] == type_)


def sample(name: str, site: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        name, {"namespace": REF.namespace or "", "app": REF.name, "site": site}
    )


async def test_a_standby_short_of_capacity_is_reported_before_any_failover() -> None:
    worker, kube, capacity, _, clock = make()
    capacity.cap["usw2"] = 1  # its standby capacity (1 per zone, 2 zones) never fully comes up
    capacity.failures["usw2"] = ("Launching a new EC2 instance: InsufficientInstanceCapacity",)
    raw = spec(intervalSeconds=60)
    await rounds(worker, raw, clock, 12, 2.0)
    readiness = site_status(kube, "usw2")["readiness"]
    assert readiness["ready"] == "False"
    assert readiness["reasons"] == [
        "1/2 instances InService (standby runs 1 per zone)",
        "scale-up failed: Launching a new EC2 instance: InsufficientInstanceCapacity",
    ]
    assert (readiness["readyInstances"], readiness["standbyInstances"]) == (1, 2)
    assert readiness["failoverInstances"] == 4
    standby = condition(kube, "StandbyReady")
    assert (standby["status"], standby["reason"]) == ("False", "StandbyNotReady")
    assert "usw2: not ready: 1/2 instances InService" in standby["message"]
    said = [m for t, r, m in kube.events if r == "StandbyNotReady"]
    assert said and all(t == "Warning" for t, r, _ in kube.events if r == "StandbyNotReady")
    assert sample("lifeboat_standby_ready", "usw2") == 0.0
    assert sample("lifeboat_standby_ready_instances", "usw2") == 1.0
    assert sample("lifeboat_standby_failover_instances", "usw2") == 4.0
    assert "epoch" in kube.stored and kube.stored["epoch"] == 1  # no failover

    # Bounded: while the capacity set for usw2 comes up (capacityTimeoutSeconds, 300 s) it
    # is read every 5 s, not every 1-s round; after that every intervalSeconds (60 s).
    reads = capacity.observed.count("usw2")
    await rounds(worker, raw, clock, 30, 1.0)
    assert 5 <= capacity.observed.count("usw2") - reads <= 7
    clock.now += 300.0
    await rounds(worker, raw, clock, 1, 1.0)
    reads = capacity.observed.count("usw2")
    await rounds(worker, raw, clock, 120, 1.0)
    assert capacity.observed.count("usw2") - reads == 2
    late = [m for _, r, m in kube.events if r == "CapacityNotReady"]
    assert len(late) == 1  # said once
    assert late[0].startswith("capacity not Ready: usw2: 1/2 instances InService after 3")
    assert "; scale-up failed: Launching a new EC2 instance" in late[0]

    capacity.cap.clear()
    capacity.failures.clear()
    await rounds(worker, raw, clock, 3, 30.0)
    assert site_status(kube, "usw2")["readiness"]["ready"] == "True"
    assert condition(kube, "StandbyReady")["status"] == "True"
    assert [r for _, r, _ in kube.events].count("StandbyReady") == 1
    assert sample("lifeboat_standby_ready", "usw2") == 1.0


async def test_capacity_that_cannot_be_read_is_unknown_never_ready() -> None:
    worker, kube, capacity, _, clock = make()
    capacity.unreadable = ProviderUnavailable("SecretNotFound", "Secret ops/aws not found")
    await rounds(worker, spec(), clock, 3, 2.0)
    readiness = site_status(kube, "usw2")["readiness"]
    assert readiness["ready"] == "Unknown"
    assert readiness["reasons"] == ["capacity unreadable: Secret ops/aws not found"]
    assert condition(kube, "StandbyReady")["status"] == "Unknown"
    assert sample("lifeboat_standby_ready", "usw2") is None  # absent, not stale


async def test_after_a_failover_the_old_site_shrinks_once_the_new_capacity_is_ready() -> None:
    worker, kube, capacity, prober, clock = make()
    raw = spec(capacityTimeoutSeconds=120)
    await rounds(worker, raw, clock, 6, 2.0)
    assert capacity.held == {
        "use1": {"us-east-1a": 2, "us-east-1b": 2, "us-east-1c": 2},
        "usw2": {"us-west-2a": 1, "us-west-2b": 1},
    }
    capacity.cap["usw2"] = 3  # the scale-up to 4 stalls at 3
    prober.down = {"use1"}
    await rounds(worker, raw, clock, 12, 2.0)
    assert kube.stored["activeSite"] == "usw2"
    assert capacity.held["usw2"] == {"us-west-2a": 2, "us-west-2b": 2}
    assert sum(capacity.held["use1"].values()) == 6  # not shrunk: usw2 is not Ready
    held = [a for a in kube.stored["actions"] if a["state"] == "Held"]
    assert [a["reason"] for a in held] == [
        "waits for the capacity of usw2 to be Ready (3/4 Ready) before use1 shrinks, "
        "at most 120 s after it was set"
    ]
    waiting = condition(kube, "CapacityReady")
    assert (waiting["status"], waiting["reason"]) == ("Unknown", "Waiting")

    capacity.cap.clear()
    await rounds(worker, raw, clock, 6, 2.0)
    assert sum(capacity.held["use1"].values()) == 3  # shrunk to its standby size
    ready = [m for _, r, m in kube.events if r == "CapacityReady" and "usw2" in m]
    assert ready[-1].startswith("capacity of usw2 (us-west-2) Ready: 4/4 instances InService")
    usw2 = site_status(kube, "usw2")["capacity"]
    assert usw2["readyTime"] and usw2["readySeconds"] > 0
    assert sample("lifeboat_capacity_ready_seconds", "usw2") == usw2["readySeconds"]
    assert condition(kube, "CapacityReady")["status"] == "True"
