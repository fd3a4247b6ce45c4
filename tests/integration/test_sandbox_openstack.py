"""openstacksdk -> fault proxies -> the sandbox's OpenStack (real Keystone and Swift, emulators).

Everything here goes through the public catalog, as Lifeboat's OpenStack
provider will: password authentication against Keystone, endpoints found in
the catalog, each region's API plane behind its own fault proxy.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
from openstack import exceptions as sdk_exceptions
from openstack import resource as sdk_resource
from yarl import URL

from sandbox.faults import Fault, FaultSpec
from sandbox.openstack.base import KeystoneTokenValidator, ServiceCredentials
from sandbox.openstack.cinder import BackupStore
from sandbox.openstack.cloud import (
    COMPUTE,
    DNS,
    IDENTITY,
    NOVA_URL_ENV,
    OBJECT_STORE,
    VOLUME,
    OpenStackWorld,
    OpenStackWorldError,
)
from sandbox.openstack.env import OpenStackEnv
from sandbox.openstack.nova import IMAGES, NO_VALID_HOST, NovaEmulator
from sandbox.procs import free_loopback_port

pytestmark = pytest.mark.integration

ONE: Final = "RegionOne"
TWO: Final = "RegionTwo"
IMAGE: Final = IMAGES[0].id
FLAVOR: Final = "1"  # m1.tiny
T = TypeVar("T")


def emulated_nova(world: OpenStackWorld, region: str) -> NovaEmulator:
    """The region's Nova emulator; skips the test when a real Nova serves the region."""
    if not world.compute_emulated(region):
        pytest.skip(f"a real Nova serves {region} (${NOVA_URL_ENV}); this test needs the emulator")
    return world.nova(region)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def eventually(check: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def bare_request(
    method: str, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """A bare HTTP call (no SDK): status, headers (lower-case names), the JSON body or text."""
    target = URL(url)
    connection = http.client.HTTPConnection(target.host or "127.0.0.1", target.port, timeout=10)
    try:
        connection.request(method, target.raw_path_qs, headers=headers or {})
        response = connection.getresponse()
        status, raw = response.status, response.read()
        lowered = {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()
    try:
        return status, lowered, json.loads(raw)
    except ValueError:
        return status, lowered, raw.decode(errors="replace")


# --- Keystone and the catalog -----------------------------------------------------------------


def test_password_auth_gives_a_catalog_with_both_regions_behind_the_proxies(
    openstack_cloud: OpenStackWorld,
) -> None:
    world = openstack_cloud
    conn = world.connection(ONE)
    access = conn.session.auth.get_access(conn.session)
    assert access.username == "lifeboat"
    assert access.project_name == "lifeboat"
    assert "member" in access.role_names

    catalog = access.service_catalog.catalog
    public = {
        (entry["type"], endpoint["region_id"]): endpoint["url"]
        for entry in catalog
        for endpoint in entry["endpoints"]
        if endpoint["interface"] == "public"
    }
    for region in (ONE, TWO):
        for service in (IDENTITY, OBJECT_STORE, COMPUTE, DNS, VOLUME):
            assert public[(service, region)].startswith(world.proxy(region, service).url)
    assert public[(OBJECT_STORE, ONE)].endswith(f"/v1/AUTH_{access.project_id}")
    # Each region's API plane has proxies of its own.
    assert world.proxy(ONE, COMPUTE).url != world.proxy(TWO, COMPUTE).url
    assert world.proxy(ONE, IDENTITY) is world.proxy(TWO, IDENTITY)


def test_connection_per_region_finds_that_regions_endpoints(
    openstack_cloud: OpenStackWorld,
) -> None:
    for region in (ONE, TWO):
        conn = openstack_cloud.connection(region)
        assert conn.compute.get_endpoint().startswith(openstack_cloud.proxy(region, COMPUTE).url)
        assert conn.block_storage.get_endpoint().startswith(
            openstack_cloud.proxy(region, VOLUME).url
        )


def test_clouds_yaml_describes_the_lifeboat_cloud(openstack_cloud: OpenStackWorld) -> None:
    import yaml

    cloud = yaml.safe_load(openstack_cloud.clouds_yaml())["clouds"]["lifeboat"]
    assert cloud["auth"]["auth_url"] == openstack_cloud.auth_url
    assert cloud["auth"]["username"] == "lifeboat"
    assert cloud["regions"] == [ONE, TWO]


def test_wrong_password_is_refused_by_keystone(openstack_cloud: OpenStackWorld) -> None:
    import openstack

    auth = openstack_cloud.credentials.auth() | {"password": "wrong"}
    conn = openstack.connect(load_yaml_config=False, load_envvars=False, auth=auth, region_name=ONE)
    with pytest.raises(sdk_exceptions.SDKException, match=r"HTTP 401"):
        conn.authorize()


# --- Swift --------------------------------------------------------------------------------------


@pytest.mark.parametrize("region", [ONE, TWO])
def test_swift_containers_and_objects(openstack_cloud: OpenStackWorld, region: str) -> None:
    store = openstack_cloud.connection(region).object_store
    container = unique("bucket")
    store.create_container(container)
    store.upload_object(container, "greeting.txt", data=b"hello from " + region.encode())
    store.upload_object(container, "nested/path/data.bin", data=bytes(range(256)))

    assert store.download_object("greeting.txt", container=container) == (
        b"hello from " + region.encode()
    )
    assert sorted(o.name for o in store.objects(container)) == [
        "greeting.txt",
        "nested/path/data.bin",
    ]
    assert container in [c.name for c in store.containers()]

    store.delete_object("greeting.txt", container=container)
    store.delete_object("nested/path/data.bin", container=container)
    assert list(store.objects(container)) == []
    store.delete_container(container)
    assert container not in [c.name for c in store.containers()]


def test_each_region_has_its_own_swift(openstack_cloud: OpenStackWorld) -> None:
    one = openstack_cloud.connection(ONE).object_store
    two = openstack_cloud.connection(TWO).object_store
    container = unique("only-in-one")
    one.create_container(container)
    one.upload_object(container, "o", data=b"x")
    try:
        assert container not in [c.name for c in two.containers()]
        with pytest.raises(sdk_exceptions.NotFoundException):
            two.download_object("o", container=container)
    finally:
        one.delete_object("o", container=container)
        one.delete_container(container)


def test_swift_refuses_requests_without_a_valid_token(openstack_cloud: OpenStackWorld) -> None:
    conn = openstack_cloud.connection(ONE)
    account_url = conn.object_store.get_endpoint()
    status, headers, _ = bare_request("GET", account_url)
    assert status == 401
    assert headers["www-authenticate"].startswith("Keystone uri=")
    status, _, _ = bare_request("GET", account_url, {"X-Auth-Token": "not-a-token"})
    assert status == 401


# --- Nova ---------------------------------------------------------------------------------------


def test_nova_availability_zones_and_their_state(openstack_cloud: OpenStackWorld) -> None:
    compute = openstack_cloud.connection(ONE).compute
    zones = {z.name: z.state for z in compute.availability_zones()}
    assert zones == {zone: {"available": True} for zone in openstack_cloud.zones(ONE)}

    emulated_nova(openstack_cloud, ONE).set_zone_available("az-1b", False)
    zones = {z.name: z.state for z in compute.availability_zones()}
    assert zones["az-1b"] == {"available": False}
    assert zones["az-1a"] == {"available": True}

    # The detailed list is admin-only, as in Nova's default policy.
    with pytest.raises(sdk_exceptions.ForbiddenException):
        list(compute.availability_zones(details=True))
    admin = openstack_cloud.connection(ONE, admin=True).compute
    detailed = {z.name: z for z in admin.availability_zones(details=True)}
    assert set(detailed) == {"internal", *openstack_cloud.zones(ONE)}
    assert all(
        not service["available"]
        for host in detailed["az-1b"].hosts.values()
        for service in host.values()
    )


def test_nova_server_lifecycle_in_an_availability_zone(openstack_cloud: OpenStackWorld) -> None:
    compute = openstack_cloud.connection(ONE).compute
    nova = emulated_nova(openstack_cloud, ONE)
    name = unique("web")
    build_seconds, nova.build_seconds = nova.build_seconds, 3.0  # room to see BUILD
    try:
        server = compute.create_server(
            name=name,
            image_id=IMAGE,
            flavor_id=FLAVOR,
            networks="none",
            availability_zone="az-1c",
            metadata={"lifeboat.dev/site": "primary"},
        )
        assert compute.get_server(server.id).status == "BUILD"
    finally:
        nova.build_seconds = build_seconds

    server = compute.wait_for_server(server, interval=0.1, wait=15)
    assert server.status == "ACTIVE"
    assert server.availability_zone == "az-1c"
    assert server.metadata == {"lifeboat.dev/site": "primary"}
    assert server.flavor.original_name == "m1.tiny"  # microversion >= 2.47
    assert server.project_id == compute.get_project_id()

    listed = list(compute.servers(name=f"^{name}$"))
    assert [s.id for s in listed] == [server.id]
    assert [s.id for s in compute.servers(details=False, name=name)] == [server.id]

    compute.delete_server(server)
    compute.wait_for_delete(server, interval=0.1, wait=15)
    with pytest.raises(sdk_exceptions.NotFoundException):
        compute.get_server(server.id)


def test_nova_no_valid_host_when_a_zone_is_out_of_capacity(
    openstack_cloud: OpenStackWorld,
) -> None:
    emulated_nova(openstack_cloud, ONE).set_zone_capacity("az-1a", 0)
    compute = openstack_cloud.connection(ONE).compute
    server = compute.create_server(
        name=unique("no-room"),
        image_id=IMAGE,
        flavor_id=FLAVOR,
        networks="none",
        availability_zone="az-1a",
    )
    with pytest.raises(sdk_exceptions.ResourceFailure):
        compute.wait_for_server(server, interval=0.1, wait=15)
    failed = compute.get_server(server.id)
    assert failed.status == "ERROR"
    assert failed.fault["message"] == NO_VALID_HOST
    assert failed.fault["code"] == 500
    compute.delete_server(failed)


def test_nova_unknown_zone_is_a_bad_request(openstack_cloud: OpenStackWorld) -> None:
    compute = openstack_cloud.connection(ONE).compute
    with pytest.raises(sdk_exceptions.BadRequestException, match="availability zone"):
        compute.create_server(
            name=unique("x"),
            image_id=IMAGE,
            flavor_id=FLAVOR,
            networks="none",
            availability_zone="az-2a",  # RegionTwo's
        )


def test_nova_anti_affinity_group_runs_out_of_hosts(openstack_cloud: OpenStackWorld) -> None:
    assert emulated_nova(openstack_cloud, TWO).hosts_per_zone == 2
    compute = openstack_cloud.connection(TWO).compute
    group = compute.create_server_group(name=unique("spread"), policy="anti-affinity")
    assert group.policy == "anti-affinity"  # microversion 2.64 representation
    servers = [
        compute.create_server(
            name=unique("member"),
            image_id=IMAGE,
            flavor_id=FLAVOR,
            networks="none",
            availability_zone="az-2a",
            scheduler_hints={"group": group.id},
        )
        for _ in range(3)
    ]
    statuses = []
    for server in servers:
        try:
            statuses.append(compute.wait_for_server(server, interval=0.1, wait=15).status)
        except sdk_exceptions.ResourceFailure:
            statuses.append("ERROR")
    assert statuses == ["ACTIVE", "ACTIVE", "ERROR"]  # two hosts per zone
    hosts = {compute.get_server(s.id).host_id for s in servers[:2]}
    assert len(hosts) == 2
    assert set(compute.get_server_group(group.id).member_ids) == {s.id for s in servers}
    for server in servers:
        compute.delete_server(server)
    for server in servers:
        compute.wait_for_delete(server, interval=0.1, wait=15)
    compute.delete_server_group(group)


def test_nova_test_hooks_put_servers_in_error_and_shutoff(
    openstack_cloud: OpenStackWorld,
) -> None:
    nova = emulated_nova(openstack_cloud, ONE)
    compute = openstack_cloud.connection(ONE).compute
    server = compute.create_server(
        name=unique("hooked"), image_id=IMAGE, flavor_id=FLAVOR, networks="auto"
    )
    server = compute.wait_for_server(server, interval=0.1, wait=15)
    assert server.addresses["private"][0]["addr"].startswith("198.1")

    nova.set_server_status(server.id, "SHUTOFF")
    assert compute.get_server(server.id).status == "SHUTOFF"
    compute.start_server(server)
    assert compute.get_server(server.id).status == "ACTIVE"
    with pytest.raises(sdk_exceptions.ConflictException):
        compute.start_server(server)

    nova.set_server_status(server.id, "ERROR", fault_message="hypervisor lost")
    failed = compute.get_server(server.id)
    assert (failed.status, failed.fault["message"]) == ("ERROR", "hypervisor lost")
    compute.delete_server(server)


def test_nova_microversion_negotiation_and_headers(openstack_cloud: OpenStackWorld) -> None:
    emulated_nova(openstack_cloud, ONE)
    compute = openstack_cloud.connection(ONE).compute
    response = compute.get("/servers", microversion="2.60")
    assert response.status_code == 200
    assert response.headers["OpenStack-API-Version"] == "compute 2.60"
    assert response.headers["X-OpenStack-Nova-API-Version"] == "2.60"

    legacy = compute.get("/flavors", headers={"X-OpenStack-Nova-API-Version": "2.30"})
    assert legacy.headers["OpenStack-API-Version"] == "compute 2.30"

    too_new = compute.get("/servers", microversion="2.200")
    assert too_new.status_code == 406
    assert too_new.json()["computeFault"]["message"].startswith("Version 2.200 is not supported")
    malformed = compute.get("/servers", headers={"OpenStack-API-Version": "compute 2.x"})
    assert malformed.status_code == 400
    assert "badRequest" in malformed.json()

    # The image proxy API is gone from 2.36 on; older microversions still list images.
    assert compute.get("/images", microversion="2.36").status_code == 404
    assert compute.get("/images", microversion="2.35").json()["images"][0]["id"] == IMAGE

    missing = compute.get(f"/servers/{uuid.uuid4()}", microversion="2.79")
    assert missing.status_code == 404
    assert set(missing.json()) == {"itemNotFound"}


def test_nova_version_documents_need_no_token(openstack_cloud: OpenStackWorld) -> None:
    emulated_nova(openstack_cloud, ONE)
    base = openstack_cloud.proxy(ONE, COMPUTE).url
    status, _, body = bare_request("GET", f"{base}/")
    assert status == 200
    current = next(v for v in body["versions"] if v["status"] == "CURRENT")
    assert (current["id"], current["min_version"], current["version"]) == ("v2.1", "2.1", "2.79")
    assert current["links"][0]["href"] == f"{base}/v2.1/"
    status, _, body = bare_request("GET", f"{base}/v2.1/")
    assert status == 200
    assert body["version"]["version"] == "2.79"


# --- Designate ----------------------------------------------------------------------------------


def test_designate_zones_and_recordsets(openstack_cloud: OpenStackWorld) -> None:
    dns = openstack_cloud.connection(ONE).dns
    name = f"{unique('app')}.example.test."
    zone = dns.create_zone(name=name, email="ops@example.test", ttl=300)
    assert (zone.status, zone.action) == ("PENDING", "CREATE")
    zone = sdk_resource.wait_for_status(dns, zone, "ACTIVE", ["ERROR"], 0.1, 15)
    assert [z.id for z in dns.zones(name=name)] == [zone.id]

    a = dns.create_recordset(zone, name=f"www.{name}", type="A", records=["192.0.2.10"], ttl=60)
    aaaa = dns.create_recordset(zone, name=f"www.{name}", type="AAAA", records=["2001:db8::10"])
    cname = dns.create_recordset(zone, name=f"shop.{name}", type="CNAME", records=[f"www.{name}"])
    assert a.status == "PENDING"
    designate = openstack_cloud.designate(ONE)
    eventually(lambda: designate.resolve(f"www.{name}", "A") == ["192.0.2.10"], "the A record")

    types = sorted(rs.type for rs in dns.recordsets(zone))
    assert types == ["A", "AAAA", "CNAME", "NS", "SOA"]
    assert dns.get_recordset(cname, zone).records == [f"www.{name}"]
    assert [rs.id for rs in dns.recordsets(zone, type="AAAA")] == [aaaa.id]

    dns.update_recordset(a, records=["192.0.2.20", "192.0.2.21"], ttl=30)
    eventually(
        lambda: designate.resolve(f"www.{name}", "A") == ["192.0.2.20", "192.0.2.21"],
        "the updated A record",
    )
    dns.delete_recordset(a, zone)
    eventually(lambda: designate.resolve(f"www.{name}", "A") == [], "the A record gone")

    dns.delete_zone(zone)
    eventually(lambda: not list(dns.zones(name=name)), "the zone gone")


def test_designate_errors_have_designates_shape(openstack_cloud: OpenStackWorld) -> None:
    dns = openstack_cloud.connection(ONE).dns
    name = f"{unique('dup')}.example.test."
    zone = dns.create_zone(name=name, email="ops@example.test")
    try:
        with pytest.raises(sdk_exceptions.ConflictException):
            dns.create_zone(name=name, email="ops@example.test")
        with pytest.raises(sdk_exceptions.BadRequestException):
            dns.create_zone(name="no-trailing-dot.example.test", email="ops@example.test")
        with pytest.raises(sdk_exceptions.BadRequestException, match="zone apex"):
            dns.create_recordset(zone, name=name, type="CNAME", records=[f"x.{name}"])
        with pytest.raises(sdk_exceptions.BadRequestException):
            dns.create_recordset(zone, name=f"a.{name}", type="A", records=["not-an-ip"])

        response = dns.get(f"/zones/{uuid.uuid4()}")
        assert response.status_code == 404
        body = response.json()
        assert (body["code"], body["type"]) == (404, "zone_not_found")
        assert body["request_id"].startswith("req-")
        assert dns.get("/zones/not-a-uuid").json()["type"] == "invalid_uuid"
    finally:
        dns.delete_zone(zone)


# --- Cinder -------------------------------------------------------------------------------------


def test_cinder_volumes_and_backups_move_across_regions(openstack_cloud: OpenStackWorld) -> None:
    one = openstack_cloud.connection(ONE).block_storage
    two = openstack_cloud.connection(TWO).block_storage
    assert {z.name for z in one.availability_zones()} == set(openstack_cloud.zones(ONE))

    volume = one.create_volume(size=2, availability_zone="az-1b", name=unique("data"))
    assert volume.status == "creating"
    volume = one.wait_for_status(volume, "available", ["error"], interval=0.1, wait=15)
    assert (volume.availability_zone, volume.size) == ("az-1b", 2)
    openstack_cloud.cinder(ONE).write_volume(volume.id, b"orders table, epoch 7")

    cinder = openstack_cloud.cinder(ONE)
    backup_seconds, cinder.backup_seconds = cinder.backup_seconds, 3.0  # room to see it
    try:
        backup = one.create_backup(volume_id=volume.id, name=unique("nightly"))
        assert one.get_volume(volume.id).status == "backing-up"
    finally:
        cinder.backup_seconds = backup_seconds
    backup = one.wait_for_status(backup, "available", ["error"], interval=0.1, wait=15)
    assert backup.volume_id == volume.id
    assert backup.id in [b.id for b in one.backups(details=True)]
    assert one.wait_for_status(volume, "available", ["error"], interval=0.1, wait=15)

    # Restore in the same region, as a new volume from the backup.
    copy = one.create_volume(backup_id=backup.id, name=unique("copy"))
    copy = one.wait_for_status(copy, "available", ["error"], interval=0.1, wait=15)
    assert openstack_cloud.cinder(ONE).read_volume(copy.id) == b"orders table, epoch 7"

    # Move the backup to RegionTwo: export its record there, import it here.
    record = one.export_backup(backup)["backup-record"]
    assert record["backup_service"].endswith("SwiftBackupDriver")
    # The record is metadata, as real Cinder's: where the data are, not the data.
    exported = json.loads(base64.b64decode(record["backup_url"]))
    assert exported["id"] == backup.id and exported["container"] == "volumebackups"
    assert exported["service_metadata"].endswith(f"_backup_{backup.id}")
    assert b"orders table" not in base64.b64decode(record["backup_url"])
    assert {"data", "volume_metadata"}.isdisjoint(exported)
    assert openstack_cloud.cinder(ONE).backup_store is openstack_cloud.cinder(TWO).backup_store
    imported = two.post(
        "/backups/import_record",
        json={"backup-record": record},
        microversion="3.71",
    )
    assert imported.status_code == 201, imported.text
    moved = two.wait_for_status(
        two.get_backup(imported.json()["backup"]["id"]), "available", ["error"], 0.1, 15
    )
    assert moved.size == 2
    restored = two.create_volume(backup_id=moved.id, availability_zone="az-2c")
    restored = two.wait_for_status(restored, "available", ["error"], interval=0.1, wait=15)
    assert openstack_cloud.cinder(TWO).read_volume(restored.id) == b"orders table, epoch 7"
    again = two.post("/backups/import_record", json={"backup-record": record})
    assert again.status_code == 400
    assert "already exists" in again.json()["badRequest"]["message"]

    for storage, vol in ((one, copy), (one, volume), (two, restored)):
        storage.delete_volume(vol)
    for storage, item in ((one, backup), (two, moved)):
        storage.delete_backup(item)
    for storage, vol in ((one, copy), (one, volume), (two, restored)):
        storage.wait_for_delete(vol, interval=0.1, wait=15)


def test_a_copied_backup_restores_only_where_its_backup_store_is_reachable(
    openstack_cloud: OpenStackWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Cinder restores an imported backup record through the target region's backup
    service: without the source's store there, the restore is accepted and then fails
    (``error_restoring``, the backup ``available`` again). Deleting a backup deletes its
    objects in the store, whichever region's record pointed at them."""
    one = openstack_cloud.connection(ONE).block_storage
    two = openstack_cloud.connection(TWO).block_storage
    volume = one.create_volume(size=1, name=unique("data"))
    volume = one.wait_for_status(volume, "available", ["error"], interval=0.1, wait=15)
    openstack_cloud.cinder(ONE).write_volume(volume.id, b"ledger")
    backup = one.create_backup(volume_id=volume.id, name=unique("nightly"))
    backup = one.wait_for_status(backup, "available", ["error"], interval=0.1, wait=15)
    record = one.export_backup(backup)["backup-record"]
    imported = two.post("/backups/import_record", json={"backup-record": record})
    assert imported.status_code == 201, imported.text
    copy = two.wait_for_status(two.get_backup(backup.id), "available", ["error"], 0.1, 15)

    # RegionTwo's backup service writes to (and reads from) a store of its own.
    monkeypatch.setattr(openstack_cloud.cinder(TWO), "backup_store", BackupStore("two-only"))
    failed = two.create_volume(backup_id=copy.id, name=unique("restored"))
    failed = two.wait_for_status(failed, "error_restoring", ["available"], 0.1, 15)
    assert openstack_cloud.cinder(TWO).read_volume(failed.id) == b""
    assert two.wait_for_status(two.get_backup(copy.id), "available", ["error"], 0.1, 15)

    # The same store as RegionOne's (one backup_swift_url for both regions): it restores.
    monkeypatch.undo()
    restored = two.create_volume(backup_id=copy.id, name=unique("restored"))
    restored = two.wait_for_status(restored, "available", ["error_restoring"], 0.1, 15)
    assert openstack_cloud.cinder(TWO).read_volume(restored.id) == b"ledger"

    # Deleting the source backup deletes the objects the copy refers to.
    one.delete_backup(backup)
    one.wait_for_delete(backup, interval=0.1, wait=15)
    again = two.create_volume(backup_id=copy.id, name=unique("restored"))
    again = two.wait_for_status(again, "error_restoring", ["available"], 0.1, 15)
    for storage, vol in ((one, volume), (two, failed), (two, restored), (two, again)):
        storage.delete_volume(vol)
    two.delete_backup(copy)


def test_cinder_errors_and_microversions(openstack_cloud: OpenStackWorld) -> None:
    storage = openstack_cloud.connection(ONE).block_storage
    missing = storage.get(f"/volumes/{uuid.uuid4()}", microversion="3.71")
    assert missing.status_code == 404
    assert missing.headers["OpenStack-API-Version"] == "volume 3.71"
    assert set(missing.json()) == {"itemNotFound"}
    too_new = storage.get("/volumes", microversion="3.99")
    assert too_new.status_code == 406
    with pytest.raises(sdk_exceptions.BadRequestException, match="Availability zone"):
        storage.create_volume(size=1, availability_zone="az-9z")

    openstack_cloud.cinder(ONE).set_zone_available("az-1c", False)
    volume = storage.create_volume(size=1, availability_zone="az-1c")
    with pytest.raises(sdk_exceptions.ResourceFailure):
        storage.wait_for_status(volume, "available", ["error"], interval=0.1, wait=15)
    storage.delete_volume(volume)


# --- faults and authentication ------------------------------------------------------------------


def test_a_throttled_region_fails_alone(openstack_cloud: OpenStackWorld) -> None:
    one = openstack_cloud.connection(ONE)
    two = openstack_cloud.connection(TWO)
    openstack_cloud.proxy(ONE, COMPUTE).set_faults(FaultSpec(throttle=1.0))

    with pytest.raises(sdk_exceptions.HttpException) as caught:
        list(one.compute.servers())
    assert caught.value.status_code == 429
    assert list(two.compute.availability_zones())  # the other region is fine
    assert list(one.block_storage.availability_zones())  # and so are other services
    assert openstack_cloud.proxy(ONE, COMPUTE).count(fault=Fault.THROTTLE) >= 1


@pytest.mark.parametrize(
    ("service", "call"),
    [
        (OBJECT_STORE, lambda conn: list(conn.object_store.containers())),
        (DNS, lambda conn: list(conn.dns.zones())),
        (VOLUME, lambda conn: list(conn.block_storage.volumes())),
    ],
)
def test_an_unavailable_api_plane_surfaces_as_503(
    openstack_cloud: OpenStackWorld, service: str, call: Callable[[Any], object]
) -> None:
    conn = openstack_cloud.connection(TWO)
    call(conn)  # discovery and authentication happen before the fault
    openstack_cloud.proxy(TWO, service).set_faults(FaultSpec(unavailable=1.0))
    with pytest.raises(sdk_exceptions.HttpException) as caught:
        call(conn)
    assert caught.value.status_code == 503


def test_keystone_behind_its_own_proxy(openstack_cloud: OpenStackWorld) -> None:
    openstack_cloud.keystone_proxy.set_faults(FaultSpec(server_error=1.0, service="identity"))
    conn = openstack_cloud.connection(ONE)
    with pytest.raises(sdk_exceptions.SDKException):
        conn.authorize()
    openstack_cloud.keystone_proxy.clear_faults()
    assert openstack_cloud.connection(ONE).authorize()


@pytest.mark.parametrize("service", [COMPUTE, DNS, VOLUME])
def test_emulators_want_a_keystone_token(openstack_cloud: OpenStackWorld, service: str) -> None:
    conn = openstack_cloud.connection(ONE)
    endpoint = {
        COMPUTE: conn.compute.get_endpoint(),
        DNS: conn.dns.get_endpoint(),
        VOLUME: conn.block_storage.get_endpoint(),
    }[service]
    path = {COMPUTE: "/servers", DNS: "/zones", VOLUME: "/volumes"}[service]
    status, headers, body = bare_request("GET", endpoint.rstrip("/") + path)
    assert status == 401
    assert body["error"]["code"] == 401
    assert headers["www-authenticate"] == f'Keystone uri="{openstack_cloud.auth_url}"'
    status, _, _ = bare_request("GET", endpoint.rstrip("/") + path, {"X-Auth-Token": "bogus"})
    assert status == 401

    token = conn.session.get_token()
    status, _, _ = bare_request("GET", endpoint.rstrip("/") + path, {"X-Auth-Token": token})
    assert status == 200


def test_emulators_count_what_they_serve(openstack_cloud: OpenStackWorld) -> None:
    cinder = openstack_cloud.cinder(TWO)
    before = cinder.request_count("GET", "/v3/{project_id}/os-availability-zone")
    list(openstack_cloud.connection(TWO).block_storage.availability_zones())
    after = cinder.request_count("GET", "/v3/{project_id}/os-availability-zone")
    assert after == before + 1
    served = [r for r in cinder.requests() if r.route.startswith("/v3/{project_id}/")]
    assert served
    assert all(r.project_id for r in served if r.status == 200)


def test_backup_records_are_opaque_base64(openstack_cloud: OpenStackWorld) -> None:
    storage = openstack_cloud.connection(ONE).block_storage
    volume = storage.create_volume(size=1)
    storage.wait_for_status(volume, "available", ["error"], interval=0.1, wait=15)
    backup = storage.create_backup(volume_id=volume.id)
    storage.wait_for_status(backup, "available", ["error"], interval=0.1, wait=15)
    record = storage.export_backup(backup)["backup-record"]
    decoded = json.loads(base64.b64decode(record["backup_url"]))
    assert decoded["id"] == backup.id
    storage.delete_backup(backup)
    storage.wait_for_status(volume, "available", ["error"], interval=0.1, wait=15)
    storage.delete_volume(volume)


# --- plugging in a Nova of one's own ------------------------------------------------------------


def test_the_catalog_points_at_a_nova_the_world_did_not_start(
    openstack_env: OpenStackEnv, tmp_path: Path
) -> None:
    """What LIFEBOAT_OPENSTACK_NOVA_URL does, with a stand-alone Nova the world did not start.

    The stand-alone Nova (here another emulator, as a real nova-api would be) trusts the
    world's Keystone through a fixed port and service password.
    """
    keystone_port, password = free_loopback_port(), "a-known-service-password"
    validator = KeystoneTokenValidator(
        ServiceCredentials(
            auth_url=f"http://127.0.0.1:{keystone_port}/v3",
            username="service",
            password=password,
            project_name="service",
        )
    )
    external = NovaEmulator(
        ONE,
        ("external-az",),
        validator=validator,
        www_authenticate_uri=f"http://127.0.0.1:{keystone_port}/v3",
    )
    with external:
        world = OpenStackWorld(
            openstack_env,
            regions={ONE: ("external-az",)},
            workdir=tmp_path / "world",
            nova_urls={ONE: f"{external.url}/v2.1"},
            keystone_port=keystone_port,
            service_password=password,
        )
        with world:
            assert not world.compute_emulated(ONE)
            with pytest.raises(OpenStackWorldError, match="real Nova"):
                world.nova(ONE)
            compute = world.connection(ONE).compute
            assert compute.get_endpoint() == f"{world.proxy(ONE, COMPUTE).url}/v2.1"
            assert [z.name for z in compute.availability_zones()] == ["external-az"]
            assert external.request_count("GET", "/v2.1/os-availability-zone") == 1
            assert world.proxy(ONE, COMPUTE).count(service="compute") >= 1


def _processes_running(marker: str) -> list[int]:
    """The live processes whose command line mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_swift_proxy_in_its_own_process(openstack_env: OpenStackEnv, tmp_path: Path) -> None:
    workdir = tmp_path / "split"
    with OpenStackWorld(
        openstack_env, regions={ONE: ("az1",)}, workdir=workdir, swift_proxy_process=True
    ) as world:
        assert len(_processes_running(str(workdir / f"swift-{ONE}"))) == 2
        store = world.connection(ONE).object_store
        container = unique("split")
        store.create_container(container)
        store.upload_object(container, "o", data=b"served by two processes")
        assert store.download_object("o", container=container) == b"served by two processes"
        log = (workdir / f"swift-{ONE}" / "swift.log").read_text()
        assert "swift proxy for RegionOne serving" in log
        assert "swift account, container, object for RegionOne serving" in log
    eventually(
        lambda: not _processes_running(str(workdir / f"swift-{ONE}")) or None,
        "both Swift processes to end",
        timeout=10,
    )
