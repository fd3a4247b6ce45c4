"""EBS snapshots of one region as :class:`~controller.providers.protocols.VolumeSnapshots`.

Cross-region copies are made the way EBS makes them: CopySnapshot is called in the
*destination* region with ``SourceRegion``, so a copy needs no call to the source
region's API plane (which may be the impaired one). Snapshots carry their tags from the
start (``TagSpecifications``), so a snapshot is never untagged, and a volume restored
from one is tagged likewise; CreateVolume gets a ``ClientToken`` derived from the
restore's key (app, dataset, volume, site and epoch), the snapshot and the zone
(:func:`client_token`), so a retried restore — the same call again, or the same step
again after an answer was lost or the operator restarted — does not make two volumes.
EC2 offers no token for CreateSnapshot and CopySnapshot (their tags and the planner's
listing keep them from being repeated).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import botocore.exceptions

from controller.providers.aws.connector import AwsConnector
from controller.providers.protocols import Snapshot, VolumeInfo

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import VolumeTypeType
    from mypy_boto3_ec2.type_defs import (
        DescribeSnapshotsRequestTypeDef,
        DescribeVolumesRequestTypeDef,
        FilterTypeDef,
        TagSpecificationTypeDef,
    )

_NOT_FOUND = "InvalidSnapshot.NotFound"
_FILTER_VALUES = 200
"""Values one filter of a Describe call takes."""
_STATES: dict[str, Literal["pending", "completed", "error"]] = {
    "pending": "pending",
    "recovering": "pending",  # coming back from the archive tier
    "completed": "completed",
    "error": "error",
    "recoverable": "error",  # archived: usable only after a restore
}


def _tags(
    kind: Literal["snapshot", "volume"], tags: Mapping[str, str]
) -> list[TagSpecificationTypeDef]:
    """TagSpecifications that tag the new resource as it is made (none without tags)."""
    if not tags:
        return []
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def _snapshot(region: str, item: Mapping[str, Any]) -> Snapshot:
    """A Snapshot from a DescribeSnapshots item or a CreateSnapshot answer."""
    return Snapshot(
        id=item["SnapshotId"],
        volume_id=item.get("VolumeId", ""),
        region=region,
        state=_STATES.get(item.get("State", ""), "error"),
        created_at=item["StartTime"].timestamp() if "StartTime" in item else 0.0,
        size_gb=int(item.get("VolumeSize", 0)),
        tags={t["Key"]: t["Value"] for t in item.get("Tags", [])},
    )


CLIENT_TOKEN_LENGTH = 64
"""EC2 accepts ClientTokens of up to 64 ASCII characters."""


def client_token(*parts: str) -> str:
    """An EC2 ``ClientToken`` for one logical step named by ``parts``: the same parts give
    the same token (EC2 then answers a repeated request with what the first one made)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"lifeboat-{digest}"[:CLIENT_TOKEN_LENGTH]


