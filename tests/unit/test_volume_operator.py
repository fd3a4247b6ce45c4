"""Volume replication and restores in the operator, against in-memory regions: what is
called where, fencing when the epoch moves, restores that resume, figures."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pytest

from controller import metrics
from controller.api.models import ResilientAppSpec
from controller.api.names import (
    TAG_EPOCH,
    TAG_KIND,
    TAG_ORIGIN,
    TAG_RESTORED_FOR,
    TAG_SITE,
    TAG_VOLUME,
)
from controller.core import decide as core
from controller.core import model as m
from controller.core.apiplane import ApiPlaneState
from controller.operator.kube import EventType, ObjectRef
from controller.operator.volumes import (
    CopyPending,
    NoVolumeRestorer,
    VolumeReplication,
    VolumeRestorer,
)
from controller.providers.errors import CapabilityUnsupported, ProviderUnavailable
from controller.providers.protocols import Snapshot, VolumeInfo
from controller.replication import volumes as rv
from controller.replication.figures import replication_conditions
from tests.factories import app_spec

REF = ObjectRef("ResilientApp", "resilientapps", "web", "shop", "uid-1")
APP = "shop/web"
EAST, WEST = "us-east-1", "us-west-2"
_ids = itertools.count(1)
State = Literal["pending", "completed", "error"]


@dataclass
class Region:
    """One region's snapshots and volumes; every call is recorded."""

    region: str
    cloud: Cloud
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    volumes_made: dict[str, VolumeInfo] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    copy_state: State = "completed"
    before_create: Callable[[], Awaitable[None]] | None = None
    fail_lookups: bool = False

    def _add(self, volume: str, tags: Mapping[str, str], state: State = "completed") -> Snapshot:
        made = Snapshot(
            f"snap-{next(_ids)}",
            volume,
            self.region,
            state,
            self.cloud.now,
            8,
            dict(tags),
        )
        self.snapshots[made.id] = made
        return made

    async def create(self, volume_id: str, tags: Mapping[str, str]) -> Snapshot:
        self.calls.append(f"create {volume_id}")
        if self.before_create is not None:
            await self.before_create()
        return self._add(volume_id, tags)

    async def copy_from(self, snapshot: Snapshot, tags: Mapping[str, str]) -> Snapshot:
        self.calls.append(f"copy {snapshot.id}")
        return self._add(snapshot.volume_id, tags, self.copy_state)

    async def get(self, snapshot_id: str) -> Snapshot | None:
        return self.snapshots.get(snapshot_id)

    async def delete(self, snapshot_id: str) -> None:
        self.calls.append(f"delete {snapshot_id}")
        self.snapshots.pop(snapshot_id, None)

    async def restore(
        self, snapshot_id: str, zone: str, tags: Mapping[str, str], *, key: str
    ) -> str:
        self.calls.append(f"restore {snapshot_id} {zone}")
        volume = VolumeInfo(f"vol-{next(_ids)}", zone, "creating", snapshot_id, dict(tags))
        self.volumes_made[volume.id] = volume
        return volume.id

    async def volumes(self, tags: Mapping[str, str]) -> list[VolumeInfo]:
        self.calls.append("volumes")
        return [
            v
            for v in self.volumes_made.values()
            if all(v.tags.get(k) == x for k, x in tags.items())
        ]

    async def volumes_by_id(self, volume_ids: Sequence[str]) -> list[VolumeInfo]:
        self.calls.append("volumes")
        if self.fail_lookups:
            raise ConnectionError("reset by peer")
        return [self.volumes_made[v] for v in volume_ids if v in self.volumes_made]

    def settle(self, state: str = "available", *volume_ids: str) -> None:
        """The volumes made here (or those named) reach ``state``."""
        for volume in list(self.volumes_made.values()):
            if not volume_ids or volume.id in volume_ids:
                self.volumes_made[volume.id] = replace(volume, state=state)

    def mutations(self) -> list[str]:
        return [c for c in self.calls if c not in ("list", "volumes")]

    async def list(self, tags: Mapping[str, str]) -> list[Snapshot]:
        self.calls.append("list")
        found = [
            s for s in self.snapshots.values() if all(s.tags.get(k) == v for k, v in tags.items())
        ]
        return sorted(found, key=lambda s: (s.created_at, s.id), reverse=True)


