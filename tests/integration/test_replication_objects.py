"""Object replication on real servers: moto's S3 (two regions, behind the fault layer) and
real Swift (RegionOne, RegionTwo).

Through the operator (the real API server, the operator in-process as its ServiceAccount):
objects written at the primary reach the standby within the RPO target (within seconds
through S3 event notifications in SQS, the scan as backstop), with figures in the status
and the metrics; a failover reverses the direction, the epoch rule refuses a stale
overwrite, and the automatic failback waits until replication back to the old site has
caught up; an operator stopped in the middle of a copy, or killed outright (SIGKILL, a
process of its own), resumes without a corrupt or missing object; deletes follow the
policy; Swift containers replicate and reverse too.

On the engine directly, with the real stores: a copy cut off by connection resets leaves
nothing visible and the next pass completes it; S3 -> Swift and Swift -> S3, large
objects included, with nothing read again once in step.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from controller import metrics
from controller.api.annotations import TailAction
from controller.cli import commands
from controller.providers.aws.objects import S3ObjectStore
from controller.providers.openstack.objects import SwiftObjectStore
from controller.providers.protocols import ObjectInfo, ObjectStore, OpenedObject, read_through
from controller.replication.manifest import manifest_key
from controller.replication.objects import FlowSettings, Location, ObjectFlow
from controller.replication.plan import STAMP_EPOCH, STAMP_SOURCE_ETAG, STAMP_SOURCE_SITE
from sandbox.faults import Fault, FaultSpec
from sandbox.moto_server import MotoServer
from sandbox.openstack.cloud import OpenStackWorld
from sandbox.world import OPENSTACK_EXAMPLES, Sandbox
from tests.fixtures.cloud import MakeFaultProxy
from tests.fixtures.process import OperatorProcess
from tests.fixtures.world import Apps, wait_for
from tests.integration.test_provider_contracts import (
    EAST,
    GLOBAL,
    ONE,
    TWO,
    WEST,
    AwsBackend,
    OpenStackBackend,
)

pytestmark = pytest.mark.integration

KiB, MiB = 1024, 1024 * 1024
REGIONS = {"use1": EAST, "usw2": WEST}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- helpers


def make_bucket(sandbox: Sandbox, site: str) -> str:
    region = REGIONS[site]
    name = f"lifeboat-{site}-{uuid.uuid4().hex[:10]}"
    s3 = sandbox.aws_client("s3", region)
    if region == EAST:
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


def notify_queue(sandbox: Sandbox, bucket: str) -> str:
    """An SQS queue in us-east-1 receiving the bucket's event notifications; its name."""
    sqs = sandbox.aws_client("sqs", EAST)
    name = f"events-{uuid.uuid4().hex[:10]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sandbox.aws_client("s3", EAST).put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )
    return name


class Buckets:
    """The app's two S3 buckets, read and written straight at moto (as the app would)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.names = {site: make_bucket(sandbox, site) for site in REGIONS}

    def s3(self, site: str) -> Any:
        return self.sandbox.aws_client("s3", REGIONS[site])

    def put(self, site: str, key: str, data: bytes) -> None:
        self.s3(site).put_object(Bucket=self.names[site], Key=key, Body=data)

    def delete(self, site: str, key: str) -> None:
        self.s3(site).delete_object(Bucket=self.names[site], Key=key)

    def get(self, site: str, key: str) -> bytes | None:
        try:
            answer = self.s3(site).get_object(Bucket=self.names[site], Key=key)
        except self.s3(site).exceptions.NoSuchKey:
            return None
        data: bytes = answer["Body"].read()
        return data

    def head(self, site: str, key: str) -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = self.s3(site).head_object(Bucket=self.names[site], Key=key)
        except Exception:
            return None
        return answer

    def keys(self, site: str) -> list[str]:
        pages = self.s3(site).get_paginator("list_objects_v2").paginate(Bucket=self.names[site])
        return sorted(
            o["Key"]
            for page in pages
            for o in page.get("Contents", [])
            if not o["Key"].startswith(".lifeboat/")
        )

    def uploads(self, site: str) -> int:
        answer = self.s3(site).list_multipart_uploads(Bucket=self.names[site])
        return len(answer.get("Uploads", []))

    def uploaded_parts(self, site: str) -> int:
        """Parts stored so far by the multipart uploads under way."""
        s3, bucket = self.s3(site), self.names[site]
        return sum(
            len(s3.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", []))
            for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        )


def replication(
    locations: Mapping[str, str], *, queue: str | None = None, **dataset: Any
) -> Callable[[dict[str, Any]], None]:
    """A mutation giving the app one object dataset ``photos`` over ``locations``."""
    rpo = dataset.pop("rpoTargetSeconds", 30)

    def mutate(body: dict[str, Any]) -> None:
        body["spec"]["replication"] = {
            "rpoTargetSeconds": rpo,
            "objects": [
                {
                    "name": "photos",
                    "locations": [
                        {"site": site, "bucket": bucket}
                        | ({"eventQueue": queue} if queue and index == 0 else {})
                        for index, (site, bucket) in enumerate(locations.items())
                    ],
                    "scanIntervalSeconds": 5,
                    **dataset,
                }
            ],
        }

    return mutate


def combine(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(body)

    return mutate


def failover_policy(**policy: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["spec"]["failover"] = {**body["spec"].get("failover", {}), **policy}

    return mutate


def entry(status: Mapping[str, Any], destination: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        (e for e in status.get("replication", []) if e["destination"] == destination), {}
    )
    return found


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == kind), {})
    return found


def when(
    apps: Apps, ns: str, name: str, predicate: Callable[[dict[str, Any]], bool]
) -> Callable[[], dict[str, Any] | None]:
    """A check for wait_for: the app's status once ``predicate`` holds for it."""

    def check() -> dict[str, Any] | None:
        status = apps.status(ns, name)
        return status if predicate(status) else None

    return check


