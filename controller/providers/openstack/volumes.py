"""Cinder backups of one region as :class:`~controller.providers.protocols.VolumeSnapshots`.

A "snapshot" here is a Cinder **backup**: a full copy of a volume in the region's backup
store, which (unlike a Cinder snapshot) can be moved to another region and outlives the
volume.

Tags. Cinder backups have no tags; they have metadata (Block Storage API 3.43+, Pike),
a key/value map that is part of the backup, travels in its export record and can be
replaced (``PUT /backups/{id}``). Tags are stored there one to one: tag ``k=v`` is
metadata item ``k: v``. Cinder's schema limits keys to 1-255 of ``A-Z a-z 0-9 - _ : . /``
and space, and values to 255 characters; tags outside that are refused with
``ValueError`` before any call, never mangled. Cinder cannot filter backups by metadata,
so ``list`` reads the region's backups and filters here. Backups being deleted are gone
as far as ``get`` and ``list`` are concerned.

Cross-region copies use Cinder's backup records: ``copy_from`` runs in the destination
region, but first *reads* the source region — it waits there until the backup is
``available`` and exports its record (``GET /backups/{id}/export_record``, allowed to
project members only where the cloud's policy says so) — and then imports the record here
(``POST /backups/import_record``, sent through the SDK's session: openstacksdk 4.x posts
its ``import_backup`` to the wrong URL) and replaces the copy's metadata with its own
tags. Unlike EBS's CopySnapshot the copy needs the source region's API plane, so copies
are made ahead of a failover (replication), not during it; restoring needs nothing of the
source region's API. The record is metadata, not data (``backup_url`` is the base64 of the
backup's database record: container, ``service_metadata``, size): this region's
cinder-backup reads the data from the backup store the source region wrote to, so a
restore works only where that store is reachable (the same ``backup_swift_url``, S3
bucket, ...). Where it is not, Cinder accepts the restore and the volume ends in
``error_restoring``, which the operator reports as a failed restore. Cinder keeps the
backup's ID across regions: the copy has the source's ID, in this region, and refers to
the same objects, so deleting either record deletes both's data (the planner prunes such
a backup only where every region prunes it). Importing a backup this region already
holds re-tags it instead.

``create`` and ``restore`` name what they make uniquely and look for that name before
sending, so a call retried after a lost answer makes nothing twice. ``restore`` creates
a volume from the backup (``backup_id``, API 3.47+) in the zone asked for, with the tags
as volume metadata, once the backup is ``available``; ``delete`` waits for a backup that
is being created or restored from to settle first, as Cinder refuses to delete it
before. Those waits poll every ``poll_seconds`` for at most ``wait_seconds``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import openstack.exceptions

from controller.providers.openstack.connector import OpenStackConnector
from controller.providers.protocols import Snapshot, VolumeInfo

SERVICE = "block-storage"
_STATES: dict[str, Literal["pending", "completed", "error"]] = {
    "creating": "pending",
    "available": "completed",
    "restoring": "completed",  # usable: a volume is being made from it
    "error": "error",
}
_GONE = frozenset({"deleting", "deleted"})
_SETTLED = frozenset({"available", "error"})
_METADATA_KEY = re.compile(r"^[a-zA-Z0-9-_:. /]{1,255}$")  # Cinder's metadata schema
_METADATA_VALUE_MAX = 255


def check_tags(tags: Mapping[str, str]) -> None:
    """Refuse tags Cinder's metadata cannot hold as they are."""
    for key, value in tags.items():
        if not _METADATA_KEY.match(key):
            raise ValueError(
                f"tag key {key!r} cannot be Cinder metadata: 1-255 of letters, digits, "
                "'-', '_', ':', '.', '/' and space"
            )
        if len(value) > _METADATA_VALUE_MAX:
            raise ValueError(f"tag {key!r}: Cinder metadata values hold at most 255 characters")


def _timestamp(text: Any) -> float:
    """Cinder's ``created_at`` (ISO 8601, UTC, usually without an offset)."""
    if not text:
        return 0.0
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _status(backup: Any) -> str:
    return str(getattr(backup, "status", "") or "").lower()


def _snapshot(region: str, backup: Any) -> Snapshot:
    return Snapshot(
        id=str(backup.id),
        volume_id=str(backup.volume_id or ""),
        region=region,
        state=_STATES.get(_status(backup), "error"),
        created_at=_timestamp(backup.created_at),
        size_gb=int(backup.size or 0),
        tags={str(k): str(v) for k, v in (backup.metadata or {}).items()},
    )