@dataclass
class Cloud:
    now: float = 1000.0
    regions: dict[str, Region] = field(default_factory=dict)
    planes: dict[str, ApiPlaneState] = field(default_factory=dict)
    withdrawn: dict[str, str] = field(default_factory=dict)
    """Provider -> reason: its CloudProvider is deleted or its credentials withdrawn."""

    def region(self, name: str) -> Region:
        return self.regions.setdefault(name, Region(name, self))

    async def volume_snapshots(self, provider: str, region: str) -> Region:
        await self.revision(provider)
        return self.region(region)

    async def revision(self, provider: str) -> int:
        if provider in self.withdrawn:
            reason = self.withdrawn[provider]
            raise ProviderUnavailable(reason, f"CloudProvider {provider}: {reason}")
        return 1

    async def api_plane(self, provider: str, region: str) -> ApiPlaneState:
        return self.planes.get(region, ApiPlaneState.HEALTHY)

    def explain(self, name: str, error: BaseException) -> str:
        return f"{type(error).__name__}: {error}"


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str]:
        raise AssertionError("not used")

    async def patch_status(
        self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None = None
    ) -> None:
        raise AssertionError("not used")

    async def event(
        self, ref: ObjectRef, type_: EventType, reason: str, message: str, action: str = ""
    ) -> None:
        self.events.append((type_, reason, message))


def spec(retain: int = 2, volume_ids: tuple[str, ...] = ("vol-a", "vol-b")) -> ResilientAppSpec:
    raw = app_spec()
    raw["replication"] = {
        "rpoTargetSeconds": 600,
        "volumes": [
            {
                "name": "db",
                "intervalSeconds": 60,
                "retain": retain,
                "locations": [
                    {"site": "use1", "volumeIds": list(volume_ids)},
                    {"site": "usw2"},
                ],
            }
        ],
    }
    return ResilientAppSpec.model_validate(raw)


SPEC = spec()


def make(cloud: Cloud) -> tuple[VolumeReplication, Events]:
    events = Events()
    replication = VolumeReplication(REF, cloud, events, clock=lambda: cloud.now, background=False)
    return replication, events


async def keep_up(
    replication: VolumeReplication, state: m.AppState, app: ResilientAppSpec = SPEC
) -> None:
    replication.follow(state)
    await replication.sync(app, state.active_site, state.epoch, None)


def failed_over(epoch: int = 2) -> m.AppState:
    """usw2 active after a failover from use1 whose restore is not done yet."""
    record = m.FailoverRecord(epoch, "use1", "usw2", "test", 0.0, None)
    return m.AppState(active_site="usw2", epoch=epoch, last_failover=record)


# --------------------------------------------------------------------------- replication


async def test_snapshots_are_taken_copied_and_pruned_on_schedule() -> None:
    cloud = Cloud()
    replication, _ = make(cloud)
    state = m.AppState(active_site="use1")
    await keep_up(replication, state)
    (entry,) = replication.figures()  # reported from the first sync on, unmeasured
    assert (entry.kind, entry.source, entry.destination, entry.rpo_seconds) == (
        "Volumes",
        "use1",
        "usw2",
        None,
    )
    await replication.pass_once()
    east, west = cloud.region(EAST), cloud.region(WEST)
    assert east.mutations() == ["create vol-a", "create vol-b"]
    await replication.pass_once()
    assert sorted(west.mutations()) == sorted(f"copy {s}" for s in east.snapshots)
    for _ in range(4):
        cloud.now += 61
        await replication.pass_once()  # snapshots
        await replication.pass_once()  # copies
    await replication.pass_once()  # prunes what the last copies pushed out
    assert west.calls and all(c.startswith(("list", "copy", "delete")) for c in west.calls)
    for region in (east, west):
        per_volume = {
            v: [s for s in region.snapshots.values() if s.volume_id == v]
            for v in ("vol-a", "vol-b")
        }
        assert all(len(items) == 2 for items in per_volume.values()), region.region  # retain 2
    (entry,) = replication.figures()
    assert entry.rpo_seconds == 0.0 and entry.pending_objects == 0
    assert entry.copied_objects == 10 and entry.errors == 0
    assert entry.newest_copy_time is not None and entry.last_sync_time is not None
    for copy in west.snapshots.values():
        assert copy.tags[TAG_KIND] == "copy" and copy.tags[TAG_SITE] == "usw2"