def metric(name: str, ns: str, app: str, destination: str) -> float | None:
    labels = {"namespace": ns, "app": app, "dataset": "photos", "destination": destination}
    return metrics.REGISTRY.get_sample_value(name, labels)


# ----------------------------------------------------------------------------- S3 end to end


def test_objects_reach_the_standby_within_the_rpo_target(apps: Apps, sandbox: Sandbox) -> None:
    buckets = Buckets(sandbox)
    queue = notify_queue(sandbox, buckets.names["use1"])
    large = os.urandom(9 * MiB)  # above the 8 MiB threshold: a multipart copy
    buckets.put("use1", "albums/large.bin", large)
    for n in range(3):
        buckets.put("use1", f"albums/{n}.jpg", f"picture {n}".encode())
    # The scan comes every 5 minutes: anything faster is the change notices' doing.
    ns, name = apps.create(
        replication(buckets.names, queue=queue, scanIntervalSeconds=300, rpoTargetSeconds=30)
    )
    apps.wait_serving(ns, name)

    def caught_up() -> dict[str, Any] | None:
        status = apps.status(ns, name)
        e = entry(status, "usw2")
        return status if e.get("copiedObjects", 0) >= 4 and e.get("pendingObjects") == 0 else None

    status = wait_for(caught_up, 30, "the first pass to copy the four objects")
    assert buckets.keys("usw2") == buckets.keys("use1")
    assert sha(buckets.get("usw2", "albums/large.bin") or b"") == sha(large)
    copy = buckets.head("usw2", "albums/0.jpg")
    assert copy is not None
    assert copy["Metadata"][STAMP_EPOCH] == "1"
    assert copy["Metadata"][STAMP_SOURCE_SITE] == "use1"
    assert copy["Metadata"][STAMP_SOURCE_ETAG] == buckets.head("use1", "albums/0.jpg")[
        "ETag"
    ].strip('"')  # type: ignore[index]
    e = entry(status, "usw2")
    assert (e["kind"], e["source"], e["epoch"], e["errors"]) == ("Objects", "use1", 1, 0)
    assert e["copiedBytes"] >= len(large)

    written = time.time()
    buckets.put("use1", "albums/new.jpg", b"taken just now")
    wait_for(lambda: buckets.get("usw2", "albums/new.jpg"), 15, "the new object at the standby")
    assert time.time() - written < 30  # within the RPO target

    # Keep (the default): deleted at the source, kept at the standby.
    buckets.delete("use1", "albums/0.jpg")
    buckets.put("use1", "albums/after-delete.jpg", b"x")
    wait_for(lambda: buckets.get("usw2", "albums/after-delete.jpg"), 15, "the next change")
    assert buckets.get("usw2", "albums/0.jpg") == b"picture 0"

    status = wait_for(
        when(apps, ns, name, lambda s: condition(s, "Replicating").get("status") == "True"),
        70,
        "Replicating True in the status",
    )
    assert condition(status, "RPOBreached")["status"] == "False"
    assert entry(status, "usw2")["rpoSeconds"] <= 30
    labels = (ns, name, "usw2")
    assert (metric("lifeboat_replication_objects_total", *labels) or 0) >= 6
    assert (metric("lifeboat_replication_bytes_total", *labels) or 0) >= len(large)
    target = {"namespace": ns, "app": name, "dataset": "photos"}
    assert (
        metrics.REGISTRY.get_sample_value("lifeboat_replication_rpo_target_seconds", target) == 30
    )
    wait_for(
        lambda: metric("lifeboat_replication_pending_objects", *labels) == 0,
        10,
        "nothing pending in the metrics",
    )
    assert metric("lifeboat_replication_deletes_total", *labels) == 0
    assert metric("lifeboat_replication_rpo_seconds", *labels) is not None
    assert (metric("lifeboat_replication_last_success_timestamp_seconds", *labels) or 0) > 0


