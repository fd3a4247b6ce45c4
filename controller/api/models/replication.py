"""Replication of a ResilientApp's data: the datasets its spec declares (objects, volumes)
and the per-destination figures its status reports."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from controller.api.models.common import (
    MAX_EPOCH,
    Model,
    SiteName,
    Timestamp,
    with_rules,
)
from controller.api.rules import Rule, unique

_ONE_LOCATION_PER_SITE = Rule(
    cel="self.locations.all(l, self.locations.exists_one(m, m.site == l.site))",
    message="a dataset may have only one location per site",
    check=lambda d: unique([loc.site for loc in d.locations]),
    field_path=".locations",
)
"""Object and volume datasets alike."""


class ObjectLocation(Model):
    """Where a dataset's objects live at one site: an S3 bucket or a Swift container in the
    site's provider and region."""

    site: SiteName = Field(description="One of the app's sites.")
    bucket: str = Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="S3 bucket or Swift container name.",
    )
    prefix: str = Field(
        default="", max_length=1024, description="Only keys under this prefix are replicated."
    )
    event_queue: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^(https?://\S+|[A-Za-z0-9_-]{1,80}(\.fifo)?)$",  # .fifo: refused below, in words
        description="S3 only: a standard SQS queue (name or URL, in the bucket's region) that "
        "the bucket's event notifications (ObjectCreated, ObjectRemoved) are sent to. While "
        "this site is the source, Lifeboat reads it to replicate changes within seconds; the "
        "periodic scan remains the backstop.",
    )

    rules, model_config = with_rules(
        Rule(
            cel="!has(self.eventQueue) || !self.eventQueue.endsWith('.fifo')",
            message="eventQueue must be a standard queue: S3 sends no event notifications "
            "to FIFO queues",
            check=lambda loc: not (loc.event_queue or "").endswith(".fifo"),
            field_path=".eventQueue",
        ),
    )


class ObjectDataset(Model):
    """Objects replicated from the active site to every other site."""

    name: SiteName = Field(description="Dataset name, unique within the app.")
    locations: tuple[ObjectLocation, ...] = Field(
        min_length=2, max_length=16, description="One bucket or container per site."
    )
    delete_policy: Literal["Keep", "Propagate"] = Field(
        default="Keep",
        description="Keep: objects deleted at the source stay at the other sites. "
        "Propagate: they are deleted there too.",
    )
    max_concurrency: int = Field(
        default=8, ge=1, le=256, description="Objects copied at once, per destination."
    )
    bandwidth_limit_bytes_per_second: int | None = Field(
        default=None, ge=1024, description="Upper bound on copy throughput, per destination."
    )
    scan_interval_seconds: int = Field(
        default=60,
        ge=5,
        le=86400,
        description="Period of the reconciling scan (the backstop to change events). "
        "Without an eventQueue, changes are found by the scan alone: keep it well below "
        "the RPO target.",
    )

    rules, model_config = with_rules(_ONE_LOCATION_PER_SITE)


class VolumeLocation(Model):
    """A volume dataset at one site."""

    site: SiteName = Field(description="One of the app's sites.")
    volume_ids: tuple[Annotated[str, Field(max_length=255)], ...] = Field(
        default=(),
        max_length=64,
        description="Volumes holding the data at this site while it is active (at the "
        "primary: the volumes to protect; elsewhere: filled in by restores).",
    )


class VolumeDataset(Model):
    """Block volumes protected by snapshots copied to the other sites' regions."""

    name: SiteName = Field(description="Dataset name, unique within the app.")
    locations: tuple[VolumeLocation, ...] = Field(
        min_length=2, max_length=16, description="One entry per site."
    )
    interval_seconds: int = Field(
        default=3600, ge=60, le=604800, description="Time between snapshots."
    )
    retain: int = Field(
        default=7, ge=1, le=1000, description="Snapshots (and copies) kept per volume and site."
    )

    rules, model_config = with_rules(_ONE_LOCATION_PER_SITE)