async def test_copies_the_cloud_is_still_making_are_exported() -> None:
    cloud = Cloud()
    replication, _ = make(cloud)
    west = cloud.region(WEST)
    west.copy_state = "pending"
    await keep_up(replication, m.AppState(active_site="use1"))
    labels = {"namespace": "shop", "app": "web", "dataset": "db", "destination": "usw2"}

    def copying() -> float | None:
        return metrics.REGISTRY.get_sample_value("lifeboat_replication_provider_copies", labels)

    try:
        await replication.pass_once()  # snapshots
        assert copying() == 0.0
        await replication.pass_once()  # copies
        await replication.pass_once()  # finds them still being made
        assert copying() == 2.0
        for copy in west.snapshots.values():
            west.snapshots[copy.id] = replace(copy, state="completed")
        await replication.pass_once()
        assert copying() == 0.0
    finally:
        metrics.forget_app("shop", "web")
    assert copying() is None


async def test_an_impaired_region_is_not_called_and_its_rpo_grows() -> None:
    cloud = Cloud()
    replication, _ = make(cloud)
    await keep_up(replication, m.AppState(active_site="use1"))
    for _ in range(3):  # snapshot, copy, see the copy
        await replication.pass_once()
    cloud.planes[WEST] = ApiPlaneState.IMPAIRED
    before = list(cloud.region(WEST).calls)
    cloud.now += 300
    await replication.pass_once()
    assert cloud.region(WEST).calls == before  # not even a listing
    (entry,) = replication.figures()
    assert entry.rpo_seconds == 300.0
    assert "API plane Impaired" in entry.last_error


async def test_after_a_failover_it_waits_for_the_restore_then_replicates_back() -> None:
    cloud = Cloud()
    replication, _ = make(cloud)
    await keep_up(replication, m.AppState(active_site="use1"))
    await replication.pass_once()
    await replication.pass_once()
    state = failed_over()
    await keep_up(replication, state)
    (entry,) = replication.figures()
    assert (entry.source, entry.destination, entry.epoch) == ("usw2", "use1", 2)
    east, west = cloud.region(EAST), cloud.region(WEST)
    east.calls.clear()
    west.calls.clear()
    cloud.now += 600
    await replication.pass_once()
    assert east.mutations() == [] and west.mutations() == []  # a restore is due: hands off
    (entry,) = replication.figures()
    assert entry.rpo_seconds is None and "waiting for the volume restore" in entry.last_error

    restore = core.desired_restore(state, SPEC)
    assert restore is not None
    outcome = await VolumeRestorer(cloud).restore(APP, restore, SPEC, state.restores)
    assert len(outcome.volumes) == 2 and not east.mutations()  # nothing asked of use1
    state = core.complete(state, restore, cloud.now, restored=outcome.volumes)
    west.calls.clear()
    await keep_up(replication, state)
    await replication.pass_once()
    restored_ids = sorted(v.volume_id for v in outcome.volumes)
    assert west.mutations() == []  # the restored volumes are still being created
    assert replication.volume_states() == dict.fromkeys(restored_ids, "creating")
    (entry,) = replication.figures()
    assert "is creating" in entry.last_error and "snapshotted once made" in entry.last_error
    west.settle("available")
    await replication.pass_once()
    assert sorted(west.mutations()) == sorted(f"create {v}" for v in restored_ids)
    assert replication.volume_states() == dict.fromkeys(restored_ids, "available")
    await replication.pass_once()
    copies = [s for s in east.snapshots.values() if s.tags.get(TAG_EPOCH) == "2"]
    assert {s.tags[TAG_VOLUME] for s in copies} == {"vol-a", "vol-b"}  # keys kept
    assert {s.tags[TAG_ORIGIN] for s in copies} == {"usw2"}
    (entry,) = replication.figures()
    assert entry.rpo_seconds == 600.0  # use1 holds its own epoch-1 data from t=1000
    await replication.pass_once()
    (entry,) = replication.figures()
    assert entry.rpo_seconds == 0.0 and entry.pending_objects == 0 and entry.last_error == ""