def test_a_failover_reverses_replication_and_failback_waits_for_it(
    apps: Apps, sandbox: Sandbox
) -> None:
    buckets = Buckets(sandbox)
    buckets.put("use1", "doc", b"version 1")
    ns, name = apps.create(
        combine(
            # 1 KiB/s after a 64 KiB burst: a 112 KiB object takes 48 s, which leaves use1's
            # zones (served again below) time to be judged healthy while it is on its way.
            replication(buckets.names, rpoTargetSeconds=8, bandwidthLimitBytesPerSecond=1024),
            failover_policy(minDwellSeconds=0, failback={"mode": "Automatic", "stableSeconds": 0}),
        )
    )
    apps.wait_serving(ns, name)
    wait_for(lambda: buckets.get("usw2", "doc"), 20, "doc at the standby")

    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.down()
    status = wait_for(
        when(apps, ns, name, lambda s: s.get("epoch") == 2),
        30,
        "the failover to usw2",
    )
    assert status["activeSite"] == "usw2"
    # The app now writes at usw2; a client still on the old address writes doc at use1.
    big = os.urandom(112 * 1024)
    buckets.put("usw2", "big.bin", big)
    time.sleep(1.5)  # object times have a one-second resolution
    buckets.put("use1", "doc", b"stray write at the old primary")
    wait_for(
        when(apps, ns, name, lambda s: entry(s, "use1").get("pendingObjects", 0) >= 1),
        20,
        "replication to use1 to find big.bin",
    )
    # The gate holds a failback while the lag is above the target. Until big.bin is 8 s old
    # the lag is within it, and a use1 judged healthy sooner would rightly be failed back to
    # at once; so use1 comes back only once the lag has passed the target.
    wait_for(
        when(apps, ns, name, lambda s: condition(s, "RPOBreached").get("status") == "True"),
        30,
        "the lag to use1 to pass the target",
    )
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.serve()

    def reversed_and_waiting() -> dict[str, Any] | None:
        s = apps.status(ns, name)
        use1_healthy = all(z["state"] == "Healthy" for z in s["zones"] if z["site"] == "use1")
        back = entry(s, "use1")
        waiting = (
            s["activeSite"] == "usw2"
            and use1_healthy
            and back.get("source") == "usw2"
            and condition(s, "RPOBreached").get("status") == "True"
        )
        return s if waiting else None

    status = wait_for(reversed_and_waiting, 60, "use1 healthy, failback held by replication")
    assert buckets.get("use1", "big.bin") is None  # still on its way
    assert entry(status, "use1")["epoch"] == 2

    status = wait_for(
        when(apps, ns, name, lambda s: s.get("epoch") == 3),
        90,
        "the automatic failback once replication caught up",
    )
    assert status["activeSite"] == "use1"
    assert sha(buckets.get("use1", "big.bin") or b"") == sha(big)
    # The epoch rule: usw2's doc (an epoch-1 copy) never overwrote the epoch-2 write.
    assert buckets.get("use1", "doc") == b"stray write at the old primary"
    events = apps.events(ns, name)
    conflicts = [m for t, r, m in events if (t, r) == ("Warning", "ReplicationConflict")]
    assert conflicts and "doc" in conflicts[0] and "-> use1" in conflicts[0]
    assert "RPOBreached" in [r for _, r, _ in events]
    # Replication turned around again: use1 -> usw2 under epoch 3.
    status = wait_for(
        when(apps, ns, name, lambda s: entry(s, "usw2").get("epoch") == 3),
        20,
        "replication from use1 under epoch 3",
    )
    wait_for(
        lambda: buckets.get("usw2", "doc") == b"stray write at the old primary",
        20,
        "the epoch-2 doc to reach usw2",
    )


