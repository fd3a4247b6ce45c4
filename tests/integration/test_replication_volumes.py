"""Volume replication end to end, through the operator: the real kube-apiserver, moto
serving EBS in two regions behind their fault proxies (and the OpenStack world's Cinder
emulator in two regions), zonal endpoints that fail.

Snapshots are taken on schedule at the active site, copied into the other site's region
and pruned to ``retain`` at both; a failover restores the volumes from the newest copies
in the new site's zones, with nothing asked of the failed region, and replication
reverses under the new epoch. Figures are read back from the app's status, the metrics
and the clouds themselves.

The operator runs with ``volume_interval_override`` (snapshots every two seconds): the API
keeps ``intervalSeconds`` at a minute or more.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller import metrics
from controller.api.names import (
    TAG_APP,
    TAG_EPOCH,
    TAG_KIND,
    TAG_ORIGIN,
    TAG_RESTORED_FOR,
    TAG_TAKEN,
    TAG_VOLUME,
    TAG_VOLUME_ID,
)
from controller.operator.runner import in_background
from sandbox.faults import FaultSpec
from sandbox.openstack.cinder import BackupStore
from sandbox.openstack.cloud import OpenStackWorld
from sandbox.world import OPENSTACK_EXAMPLES, Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = pytest.mark.integration

INTERVAL = 2.0
RETAIN = 2
RPO_TARGET = 30


@pytest.fixture
def volume_apps(sandbox: Sandbox) -> Iterator[Apps]:
    """Apps, with an operator that snapshots volumes every ``INTERVAL`` seconds."""
    harness = Apps(sandbox)
    with in_background(sandbox.operator_config(volume_interval_override=INTERVAL)):
        try:
            yield harness
        finally:
            for endpoint in sandbox.zones.endpoints:
                endpoint.serve()
            for proxy in sandbox.proxies.values():
                proxy.clear_faults()
            harness.delete_all()


def replicated(sites: list[str], volume_ids: list[str]) -> Callable[[dict[str, Any]], None]:
    """A mutation giving the app the volume dataset ``db``: ``volume_ids`` at the first
    site, replicated to the second."""

    def mutate(body: dict[str, Any]) -> None:
        body["spec"]["replication"] = {
            "rpoTargetSeconds": RPO_TARGET,
            "volumes": [
                {
                    "name": "db",
                    "intervalSeconds": 60,
                    "retain": RETAIN,
                    "locations": [
                        {"site": sites[0], "volumeIds": volume_ids},
                        {"site": sites[1]},
                    ],
                }
            ],
        }

    return mutate


def entry(apps: Apps, ns: str, name: str, destination: str) -> dict[str, Any] | None:
    """The app's ``status.replication`` entry of dataset db towards ``destination``."""
    entries = apps.status(ns, name).get("replication", [])
    return next(
        (e for e in entries if (e["dataset"], e["destination"]) == ("db", destination)), None
    )


def measured(
    apps: Apps, ns: str, name: str, destination: str, source: str, epoch: int, copies: int
) -> Callable[[], dict[str, Any] | None]:
    """A check: the entry replicates from ``source`` under ``epoch``, has an RPO within the
    target and counts at least ``copies`` copies."""

    def check() -> dict[str, Any] | None:
        found = entry(apps, ns, name, destination)
        ok = (
            found is not None
            and (found["source"], found["epoch"]) == (source, epoch)
            and found.get("rpoSeconds") is not None
            and found["rpoSeconds"] < RPO_TARGET
            and found.get("copiedObjects", 0) >= copies
        )
        return found if ok else None

    return check


def ebs_snapshots(sandbox: Sandbox, region: str, app: str) -> list[dict[str, Any]]:
    """Every snapshot of ``app`` in ``region``, as moto holds them, with tags as a dict."""
    answer = sandbox.aws_client("ec2", region).describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": f"tag:{TAG_APP}", "Values": [app]}]
    )
    return [
        {**s, "Tags": {t["Key"]: t["Value"] for t in s.get("Tags", [])}}
        for s in answer["Snapshots"]
    ]


