"""The per-app loop against fakes: what it writes, when it acts, how it survives failures."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from controller.api.models import ResilientAppSpec, Site
from controller.core.apiplane import ApiPlaneState
from controller.core.health import ProbeOutcome, ProbeResult, ZoneKey
from controller.core.model import AppState
from controller.operator.app import AppContext, AppWorker
from controller.operator.kube import EventType, ObjectRef, StaleEpoch
from controller.providers.protocols import (
    CapacityDriver,
    CapacityState,
    TrafficChange,
    TrafficPlan,
)
from tests.factories import app_spec

REF = ObjectRef("ResilientApp", "resilientapps", "web", "shop", "uid-1")


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.fail_patches = False
        self.stored_epoch = 0

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str]:
        raise AssertionError("not used")

    async def patch_status(
        self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None = None
    ) -> None:
        if self.fail_patches:
            raise ConnectionError("API server unreachable")
        if epoch is not None and self.stored_epoch > epoch:
            raise StaleEpoch(ref, self.stored_epoch, epoch)
        self.patches.append(copy.deepcopy(status))

    async def event(
        self, ref: ObjectRef, type_: EventType, reason: str, message: str, action: str = ""
    ) -> None:
        self.events.append((type_, reason, message))


class FakeTraffic:
    def __init__(self, delay: float = 0.0) -> None:
        self.plans: list[TrafficPlan] = []
        self.delay = delay

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        self.plans.append(plan)
        await asyncio.sleep(self.delay)
        now = time.time()
        return TrafficChange(f"C{len(self.plans)}", True, now, now)

    async def weights(self, plan: TrafficPlan) -> dict[str, int]:
        return {}


class FakeProviders:
    def __init__(self, traffic: FakeTraffic) -> None:
        self.manager = traffic

    async def traffic(self, name: str, region: str | None = None) -> FakeTraffic:
        return self.manager

    def check_references(self, spec: ResilientAppSpec) -> list[tuple[str, str]]:
        return []

    def cached_redactor(self, name: str) -> Callable[[str], str]:
        return lambda text: text

    def explain(self, name: str, error: BaseException) -> str:
        return f"{type(error).__name__}: {error}"

    async def api_plane(self, provider: str, region: str) -> ApiPlaneState:
        return ApiPlaneState.HEALTHY

    async def traffic_plane(self, provider: str, region: str | None) -> ApiPlaneState:
        return ApiPlaneState.HEALTHY


class FakeProber:
    def __init__(self) -> None:
        self.down: set[str] = set()
        self.rounds = 0

    async def probe_app(self, spec: ResilientAppSpec) -> tuple[ProbeResult, ...]:
        self.rounds += 1
        await asyncio.sleep(0.01)  # probing takes time; other tasks run meanwhile
        return tuple(
            ProbeResult(
                ZoneKey(site.name, e.zone),
                ProbeOutcome.FAIL
                if site.name in self.down or f"{site.name}/{e.zone}" in self.down
                else ProbeOutcome.OK,
                time.time(),
                0.001,
            )
            for site in spec.sites
            for e in site.endpoints
        )


def make(
    traffic: FakeTraffic | None = None,
) -> tuple[AppWorker, FakeKube, FakeTraffic, FakeProber]:
    kube, prober = FakeKube(), FakeProber()
    traffic = traffic or FakeTraffic()
    context = AppContext(kube=kube, providers=FakeProviders(traffic), prober=prober)
    return AppWorker(REF, context), kube, traffic, prober


def body(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"metadata": {"generation": 1}, "spec": spec or app_spec(), "status": status or {}}


async def settle(worker: AppWorker) -> None:
    """Let a started action finish and be recorded."""
    await worker.pause(time.monotonic() + 0.2, lambda: False)


async def test_first_round_publishes_dns_and_records_it() -> None:
    worker, kube, traffic, _ = make()
    await worker.round(body())
    await settle(worker)
    assert [{r.site: r.weight for r in p.records} for p in traffic.plans] == [
        {"use1": 100, "usw2": 0}
    ]
    assert kube.patches[-1]["traffic"]["epoch"] == 1
    assert ("Normal", "TrafficShifted") in [(t, r) for t, r, _ in kube.events]


async def test_invalid_spec_keeps_what_lifeboat_remembers() -> None:
    worker, kube, _, _ = make()
    status = {"activeSite": "usw2", "epoch": 4, "phase": "Healthy"}
    broken = app_spec()
    broken["sites"][1]["role"] = "primary"  # two primaries, as if admission had been skipped
    await worker.round(body(broken, status))
    (patch,) = kube.patches
    assert set(patch) == {"phase", "observedGeneration", "conditions"}
    assert patch["phase"] == "Invalid"
    assert "exactly one site must have role primary" in patch["conditions"][0]["message"]
    await worker.round(body(app_spec(), status))  # fixed: carries on where it was
    assert worker.state is not None
    assert (worker.state.active_site, worker.state.epoch) == ("usw2", 4)


async def test_unreadable_status_never_lets_the_epoch_go_back() -> None:
    worker, _, traffic, _ = make()
    await worker.round(body(status={"activeSite": "usw2", "epoch": 5, "zones": "garbage"}))
    await settle(worker)
    assert worker.state is not None
    assert worker.state.epoch == 6
    assert {r.site: r.weight for r in traffic.plans[0].records} == {"use1": 0, "usw2": 100}


async def test_status_write_failure_does_not_stop_the_failover() -> None:
    worker, kube, traffic, prober = make()
    await worker.round(body())
    await settle(worker)
    kube.fail_patches = True
    prober.down = {"use1"}
    for _ in range(3):
        await worker.round(body())
    await settle(worker)
    assert {r.site: r.weight for r in traffic.plans[-1].records} == {"use1": 0, "usw2": 100}
    kube.fail_patches = False
    await worker.round(body())
    assert kube.patches[-1]["activeSite"] == "usw2"
    assert kube.patches[-1]["traffic"]["epoch"] == 2


async def test_a_slow_traffic_change_does_not_stop_probing() -> None:
    worker, kube, traffic, prober = make(FakeTraffic(delay=0.5))
    await worker.round(body())
    rounds_before = prober.rounds
    for _ in range(3):  # the DNS change is still in flight
        await worker.round(body())
    assert prober.rounds == rounds_before + 3
    assert len(traffic.plans) == 1  # one action at a time, not one per round
    await worker.pause(time.monotonic() + 1.0, lambda: False)
    assert worker.state is not None
    assert worker.state.traffic_epoch == 1
    assert kube.patches[-1]["traffic"]["epoch"] == 1


@pytest.mark.parametrize("failure", [RuntimeError("boom"), ConnectionError("reset")])
async def test_a_failing_dns_change_is_reported_and_retried(failure: Exception) -> None:
    worker, kube, traffic, _ = make()

    async def broken(plan: TrafficPlan) -> TrafficChange:
        traffic.plans.append(plan)
        raise failure

    traffic.apply = broken  # type: ignore[method-assign]
    await worker.round(body())
    await settle(worker)
    assert ("Warning", "ShiftTrafficFailed") in [(t, r) for t, r, _ in kube.events]
    await worker.round(body())
    await settle(worker)
    assert len(traffic.plans) == 2


class HangingCapacity:
    """Capacity changes that never finish (a region slow to boot replacements)."""

    region = "us-east-1"

    def __init__(self) -> None:
        self.started: list[dict[str, int]] = []
        self.cancelled = 0

    async def for_site(self, app: str, site: Site) -> CapacityDriver:
        return self

    async def observe(self) -> CapacityState:
        raise AssertionError("not used")

    async def set_zones(self, desired: Mapping[str, int]) -> None:
        self.started.append(dict(desired))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_a_failover_does_not_wait_behind_a_slow_capacity_change() -> None:
    raw = app_spec()
    for index, site in enumerate(raw["sites"]):
        site["zoneTargets"] = [
            {"zone": zone, "values": [f"192.0.{index + 2}.{i + 1}"]}
            for i, zone in enumerate(site["zones"])
        ]
        site["trafficTargets"] = []
        site["capacity"] = {"perZone": 2, "autoScalingGroup": {"name": f"web-{site['name']}"}}
    raw["failover"] = {"minDwellSeconds": 0}
    kube, prober, traffic, capacity = FakeKube(), FakeProber(), FakeTraffic(), HangingCapacity()
    context = AppContext(
        kube=kube, providers=FakeProviders(traffic), prober=prober, capacity=capacity
    )
    worker = AppWorker(REF, context)
    await worker.round(body(raw))
    await settle(worker)
    prober.down = {"use1/us-east-1b"}  # a lone zone: evacuation, capacity moved in use1
    for _ in range(6):
        await worker.round(body(raw))
        await settle(worker)
    assert capacity.started, "the evacuation never asked for capacity"
    assert worker.state is not None and worker.state.epoch == 1
    prober.down = {"use1"}  # now the whole site: a failover
    for _ in range(6):
        await worker.round(body(raw))
        await settle(worker)
        if worker.state.traffic_epoch == 2:
            break
    assert worker.state.epoch == 2
    assert worker.state.traffic_epoch == 2  # DNS moved although capacity still hangs
    assert capacity.cancelled >= 1
    assert ("Normal", "TrafficShifted") in [(t, r) for t, r, _ in kube.events[-5:]]


def state_of(worker: AppWorker) -> AppState | None:
    return worker.state  # read anew each time (no narrowing across awaits)


async def test_a_newer_stored_epoch_makes_the_worker_read_its_state_again() -> None:
    """Another instance failed over meanwhile: this worker's write is refused, it drops
    its state and takes the stored one instead of writing its older epoch over it."""
    worker, kube, _, _ = make()
    await worker.round(body())
    await settle(worker)
    assert worker.state is not None and worker.state.epoch == 1
    written = len(kube.patches)
    kube.stored_epoch = 5
    newer = {"activeSite": "usw2", "epoch": 5, "phase": "Healthy"}
    await worker.round(body(status={"activeSite": "use1", "epoch": 1}))
    assert state_of(worker) is None  # refused: nothing of epoch 1 was written
    assert len(kube.patches) == written
    await worker.round(body(status=newer))
    state = state_of(worker)
    assert state is not None and (state.epoch, state.active_site) == (5, "usw2")