async def restored(cloud: Cloud) -> tuple[m.AppState, tuple[str, str]]:
    """usw2 active after a failover from use1 whose restore made two volumes (creating)."""
    seeded(cloud)
    state = failed_over()
    restore = core.desired_restore(state, SPEC)
    assert restore is not None
    outcome = await VolumeRestorer(cloud).restore(APP, restore, SPEC, state.restores)
    state = core.complete(state, restore, cloud.now, restored=outcome.volumes)
    first, second = (v.volume_id for v in outcome.volumes)
    cloud.region(WEST).calls.clear()
    return state, (first, second)


async def test_a_restored_volume_that_failed_is_reported_and_the_others_go_on() -> None:
    cloud = Cloud()
    replication, events = make(cloud)
    state, (good, bad) = await restored(cloud)
    await keep_up(replication, state)
    west = cloud.region(WEST)
    west.settle("in-use", good)
    west.settle("error", bad)
    for _ in range(2):
        await replication.pass_once()
    creates = [c for c in west.mutations() if c.startswith("create")]
    assert creates == [f"create {good}"]  # once: the next is not due yet
    assert replication.volume_states() == {good: "in-use", bad: "error"}
    (entry,) = replication.figures()
    assert f"{bad} (vol-" in entry.last_error and "is error" in entry.last_error
    assert [r for _, r, _ in events.events] == ["RestoredVolumeFailed"]  # once
    assert bad in events.events[0][2]

    del west.volumes_made[bad]  # deleted by someone
    await replication.pass_once()
    assert replication.volume_states()[bad] == "not-found"
    assert len(events.events) == 1  # the same trouble, already told


async def test_a_restore_the_cloud_could_not_read_says_so_in_status_and_event() -> None:
    """Cinder: a copied backup whose data the target region's backup service cannot reach
    (its backup store is not the one the source wrote to) ends in ``error_restoring``."""
    cloud = Cloud()
    replication, events = make(cloud)
    state, (good, bad) = await restored(cloud)
    await keep_up(replication, state)
    west = cloud.region(WEST)
    west.settle("available", good)
    west.settle("error_restoring", bad)
    await replication.pass_once()
    assert replication.volume_states()[bad] == "error_restoring"
    (entry,) = replication.figures()
    assert f"{bad} (vol-" in entry.last_error and "is error_restoring" in entry.last_error
    assert "backup store" in entry.last_error and "snapshotted once made" not in entry.last_error
    assert [r for _, r, _ in events.events] == ["RestoredVolumeFailed"]
    message = events.events[0][2]
    assert bad in message and "its restore failed in the cloud" in message
    assert "backup store" in message


async def test_a_restored_volume_not_listed_yet_is_waited_for_without_a_warning() -> None:
    cloud = Cloud()
    replication, events = make(cloud)
    state, (first, second) = await restored(cloud)
    west = cloud.region(WEST)
    late = west.volumes_made.pop(second)  # EBS lists a new volume a little later
    await keep_up(replication, state)
    await replication.pass_once()
    assert replication.volume_states() == {first: "creating", second: "not-found"}
    assert events.events == [] and west.mutations() == []
    west.volumes_made[second] = late
    west.settle("available")
    await replication.pass_once()
    assert sorted(west.mutations()) == sorted(f"create {v}" for v in (first, second))
    assert events.events == []


