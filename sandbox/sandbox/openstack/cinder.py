"""The emulated Cinder: block storage API v3, microversions 3.0 to 3.71, in one region.

Volumes, backups, backup export/import records and restores; volumes hold bytes that
backups carry across regions through a backup store. See :class:`CinderEmulator`.

Backups and their store, as real Cinder has them
------------------------------------------------
A Cinder backup is two things: a **record** in the region's Cinder database (ID, name,
size, container, ``service_metadata``, ...) and the **data** its backup driver wrote to
the backup store the cinder-backup service is configured with (the Swift driver:
``backup_swift_url`` / ``backup_swift_auth_url`` and a container; S3, NFS or Ceph drivers
likewise). ``GET /backups/{id}/export_record`` returns ``{backup_service, backup_url}``,
``backup_url`` being the base64 of the record, *not* of the data; ``POST
/backups/import_record`` in another region makes a record there that refers to the same
container and objects. A restore from it then reads the data through *that* region's
backup service, so it works only when that service's store holds the objects: both
regions configured with the same Swift (or S3 bucket, ...), or a store the target region
replicates to. Otherwise the restore is accepted (202) and fails in the backup service:
the volume ends in ``error_restoring`` and the backup goes back to ``available``. Deleting
a backup deletes its objects from the store, whichever region's record pointed at them.

:class:`BackupStore` models the store: each emulator is given one (by default a store of
its own, reachable from no other region); the sandbox's cloud gives every region the same
one unless told otherwise (:class:`~sandbox.openstack.cloud.OpenStackWorld`,
``shared_backup_store``).
"""

from __future__ import annotations

import ast
import base64
import binascii
import copy
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Unpack

from aiohttp import web

from sandbox.openstack.base import (
    API_VERSION_HEADER,
    JSON,
    ApiError,
    ApiVersion,
    ServiceOptions,
    ZonalService,
    base_url,
    json_body,
    negotiate_microversion,
    new_id,
    next_link,
    now_iso,
    paginate,
    request_token,
    request_version,
    string_map,
    truthy,
    visible,
)

CINDER_MIN_VERSION = ApiVersion(3, 0)
CINDER_MAX_VERSION = ApiVersion(3, 71)


BACKUP_SERVICE = "cinder.backup.drivers.swift.SwiftBackupDriver"
VOLUME_TYPE = "__DEFAULT__"
_VOLUME_TYPE_ID = "b0f8f0a6-2b44-4d9d-8f0f-7d0d7d5f0c3e"
_DELETABLE_VOLUME_STATES = ("available", "error", "error_restoring", "error_extending")


@dataclass(frozen=True)
class StoredBackup:
    """What a backup driver writes to the store: the volume's data and its metadata."""

    data: bytes
    volume_metadata: dict[str, str]