def test_after_a_failover_the_old_primarys_tail_is_kept_reported_and_merged_on_request(
    apps: Apps, sandbox: Sandbox
) -> None:
    """Propagate: the reversed flow keeps what use1 took and never sent; the status, the
    metrics and an Event report it; ``lifeboat replication unreplicated --merge`` copies it
    to the new primary."""
    buckets = Buckets(sandbox)
    buckets.put("use1", "orders/1", b"replicated")
    ns, name = apps.create(
        combine(
            # One scan when the flow starts, the next an hour later: what is written at
            # use1 after the first is never sent (the app's unreplicated tail).
            replication(buckets.names, deletePolicy="Propagate", scanIntervalSeconds=3600),
            failover_policy(minDwellSeconds=0),
        )
    )
    apps.wait_serving(ns, name)
    wait_for(lambda: buckets.get("usw2", "orders/1"), 20, "orders/1 at the standby")
    buckets.put("use1", "orders/2", b"the tail: taken by use1, never replicated")
    time.sleep(1.5)  # object times have a one-second resolution
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.down()
    status = wait_for(
        when(apps, ns, name, lambda s: entry(s, "use1").get("unreplicatedObjects") == 1),
        40,
        "the failover to usw2 and the tail reported",
    )
    for endpoint in sandbox.zones.site_endpoints("use1"):
        endpoint.serve()
    back = entry(status, "use1")
    assert (status["epoch"], back["source"]) == (2, "usw2")
    assert back["unreplicatedBytes"] == len(b"the tail: taken by use1, never replicated")
    assert back["unreplicatedKeys"] == ["orders/2"]
    assert buckets.get("use1", "orders/2") == b"the tail: taken by use1, never replicated"
    assert metric("lifeboat_replication_unreplicated_objects", ns, name, "use1") == 1
    events = apps.events(ns, name)
    reported = [m for t, r, m in events if (t, r) == ("Warning", "UnreplicatedObjects")]
    assert reported and "orders/2" in reported[0]

    cluster = commands.Cluster(sandbox.kube.api_client(), ns)
    listing = io.StringIO()
    assert commands.unreplicated(cluster, ns, name, None, None, wait=0, out=listing) == 0
    assert "orders/2" in listing.getvalue()
    out = io.StringIO()
    code = commands.unreplicated(cluster, ns, name, "merge", None, wait=60, out=out)
    assert code == 0, out.getvalue()
    assert "succeeded: 1 object(s)" in out.getvalue()
    assert buckets.get("usw2", "orders/2") == b"the tail: taken by use1, never replicated"
    assert buckets.get("use1", "orders/2") == b"the tail: taken by use1, never replicated"
    answer = apps.status(ns, name)["unreplicatedRequest"]
    assert (answer["phase"], answer["objects"], answer["action"]) == ("Succeeded", 1, "merge")
    assert "UnreplicatedResolved" in [r for _, r, _ in apps.events(ns, name)]


def test_a_restarted_operator_resumes_an_interrupted_copy(apps: Apps, sandbox: Sandbox) -> None:
    buckets = Buckets(sandbox)
    for n in range(4):
        buckets.put("use1", f"small-{n}", f"small {n}".encode())
    big = os.urandom(9 * MiB)
    buckets.put("use1", "big.bin", big)
    # 9 MiB at 256 KiB/s takes 36 s: the operator is stopped well before the copy could
    # end, however long the stop takes (a copy that ended as the stop began would be
    # visible, whole, and prove nothing).
    ns, name = apps.create(
        replication(buckets.names, deletePolicy="Propagate", bandwidthLimitBytesPerSecond=256 * KiB)
    )
    apps.wait_serving(ns, name)
    wait_for(lambda: len(buckets.keys("usw2")) == 4, 30, "the small objects at the standby")
    copied = {k: buckets.head("usw2", k)["LastModified"] for k in buckets.keys("usw2")}  # type: ignore[index]
    time.sleep(2)  # the large copy is under way
    assert buckets.get("usw2", "big.bin") is None
    apps.stop_operator()
    assert buckets.get("usw2", "big.bin") is None  # nothing partial is ever visible

    # The restarted operator copies at 4 MiB/s (a spec change made while it was down).
    objects = apps.get(ns, name)["spec"]["replication"]["objects"]
    objects[0]["bandwidthLimitBytesPerSecond"] = 4 * MiB
    apps.patch_spec(ns, name, {"replication": {"objects": objects}})
    apps.operator.start()  # type: ignore[union-attr]
    wait_for(lambda: buckets.head("usw2", "big.bin"), 40, "the large copy, resumed")
    assert sha(buckets.get("usw2", "big.bin") or b"") == sha(big)
    assert buckets.uploads("usw2") == 0  # the interrupted upload was aborted
    # Resumed, not started over: the small copies were not made again.
    assert {k: buckets.head("usw2", k)["LastModified"] for k in copied} == copied  # type: ignore[index]

    # Propagate: a delete at the source follows.
    buckets.delete("use1", "small-0")
    wait_for(lambda: "small-0" not in buckets.keys("usw2"), 20, "the delete at the standby")
    status = apps.status(ns, name)
    assert (metric("lifeboat_replication_deletes_total", ns, name, "usw2") or 0) >= 1
    assert entry(status, "usw2")["errors"] == 0