async def test_when_restored_volumes_cannot_be_looked_up_the_last_states_hold() -> None:
    cloud = Cloud()
    replication, events = make(cloud)
    state, (first, _second) = await restored(cloud)
    west = cloud.region(WEST)
    await keep_up(replication, state)
    await replication.pass_once()  # both creating
    west.settle("available", first)
    west.fail_lookups = True
    await replication.pass_once()
    assert west.mutations() == []  # still creating, as far as anyone knows
    (entry,) = replication.figures()
    assert "not looked at: ConnectionError: reset by peer" in entry.last_error
    assert f"{first} (vol-a) is creating" in entry.last_error

    cloud.planes[WEST] = ApiPlaneState.IMPAIRED
    west.calls.clear()
    await replication.pass_once()
    assert west.calls == []  # not even asked
    (entry,) = replication.figures()
    assert "API plane Impaired" in entry.last_error and events.events == []


async def test_a_first_look_at_restored_volumes_lets_them_be_snapshotted() -> None:
    """A volume never seen (its lookup failed from the start) counts as ready: a snapshot of
    it that fails is retried, as before Lifeboat looked at restored volumes at all."""
    cloud = Cloud()
    replication, _ = make(cloud)
    state, volumes = await restored(cloud)
    west = cloud.region(WEST)
    west.fail_lookups = True
    await keep_up(replication, state)
    await replication.pass_once()
    assert sorted(west.mutations()) == sorted(f"create {v}" for v in volumes)


async def test_once_all_are_ready_restored_volumes_are_looked_up_every_minute() -> None:
    cloud = Cloud()
    replication, _ = make(cloud)
    state, _volumes = await restored(cloud)
    west = cloud.region(WEST)
    west.settle("available")
    await keep_up(replication, state)
    looks = []
    for _ in range(8):
        west.calls.clear()
        await replication.pass_once()
        looks.append(west.calls.count("volumes"))
        cloud.now += 20
    assert looks == [1, 0, 0, 1, 0, 0, 1, 0]


async def test_a_failover_during_a_look_up_leaves_nothing_of_it() -> None:
    cloud = Cloud()
    replication, events = make(cloud)
    state, _volumes = await restored(cloud)
    west = cloud.region(WEST)
    west.settle("error")
    await keep_up(replication, state)
    looked_up = west.volumes_by_id

    async def failing_back(volume_ids: Sequence[str]) -> list[VolumeInfo]:
        found = await looked_up(volume_ids)
        back = m.AppState(active_site="use1", epoch=3, restores=state.restores)
        await keep_up(replication, back)
        return found

    west.volumes_by_id = failing_back  # type: ignore[method-assign]
    await replication.pass_once()
    assert replication.volume_states() == {} and events.events == []
    assert west.mutations() == []


async def test_the_volumes_of_an_earlier_restore_are_not_looked_at_while_a_restore_is_due() -> None:
    cloud = Cloud()
    replication, events = make(cloud)
    seeded(cloud)
    state = failed_over()
    restore = core.desired_restore(state, SPEC)
    assert restore is not None
    outcome = await VolumeRestorer(cloud).restore(APP, restore, SPEC, state.restores)
    state = core.complete(state, restore, cloud.now, restored=outcome.volumes)
    west = cloud.region(WEST)
    west.volumes_made.clear()  # deleted once the app failed back to use1
    again = replace(  # and now usw2 again, epoch 4: its restore is due
        state,
        epoch=4,
        last_failover=m.FailoverRecord(4, "use1", "usw2", "again", 0.0, None),
    )
    assert core.desired_restore(again, SPEC) is not None
    await keep_up(replication, again)
    west.calls.clear()
    await replication.pass_once()
    assert "volumes" not in west.calls and west.mutations() == []
    assert replication.volume_states() == {} and events.events == []


async def test_a_pass_stops_calling_as_soon_as_the_epoch_moves() -> None:
    cloud = Cloud()
    replication, _ = make(cloud)
    await keep_up(replication, m.AppState(active_site="use1"))

    async def failover_now() -> None:
        await keep_up(replication, failed_over())

    cloud.region(EAST).before_create = failover_now
    await replication.pass_once()
    assert cloud.region(EAST).mutations() == ["create vol-a"]  # vol-b is never snapshotted