def _not_found(error: botocore.exceptions.ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code", "")) == _NOT_FOUND


class EbsSnapshots:
    """Snapshots (and restored volumes) in one region; ``volume_type`` for restores."""

    def __init__(
        self, connector: AwsConnector, region: str, *, volume_type: VolumeTypeType = "gp3"
    ) -> None:
        self.connector = connector
        self.region = region
        self.volume_type: VolumeTypeType = volume_type

    def __repr__(self) -> str:
        return f"EbsSnapshots({self.region})"

    def _client(self) -> EC2Client:
        client: EC2Client = self.connector.client("ec2", self.region)
        return client

    async def create(self, volume_id: str, tags: Mapping[str, str]) -> Snapshot:
        answer = await self.connector.call(
            self.region,
            "ec2",
            "CreateSnapshot",
            functools.partial(
                self._client().create_snapshot,
                VolumeId=volume_id,
                Description=f"lifeboat snapshot of {volume_id}",
                TagSpecifications=_tags("snapshot", tags),
            ),
            mutating=True,
        )
        return _snapshot(self.region, answer)

    async def copy_from(self, snapshot: Snapshot, tags: Mapping[str, str]) -> Snapshot:
        """The copy starts ``pending``; its ``volume_id`` names the source's volume (EBS
        itself reports an arbitrary ID for copies)."""
        answer = await self.connector.call(
            self.region,
            "ec2",
            "CopySnapshot",
            functools.partial(
                self._client().copy_snapshot,
                SourceRegion=snapshot.region,
                SourceSnapshotId=snapshot.id,
                Description=f"lifeboat copy of {snapshot.id} from {snapshot.region}",
                TagSpecifications=_tags("snapshot", tags),
            ),
            mutating=True,
        )
        return Snapshot(
            id=answer["SnapshotId"],
            volume_id=snapshot.volume_id,
            region=self.region,
            state="pending",
            created_at=time.time(),
            size_gb=snapshot.size_gb,
            tags=dict(tags),
        )

    async def volumes(self, tags: Mapping[str, str]) -> list[VolumeInfo]:
        found = await self._describe([{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()])
        return [v for v in found if v.state not in ("deleting", "deleted")]

    async def volumes_by_id(self, volume_ids: Sequence[str]) -> list[VolumeInfo]:
        """A ``volume-id`` filter, not ``VolumeIds``: an unknown ID is left out instead of
        failing the call."""
        found: list[VolumeInfo] = []
        for start in range(0, len(volume_ids), _FILTER_VALUES):
            chunk = list(volume_ids[start : start + _FILTER_VALUES])
            found += await self._describe([{"Name": "volume-id", "Values": chunk}])
        return found

    async def _describe(self, filters: Sequence[FilterTypeDef]) -> list[VolumeInfo]:
        request: DescribeVolumesRequestTypeDef = {"Filters": list(filters), "MaxResults": 500}
        found: list[VolumeInfo] = []
        while True:
            page = await self.connector.call(
                self.region,
                "ec2",
                "DescribeVolumes",
                functools.partial(self._client().describe_volumes, **request),
                mutating=False,
            )
            found += [
                VolumeInfo(
                    id=item["VolumeId"],
                    zone=item.get("AvailabilityZone", ""),
                    state=str(item.get("State", "")),
                    snapshot_id=item.get("SnapshotId", "") or "",
                    tags={t["Key"]: t["Value"] for t in item.get("Tags", [])},
                )
                for item in page.get("Volumes", [])
            ]
            if not page.get("NextToken"):
                break
            request = {**request, "NextToken": page["NextToken"]}
        return found

    async def list(self, tags: Mapping[str, str]) -> list[Snapshot]:
        request: DescribeSnapshotsRequestTypeDef = {
            "OwnerIds": ["self"],
            "Filters": [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()],
            "MaxResults": 1000,
        }
        found: list[Snapshot] = []
        while True:
            page = await self.connector.call(
                self.region,
                "ec2",
                "DescribeSnapshots",
                functools.partial(self._client().describe_snapshots, **request),
                mutating=False,
            )
            found += [_snapshot(self.region, item) for item in page.get("Snapshots", [])]
            if not page.get("NextToken"):
                break
            request = {**request, "NextToken": page["NextToken"]}
        return sorted(found, key=lambda s: (s.created_at, s.id), reverse=True)

    async def get(self, snapshot_id: str) -> Snapshot | None:
        try:
            page = await self.connector.call(
                self.region,
                "ec2",
                "DescribeSnapshots",
                functools.partial(self._client().describe_snapshots, SnapshotIds=[snapshot_id]),
                mutating=False,
            )
        except botocore.exceptions.ClientError as error:
            if _not_found(error):
                return None
            raise
        items = page.get("Snapshots", [])
        return _snapshot(self.region, items[0]) if items else None

    async def delete(self, snapshot_id: str) -> None:
        """Idempotent: a snapshot already gone is not an error."""
        try:
            await self.connector.call(
                self.region,
                "ec2",
                "DeleteSnapshot",
                functools.partial(self._client().delete_snapshot, SnapshotId=snapshot_id),
                mutating=True,
            )
        except botocore.exceptions.ClientError as error:
            if not _not_found(error):
                raise

    async def restore(
        self, snapshot_id: str, zone: str, tags: Mapping[str, str], *, key: str
    ) -> str:
        """EBS keeps a volume's tags: a volume made earlier is found by them; ``key`` makes
        the ClientToken, so a volume whose making was not answered (or not yet listed) is
        not made twice."""
        token = client_token(key, snapshot_id, zone)
        answer = await self.connector.call(
            self.region,
            "ec2",
            "CreateVolume",
            functools.partial(
                self._client().create_volume,
                SnapshotId=snapshot_id,
                AvailabilityZone=zone,
                VolumeType=self.volume_type,
                TagSpecifications=_tags("volume", tags),
                ClientToken=token,
            ),
            mutating=True,
        )
        return answer["VolumeId"]