def test_an_operator_killed_mid_upload_leaves_nothing_visible_and_its_successor_completes(
    app_harness: Apps, sandbox: Sandbox, tmp_path: Path
) -> None:
    """SIGKILL, as when a node dies or the OOM killer strikes: no abort, no checkpoint,
    the Lease left to expire. The successor (another process) takes the lease over."""
    buckets = Buckets(sandbox)
    for n in range(3):
        buckets.put("use1", f"small-{n}", f"small {n}".encode())
    big = os.urandom(20 * MiB)  # multipart: 8 + 8 + 4 MiB parts, 20 s at 1 MiB/s
    buckets.put("use1", "big.bin", big)
    first = OperatorProcess.start(sandbox, tmp_path / "first.log")
    second: OperatorProcess | None = None
    try:
        try:
            ns, name = app_harness.create(
                replication(buckets.names, bandwidthLimitBytesPerSecond=1 * MiB)
            )
            first.wait_for(lambda: len(buckets.keys("usw2")) == 3, 60, "the small objects")
            copied = {k: buckets.head("usw2", k)["LastModified"] for k in buckets.keys("usw2")}  # type: ignore[index]
            first.wait_for(lambda: buckets.uploaded_parts("usw2") >= 1, 30, "a first part stored")
        finally:
            first.kill()
        assert first.process.returncode == -signal.SIGKILL
        assert buckets.get("usw2", "big.bin") is None  # its parts are not an object
        assert buckets.uploads("usw2") == 1  # left, invisible, for the bucket's lifecycle rule
        assert buckets.uploaded_parts("usw2") >= 1

        objects = app_harness.get(ns, name)["spec"]["replication"]["objects"]
        objects[0]["bandwidthLimitBytesPerSecond"] = 8 * MiB
        app_harness.patch_spec(ns, name, {"replication": {"objects": objects}})
        second = OperatorProcess.start(sandbox, tmp_path / "second.log")
        # The killed leader's Lease (15 s) expires before the successor acts.
        second.wait_for(lambda: buckets.head("usw2", "big.bin"), 90, "the large copy, made again")
        assert sha(buckets.get("usw2", "big.bin") or b"") == sha(big)
        assert {k: buckets.head("usw2", k)["LastModified"] for k in copied} == copied  # type: ignore[index]

        def caught_up() -> dict[str, Any] | None:
            status = app_harness.status(ns, name)
            return status if entry(status, "usw2").get("pendingObjects") == 0 else None

        status = second.wait_for(caught_up, 30, "nothing pending at usw2")
        assert entry(status, "usw2")["rpoSeconds"] is not None
    finally:
        # Whatever happened: the app is deleted while an operator runs (its finalizer).
        cleaner = second or OperatorProcess.start(sandbox, tmp_path / "cleanup.log")
        try:
            app_harness.delete_all()
        finally:
            cleaner.stop()


# ----------------------------------------------------------------------------- engine, real stores


@pytest.fixture
def s3(moto: MotoServer, make_fault_proxy: MakeFaultProxy) -> Iterator[AwsBackend]:
    proxies = {region: make_fault_proxy(moto.url, name=region) for region in (EAST, WEST, GLOBAL)}
    backend = AwsBackend(moto, proxies, attempts=1)
    yield backend
    backend.connector.close()


@pytest.fixture
def swift(openstack_cloud: OpenStackWorld) -> Iterator[OpenStackBackend]:
    backend = OpenStackBackend(openstack_cloud)
    yield backend
    backend.connector.close()


class Tap:
    """A store whose reads call ``on_offset(key, bytes read so far)`` before each chunk."""

    def __init__(self, store: ObjectStore, on_offset: Callable[[str, int], None]) -> None:
        self.store = store
        self.region = store.region
        self.on_offset = on_offset

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.store.list(prefix)

    async def head(self, key: str) -> ObjectInfo | None:
        return await self.store.head(key)

    async def get(self, key: str) -> AsyncIterator[bytes]:
        async for chunk in read_through(await self.open(key), key):
            yield chunk

    async def open(self, key: str) -> OpenedObject | None:
        opened = await self.store.open(key)
        if opened is None:
            return None
        inner = opened.chunks

        async def tapped() -> AsyncIterator[bytes]:
            offset = 0
            async for chunk in inner:
                self.on_offset(key, offset)
                offset += len(chunk)
                yield chunk

        return OpenedObject(opened.info, tapped(), opened.release)

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        size: int,
        metadata: Mapping[str, str],
        *,
        md5_hex: str | None = None,
        replacing: bool = True,
    ) -> ObjectInfo:
        return await self.store.put(
            key, chunks, size, metadata, md5_hex=md5_hex, replacing=replacing
        )

    async def delete(self, key: str) -> None:
        await self.store.delete(key)