async def test_failures_are_counted_reported_once_and_retried() -> None:
    cloud = Cloud()
    replication, events = make(cloud)
    await keep_up(replication, m.AppState(active_site="use1"))
    await replication.pass_once()

    async def broken(snapshot: Snapshot, tags: Mapping[str, str]) -> Snapshot:
        raise ConnectionError("reset by peer")

    cloud.region(WEST).copy_from = broken  # type: ignore[method-assign]
    await replication.pass_once()
    await replication.pass_once()
    (entry,) = replication.figures()
    assert entry.errors == 4  # two volumes, two passes
    assert "ConnectionError: reset by peer" in entry.last_error
    assert [r for _, r, _ in events.events] == ["VolumeCopyFailed"]


async def test_datasets_leaving_the_spec_leave_the_figures() -> None:
    cloud = Cloud()
    replication, _ = make(cloud)
    await keep_up(replication, m.AppState(active_site="use1"))
    assert replication.figures()
    bare = ResilientAppSpec.model_validate(app_spec())
    await keep_up(replication, m.AppState(active_site="use1"), bare)
    assert replication.figures() == []


# --------------------------------------------------------------------------- restores


def seeded(cloud: Cloud, *, pending: bool = False) -> None:
    """use1 replicated vol-a (twice) and vol-b to usw2 under epoch 1."""
    scope = rv.Scope(APP, "db", "use1", 1)
    for volume, taken in (("vol-a", 100.0), ("vol-a", 200.0), ("vol-b", 150.0)):
        source = Snapshot(
            f"src-{volume}-{taken}",
            volume,
            EAST,
            "completed",
            taken,
            8,
            scope.snapshot_tags(rv.SourceVolume(volume, volume)),
        )
        held = rv.holding(source)
        assert held is not None
        copy = Snapshot(
            f"copy-{volume}-{taken}",
            volume,
            WEST,
            "pending" if pending and volume == "vol-b" else "completed",
            taken + 5,
            8,
            scope.copy_tags(held, "usw2"),
        )
        cloud.region(WEST).snapshots[copy.id] = copy


async def test_a_restore_uses_the_newest_copies_spread_over_the_zones() -> None:
    cloud = Cloud()
    seeded(cloud)
    state = failed_over()
    action = core.desired_restore(state, SPEC)
    assert action is not None
    outcome = await VolumeRestorer(cloud).restore(APP, action, SPEC, state.restores)
    made = {v.volume: (v.snapshot_id, v.zone, v.snapshot_time) for v in outcome.volumes}
    assert made == {
        "vol-a": ("copy-vol-a-200.0", "us-west-2a", 200.0),
        "vol-b": ("copy-vol-b-150.0", "us-west-2b", 150.0),
    }
    assert outcome.missing == () and outcome.made == 2
    volume = cloud.region(WEST).volumes_made[outcome.volumes[0].volume_id]
    assert volume.tags[TAG_RESTORED_FOR] == "usw2/2"
    assert cloud.region(EAST).calls == []  # static stability


async def test_an_operator_without_a_restorer_refuses_restores_as_unsupported() -> None:
    state = failed_over()
    action = core.desired_restore(state, SPEC)
    assert action is not None
    with pytest.raises(CapabilityUnsupported, match="restores no volumes") as refused:
        await NoVolumeRestorer().restore(APP, action, SPEC, state.restores)
    assert refused.value.reason == "VolumesUnsupported"


async def test_a_repeated_restore_finds_what_it_made() -> None:
    cloud = Cloud()
    seeded(cloud)
    state = failed_over()
    action = core.desired_restore(state, SPEC)
    assert action is not None
    restorer = VolumeRestorer(cloud)
    first = await restorer.restore(APP, action, SPEC, state.restores)
    again = await restorer.restore(
        APP, replace(action, zones=("us-west-2b",)), SPEC, state.restores
    )
    assert again.volumes == first.volumes and again.made == 0
    assert len(cloud.region(WEST).volumes_made) == 2
    later = await restorer.restore(APP, replace(action, epoch=4), SPEC, state.restores)
    assert later.made == 2  # another failover, other volumes