class BackupStore:
    """A backup store (a Swift endpoint, an S3 bucket, an NFS share) as cinder-backup sees
    it: objects under ``container/prefix``. Regions whose :class:`CinderEmulator` is given
    the same store can restore each other's backups; a region given another store cannot.
    Thread-safe (the emulators run in threads of their own)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._objects: dict[str, StoredBackup] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BackupStore({self.name!r})"

    def put(self, key: str, backup: StoredBackup) -> None:
        with self._lock:
            self._objects[key] = backup

    def get(self, key: str) -> StoredBackup | None:
        with self._lock:
            return self._objects.get(key)

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._objects)


@dataclass
class VolumeZone:
    """An availability zone of the emulated Cinder, with test-controlled health."""

    name: str
    available: bool = True
    capacity_gb: int | None = None  # None: unlimited


@dataclass
class Volume:
    id: str
    name: str | None
    description: str | None
    size: int
    availability_zone: str
    project_id: str
    user_id: str
    metadata: dict[str, str]
    created_at: str
    status: str = "creating"
    updated_at: str | None = None
    backup_id: str | None = None
    data: bytes = b""
    settle_at: float | None = None
    settle_to: str | None = None  # "available", "error" or "deleted"
    restored_metadata: dict[str, str] | None = None
    """A backup's volume metadata, put in place of this volume's when its restore ends."""
    restoring_from: str | None = None
    """The store key of the backup being restored onto this volume (until it settles)."""


@dataclass
class Backup:
    id: str
    name: str | None
    description: str | None
    volume_id: str
    size: int
    availability_zone: str
    container: str
    project_id: str
    user_id: str
    metadata: dict[str, str]
    created_at: str
    data_timestamp: str
    status: str = "creating"
    updated_at: str | None = None
    is_incremental: bool = False
    object_count: int = 0
    fail_reason: str | None = None
    service_metadata: str = ""
    """Where the driver put the data in ``container`` (the Swift driver's object prefix)."""
    settle_at: float | None = None
    settle_to: str | None = None  # "available" or "deleted"

    @property
    def store_key(self) -> str:
        return f"{self.container}/{self.service_metadata}"


class CinderEmulator(ZonalService[VolumeZone]):
    """Cinder's block storage API v3, microversions 3.0 to 3.71, in one region.

    Volumes (also from a backup), backups (and their updates: name, description,
    metadata), their export and import records and restores. Volumes hold bytes
    (:meth:`write_volume`, :meth:`read_volume`) that backups copy into
    ``backup_store`` (see the module docstring), so a test can follow data across
    regions: an exported record carries metadata only, and a restore succeeds only
    where the restoring region's store holds the backup's objects. Exporting and
    importing backup records is admin-only in Cinder's default policy; pass
    ``backup_record_roles`` to allow other roles, as a cloud offering
    cross-region recovery to its tenants would.
    """

    service_type = "volumev3"
    service_name = "cinder"

    def __init__(
        self,
        region: str,
        zones: Sequence[str],
        *,
        backup_record_roles: Iterable[str] = ("admin",),
        backup_store: BackupStore | None = None,
        create_seconds: float = 0.3,
        backup_seconds: float = 0.3,
        delete_seconds: float = 0.2,
        **options: Unpack[ServiceOptions],
    ) -> None:
        super().__init__(region, zones, **options)
        self.backup_record_roles = frozenset(backup_record_roles)
        self.backup_store = backup_store or BackupStore(f"{region}-backups")
        """The store this region's backup service writes to and restores from; a test may
        replace it (a region whose store the others' backups are not in)."""
        self.create_seconds = create_seconds
        self.backup_seconds = backup_seconds
        self.delete_seconds = delete_seconds
        self._reset_state()

    @property
    def endpoint_path(self) -> str:
        return "/v3/$(project_id)s"

    def _reset_state(self) -> None:
        self._zones = {name: VolumeZone(name) for name in self.zone_names}
        self._volumes: dict[str, Volume] = {}
        self._backups: dict[str, Backup] = {}

    # --- test hooks and state

    def set_zone_capacity(self, zone: str, gigabytes: int | None) -> None:
        """Cap the GiB that volumes may take in ``zone`` (``None``: no limit)."""
        with self._lock:
            self._zone(zone).capacity_gb = gigabytes

    def write_volume(self, volume_id: str, data: bytes) -> None:
        """Put ``data`` on a volume (what an instance would write to it)."""
        with self._lock:
            self._volumes[volume_id].data = bytes(data)

    def read_volume(self, volume_id: str) -> bytes:
        with self._lock:
            return self._volumes[volume_id].data

    def volumes(self) -> list[Volume]:
        with self._lock:
            self._advance(self._clock())
            return [copy.deepcopy(volume) for volume in self._volumes.values()]

    def backups(self) -> list[Backup]:
        with self._lock:
            self._advance(self._clock())
            return [copy.deepcopy(backup) for backup in self._backups.values()]

    # --- plumbing

    def _routes(self) -> list[web.RouteDef]:
        routes = [web.get("/", self._versions), web.get("/v3", self._versions)]
        routes.append(web.get("/v3/", self._versions))
        # Cinder serves every API both under /v3/{project_id}/... and, since 3.67, /v3/...
        for prefix in ("/v3/{project_id}", "/v3"):
            routes += [
                web.get(f"{prefix}/os-availability-zone", self._list_zones),
                web.get(f"{prefix}/volumes", self._list_volumes),
                web.get(f"{prefix}/volumes/detail", self._list_volumes),
                web.post(f"{prefix}/volumes", self._create_volume),
                web.get(f"{prefix}/volumes/{{volume_id}}", self._show_volume),
                web.delete(f"{prefix}/volumes/{{volume_id}}", self._delete_volume),
                web.get(f"{prefix}/backups", self._list_backups),
                web.get(f"{prefix}/backups/detail", self._list_backups),
                web.post(f"{prefix}/backups", self._create_backup),
                web.post(f"{prefix}/backups/import_record", self._import_backup),
                web.get(f"{prefix}/backups/{{backup_id}}", self._show_backup),
                web.put(f"{prefix}/backups/{{backup_id}}", self._update_backup),
                web.delete(f"{prefix}/backups/{{backup_id}}", self._delete_backup),
                web.get(f"{prefix}/backups/{{backup_id}}/export_record", self._export_backup),
                web.post(f"{prefix}/backups/{{backup_id}}/restore", self._restore_backup),
            ]
        return routes

    def _is_public(self, request: web.Request) -> bool:
        return request.path in ("/", "/v3", "/v3/")

    def _negotiate(self, request: web.Request) -> ApiVersion | None:
        if self._is_public(request):
            return None
        version = negotiate_microversion(
            request, service="volume", minimum=CINDER_MIN_VERSION, maximum=CINDER_MAX_VERSION
        )
        project_id = request.match_info.get("project_id")
        info = request_token(request)
        if project_id is not None and project_id != info.project_id:
            raise ApiError(
                400,
                f"Malformed request url: URL's project_id '{project_id}' doesn't match "
                f"Context's project_id '{info.project_id}'",
            )
        if project_id is None and version < (3, 67):
            raise ApiError(404, "The resource could not be found.")
        return version

    def _version_headers(self, version: ApiVersion) -> dict[str, str]:
        return {API_VERSION_HEADER: f"volume {version}", "Vary": API_VERSION_HEADER}

    def _advance(self, now: float) -> None:
        for volume in list(self._volumes.values()):
            if volume.settle_at is None or volume.settle_at > now:
                continue
            target, volume.settle_at, volume.settle_to = volume.settle_to, None, None
            if target == "deleted":
                del self._volumes[volume.id]
                continue
            if volume.restoring_from is not None and target == "available":
                stored = self.backup_store.get(volume.restoring_from)
                if stored is None:
                    # The backup service found no objects for the backup in its store
                    # (another region's store, or deleted there): Cinder's restore fails.
                    target, volume.restored_metadata = "error_restoring", None
                else:
                    volume.data = stored.data
                    volume.restored_metadata = _restored_metadata(stored)
            volume.restoring_from = None
            volume.status = target or "available"
            volume.updated_at = now_iso(microseconds=True)
            if volume.restored_metadata is not None and volume.status == "available":
                # Cinder restores a backup's volume metadata over the volume's own
                # (BackupMetadataAPI._restore_vol_meta), when the backup had any.
                volume.metadata = volume.restored_metadata
            volume.restored_metadata = None
        for backup in list(self._backups.values()):
            if backup.settle_at is None or backup.settle_at > now:
                continue
            target, backup.settle_at, backup.settle_to = backup.settle_to, None, None
            if target == "deleted":
                # The driver deletes the backup's objects, whichever region wrote them.
                self.backup_store.delete(backup.store_key)
                del self._backups[backup.id]
                continue
            backup.status = target or "available"
            backup.updated_at = now_iso(microseconds=True)
            source = self._volumes.get(backup.volume_id)
            if source is not None and source.status == "backing-up":
                source.status = "available"

    def _links(self, request: web.Request, kind: str, item_id: str) -> list[JSON]:
        base = base_url(request)
        project = request_token(request).project_id
        return [
            {"rel": "self", "href": f"{base}/v3/{project}/{kind}/{item_id}"},
            {"rel": "bookmark", "href": f"{base}/{project}/{kind}/{item_id}"},
        ]

    async def _versions(self, request: web.Request) -> web.Response:
        entry = {
            "id": "v3.0",
            "status": "CURRENT",
            "version": str(CINDER_MAX_VERSION),
            "min_version": str(CINDER_MIN_VERSION),
            "updated": "2023-08-31T00:00:00Z",
            "links": [
                {"href": "https://docs.openstack.org/", "rel": "describedby", "type": "text/html"},
                {"href": f"{base_url(request)}/v3/", "rel": "self"},
            ],
            "media-types": [
                {
                    "base": "application/json",
                    "type": "application/vnd.openstack.volume+json;version=3",
                }
            ],
        }
        status = 300 if request.path == "/" else 200
        return web.json_response({"versions": [entry]}, status=status)

    async def _list_zones(self, request: web.Request) -> web.Response:
        with self._lock:
            zones = [
                {"zoneName": zone.name, "zoneState": {"available": zone.available}}
                for zone in self._zones.values()
            ]
        return web.json_response({"availabilityZoneInfo": zones})

    # --- volumes

    def _volume_body(self, request: web.Request, volume: Volume) -> JSON:
        version = request_version(request)
        body: JSON = {
            "id": volume.id,
            "name": volume.name,
            "description": volume.description,
            "status": volume.status,
            "size": volume.size,
            "availability_zone": volume.availability_zone,
            "created_at": volume.created_at,
            "updated_at": volume.updated_at,
            "attachments": [],
            "bootable": "false",
            "encrypted": False,
            "multiattach": False,
            "metadata": dict(volume.metadata),
            "volume_type": VOLUME_TYPE,
            "snapshot_id": None,
            "source_volid": None,
            "consistencygroup_id": None,
            "replication_status": None,
            "migration_status": None,
            "user_id": volume.user_id,
            "os-vol-tenant-attr:tenant_id": volume.project_id,
            "links": self._links(request, "volumes", volume.id),
        }
        if version >= (3, 13):
            body["group_id"] = None
        if version >= (3, 21):
            body["provider_id"] = None
        if version >= (3, 48):
            body["shared_targets"] = True
            body["service_uuid"] = None
        if version >= (3, 61):
            body["cluster_name"] = None
        if version >= (3, 63):
            body["volume_type_id"] = _VOLUME_TYPE_ID
        if version >= (3, 64):
            body["encryption_key_id"] = None
        if version >= (3, 65):
            body["consumes_quota"] = True
        if request_token(request).is_admin:
            body["os-vol-host-attr:host"] = f"cinder-{volume.availability_zone}@lvm#lvm"
        return body

    def _visible_volume(self, request: web.Request, volume_id: str) -> Volume:
        return visible(request, self._volumes, volume_id, f"Volume {volume_id} could not be found.")

    async def _list_volumes(self, request: web.Request) -> web.Response:
        info = request_token(request)
        everyone = info.is_admin and truthy(request.query.get("all_tenants", "false"))
        query = request.query
        metadata: dict[str, str] = {}
        if "metadata" in query:
            metadata = _metadata_filter(query["metadata"])
        with self._lock:
            volumes = [
                v
                for v in sorted(
                    self._volumes.values(), key=lambda v: (v.created_at, v.id), reverse=True
                )
                if (everyone or v.project_id == info.project_id)
                and ("name" not in query or v.name == query["name"])
                and ("status" not in query or v.status == query["status"])
                and (
                    "availability_zone" not in query
                    or v.availability_zone == query["availability_zone"]
                )
                and all(v.metadata.get(k) == value for k, value in metadata.items())
            ]
            page, marker = paginate(request, volumes, key=lambda v: v.id)
            detail = request.path.endswith("/detail")
            items = [
                self._volume_body(request, v)
                if detail
                else {"id": v.id, "name": v.name, "links": self._links(request, "volumes", v.id)}
                for v in page
            ]
        body: JSON = {"volumes": items}
        if marker is not None:
            body["volumes_links"] = [{"rel": "next", "href": next_link(request, marker)}]
        if request_version(request) >= (3, 45) and truthy(query.get("with_count", "false")):
            body["count"] = len(volumes)
        return web.json_response(body)

    async def _show_volume(self, request: web.Request) -> web.Response:
        with self._lock:
            volume = self._visible_volume(request, request.match_info["volume_id"])
            return web.json_response({"volume": self._volume_body(request, volume)})

    async def _create_volume(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        version, info = request_version(request), request_token(request)
        spec = body.get("volume")
        if not isinstance(spec, dict):
            raise ApiError(400, "Missing required element 'volume' in request body.")
        backup_id = spec.get("backup_id")
        if backup_id is not None and version < (3, 47):
            raise ApiError(
                400,
                "Invalid input for field/attribute volume. Additional properties are not "
                "allowed ('backup_id' was unexpected)",
            )
        metadata = string_map(spec.get("metadata", {}), "metadata")
        with self._lock:
            backup = self._usable_backup(request, str(backup_id)) if backup_id else None
            size = spec.get("size", backup.size if backup else None)
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ApiError(400, f"Invalid input for field/attribute size. Value: {size}.")
            if backup is not None and size < backup.size:
                raise ApiError(
                    400,
                    f"Volume size '{size}'GB cannot be smaller than the backup size "
                    f"{backup.size}GB. It must be >= backup size.",
                )
            zone_name = spec.get("availability_zone") or self.zone_names[0]
            if zone_name not in self._zones:
                raise ApiError(400, f"Availability zone '{zone_name}' is invalid.")
            volume = Volume(
                id=new_id(),
                name=spec.get("name"),
                description=spec.get("description"),
                size=size,
                availability_zone=str(zone_name),
                project_id=str(info.project_id),
                user_id=info.user_id,
                metadata=metadata,
                created_at=now_iso(microseconds=True),
                backup_id=backup.id if backup else None,
                restoring_from=backup.store_key if backup else None,
                settle_at=self._clock() + self.create_seconds,
                settle_to="available" if self._fits(str(zone_name), size) else "error",
            )
            self._volumes[volume.id] = volume
            if backup is not None:
                backup.status = "restoring"
                backup.settle_at, backup.settle_to = volume.settle_at, "available"
            return web.json_response({"volume": self._volume_body(request, volume)}, status=202)

    def _fits(self, zone_name: str, size: int) -> bool:
        zone = self._zones[zone_name]
        if not zone.available:
            return False
        if zone.capacity_gb is None:
            return True
        used = sum(
            v.size
            for v in self._volumes.values()
            if v.availability_zone == zone_name
            and v.settle_to not in ("error", "deleted")
            and v.status != "error"
        )
        return used + size <= zone.capacity_gb

    async def _delete_volume(self, request: web.Request) -> web.Response:
        with self._lock:
            volume = self._visible_volume(request, request.match_info["volume_id"])
            if volume.status not in _DELETABLE_VOLUME_STATES:
                raise ApiError(
                    400,
                    "Invalid volume: Volume status must be available or error or "
                    "error_restoring or error_extending or error_managing and must not be "
                    "migrating, attached, belong to a group, have snapshots, awaiting a "
                    "transfer, or be disassociated from snapshots after volume transfer.",
                )
            volume.status = "deleting"
            volume.settle_at, volume.settle_to = self._clock() + self.delete_seconds, "deleted"
        return web.Response(status=202)

    # --- backups

    def _backup_body(self, request: web.Request, backup: Backup) -> JSON:
        version = request_version(request)
        body: JSON = {
            "id": backup.id,
            "name": backup.name,
            "description": backup.description,
            "status": backup.status,
            "volume_id": backup.volume_id,
            "size": backup.size,
            "availability_zone": backup.availability_zone,
            "container": backup.container,
            "object_count": backup.object_count,
            "created_at": backup.created_at,
            "updated_at": backup.updated_at,
            "data_timestamp": backup.data_timestamp,
            "fail_reason": backup.fail_reason,
            "has_dependent_backups": False,
            "is_incremental": backup.is_incremental,
            "snapshot_id": None,
            "links": self._links(request, "backups", backup.id),
        }
        if version >= (3, 18):
            body["os-backup-project-attr:project_id"] = backup.project_id
        if version >= (3, 43):
            body["metadata"] = dict(backup.metadata)
        if version >= (3, 56):
            body["user_id"] = backup.user_id
        if version >= (3, 64):
            body["encryption_key_id"] = None
        return body

    def _backup_summary(self, request: web.Request, backup: Backup, *, status: int) -> web.Response:
        """The short answer to creating (202) or importing (201) a backup."""
        summary = {
            "id": backup.id,
            "name": backup.name,
            "links": self._links(request, "backups", backup.id),
        }
        return web.json_response({"backup": summary}, status=status)

    def _visible_backup(self, request: web.Request, backup_id: str) -> Backup:
        return visible(request, self._backups, backup_id, f"Backup {backup_id} could not be found.")

    def _usable_backup(self, request: web.Request, backup_id: str) -> Backup:
        backup = self._visible_backup(request, backup_id)
        if backup.status != "available":
            raise ApiError(400, "Invalid backup: Backup status must be available.")
        return backup

    async def _list_backups(self, request: web.Request) -> web.Response:
        info = request_token(request)
        everyone = info.is_admin and truthy(request.query.get("all_tenants", "false"))
        query = request.query
        with self._lock:
            backups = [
                b
                for b in sorted(
                    self._backups.values(), key=lambda b: (b.created_at, b.id), reverse=True
                )
                if (everyone or b.project_id == info.project_id)
                and all(
                    name not in query or str(getattr(b, name)) == query[name]
                    for name in ("name", "status", "volume_id")
                )
            ]
            page, marker = paginate(request, backups, key=lambda b: b.id)
            detail = request.path.endswith("/detail")
            items = [
                self._backup_body(request, b)
                if detail
                else {"id": b.id, "name": b.name, "links": self._links(request, "backups", b.id)}
                for b in page
            ]
        body: JSON = {"backups": items}
        if marker is not None:
            body["backups_links"] = [{"rel": "next", "href": next_link(request, marker)}]
        return web.json_response(body)

    async def _show_backup(self, request: web.Request) -> web.Response:
        with self._lock:
            backup = self._visible_backup(request, request.match_info["backup_id"])
            return web.json_response({"backup": self._backup_body(request, backup)})

    async def _create_backup(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        version, info = request_version(request), request_token(request)
        spec = body.get("backup")
        if not isinstance(spec, dict) or not isinstance(spec.get("volume_id"), str):
            raise ApiError(400, "Invalid input for field/attribute backup.")
        metadata = string_map(spec.get("metadata", {}), "metadata")
        if metadata and version < (3, 43):
            raise ApiError(400, "Additional properties are not allowed ('metadata' was unexpected)")
        with self._lock:
            volume = self._visible_volume(request, spec["volume_id"])
            if volume.status not in ("available", "in-use"):
                raise ApiError(
                    400,
                    "Invalid volume: Volume to be backed up must be available or in-use, but "
                    f'the current status is "{volume.status}".',
                )
            zone = spec.get("availability_zone") if version >= (3, 51) else None
            now = now_iso(microseconds=True)
            backup_id = new_id()
            backup = Backup(
                id=backup_id,
                name=spec.get("name"),
                description=spec.get("description"),
                volume_id=volume.id,
                size=volume.size,
                availability_zone=str(zone or volume.availability_zone),
                container=str(spec.get("container") or "volumebackups"),
                project_id=str(info.project_id),
                user_id=info.user_id,
                metadata=metadata,
                created_at=now,
                data_timestamp=now,
                is_incremental=bool(spec.get("incremental", False)),
                object_count=max(1, volume.size),
                service_metadata=f"volume_{volume.id}/az_{volume.availability_zone}"
                f"_backup_{backup_id}",
                settle_at=self._clock() + self.backup_seconds,
                settle_to="available",
            )
            # The driver writes the data and the volume's metadata to the store.
            self.backup_store.put(
                backup.store_key, StoredBackup(volume.data, dict(volume.metadata))
            )
            self._backups[backup.id] = backup
            volume.status = "backing-up"
            return self._backup_summary(request, backup, status=202)

    async def _update_backup(self, request: web.Request) -> web.Response:
        """``PUT /backups/{id}`` (3.9+): name and description; metadata from 3.43, replaced
        whole as Cinder does. Answers 200 with the backup's summary."""
        version = request_version(request)
        if version < (3, 9):
            raise ApiError(404, "The resource could not be found.")
        body = await json_body(request)
        spec = body.get("backup")
        if not isinstance(spec, dict) or not spec:
            raise ApiError(400, "Invalid input for field/attribute backup.")
        allowed = {"name", "description"} | ({"metadata"} if version >= (3, 43) else set())
        unexpected = sorted(set(spec) - allowed)
        if unexpected:
            raise ApiError(
                400,
                "Invalid input for field/attribute backup. Additional properties are not "
                f"allowed ({', '.join(repr(k) for k in unexpected)} was unexpected)",
            )
        metadata = string_map(spec["metadata"], "metadata") if "metadata" in spec else None
        with self._lock:
            backup = self._visible_backup(request, request.match_info["backup_id"])
            if "name" in spec:
                backup.name = spec["name"]
            if "description" in spec:
                backup.description = spec["description"]
            if metadata is not None:
                backup.metadata = metadata
            backup.updated_at = now_iso(microseconds=True)
            summary: JSON = {
                "id": backup.id,
                "name": backup.name,
                "links": self._links(request, "backups", backup.id),
            }
            if version >= (3, 43):
                summary["metadata"] = dict(backup.metadata)
        return web.json_response({"backup": summary})

    async def _delete_backup(self, request: web.Request) -> web.Response:
        with self._lock:
            backup = self._visible_backup(request, request.match_info["backup_id"])
            if backup.status not in ("available", "error"):
                raise ApiError(400, "Invalid backup: Backup status must be available or error")
            backup.status = "deleting"
            backup.settle_at, backup.settle_to = self._clock() + self.delete_seconds, "deleted"
        return web.Response(status=202)

    def _check_record_policy(self, request: web.Request) -> None:
        if not self.backup_record_roles & request_token(request).roles:
            raise ApiError(403, "Policy doesn't allow backup:export-import to be performed.")

    async def _export_backup(self, request: web.Request) -> web.Response:
        self._check_record_policy(request)
        with self._lock:
            backup = self._visible_backup(request, request.match_info["backup_id"])
            if backup.status != "available":
                raise ApiError(
                    400, "Invalid backup: Backup status must be available and not restoring."
                )
            record = {
                "id": backup.id,
                "display_name": backup.name,
                "display_description": backup.description,
                "volume_id": backup.volume_id,
                "size": backup.size,
                "availability_zone": backup.availability_zone,
                "container": backup.container,
                "object_count": backup.object_count,
                "data_timestamp": backup.data_timestamp,
                "metadata": dict(backup.metadata),
                "service": BACKUP_SERVICE,
                "service_metadata": backup.service_metadata,
                # The record only: the data stay in the backup store (see the module doc).
            }
        url = base64.b64encode(json.dumps(record).encode()).decode()
        return web.json_response(
            {"backup-record": {"backup_service": BACKUP_SERVICE, "backup_url": url}}
        )

    async def _import_backup(self, request: web.Request) -> web.Response:
        self._check_record_policy(request)
        body = await json_body(request)
        info = request_token(request)
        record_spec = body.get("backup-record")
        if not isinstance(record_spec, dict):
            raise ApiError(400, "Incorrect request body format.")
        service = record_spec.get("backup_service")
        if service != BACKUP_SERVICE:
            raise ApiError(404, f"Service {service} could not be found.")
        try:
            record = json.loads(base64.b64decode(str(record_spec.get("backup_url", ""))))
            backup_id = str(record["id"])
            size = int(record["size"])
            service_metadata = str(record["service_metadata"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiError(400, "Invalid input received: Can't parse backup record.") from None
        with self._lock:
            if backup_id in self._backups:
                raise ApiError(400, "Invalid backup: Backup already exists in database.")
            zone = record.get("availability_zone")
            now = now_iso(microseconds=True)
            backup = Backup(
                id=backup_id,
                name=record.get("display_name"),
                description=record.get("display_description"),
                volume_id=str(record.get("volume_id")),
                size=size,
                availability_zone=zone if zone in self._zones else self.zone_names[0],
                container=str(record.get("container") or "volumebackups"),
                project_id=str(info.project_id),
                user_id=info.user_id,
                metadata={str(k): str(v) for k, v in (record.get("metadata") or {}).items()},
                created_at=now,
                data_timestamp=str(record.get("data_timestamp") or now),
                object_count=int(record.get("object_count") or 1),
                service_metadata=service_metadata,
                settle_at=self._clock() + self.backup_seconds,
                settle_to="available",
            )
            self._backups[backup.id] = backup
            return self._backup_summary(request, backup, status=201)

    async def _restore_backup(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        info = request_token(request)
        spec = body.get("restore")
        if not isinstance(spec, dict):
            raise ApiError(400, "Incorrect request body format.")
        with self._lock:
            backup = self._usable_backup(request, request.match_info["backup_id"])
            volume_id = spec.get("volume_id")
            if volume_id:
                volume = self._visible_volume(request, str(volume_id))
                if volume.status != "available":
                    raise ApiError(
                        400, "Invalid volume: Volume to be restored to must be available"
                    )
                if volume.size < backup.size:
                    raise ApiError(
                        400,
                        f"Invalid volume: volume size {volume.size} is too small to restore "
                        f"backup of size {backup.size}.",
                    )
                volume.status = "restoring-backup"
                volume.restoring_from = backup.store_key
            else:
                zone = spec.get("availability_zone") or backup.availability_zone
                if zone not in self._zones:
                    zone = self.zone_names[0]
                volume = Volume(
                    id=new_id(),
                    name=spec.get("name") or f"restore_backup_{backup.id}",
                    description=f"auto-created_from_restore_from_backup {backup.id}",
                    size=backup.size,
                    availability_zone=str(zone),
                    project_id=str(info.project_id),
                    user_id=info.user_id,
                    metadata={},
                    created_at=now_iso(microseconds=True),
                    restoring_from=backup.store_key,
                )
                self._volumes[volume.id] = volume
                volume.status = "restoring-backup"
            volume.settle_at = self._clock() + self.create_seconds
            volume.settle_to = "available"
            backup.status = "restoring"
            backup.settle_at, backup.settle_to = volume.settle_at, "available"
            return web.json_response(
                {
                    "restore": {
                        "backup_id": backup.id,
                        "volume_id": volume.id,
                        "volume_name": volume.name,
                    }
                },
                status=202,
            )


def _restored_metadata(stored: StoredBackup) -> dict[str, str] | None:
    """What a restore of ``stored`` leaves as the volume's metadata: the backed-up volume's,
    in place of the volume's own, when it had any (else the volume keeps its own)."""
    if not stored.volume_metadata:
        return None
    return dict(stored.volume_metadata)


def _metadata_filter(text: str) -> dict[str, str]:
    """Cinder's ``metadata`` filter: a dict, written as JSON or as a Python literal."""
    try:
        parsed = json.loads(text)
    except ValueError:
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = None
    if not isinstance(parsed, dict):
        raise ApiError(400, f"Invalid input received: Invalid metadata filter {text!r}")
    return {str(k): str(v) for k, v in parsed.items()}