class ReplicationSpec(Model):
    """Data Lifeboat replicates between the app's sites."""

    rpo_target_seconds: int = Field(
        default=300,
        ge=1,
        le=604800,
        description="Data the app may lose, in seconds of changes; RPOBreached above it.",
    )
    objects: tuple[ObjectDataset, ...] = Field(
        default=(), max_length=32, description="Object datasets (S3, Swift)."
    )
    volumes: tuple[VolumeDataset, ...] = Field(
        default=(), max_length=32, description="Volume datasets (EBS, Cinder)."
    )

    rules, model_config = with_rules(
        Rule(
            cel="(self.objects.map(d, d.name) + self.volumes.map(d, d.name))"
            ".all(n, (self.objects.map(d, d.name) + self.volumes.map(d, d.name))"
            ".exists_one(m, m == n))",
            message="dataset names must be unique",
            check=lambda r: unique([d.name for d in (*r.objects, *r.volumes)]),
        ),
    )


class ReplicationStatus(Model):
    """Replication of one dataset from the active site to one other site."""

    dataset: str = Field(max_length=63, description="Dataset name.")
    destination: str = Field(max_length=63, description="Receiving site.")
    kind: Literal["Objects", "Volumes"] = Field(description="Object or volume dataset.")
    source: str = Field(max_length=63, description="Sending site (the active site).")
    epoch: int = Field(
        default=0, ge=0, le=MAX_EPOCH, description="Epoch the data is replicated under."
    )
    pending_objects: int = Field(
        default=0, ge=0, description="Objects (or snapshots) not yet at the destination."
    )
    pending_bytes: int = Field(default=0, ge=0, description="Bytes not yet at the destination.")
    pending_estimated: bool = Field(
        default=False,
        description="Objects: more changes are pending than a flow tracks one by one "
        "(10,000); pendingObjects, pendingBytes, oldestPendingTime and the RPO are upper "
        "bounds until the next pass that lists both ends to the end.",
    )
    rpo_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Current RPO: age of the oldest change not yet replicated (objects), or "
        "of the newest copy at the destination (volumes). Empty until first measured.",
    )
    oldest_pending_time: Timestamp | None = Field(
        default=None, description="When the oldest unreplicated change was made."
    )
    last_sync_time: Timestamp | None = Field(
        default=None, description="When the destination was last known caught up."
    )
    newest_copy_time: Timestamp | None = Field(
        default=None, description="Volumes: when the newest copy at the destination was taken."
    )
    copied_objects: int = Field(default=0, ge=0, description="Objects copied so far.")
    copied_bytes: int = Field(default=0, ge=0, description="Bytes copied so far.")
    throughput_bytes_per_second: float = Field(
        default=0, ge=0, description="Copy throughput over the last pass."
    )
    errors: int = Field(default=0, ge=0, description="Copies that failed so far.")
    conflicts: int = Field(
        default=0, ge=0, description="Copies refused: the destination held a newer epoch."
    )
    unreplicated_objects: int = Field(
        default=0,
        ge=0,
        description="Objects: objects of an older epoch at the destination that never reached "
        "the active site (after a failover, the old primary's writes it did not get). Kept "
        "whatever the delete policy until merged or discarded "
        "(`lifeboat replication unreplicated`).",
    )
    unreplicated_bytes: int = Field(default=0, ge=0, description="Their bytes.")
    unreplicated_keys: tuple[Annotated[str, Field(max_length=1024)], ...] = Field(
        default=(),
        max_length=10,
        description="The first of them in key order (all are listed in the destination's "
        "replication manifest).",
    )
    last_error: str = Field(default="", max_length=1024, description="Latest error, if any.")
    stopped: bool = Field(
        default=False,
        description="Replication to this destination is stopped: the CloudProvider of one "
        "of its ends was deleted, or its credentials withdrawn (lastError says which). It "
        "starts again by itself once the CloudProvider is usable again.",
    )