async def write(store: ObjectStore, key: str, data: bytes) -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), MiB):
            yield data[i : i + MiB]

    await store.put(key, body(), len(data), {})


async def read(store: ObjectStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get(key)])


def settings(epoch: int = 1, **overrides: Any) -> FlowSettings:
    return FlowSettings(
        app="e2e/objects", dataset="photos", epoch=epoch, checkpoint_interval=0, **overrides
    )


async def test_a_copy_cut_off_by_resets_leaves_nothing_and_the_next_pass_completes(
    s3: AwsBackend,
) -> None:
    east = s3.objects(EAST, s3.bucket(EAST), multipart_threshold=5 * MiB, part_size=5 * MiB)
    west_bucket = s3.bucket(WEST)
    west = s3.objects(WEST, west_bucket, multipart_threshold=5 * MiB, part_size=5 * MiB)
    big = os.urandom(12 * MiB)
    await write(east, "big.bin", big)
    for n in range(3):
        await write(east, f"s{n}", f"small {n}".encode())
    proxy = s3.proxy(WEST)

    armed = [True]

    def reset_after_first_part(key: str, offset: int) -> None:
        """Connections to us-west-2 are reset once the first large copy's first part is
        sent, until the next object is read."""
        if key == "big.bin" and offset >= 6 * MiB and armed[0]:
            armed[0] = False
            proxy.set_faults(FaultSpec(reset=1.0, action="PUT *"))
        elif key != "big.bin":
            proxy.clear_faults()

    flow = ObjectFlow(
        settings(max_concurrency=1),
        Location("use1", Tap(east, reset_after_first_part)),
        Location("usw2", west),
    )
    assert not await flow.scan()
    assert proxy.count(fault=Fault.RESET) >= 1  # the part (and the checkpoint after it)
    assert await west.head("big.bin") is None  # nothing partial visible
    assert s3.pending_uploads(WEST, west_bucket) == 0  # the multipart upload was aborted
    status = flow.figures.status(time.time())
    assert (status.errors, status.pending_objects, status.copied_objects) == (1, 1, 3)
    assert status.last_error.startswith("big.bin: ")

    proxy.clear_records()
    assert await flow.scan()
    assert sha(await read(west, "big.bin")) == sha(big)
    assert sorted([k async for k in _unpaged(west)]) == sorted(
        ["big.bin", "s0", "s1", "s2", manifest_key("", "e2e/objects", "photos")]
    )
    proxy.clear_records()
    assert await flow.scan()  # in step: only listings
    assert proxy.count(mutating=True) == 0


async def _unpaged(store: ObjectStore) -> AsyncIterator[str]:
    """The keys of ``store`` but the pages of Lifeboat's manifests."""
    async for info in store.list():
        if ".pages/" not in info.key:
            yield info.key


ORDER_KEYS = ["a", "a/b", "a~", "ab", "b", "z", "~", "é", "\uff01", "😀", "😀/x"]
"""Keys whose UTF-8 byte order differs from their UTF-16 order (U+FF01 before U+1F600)
and from a case-folded or locale order."""


@pytest.mark.parametrize("cloud", ["s3", pytest.param("swift", marks=pytest.mark.openstack)])
async def test_listings_are_in_utf8_byte_order_and_a_paged_pass_follows_them(
    request: pytest.FixtureRequest, cloud: str
) -> None:
    """S3 (ListObjectsV2) and Swift (container listings, marker paging) both list keys in
    the byte order of their UTF-8 names, which is Python's string order: the order the
    engine pairs listings and manifest pages in. A pass whose manifest pages hold three
    rows each, across listing pages of four keys, copies every key once; a restarted
    operator's pass copies nothing and writes no page."""
    if cloud == "s3":
        aws: AwsBackend = request.getfixturevalue("s3")
        source: ObjectStore = aws.objects(EAST, aws.bucket(EAST), page_size=4)
        target: ObjectStore = aws.objects(WEST, aws.bucket(WEST), page_size=4)
    else:
        openstack: OpenStackBackend = request.getfixturevalue("swift")
        source = openstack.objects(ONE, openstack.bucket(ONE), page_size=4)
        target = openstack.objects(TWO, openstack.bucket(TWO), page_size=4)
    for key in reversed(ORDER_KEYS):
        await write(source, key, key.encode())
    listed = [i.key async for i in source.list()]
    assert listed == sorted(ORDER_KEYS, key=lambda k: k.encode()) == sorted(ORDER_KEYS)
    paged = settings(1, page_rows=3, segment_keys=2)
    assert await ObjectFlow(paged, Location("use1", source), Location("usw2", target)).scan()
    assert [k async for k in _unpaged(target)] == sorted(
        [*ORDER_KEYS, manifest_key("", "e2e/objects", "photos")]
    )
    for key in ORDER_KEYS:
        assert await read(target, key) == key.encode()
    pages = [i.key async for i in target.list(".lifeboat/") if ".pages/" in i.key]
    assert len(pages) == 4  # 11 rows, 3 to a page
    restarted = ObjectFlow(paged, Location("use1", source), Location("usw2", target))
    assert await restarted.scan()
    assert restarted.figures.totals.copied_objects == len(ORDER_KEYS)  # from the manifest
    assert [i.key async for i in target.list(".lifeboat/") if ".pages/" in i.key] == pages