def by_volume(snapshots: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for snapshot in snapshots:
        grouped[snapshot["Tags"][TAG_VOLUME]].append(snapshot)
    return grouped


def sample(name: str, ns: str, app: str, destination: str) -> float | None:
    labels = {"namespace": ns, "app": app, "dataset": "db", "destination": destination}
    return metrics.REGISTRY.get_sample_value(name, labels)


def stop_site(sandbox: Sandbox, site: str) -> None:
    for endpoint in sandbox.zones.site_endpoints(site):
        endpoint.down()


def restore_of(apps: Apps, ns: str, name: str, site: str, epoch: int) -> dict[str, Any] | None:
    restores = apps.status(ns, name).get("volumeRestores", [])
    return next((r for r in restores if (r["site"], r["epoch"]) == (site, epoch)), None)


# --------------------------------------------------------------------------- AWS


def test_volumes_are_replicated_pruned_restored_and_replicated_back(
    volume_apps: Apps, sandbox: Sandbox
) -> None:
    apps = volume_apps
    east = sandbox.aws_client("ec2", "us-east-1")
    volumes = [
        east.create_volume(AvailabilityZone=zone, Size=1)["VolumeId"]
        for zone in ("us-east-1a", "us-east-1b")
    ]
    ns, name = apps.create(replicated(["use1", "usw2"], volumes))
    app = f"{ns}/{name}"
    apps.wait_serving(ns, name)

    # On schedule: snapshots at use1, copies in us-west-2, both pruned to RETAIN.
    figures = wait_for(
        measured(apps, ns, name, "usw2", "use1", 1, 3 * len(volumes) + RETAIN),
        90,
        "several rounds of snapshots copied to usw2",
    )
    assert figures["kind"] == "Volumes"
    assert figures["errors"] == 0 and figures["newestCopyTime"]
    source = by_volume(ebs_snapshots(sandbox, "us-east-1", app))
    copies = by_volume(ebs_snapshots(sandbox, "us-west-2", app))
    assert set(source) == set(copies) == set(volumes)
    for volume in volumes:
        # More were made than are kept: pruned to RETAIN (plus at most one not yet pruned).
        assert RETAIN <= len(copies[volume]) <= RETAIN + 1, copies[volume]
        assert 1 <= len(source[volume]) <= RETAIN + 1, source[volume]
        assert {s["Tags"][TAG_KIND] for s in source[volume]} == {"snapshot"}
        assert {s["Tags"][TAG_KIND] for s in copies[volume]} == {"copy"}
        assert {s["Tags"][TAG_EPOCH] for s in copies[volume]} == {"1"}
    conditions = {c["type"]: c for c in apps.status(ns, name)["conditions"]}
    assert conditions["Replicating"]["status"] == "True"
    assert conditions["RPOBreached"]["status"] == "False"
    rpo = sample("lifeboat_replication_rpo_seconds", ns, name, "usw2")
    assert rpo is not None and rpo < RPO_TARGET
    copied = sample("lifeboat_replication_objects_total", ns, name, "usw2")
    assert copied is not None and copied >= 3 * len(volumes) + RETAIN
    assert sample("lifeboat_replication_pending_objects", ns, name, "usw2") is not None

    # Failover: the volumes come back in usw2's zones from the newest copies.
    newest_before = {
        volume: max(float(s["Tags"][TAG_TAKEN]) for s in items)
        for volume, items in by_volume(ebs_snapshots(sandbox, "us-west-2", app)).items()
    }
    stop_site(sandbox, "use1")
    restore = wait_for(
        lambda: restore_of(apps, ns, name, "usw2", 2), 60, "the volume restore in usw2"
    )
    made = {v["volume"]: v for v in restore["volumes"]}
    assert set(made) == set(volumes) and restore.get("missing", []) == []
    west = sandbox.aws_client("ec2", "us-west-2")
    described = west.describe_volumes(VolumeIds=[v["volumeId"] for v in made.values()])
    found = {v["VolumeId"]: v for v in described["Volumes"]}
    assert {v["AvailabilityZone"] for v in found.values()} == {"us-west-2a", "us-west-2b"}
    for volume, record in made.items():
        restored = found[record["volumeId"]]
        assert restored["AvailabilityZone"] == record["zone"]
        assert restored["SnapshotId"] == record["snapshotId"]
        tags = {t["Key"]: t["Value"] for t in restored["Tags"]}
        assert tags[TAG_RESTORED_FOR] == "usw2/2" and tags[TAG_VOLUME] == volume
        assert float(tags[TAG_TAKEN]) >= newest_before[volume]  # the newest copy
    events = wait_for(
        lambda: [m for _, r, m in apps.events(ns, name) if r == "VolumesRestored"],
        10,
        "the VolumesRestored event",
    )
    assert "restored at usw2 from the newest copies, epoch 2" in events[0]

    # Replication reverses: the restored volumes are snapshotted and copied to use1.
    wait_for(
        measured(apps, ns, name, "use1", "usw2", 2, len(volumes)),
        60,
        "replication back to use1 under epoch 2",
    )
    assert entry(apps, ns, name, "usw2") is None  # usw2 is the source now
    back = [
        s
        for s in ebs_snapshots(sandbox, "us-east-1", app)
        if s["Tags"][TAG_EPOCH] == "2" and s["Tags"][TAG_KIND] == "copy"
    ]
    assert {s["Tags"][TAG_ORIGIN] for s in back} == {"usw2"}
    assert {s["Tags"][TAG_VOLUME] for s in back} == set(volumes)
    taken = [
        s for s in ebs_snapshots(sandbox, "us-west-2", app) if s["Tags"][TAG_KIND] == "snapshot"
    ]
    assert {s["Tags"][TAG_VOLUME_ID] for s in taken} <= {v["volumeId"] for v in made.values()}
    assert {s["VolumeId"] for s in taken} <= {v["volumeId"] for v in made.values()}
    record = restore_of(apps, ns, name, "usw2", 2)
    assert record is not None
    assert [v.get("state") for v in record["volumes"]] == ["available"] * len(volumes)


def test_a_restore_needs_nothing_of_the_impaired_region(
    volume_apps: Apps, sandbox: Sandbox
) -> None:
    apps = volume_apps
    east = sandbox.aws_client("ec2", "us-east-1")
    volume = east.create_volume(AvailabilityZone="us-east-1c", Size=1)["VolumeId"]
    ns, name = apps.create(replicated(["use1", "usw2"], [volume]))
    apps.wait_serving(ns, name)
    wait_for(measured(apps, ns, name, "usw2", "use1", 1, 1), 60, "a first copy in usw2")

    proxy = sandbox.proxies["us-east-1"]
    proxy.set_faults(FaultSpec(throttle=1.0, seed=7))

    def impaired() -> bool:
        regions = (apps.provider("aws-sandbox").get("status") or {}).get("regions", [])
        return any(r["name"] == "us-east-1" and r["apiPlane"] == "Impaired" for r in regions)

    wait_for(impaired, 60, "us-east-1 judged Impaired")
    proxy.clear_records()
    stop_site(sandbox, "use1")
    restore = wait_for(
        lambda: restore_of(apps, ns, name, "usw2", 2), 60, "the volume restore in usw2"
    )
    (made,) = restore["volumes"]
    west = sandbox.aws_client("ec2", "us-west-2")
    restored = west.describe_volumes(VolumeIds=[made["volumeId"]])["Volumes"][0]
    assert restored["SnapshotId"] == made["snapshotId"]

    def held_back() -> dict[str, Any] | None:
        found = entry(apps, ns, name, "use1")
        return found if found and "API plane Impaired" in found.get("lastError", "") else None

    held = wait_for(held_back, 30, "replication back to use1 held")
    assert (held["source"], held["epoch"]) == ("usw2", 2)
    assert proxy.count(mutating=True) == 0  # static stability: nothing sent to change it


# --------------------------------------------------------------------------- OpenStack

ONE, TWO = "RegionOne", "RegionTwo"


@pytest.fixture
def os_volume_apps(openstack_sandbox: Sandbox, openstack_world: OpenStackWorld) -> Iterator[Apps]:
    """Apps from the OpenStack example, each in a Designate zone of its own, with an
    operator that snapshots (backs up) volumes every ``INTERVAL`` seconds."""
    zone_name = f"vol-{uuid.uuid4().hex[:8]}.test."
    dns = openstack_world.direct_connection(ONE).dns
    zone = dns.create_zone(name=zone_name, email="ops@lifeboat.test", ttl=300)
    wait_for(lambda: dns.get_zone(zone.id).status == "ACTIVE", 30, f"zone {zone_name} active")
    harness = Apps(openstack_sandbox, examples=OPENSTACK_EXAMPLES, zone=zone_name)
    config = openstack_sandbox.operator_config(volume_interval_override=INTERVAL)
    try:
        with in_background(config):
            try:
                yield harness
            finally:
                for endpoint in openstack_sandbox.zones.endpoints:
                    endpoint.serve()
                harness.delete_all()
    finally:
        dns.delete_zone(zone, ignore_missing=True)


@pytest.mark.openstack
def test_cinder_backups_are_copied_across_regions_and_restored(
    os_volume_apps: Apps,
    openstack_sandbox: Sandbox,
    openstack_world: OpenStackWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apps = os_volume_apps
    storage = openstack_world.direct_connection(ONE).block_storage
    made = storage.create_volume(size=1, availability_zone=openstack_world.zones(ONE)[0])
    storage.wait_for_status(made, "available", ["error"], interval=0.1, wait=60)
    openstack_world.cinder(ONE).write_volume(made.id, b"orders as of the failure")

    def mutate(body: dict[str, Any]) -> None:
        body["spec"]["traffic"]["hostedZoneName"] = apps.zone
        replicated(["os1", "os2"], [made.id])(body)

    ns, name = apps.create(mutate)
    app = f"{ns}/{name}"
    apps.wait_serving(ns, name, timeout=60)
    wait_for(
        measured(apps, ns, name, "os2", "os1", 1, 3 + RETAIN),
        120,
        "backups copied to RegionTwo for several rounds",
    )

    def backups(region: str) -> list[Any]:
        return [
            b for b in openstack_world.cinder(region).backups() if b.metadata.get(TAG_APP) == app
        ]

    copies = [b for b in backups(TWO) if b.status != "deleting"]
    assert RETAIN <= len(copies) <= RETAIN + 1  # pruned
    assert {b.metadata[TAG_KIND] for b in copies} == {"copy"}

    # Restored volumes take a while to be made: their backups wait for them, not fail.
    cinder_two = openstack_world.cinder(TWO)
    monkeypatch.setattr(cinder_two, "create_seconds", 4 * INTERVAL)
    for endpoint in openstack_sandbox.zones.site_endpoints("os1"):
        endpoint.down()
    restore = wait_for(
        lambda: restore_of(apps, ns, name, "os2", 2), 90, "the volume restore in os2"
    )
    (record,) = restore["volumes"]
    assert record["volume"] == made.id
    assert record["zone"] in openstack_world.zones(TWO)
    restored = next(v for v in openstack_world.cinder(TWO).volumes() if v.id == record["volumeId"])
    assert restored.availability_zone == record["zone"]
    assert restored.metadata[TAG_RESTORED_FOR] == "os2/2"

    def made_there() -> bool:
        volumes = openstack_world.cinder(TWO).volumes()
        state = next(v for v in volumes if v.id == restored.id).status
        return state not in ("creating", "restoring-backup")

    # The data arrive from the backup store (shared by both regions) as the restore ends.
    wait_for(made_there, 4 * INTERVAL + 30, "the restore read from the backup store")
    assert openstack_world.cinder(TWO).read_volume(restored.id) == b"orders as of the failure"
    wait_for(
        measured(apps, ns, name, "os1", "os2", 2, 1),
        90,
        "replication back to os1 under epoch 2",
    )
    back = [b for b in backups(ONE) if b.metadata.get(TAG_EPOCH) == "2"]
    assert back and {b.metadata[TAG_ORIGIN] for b in back} == {"os2"}
    # Backed up once made: no attempt failed on a volume still being restored.
    back_entry = entry(apps, ns, name, "os1")
    assert back_entry is not None and back_entry["errors"] == 0
    after = restore_of(apps, ns, name, "os2", 2)
    assert after is not None
    assert [v["state"] for v in after["volumes"]] in (["available"], ["backing-up"])


@pytest.mark.openstack
def test_a_cinder_restore_without_a_reachable_backup_store_fails_and_says_so(
    os_volume_apps: Apps,
    openstack_sandbox: Sandbox,
    openstack_world: OpenStackWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Cinder copy is an imported backup record: its data stay in the source region's
    backup store. When RegionTwo's backup service reaches another store, the copies are
    imported all the same, but the failover's restore ends in ``error_restoring``, and
    Lifeboat says so (status, Event, the dataset's lastError) instead of claiming it."""
    apps = os_volume_apps
    monkeypatch.setattr(openstack_world.cinder(TWO), "backup_store", BackupStore("two-only"))
    storage = openstack_world.direct_connection(ONE).block_storage
    made = storage.create_volume(size=1, availability_zone=openstack_world.zones(ONE)[0])
    storage.wait_for_status(made, "available", ["error"], interval=0.1, wait=60)
    openstack_world.cinder(ONE).write_volume(made.id, b"orders as of the failure")

    def mutate(body: dict[str, Any]) -> None:
        body["spec"]["traffic"]["hostedZoneName"] = apps.zone
        replicated(["os1", "os2"], [made.id])(body)

    ns, name = apps.create(mutate)
    apps.wait_serving(ns, name, timeout=60)
    wait_for(measured(apps, ns, name, "os2", "os1", 1, 1), 120, "a backup copied to RegionTwo")

    for endpoint in openstack_sandbox.zones.site_endpoints("os1"):
        endpoint.down()
    restore = wait_for(
        lambda: restore_of(apps, ns, name, "os2", 2), 90, "the volume restore in os2"
    )
    (record,) = restore["volumes"]
    failed = wait_for(
        lambda: [m for _, r, m in apps.events(ns, name) if r == "RestoredVolumeFailed"],
        60,
        "the RestoredVolumeFailed event",
    )
    assert record["volumeId"] in failed[0] and "is error_restoring" in failed[0]
    assert "backup store" in failed[0]
    volume = next(v for v in openstack_world.cinder(TWO).volumes() if v.id == record["volumeId"])
    assert volume.status == "error_restoring"
    assert openstack_world.cinder(TWO).read_volume(volume.id) == b""

    def reported() -> dict[str, Any] | None:
        now = restore_of(apps, ns, name, "os2", 2)
        states = [v.get("state") for v in (now or {}).get("volumes", [])]
        back = entry(apps, ns, name, "os1")
        error = (back or {}).get("lastError", "")
        return now if states == ["error_restoring"] and "error_restoring" in error else None

    wait_for(reported, 60, "the failed restore in status.volumeRestores and lastError")