def _fetch(conn: Any, backup_id: str) -> Any | None:
    """The backup (any status), or None."""
    try:
        return conn.block_storage.get_backup(backup_id)
    except openstack.exceptions.NotFoundException:
        return None


def _fetch_volume(conn: Any, volume_id: str) -> Any | None:
    """The volume (any status), or None."""
    try:
        return conn.block_storage.get_volume(volume_id)
    except openstack.exceptions.NotFoundException:
        return None


def _volume_info(volume: Any) -> VolumeInfo:
    return VolumeInfo(
        id=str(volume.id),
        zone=str(volume.availability_zone or ""),
        state=str(volume.status or "").lower(),
        snapshot_id="",  # Cinder does not report the backup it was restored from
        tags={str(k): str(v) for k, v in (volume.metadata or {}).items()},
    )


class CinderBackups:
    """Backups (and volumes restored from them) in one region; see the module docstring."""

    def __init__(
        self,
        connector: OpenStackConnector,
        region: str,
        *,
        wait_seconds: float = 900.0,
        poll_seconds: float = 2.0,
    ) -> None:
        self.connector = connector
        self.region = region
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds

    def __repr__(self) -> str:
        return f"CinderBackups({self.region})"

    async def _call(
        self, operation: str, fn: Any, *, mutating: bool, region: str | None = None
    ) -> Any:
        return await self.connector.call(
            region or self.region, SERVICE, operation, fn, mutating=mutating
        )

    async def _backup(self, backup_id: str, region: str | None = None) -> Any | None:
        return await self._call(
            "GetBackup", lambda conn: _fetch(conn, backup_id), mutating=False, region=region
        )

    # ------------------------------------------------------------------ reading

    async def get(self, snapshot_id: str) -> Snapshot | None:
        backup = await self._backup(snapshot_id)
        if backup is None or _status(backup) in _GONE:
            return None
        return _snapshot(self.region, backup)

    async def volumes(self, tags: Mapping[str, str]) -> list[VolumeInfo]:
        """Cinder cannot be trusted to filter volumes by metadata everywhere: the region's
        volumes are read and filtered here, like backups."""
        volumes = await self._call(
            "ListVolumes",
            lambda conn: list(conn.block_storage.volumes(details=True)),
            mutating=False,
        )
        wanted = dict(tags)
        return [
            _volume_info(volume)
            for volume in volumes
            if str(volume.status or "").lower() not in ("deleting", "deleted")
            and all((volume.metadata or {}).get(k) == v for k, v in wanted.items())
        ]

    async def volumes_by_id(self, volume_ids: Sequence[str]) -> list[VolumeInfo]:
        """One GET per volume: Cinder filters no list by IDs."""
        found: list[VolumeInfo] = []
        for volume_id in volume_ids:
            volume = await self._call(
                "GetVolume", lambda conn, v=volume_id: _fetch_volume(conn, v), mutating=False
            )
            if volume is not None:
                found.append(_volume_info(volume))
        return found

    async def list(self, tags: Mapping[str, str]) -> list[Snapshot]:
        backups = await self._call(
            "ListBackups",
            lambda conn: list(conn.block_storage.backups(details=True)),
            mutating=False,
        )
        wanted = dict(tags)
        found = [
            _snapshot(self.region, backup)
            for backup in backups
            if _status(backup) not in _GONE
            and all((backup.metadata or {}).get(k) == v for k, v in wanted.items())
        ]
        return sorted(found, key=lambda s: (s.created_at, s.id), reverse=True)

    async def _settled(
        self, backup_id: str, ready: Collection[str], region: str | None = None
    ) -> Any | None:
        """The backup once its status is in ``ready`` (None when it is or goes away)."""
        where = region or self.region
        deadline = time.monotonic() + self.wait_seconds
        while True:
            backup = await self._backup(backup_id, where)
            if backup is None or _status(backup) in _GONE:
                return None
            status = _status(backup)
            if status in ready:
                return backup
            if status == "error":
                reason = getattr(backup, "fail_reason", None) or "no reason given"
                raise ValueError(f"backup {backup_id} in {where} is in error: {reason}")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"backup {backup_id} in {where} still {status} after {self.wait_seconds:g}s"
                )
            await asyncio.sleep(self.poll_seconds)

    # ------------------------------------------------------------------ writing

    async def create(self, volume_id: str, tags: Mapping[str, str]) -> Snapshot:
        check_tags(tags)
        name = f"lifeboat-{secrets.token_hex(8)}"
        attributes = {
            "volume_id": volume_id,
            "name": name,
            "description": f"lifeboat backup of volume {volume_id}",
            "metadata": dict(tags),
            "force": True,  # an attached (in-use) volume is backed up too
        }

        def create(conn: Any) -> Any:
            earlier = list(conn.block_storage.backups(details=False, name=name))
            if earlier:  # a retry of this call: the first attempt went through
                return earlier[0]
            return conn.block_storage.create_backup(**attributes)

        made = await self._call("CreateBackup", create, mutating=True)
        found = await self.get(str(made.id))
        if found is not None:
            return found
        return Snapshot(str(made.id), volume_id, self.region, "pending", time.time(), 0, dict(tags))

    async def copy_from(self, snapshot: Snapshot, tags: Mapping[str, str]) -> Snapshot:
        """Export ``snapshot``'s record in its region and import it here; see the module
        docstring. The copy starts ``pending`` until Cinder has imported it."""
        if snapshot.region == self.region:
            raise ValueError(f"backup {snapshot.id} is already in {self.region}")
        check_tags(tags)
        source = snapshot.region
        if await self._settled(snapshot.id, {"available"}, source) is None:
            raise LookupError(f"no backup {snapshot.id} in {source}")
        record = await self._call(
            "ExportBackupRecord",
            lambda conn: conn.block_storage.export_backup(snapshot.id)["backup-record"],
            mutating=False,
            region=source,
        )
        copy_id = await self._import(snapshot.id, record)
        await self._call(
            "UpdateBackup",
            lambda conn: conn.block_storage.update_backup(copy_id, metadata=dict(tags)),
            mutating=True,
        )
        copy = await self.get(copy_id)
        if copy is not None:
            return copy
        return Snapshot(
            copy_id, snapshot.volume_id, self.region, "pending", time.time(), snapshot.size_gb, tags
        )

    async def _import(self, backup_id: str, record: Mapping[str, Any]) -> str:
        """Import the record (unless this region holds the backup already); the copy's ID."""
        existing = await self._backup(backup_id)
        if existing is not None and _status(existing) == "deleting":
            # Cinder refuses to import a backup it still holds; wait until it is gone.
            await self._gone(backup_id)
            existing = None
        if existing is not None:
            return str(existing.id)

        def import_record(conn: Any) -> str:
            response = conn.block_storage.post(
                "/backups/import_record", json={"backup-record": dict(record)}
            )
            if response.status_code == 400 and "already exists" in response.text:
                return backup_id  # a retry of this call: the first attempt went through
            openstack.exceptions.raise_from_response(response)
            return str(response.json().get("backup", {}).get("id") or backup_id)

        imported: str = await self._call("ImportBackupRecord", import_record, mutating=True)
        return imported

    async def _gone(self, backup_id: str) -> None:
        deadline = time.monotonic() + self.wait_seconds
        while await self._backup(backup_id) is not None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"backup {backup_id} in {self.region} is still being deleted")
            await asyncio.sleep(self.poll_seconds)

    async def delete(self, snapshot_id: str) -> None:
        """Idempotent: a backup already gone (or being deleted) is not an error."""
        backup = await self._settled(snapshot_id, _SETTLED)
        if backup is None:
            return
        await self._call(
            "DeleteBackup",
            lambda conn: conn.block_storage.delete_backup(snapshot_id, ignore_missing=True),
            mutating=True,
        )

    async def restore(
        self, snapshot_id: str, zone: str, tags: Mapping[str, str], *, key: str
    ) -> str:
        """The volume is named after ``key``: when the restore ends, Cinder puts the backed-up
        volume's metadata (if it had any) in place of ``tags``, but keeps a name that does
        not start with ``restore_backup_``, so a later call finds the volume by its name."""
        check_tags(tags)
        backup = await self._settled(snapshot_id, {"available"})
        if backup is None:
            raise LookupError(f"no backup {snapshot_id} in {self.region}")
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        name = f"lifeboat-restore-{digest}"
        attributes = {
            "backup_id": snapshot_id,
            "availability_zone": zone,
            "size": int(backup.size),
            "name": name,
            "description": f"lifeboat restore of backup {snapshot_id}",
            "metadata": dict(tags),
        }

        def create(conn: Any) -> Any:
            earlier = [
                v
                for v in conn.block_storage.volumes(details=True, name=name)
                if str(v.status or "").lower() not in ("deleting", "deleted")
            ]
            if earlier:  # made by an earlier call (or attempt) with this key
                return earlier[0]
            return conn.block_storage.create_volume(**attributes)

        volume = await self._call("CreateVolume", create, mutating=True)
        return str(volume.id)