@pytest.mark.openstack
@pytest.mark.parametrize("direction", ["s3-to-swift", "swift-to-s3"])
async def test_s3_and_swift_replicate_both_ways(
    s3: AwsBackend, swift: OpenStackBackend, direction: str
) -> None:
    aws: ObjectStore = s3.objects(
        EAST, s3.bucket(EAST), multipart_threshold=5 * MiB, part_size=5 * MiB
    )
    openstack: ObjectStore = swift.objects(
        ONE, swift.bucket(ONE), multipart_threshold=5 * MiB, part_size=5 * MiB
    )
    assert isinstance(aws, S3ObjectStore) and isinstance(openstack, SwiftObjectStore)
    first, second = (aws, openstack) if direction == "s3-to-swift" else (openstack, aws)
    large = os.urandom(6 * MiB)  # multipart at S3, a Static Large Object at Swift
    await write(first, "large.bin", large)
    await write(first, "a/small", b"small")
    forward = ObjectFlow(settings(1), Location("one", first), Location("two", second))
    assert await forward.scan()
    assert sha(await read(second, "large.bin")) == sha(large)
    copy = await second.head("large.bin")
    assert copy is not None and copy.metadata[STAMP_EPOCH] == "1"
    assert forward.figures.totals.copied_objects == 2

    # A failover: the other way round under epoch 2. The ETags differ between the clouds
    # (multipart vs SLO), yet nothing is copied back: the manifests say they match.
    back = ObjectFlow(
        settings(2, propagate_deletes=True), Location("two", second), Location("one", first)
    )
    assert await back.scan()
    assert back.figures.totals.copied_objects == 0
    await write(second, "b/new", b"written at the new primary")
    await second.delete("a/small")
    assert await back.scan()
    assert await read(first, "b/new") == b"written at the new primary"
    assert await first.head("a/small") is None  # Propagate
    again = ObjectFlow(
        settings(2, propagate_deletes=True), Location("two", second), Location("one", first)
    )
    assert await again.scan()  # a restarted operator: still nothing to copy or read
    assert again.figures.totals.copied_objects == 1
    assert sha(await read(first, "large.bin")) == sha(large)


# ----------------------------------------------------------------------------- Swift end to end


@pytest.fixture
def swift_apps(openstack_sandbox: Sandbox, openstack_operator: None) -> Iterator[Apps]:
    """Apps from the OpenStack example (each with a Designate zone of its own), with the
    operator running; deleted afterwards."""
    world = openstack_sandbox.openstack_world
    assert world is not None
    zone_name = f"rep-{uuid.uuid4().hex[:8]}.test."
    dns = world.direct_connection(ONE).dns
    zone = dns.create_zone(name=zone_name, email="ops@lifeboat.test", ttl=300)
    wait_for(lambda: dns.get_zone(zone.id).status == "ACTIVE", 30, f"zone {zone_name} active")
    harness = Apps(openstack_sandbox, examples=OPENSTACK_EXAMPLES, zone=zone_name)
    try:
        yield harness
    finally:
        for endpoint in openstack_sandbox.zones.endpoints:
            endpoint.serve()
        harness.delete_all()
        dns.delete_zone(zone, ignore_missing=True)