async def test_a_restore_waits_for_a_copy_in_flight_and_reports_missing_ones() -> None:
    cloud = Cloud()
    seeded(cloud, pending=True)
    state = failed_over()
    action = core.desired_restore(state, SPEC)
    assert action is not None
    restorer = VolumeRestorer(cloud)
    with pytest.raises(CopyPending, match="db/vol-b"):
        await restorer.restore(APP, action, SPEC, state.restores)
    bigger = spec(volume_ids=("vol-a", "vol-c"))
    outcome = await restorer.restore(APP, action, bigger, state.restores)
    assert outcome.missing == ("db/vol-c",)
    assert [v.volume for v in outcome.volumes] == ["vol-a"]  # made by the first call


async def test_a_failback_restores_the_volumes_the_last_restore_made() -> None:
    """At failback the protected volumes are the ones the previous failover restored."""
    cloud = Cloud()
    seeded(cloud)
    first = failed_over()
    action = core.desired_restore(first, SPEC)
    assert action is not None
    outcome = await VolumeRestorer(cloud).restore(APP, action, SPEC, first.restores)
    state = core.complete(first, action, 1.0, restored=outcome.volumes)
    back = m.AppState(
        active_site="use1",
        epoch=3,
        last_failover=m.FailoverRecord(3, "usw2", "use1", "back", 2.0, None),
        restores=state.restores,
    )
    scope = rv.Scope(APP, "db", "usw2", 2)
    for v in outcome.volumes:
        made = Snapshot(
            f"s-{v.volume}",
            v.volume_id,
            WEST,
            "completed",
            500.0,
            8,
            scope.snapshot_tags(rv.SourceVolume(v.volume, v.volume_id)),
        )
        held = rv.holding(made)
        assert held is not None
        copy = replace(made, id=f"c-{v.volume}", region=EAST, tags=scope.copy_tags(held, "use1"))
        cloud.region(EAST).snapshots[copy.id] = copy
    action = core.desired_restore(back, SPEC)
    assert action is not None and action.from_site == "usw2"
    result = await VolumeRestorer(cloud).restore(APP, action, SPEC, back.restores)
    assert {v.volume: v.snapshot_id for v in result.volumes} == {
        "vol-a": "c-vol-a",
        "vol-b": "c-vol-b",
    }


async def test_a_deleted_cloudprovider_stops_its_flows_and_says_so() -> None:
    """Regression: deleting a CloudProvider left its volume flows failing pass after pass
    with no word that replication had stopped."""
    cloud = Cloud()
    replication, events = make(cloud)
    state = m.AppState(active_site="use1")
    await keep_up(replication, state)
    await replication.pass_once()
    await replication.pass_once()
    east, west = cloud.region(EAST), cloud.region(WEST)
    calls = len(east.calls) + len(west.calls)
    cloud.withdrawn["aws-sandbox"] = "ProviderNotFound"
    for _ in range(3):
        cloud.now += 61
        await replication.pass_once()
    assert len(east.calls) + len(west.calls) == calls  # nothing more is called
    (entry,) = replication.figures()
    assert entry.stopped and "replication stopped" in entry.last_error
    assert "ProviderNotFound" in entry.last_error
    stopped = [e for e in events.events if e[1] == "ReplicationStopped"]
    assert len(stopped) == 1 and stopped[0][0] == "Warning"  # once, not every pass
    replicating, _ = replication_conditions(replication.figures(), 600)
    assert replicating[:2] == ("False", "ReplicationStopped")

    del cloud.withdrawn["aws-sandbox"]  # made again: it starts again by itself
    cloud.now += 61
    await replication.pass_once()
    await replication.pass_once()
    (entry,) = replication.figures()
    assert not entry.stopped and "stopped" not in entry.last_error
    assert len(east.calls) + len(west.calls) > calls
