"""The per-app loop and its replication sources: syncing them with the active site and
epoch, merging their figures into the status, conditions, Events, and the failback gate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.api.models import ReplicationStatus, ResilientAppSpec
from controller.operator.app import AppContext, AppWorker
from controller.operator.status_writer import _material
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


@dataclass
class FakeSource:
    """A replication source whose figures the test sets: one dataset, every other site."""

    kind: Literal["Objects", "Volumes"] = "Objects"
    dataset: str = "photos"
    rpo: dict[str, float | None] = field(default_factory=dict)
    syncs: list[tuple[str, int]] = field(default_factory=list)
    closed: bool = False
    _active: str = ""
    _sites: tuple[str, ...] = ()

    async def sync(
        self, spec: ResilientAppSpec, active_site: str, epoch: int, epoch_since: float | None
    ) -> None:
        if not self.syncs or self.syncs[-1] != (active_site, epoch):
            self.syncs.append((active_site, epoch))
        self._active = active_site
        self._sites = tuple(s.name for s in spec.sites)

    def figures(self) -> Sequence[ReplicationStatus]:
        return [
            ReplicationStatus(
                dataset=self.dataset,
                destination=site,
                kind=self.kind,
                source=self._active,
                epoch=self.syncs[-1][1],
                rpo_seconds=self.rpo.get(site),
                pending_objects=1 if (self.rpo.get(site) or 0) > 0 else 0,
            )
            for site in self._sites
            if site != self._active
        ]

    async def close(self) -> None:
        self.closed = True


def replicated(**failover: Any) -> dict[str, Any]:
    spec = app_spec()
    spec["replication"] = {
        "rpoTargetSeconds": 30,
        "objects": [
            {
                "name": "photos",
                "locations": [
                    {"site": "use1", "bucket": "p-east"},
                    {"site": "usw2", "bucket": "p-west"},
                ],
            }
        ],
        "volumes": [
            {
                "name": "db",
                "locations": [{"site": "use1", "volumeIds": ["vol-1"]}, {"site": "usw2"}],
            }
        ],
    }
    spec["failover"] = {"mode": "Automatic", "minDwellSeconds": 0, **failover}
    return spec


def make(*sources: FakeSource) -> tuple[AppWorker, FakeKube, FakeProber]:
    kube, prober = FakeKube(), FakeProber()

    def factory(source: FakeSource) -> Any:
        return lambda ref: source

    factories = tuple(factory(s) for s in sources)
    context = AppContext(
        kube=kube, providers=FakeProviders(FakeTraffic()), prober=prober, replication=factories
    )
    return AppWorker(REF, context), kube, prober


def condition(patch: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in patch["conditions"] if c["type"] == kind)


async def test_figures_of_every_source_are_merged_into_the_status() -> None:
    objects = FakeSource(rpo={"usw2": 3.0})
    volumes = FakeSource(kind="Volumes", dataset="db", rpo={"usw2": 120.0})
    worker, kube, _ = make(objects, volumes)
    await worker.round(body(replicated()))
    await settle(worker)
    entries = kube.patches[-1]["replication"]
    assert [(e["dataset"], e["destination"], e["kind"]) for e in entries] == [
        ("db", "usw2", "Volumes"),
        ("photos", "usw2", "Objects"),
    ]
    assert objects.syncs == [("use1", 1)]
    breached = condition(kube.patches[-1], "RPOBreached")
    assert (breached["status"], breached["reason"]) == ("True", "RPOAboveTarget")
    assert "db -> usw2" in breached["message"]
    assert condition(kube.patches[-1], "Replicating")["status"] == "False"
    warnings = [m for t, r, m in kube.events if (t, r) == ("Warning", "RPOBreached")]
    assert warnings == [
        "RPO target 30s; db -> usw2 120s (1 pending), photos -> usw2 3s (1 pending)"
    ]

    volumes.rpo["usw2"] = 2.0
    await worker.round(body(replicated(), kube.patches[-1]))
    assert condition(kube.patches[-1], "Replicating")["status"] == "True"
    assert condition(kube.patches[-1], "RPOBreached")["status"] == "False"
    assert [r for _, r, _ in kube.events].count("RPORecovered") == 1


async def test_apps_without_replication_get_no_replication_conditions() -> None:
    source = FakeSource()
    worker, kube, _ = make(source)
    await worker.round(body())
    types = {c["type"] for c in kube.patches[-1]["conditions"]}
    assert not types & {"Replicating", "RPOBreached"}


async def test_a_failover_reverses_replication_before_traffic_moves() -> None:
    source = FakeSource(rpo={"usw2": 0.0, "use1": 0.0})
    worker, kube, prober = make(source)
    await worker.round(body(replicated()))
    await settle(worker)
    prober.down = {"use1"}
    while not (kube.patches and kube.patches[-1].get("epoch") == 2):
        await worker.round(body(replicated(), kube.patches[-1]))
    # Told in the very round that decided, before the traffic shift ran.
    assert source.syncs == [("use1", 1), ("usw2", 2)]
    assert kube.patches[-1]["replication"][0]["destination"] == "use1"


async def test_automatic_failback_waits_for_replication_to_catch_up() -> None:
    source = FakeSource(rpo={"usw2": 0.0, "use1": 0.0})
    worker, kube, prober = make(source)
    spec = replicated(failback={"mode": "Automatic", "stableSeconds": 0})
    await worker.round(body(spec))
    await settle(worker)
    prober.down = {"use1"}
    for _ in range(4):
        await worker.round(body(spec, kube.patches[-1]))
        await settle(worker)
    assert worker.state is not None and worker.state.active_site == "usw2"

    source.rpo["use1"] = 300.0  # the old primary lacks five minutes of data
    prober.down = set()
    for _ in range(5):
        await worker.round(body(spec, kube.patches[-1]))
        await settle(worker)
    assert worker.state.active_site == "usw2"
    facts = {f["name"]: f["value"] for f in kube.patches[-1]["lastDecision"]["facts"]}
    assert "replication lag of use1 300s above target 30s" in facts["failback"]

    source.rpo["use1"] = 4.0
    await worker.round(body(spec, kube.patches[-1]))
    await settle(worker)
    assert worker.state.active_site == "use1"
    assert source.syncs[-1] == ("use1", 3)


async def test_sources_are_closed_with_the_worker() -> None:
    source = FakeSource()
    worker, _, _ = make(source)
    rounds = 0

    def stopped() -> bool:
        nonlocal rounds
        rounds += 1
        return rounds > 1

    await worker.run(body(replicated()), stopped)
    assert source.closed


def test_changing_rpo_alone_is_not_worth_a_status_write() -> None:
    base = {
        "replication": [
            {"dataset": "p", "destination": "b", "rpoSeconds": 1.0, "pendingObjects": 0}
        ]
    }
    later = {
        "replication": [
            {"dataset": "p", "destination": "b", "rpoSeconds": 7.0, "pendingObjects": 0}
        ]
    }
    unknown = {"replication": [{"dataset": "p", "destination": "b", "pendingObjects": 0}]}
    more = {
        "replication": [
            {"dataset": "p", "destination": "b", "rpoSeconds": 7.0, "pendingObjects": 3}
        ]
    }
    assert _material(base) == _material(later)
    assert _material(base) != _material(unknown)
    assert _material(base) != _material(more)


@dataclass
class RestoredSource(FakeSource):
    """Volume replication that looked at the volumes a failover restored."""

    states: dict[str, str] = field(default_factory=dict)

    def volume_states(self) -> Mapping[str, str]:
        return dict(self.states)


async def test_restored_volumes_states_are_put_into_the_status() -> None:
    source = RestoredSource(kind="Volumes", dataset="db", states={"vol-9": "creating"})
    worker, kube, _ = make(source)
    restored = {
        "site": "usw2",
        "epoch": 2,
        "time": "2026-11-22T01:00:00Z",
        "volumes": [
            {
                "dataset": "db",
                "volume": volume,
                "volumeId": volume_id,
                "zone": "us-west-2a",
                "snapshotId": f"snap-{volume}",
            }
            for volume, volume_id in (("vol-1", "vol-9"), ("vol-2", "vol-8"))
        ],
    }
    status = {"activeSite": "usw2", "epoch": 2, "phase": "Healthy", "volumeRestores": [restored]}
    await worker.round(body(replicated(), status))
    await settle(worker)
    (record,) = kube.patches[-1]["volumeRestores"]
    assert [(v["volumeId"], v.get("state")) for v in record["volumes"]] == [
        ("vol-9", "creating"),
        ("vol-8", None),  # not looked at yet
    ]

    source.states = {"vol-9": "available", "vol-8": "error"}
    await worker.round(body(replicated(), kube.patches[-1]))
    (record,) = kube.patches[-1]["volumeRestores"]
    assert [v["state"] for v in record["volumes"]] == ["available", "error"]

    # A restarted operator shows what the status held until it looks again.
    fresh = RestoredSource(kind="Volumes", dataset="db")
    restarted, kube_after, _ = make(fresh)
    await restarted.round(body(replicated(), kube.patches[-1]))
    (record,) = kube_after.patches[-1]["volumeRestores"]
    assert [v["state"] for v in record["volumes"]] == ["available", "error"]


def test_a_restored_volume_busy_with_a_snapshot_is_not_worth_a_status_write() -> None:
    def restores(state: str) -> dict[str, Any]:
        volume = {"dataset": "db", "volume": "v", "volumeId": "vol-9", "state": state}
        return {"volumeRestores": [{"site": "usw2", "epoch": 2, "volumes": [volume]}]}

    assert _material(restores("available")) == _material(restores("backing-up"))
    assert _material(restores("available")) == _material(restores("in-use"))
    assert _material(restores("creating")) == _material(restores("restoring-backup"))
    assert _material(restores("available")) != _material(restores("creating"))
    assert _material(restores("available")) != _material(restores("error"))
    assert _material(restores("error")) != _material(restores("not-found"))
