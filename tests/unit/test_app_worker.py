"""The per-app loop against fakes: what it writes, when it acts, how it survives failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from controller.api.models import ResilientAppSpec, Site
from controller.core import decide as core
from controller.core.model import AppState
from controller.operator.app import AppContext, AppWorker
from controller.operator.kube import NotFound, StaleEpoch
from controller.operator.probes import HttpProber
from controller.operator.status_writer import HEARTBEAT_SECONDS
from controller.providers.protocols import (
    CapacityDriver,
    CapacityState,
    DnsOwner,
    TrafficChange,
    TrafficPlan,
)
from tests.factories import app_spec
from tests.fixtures.worker import (
    REF,
    FakeKube,
    FakeProber,
    FakeProviders,
    FakeTraffic,
    body,
    settle,
)


def make(
    traffic: FakeTraffic | None = None,
) -> tuple[AppWorker, FakeKube, FakeTraffic, FakeProber]:
    kube, prober = FakeKube(), FakeProber()
    traffic = traffic or FakeTraffic()
    context = AppContext(kube=kube, providers=FakeProviders(traffic), prober=prober)
    return AppWorker(REF, context), kube, traffic, prober


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
    assert worker.state.epoch == 5
    assert {r.site: r.weight for r in traffic.plans[0].records} == {"use1": 0, "usw2": 100}


async def test_nothing_moves_before_the_decision_is_on_record() -> None:
    """A failover decided while status cannot be written waits: its epoch must be on
    record before DNS changes (a crash would otherwise forget a change already made)."""
    worker, kube, traffic, prober = make()
    await worker.round(body())
    await settle(worker)
    kube.fail_patches = True
    prober.down = {"use1"}
    for _ in range(3):
        await worker.round(body())
    await settle(worker)
    assert len(traffic.plans) == 1  # the epoch-1 publication only
    kube.fail_patches = False
    await worker.round(body())
    await settle(worker)
    assert {r.site: r.weight for r in traffic.plans[-1].records} == {"use1": 0, "usw2": 100}
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
    raw["failover"] = {"mode": "Automatic", "minDwellSeconds": 0}
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


async def test_an_operator_without_capacity_says_so_when_an_evacuation_needs_it() -> None:
    """The worker's default capacity (NoCapacity) refuses like an unsupported provider:
    the action fails with the reason and words the Event carries, and is retried."""
    raw = app_spec()
    for site in raw["sites"]:
        site["capacity"] = {"perZone": 2, "autoScalingGroup": {"name": f"web-{site['name']}"}}
    worker, kube, _, prober = make()
    await worker.round(body(raw))
    await settle(worker)
    prober.down = {"use1/us-east-1b"}
    for _ in range(6):
        await worker.round(body(raw))
        await settle(worker)
    refusals = [m for t, r, m in kube.events if (t, r) == ("Warning", "CapacityUnsupported")]
    assert refusals and "site use1: this operator drives no capacity" in refusals[0]


def state_of(worker: AppWorker) -> AppState | None:
    return worker.state  # read anew each time (no narrowing across awaits)


async def test_a_newer_stored_epoch_makes_the_worker_read_its_state_again() -> None:
    """Another instance failed over meanwhile: this worker's write is refused, its round
    is abandoned before anything moves, and it takes the stored state instead of writing
    its older epoch over it."""
    worker, kube, traffic, _ = make()
    await worker.round(body())
    await settle(worker)
    assert worker.state is not None and worker.state.epoch == 1
    written, published = len(kube.patches), len(traffic.plans)
    kube.stored_epoch = 5
    newer = {"activeSite": "usw2", "epoch": 5, "phase": "Healthy"}
    stopped = asyncio.Event()
    live: dict[str, Any] = body(status={"activeSite": "use1", "epoch": 1})
    loop = asyncio.create_task(worker.run(live, stopped.is_set))
    await asyncio.sleep(0.3)
    assert state_of(worker) is None  # refused: nothing of epoch 1 was written
    assert (len(kube.patches), len(traffic.plans)) == (written, published)
    live["status"] = newer  # kopf's live body brings the stored status
    await asyncio.sleep(1.5)
    state = state_of(worker)
    assert state is not None and (state.epoch, state.active_site) == (5, "usw2")
    assert not loop.done()  # a fenced worker never ends its daemon
    stopped.set()
    await asyncio.wait_for(loop, 5)


async def test_a_fenced_worker_never_acts_on_its_decision() -> None:
    """Reproduced: a stale-epoch write was swallowed and the decided DNS change ran anyway
    (then an assertion ended the daemon). Now the round stops at the refused write."""
    worker, kube, traffic, prober = make()
    await worker.round(body())
    await settle(worker)
    published = len(traffic.plans)
    kube.stored_epoch = 7  # another instance failed over to epoch 7 meanwhile
    prober.down = {"use1"}
    for _ in range(4):
        with pytest.raises(StaleEpoch):
            await worker.round(body(status={"activeSite": "use1", "epoch": 1}))
    await settle(worker)
    assert len(traffic.plans) == published


def published(traffic: FakeTraffic) -> list[dict[str, int]]:
    return [{r.site: r.weight for r in p.records} for p in traffic.plans]


def failed_over_dns(traffic: FakeTraffic, epoch: int = 2) -> None:
    """DNS as a failover to usw2 at ``epoch`` left it (its owner record)."""
    state = AppState("usw2", epoch=epoch)
    desired = core.desired_traffic(state, ResilientAppSpec.model_validate(app_spec()))
    traffic.owner = DnsOwner("shop/web", epoch, "usw2", desired.fingerprint)


@pytest.mark.parametrize(
    "status",
    [{}, {"epoch": 2}, {"activeSite": "use1"}, {"activeSite": 7, "epoch": "x"}],
    ids=["no-status", "no-active-site", "no-epoch", "malformed"],
)
async def test_a_lost_status_is_rebuilt_from_dns_not_reset_to_epoch_1(
    status: dict[str, Any],
) -> None:
    """Reproduced: after a failover to usw2 (epoch 2), removing status.activeSite and
    restarting moved DNS back to the failed primary within seconds."""
    worker, kube, traffic, _ = make()
    failed_over_dns(traffic)
    for _ in range(3):
        await worker.round(body(status=status))
        await settle(worker)
    assert published(traffic) == []  # DNS is not moved back
    state = state_of(worker)
    assert state is not None and (state.active_site, state.epoch) == ("usw2", 2)
    assert kube.patches[-1]["activeSite"] == "usw2" and kube.patches[-1]["epoch"] == 2
    assert ("Warning", "DNSDiverged") in [(t, r) for t, r, _ in kube.events]


async def test_a_status_behind_dns_after_a_crash_is_healed_toward_dns() -> None:
    """Reproduced: status writes failed while a failover was applied and the process died;
    the restarted worker believed the old site active and never looked at DNS again."""
    worker, kube, traffic, _ = make()
    failed_over_dns(traffic, epoch=3)
    stale = {"activeSite": "use1", "epoch": 1, "traffic": {"activeSite": "use1", "epoch": 1}}
    await worker.round(body(status=stale))
    await settle(worker)
    state = state_of(worker)
    assert state is not None and (state.active_site, state.epoch) == ("usw2", 3)
    assert published(traffic) == []
    conditions = {c["type"]: c for c in kube.patches[-1]["conditions"]}
    assert conditions["DNSInSync"]["reason"] == "Diverged"


async def test_dns_is_read_back_periodically_and_a_change_behind_lifeboat_is_undone() -> None:
    worker, _, traffic, _ = make()
    now = [1000.0]
    worker.dns.clock = lambda: now[0]
    await worker.round(body())
    await settle(worker)
    assert published(traffic) == [{"use1": 100, "usw2": 0}] and traffic.reads == 1
    await worker.round(body())
    assert traffic.reads == 2  # the change just made, read back once
    await worker.round(body())
    assert traffic.reads == 2  # not every round
    assert traffic.owner is not None
    traffic.owner = DnsOwner("shop/web", 1, "use1", "edited-by-hand")
    now[0] += 61
    await worker.round(body())
    await settle(worker)
    assert traffic.reads == 3
    assert published(traffic)[-1] == {"use1": 100, "usw2": 0}  # set again
    assert len(traffic.plans) == 2


async def test_dns_in_sync_is_not_claimed_before_the_first_publication() -> None:
    """Reproduced: a new app's first read-back (before its first DNS change) set DNSInSync
    True, "DNS web.example.com. holds nothing", and kept it for the minute until the next
    read."""
    worker, kube, _, _ = make()
    await worker.round(body())
    before = next(c for c in kube.patches[0]["conditions"] if c["type"] == "DNSInSync")
    assert (before["status"], before["reason"]) == ("False", "NotPublished")
    assert (
        "holds no owner record of Lifeboat's yet; recorded: epoch 1, site use1"
        in (before["message"])
    )
    await settle(worker)
    await worker.round(body())  # the next round reads the change back
    after = {c["type"]: c for c in kube.patches[-1]["conditions"]}["DNSInSync"]
    assert (after["status"], after["reason"]) == ("True", "InSync")
    assert "holds epoch 1, site use1; recorded: epoch 1, site use1" in after["message"]


async def test_a_name_held_by_another_app_is_never_touched_and_said_on_both() -> None:
    """Reproduced: two ResilientApps with the same recordName deleted each other's record
    sets, and both stayed Ready."""
    worker, kube, traffic, _ = make()
    traffic.owner = DnsOwner("shop/other", 4, "use1", "x")
    for _ in range(2):
        await worker.round(body())
        await settle(worker)
    assert traffic.plans == []
    conditions = {c["type"]: c for c in kube.patches[-1]["conditions"]}
    assert conditions["DNSInSync"]["reason"] == "OwnedByAnother"
    assert conditions["Ready"]["status"] == "False"
    reasons = [r for _, r, _ in kube.events]
    assert reasons.count("DNSOwnershipConflict") == 2  # this app's, and the owner's


@pytest.mark.parametrize(
    "broken",
    [
        {"recentFailovers": ["yesterday"]},
        {
            "lastFailover": {
                "epoch": 2,
                "fromSite": "use1",
                "toSite": "usw2",
                "reason": "x",
                "decidedTime": "soon",
            }
        },
        {"zones": [{"site": "use1", "zone": "us-east-1a", "state": "Sideways"}]},
        {"traffic": {"activeSite": "usw2", "epoch": 2, "appliedTime": "later"}},
    ],
    ids=["timestamp", "failover-record", "zone-state", "traffic"],
)
async def test_a_malformed_status_field_is_reported_and_rounds_go_on(
    broken: dict[str, Any],
) -> None:
    """Reproduced: a bad timestamp or field made every round fail instead of being said."""
    worker, kube, traffic, _ = make()
    failed_over_dns(traffic)
    status = {"activeSite": "usw2", "epoch": 2, **broken}
    for _ in range(2):
        await worker.round(body(status=status))
        await settle(worker)
    state = state_of(worker)
    assert state is not None and (state.active_site, state.epoch) == ("usw2", 2)
    assert published(traffic) == []
    assert "StatusUnreadable" in [r for _, r, _ in kube.events]


async def test_a_steady_app_writes_no_status_round_after_round() -> None:
    """Reproduced: the zones' streak counters rose every round, so every round's status
    was a new one to write (599 writes a minute for 10 steady apps)."""
    worker, kube, _, _ = make()
    for _ in range(6):
        await worker.round(body())
        await settle(worker)
    written = len(kube.patches)
    for _ in range(20):
        await worker.round(body())
    assert len(kube.patches) == written


async def test_status_is_written_when_what_matters_changes_and_only_then() -> None:
    """The writer remembers only a digest of what it last wrote (not the status whole):
    a field that changes every round alone writes nothing before the heartbeat; a material
    change, or the heartbeat, writes."""
    worker, kube, _, _ = make()
    for _ in range(3):
        await worker.round(body())
        await settle(worker)
    writer, epoch, now = worker.status, 1, time.time()
    assert isinstance(writer._written, bytes)
    written = len(kube.patches)
    zones = list(writer.current.zones)
    zones[0] = zones[0].model_copy(update={"latency_ms": 999.0})
    writer.update(zones=tuple(zones))
    assert await writer.write(epoch, now)
    assert len(kube.patches) == written  # volatile only: not written
    zones[0] = zones[0].model_copy(update={"in_traffic": not zones[0].in_traffic})
    writer.update(zones=tuple(zones))
    assert await writer.write(epoch, now)
    assert len(kube.patches) == written + 1  # material: written
    assert kube.patches[-1]["zones"][0]["inTraffic"] is zones[0].in_traffic
    assert await writer.write(epoch, now + 1)
    assert len(kube.patches) == written + 1
    assert await writer.write(epoch, now + HEARTBEAT_SECONDS)
    assert len(kube.patches) == written + 2  # the heartbeat


async def test_a_missing_ca_bundle_is_a_configuration_problem_of_the_apps_namespace() -> None:
    asked: list[tuple[str, str]] = []

    async def read_config_map(namespace: str, name: str) -> Mapping[str, str]:
        asked.append((namespace, name))
        raise NotFound(f"ConfigMap {namespace}/{name} not found")

    kube, traffic = FakeKube(), FakeTraffic()
    prober = HttpProber(read_config_map=read_config_map)
    context = AppContext(kube=kube, providers=FakeProviders(traffic), prober=prober)
    spec = app_spec()
    for site in spec["sites"]:
        for endpoint in site["endpoints"]:
            endpoint["url"] = endpoint["url"].replace("http://", "https://")
    spec["health"]["tls"] = {"caBundle": {"name": "probe-ca"}}
    await AppWorker(REF, context).round(body(spec))

    assert asked == [("shop", "probe-ca")]  # read once, in the app's namespace
    valid = next(c for c in kube.patches[-1]["conditions"] if c["type"] == "ConfigurationValid")
    assert (valid["status"], valid["reason"]) == ("False", "CABundleUnavailable")
    assert valid["message"] == "CA bundle ConfigMap shop/probe-ca: not found"
    assert ("Warning", "CABundleUnavailable", valid["message"]) in kube.events
    zones = kube.patches[-1]["zones"]
    assert {z["message"] for z in zones} == {"CA bundle ConfigMap shop/probe-ca: not found"}


# Defects found by the worker fuzz suite (tests/worker_fuzz.py), each reproduced here.


def failed_over_status(epoch: int = 5) -> dict[str, Any]:
    """The status a failover to usw2 at ``epoch`` leaves, as the worker writes it."""
    now = "2026-01-01T00:00:00Z"
    return {
        "activeSite": "usw2",
        "epoch": epoch,
        "traffic": {"activeSite": "usw2", "epoch": epoch, "appliedTime": now},
        "lastFailover": {
            "epoch": epoch,
            "fromSite": "use1",
            "toSite": "usw2",
            "reason": "site-down",
            "decidedTime": now,
        },
    }


@pytest.mark.parametrize(
    "lost",
    [{"epoch": None}, {"epoch": "NaN"}, {"epoch": None, "activeSite": None}, {"activeSite": 7}],
    ids=["no-epoch", "bad-epoch", "neither", "bad-active-site"],
)
async def test_a_status_that_lost_its_epoch_keeps_the_epoch_its_records_state(
    lost: dict[str, Any],
) -> None:
    """With DNS saying nothing (its owner record gone), a status whose epoch or active
    site was lost was rebuilt at epoch 1 at the primary, and DNS moved back to the failed
    site under epoch 1 although the traffic and failover records said epoch 5."""
    worker, kube, traffic, _ = make()
    status = {k: v for k, v in {**failed_over_status(5), **lost}.items() if v is not None}
    for _ in range(2):
        await worker.round(body(status=status))
        await settle(worker)
    state = state_of(worker)
    assert state is not None and (state.active_site, state.epoch) == ("usw2", 5)
    assert published(traffic) == [{"use1": 0, "usw2": 100}]
    assert traffic.owner is not None and traffic.owner.epoch == 5
    assert kube.patches[-1]["epoch"] == 5


async def test_a_condition_type_twice_in_the_stored_status_does_not_block_every_write() -> None:
    worker, kube, traffic, _ = make()
    failed_over_dns(traffic)
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Steady",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    status = {"activeSite": "usw2", "epoch": 2, "conditions": [ready, ready]}
    await worker.round(body(status=status))
    await settle(worker)
    assert kube.refused == []
    assert kube.patches and kube.patches[-1]["epoch"] == 2
    assert "StatusUnreadable" in [r for _, r, _ in kube.events]


async def test_an_owner_record_with_an_epoch_beyond_64_bits_is_not_followed() -> None:
    """DNS holding epoch 2**64 was adopted, and every status write (an epoch the API
    server cannot store) was refused from then on."""
    worker, kube, traffic, _ = make()
    traffic.owner = DnsOwner("shop/web", 2**64, "usw2", "x")
    for _ in range(2):
        await worker.round(body())
        await settle(worker)
    assert kube.refused == []
    state = state_of(worker)
    assert state is not None and state.epoch == 1
    assert traffic.plans == []  # not overwritten either: held and said
    conditions = {c["type"]: c for c in kube.patches[-1]["conditions"]}
    assert conditions["DNSInSync"]["reason"] == "OwnedByAnother"


async def test_an_invalid_spec_is_reported_once_the_status_can_be_written() -> None:
    """The refusal of an invalid spec was marked as said before its status write; when the
    write failed (API server down, a newer epoch) it was never said for that generation."""
    worker, kube, _, _ = make()
    broken = app_spec()
    broken["sites"][1]["role"] = "primary"
    kube.fail_patches = True
    await worker.round(body(broken))
    assert kube.patches == [] and kube.events == []
    kube.fail_patches = False
    await worker.round(body(broken))
    assert kube.patches[-1]["phase"] == "Invalid"
    assert [r for _, r, _ in kube.events] == ["InvalidSpec"]


async def test_an_invalid_spec_is_said_again_when_the_status_was_written_over() -> None:
    worker, kube, _, _ = make()
    broken = app_spec()
    broken["sites"][1]["role"] = "primary"
    await worker.round(body(broken))
    await worker.round(body(broken, status={"phase": "Invalid"}))
    assert len(kube.patches) == 1
    await worker.round(body(broken, status={"phase": "Healthy"}))  # written over meanwhile
    assert len(kube.patches) == 2 and kube.patches[-1]["phase"] == "Invalid"
    assert [r for _, r, _ in kube.events] == ["InvalidSpec"]  # one Event per generation


def invalid_phase() -> float | None:
    from controller import metrics

    labelset = {"namespace": REF.namespace or "", "app": REF.name, "phase": "Invalid"}
    return metrics.REGISTRY.get_sample_value("lifeboat_app_phase", labelset)


async def test_an_app_already_invalid_is_said_once_and_exported_invalid_after_a_restart() -> None:
    """A restarted operator wrote the refusal and its Event again; and where it wrote
    nothing (the status already said so, or the write failed) it never set
    lifeboat_app_phase{phase="Invalid"}: the dashboard showed no phase at all."""
    from controller import metrics

    worker, kube, _, _ = make()
    broken = app_spec()
    broken["sites"][1]["role"] = "primary"
    await worker.round(body(broken))
    (written,) = kube.patches
    metrics.forget_app(REF.namespace or "", REF.name)  # a new process: no series yet
    restarted, kube, _, _ = make()
    await restarted.round(body(broken, status=written))
    assert kube.patches == [] and kube.events == []  # said already, by the first process
    assert invalid_phase() == 1

    metrics.forget_app(REF.namespace or "", REF.name)
    unwritable, kube, _, _ = make()
    kube.fail_patches = True
    await unwritable.round(body(broken))
    assert kube.patches == [] and invalid_phase() == 1
    metrics.forget_app(REF.namespace or "", REF.name)


async def test_a_recommendation_this_version_does_not_know_is_dropped_not_fatal() -> None:
    """An unknown recommendation response made every round fail (ValueError)."""
    worker, kube, traffic, _ = make()
    failed_over_dns(traffic)
    recommendation = {
        "id": "x",
        "response": "teleport",
        "summary": "from a newer Lifeboat",
        "time": "2026-01-01T00:00:00Z",
    }
    status = {"activeSite": "usw2", "epoch": 2, "recommendation": recommendation}
    for _ in range(2):
        await worker.round(body(status=status))
        await settle(worker)
    assert kube.patches and "recommendation" not in {
        k for k, v in kube.patches[-1].items() if v is not None
    }


async def test_a_time_before_the_year_1000_is_written_back_as_it_was_read() -> None:
    """A healthySince in the year 999 was written back as "999-..." and refused by the
    status model: every round failed."""
    worker, kube, traffic, _ = make()
    failed_over_dns(traffic)
    site = {
        "name": "usw2",
        "active": True,
        "state": "Healthy",
        "healthyZones": 2,
        "totalZones": 2,
        "healthySince": "0999-01-01T00:00:00Z",
    }
    status = {"activeSite": "usw2", "epoch": 2, "sites": [site]}
    await worker.round(body(status=status))
    await settle(worker)
    written = {s["name"]: s for s in kube.patches[-1]["sites"]}
    assert written["usw2"]["healthySince"] == "0999-01-01T00:00:00Z"
    assert kube.refused == []


async def test_an_epoch_in_a_record_dropped_as_unreadable_still_holds() -> None:
    """Found by the worker fuzz suite (make fuzz, 13 of 10,000 cases): a lastFailover with
    epoch 182 but a bad time was dropped whole, its epoch with it, and the worker went on
    (DNS unreadable) writing and acting under epoch 2."""
    worker, kube, traffic, _ = make()
    traffic.read_error = ConnectionError("reset")
    status = failed_over_status(2)
    status["lastFailover"] = {**status["lastFailover"], "epoch": 182, "decidedTime": "soon"}
    for _ in range(2):
        await worker.round(body(status=status))
        await settle(worker)
    state = state_of(worker)
    assert state is not None and state.epoch == 182
    assert all(p["epoch"] >= 182 for p in kube.patches if p.get("epoch") is not None)
    assert "StatusUnreadable" in [r for _, r, _ in kube.events]


async def test_first_rounds_pass_the_start_gate_a_few_at_a_time() -> None:
    """Many apps starting at once (an operator starting or taking the lead) take their
    first rounds at most ``width`` at a time; later rounds never wait at the gate."""
    from controller.operator.context import StartGate

    gate = StartGate(width=3)
    inside, most, rounds = 0, 0, 0
    started: set[str] = set()

    class Counted(AppWorker):
        async def round(self, body: Mapping[str, Any]) -> float:
            nonlocal inside, most, rounds
            first = self.name not in started
            started.add(self.name)
            rounds += 1
            if first:
                inside += 1
                most = max(most, inside)
            await asyncio.sleep(0.02)
            if first:
                inside -= 1
            return 0.05

    stop = asyncio.Event()
    workers = []
    for i in range(12):
        kube, prober = FakeKube(), FakeProber()
        context = AppContext(
            kube=kube, providers=FakeProviders(FakeTraffic()), prober=prober, starting=gate
        )
        ref = replace(REF, name=f"web-{i}", uid=f"uid-{i}")
        workers.append(Counted(ref, context))
    runs = [asyncio.create_task(w.run(body(), stop.is_set)) for w in workers]
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*runs)
    assert len(started) == 12  # every app started
    assert most == 3  # never more than the gate's width in a first round at once
    assert rounds > 24  # later rounds came on their own, not through the gate


async def test_rounds_come_faster_while_a_zone_is_suspect_and_only_then() -> None:
    """``health.suspectIntervalSeconds``: the round after a failed probe comes sooner, so
    a failing zone is confirmed Down sooner; steady rounds keep ``intervalSeconds``."""
    spec = app_spec(
        health={
            "intervalSeconds": 2,
            "timeoutSeconds": 0.5,
            "failureThreshold": 3,
            "suspectIntervalSeconds": 0.5,
        }
    )
    worker, _, _, prober = make()
    assert await worker.round(body(spec)) == 2.0
    prober.down.add("use1/us-east-1a")
    assert await worker.round(body(spec)) == 0.5  # Suspect
    assert await worker.round(body(spec)) == 0.5  # still Suspect (2 of 3)
    assert await worker.round(body(spec)) == 2.0  # Down: confirmed, back to the interval
    prober.down.clear()
    assert await worker.round(body(spec)) == 0.5  # Recovering
    assert await worker.round(body(spec)) == 2.0  # Healthy again
    without = app_spec(health={"intervalSeconds": 2, "timeoutSeconds": 0.5})
    worker, _, _, prober = make()
    await worker.round(body(without))
    prober.down.add("use1/us-east-1a")
    assert await worker.round(body(without)) == 2.0  # not set: no faster rounds