@pytest.mark.openstack
def test_swift_containers_replicate_and_reverse_across_a_failover(
    swift_apps: Apps, openstack_sandbox: Sandbox
) -> None:
    apps = swift_apps
    world = openstack_sandbox.openstack_world
    assert world is not None
    stores = {
        site: world.direct_connection(region).object_store
        for site, region in (("os1", ONE), ("os2", TWO))
    }
    containers = {site: f"photos-{site}-{uuid.uuid4().hex[:8]}" for site in stores}
    for site, store in stores.items():
        store.create_container(containers[site])
    stores["os1"].upload_object(containers["os1"], "albums/1.jpg", data=b"from os1")

    def get(site: str, key: str) -> bytes | None:
        try:
            return bytes(stores[site].download_object(key, container=containers[site]))
        except Exception:
            return None

    ns, name = apps.create(
        combine(
            lambda body: body["spec"]["traffic"].update(hostedZoneName=apps.zone),
            replication(containers),
        )
    )
    apps.wait_serving(ns, name, timeout=60)
    wait_for(lambda: get("os2", "albums/1.jpg") == b"from os1", 30, "the object at os2")
    found = stores["os2"].get_object_metadata("albums/1.jpg", container=containers["os2"])
    meta = {k.lower(): v for k, v in found.metadata.items()}
    assert meta.get(STAMP_EPOCH) == "1" and meta.get(STAMP_SOURCE_SITE) == "os1"

    for endpoint in openstack_sandbox.zones.site_endpoints("os1"):
        endpoint.down()
    wait_for(lambda: apps.status(ns, name).get("epoch") == 2, 60, "the failover to os2")
    stores["os2"].upload_object(containers["os2"], "albums/2.jpg", data=b"from os2")
    wait_for(lambda: get("os1", "albums/2.jpg") == b"from os2", 30, "the object back at os1")
    status = wait_for(
        when(apps, ns, name, lambda s: entry(s, "os1").get("copiedObjects", 0) >= 1),
        30,
        "figures for os1 in the status",
    )
    back = entry(status, "os1")
    assert (back["source"], back["epoch"], back["kind"]) == ("os2", 2, "Objects")
    assert entry(status, "os2") == {}  # os2 is the source now


# ------------------------------------------------------------------------- the unreplicated tail


@pytest.mark.parametrize("cloud", ["s3", pytest.param("swift", marks=pytest.mark.openstack)])
async def test_propagate_keeps_the_unreplicated_tail_of_the_old_primary(
    request: pytest.FixtureRequest, cloud: str
) -> None:
    """After a failover, objects the old primary took that never reached the new one are
    not deleted by the reversed flow (delete policy Propagate): they are kept, counted and
    listed; an object the app deleted at the new primary under the new epoch still is."""
    if cloud == "s3":
        aws: AwsBackend = request.getfixturevalue("s3")
        old: ObjectStore = aws.objects(EAST, aws.bucket(EAST))
        new: ObjectStore = aws.objects(WEST, aws.bucket(WEST))
    else:
        openstack: OpenStackBackend = request.getfixturevalue("swift")
        old = openstack.objects(ONE, openstack.bucket(ONE))
        new = openstack.objects(TWO, openstack.bucket(TWO))
    await write(old, "orders/1", b"replicated before the failover")
    await write(old, "orders/2", b"replicated, then deleted at the new primary")
    forward = ObjectFlow(
        settings(1, propagate_deletes=True), Location("use1", old), Location("usw2", new)
    )
    assert await forward.scan()
    assert await read(new, "orders/2") == b"replicated, then deleted at the new primary"
    # The old primary takes writes that the failover cuts off (the flow is stopped).
    await write(old, "orders/3", b"the tail: written, never replicated")
    await asyncio.sleep(1.1)  # the stores' modification times have a one-second resolution
    decided = time.time()
    await asyncio.sleep(1.1)
    await new.delete("orders/2")  # the app deletes it at the new primary, epoch 2

    back = ObjectFlow(
        settings(2, propagate_deletes=True, epoch_since=decided),
        Location("usw2", new),
        Location("use1", old),
    )
    await back.scan()
    assert await read(old, "orders/3") == b"the tail: written, never replicated"
    assert await old.head("orders/2") is None  # deleted at the new primary: propagated
    assert await read(old, "orders/1") == b"replicated before the failover"
    assert back.figures.totals.deletes == 1
    tail = await back.unreplicated()
    assert [u.key for u in tail] == ["orders/3"]
    assert tail[0].size == len(b"the tail: written, never replicated")
    assert tail[0].epoch == 1
    status = back.figures.status(time.time())
    assert (status.unreplicated_objects, status.unreplicated_bytes) == (1, tail[0].size)

    again = ObjectFlow(  # a restarted operator still knows, and still keeps them
        settings(2, propagate_deletes=True, epoch_since=decided),
        Location("usw2", new),
        Location("use1", old),
    )
    assert await again.scan()
    assert await read(old, "orders/3") == b"the tail: written, never replicated"
    assert [u.key for u in (await again.unreplicated())] == ["orders/3"]

    # `lifeboat replication unreplicated --merge`: copied to the new primary, stamped.
    merged = await again.resolve(TailAction.MERGE)
    assert (merged.objects, merged.failed, merged.skipped) == (1, 0, 0)
    assert await read(new, "orders/3") == b"the tail: written, never replicated"
    stamp = await new.head("orders/3")
    assert stamp is not None and stamp.metadata[STAMP_SOURCE_SITE] == "use1"
    assert await again.scan()
    assert (await again.unreplicated()) == [] and again.figures.totals.copied_objects == 0
    assert await read(old, "orders/3") == b"the tail: written, never replicated"
