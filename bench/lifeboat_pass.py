"""Lifeboat's side of the benchmark, in a process of its own (so its peak memory is its own).

``python -m bench.lifeboat_pass JOB`` where JOB is JSON (see ``bench.objects.Tools``):

* ``mode: pass`` — one reconciling pass of the replication engine (the same
  :class:`~controller.replication.objects.ObjectFlow` the operator runs) from the source
  bucket to the destination bucket or container; prints its figures as JSON;
* ``mode: follow`` — the engine's event-driven path: the source bucket's S3 notifications
  go to an SQS queue, a :class:`~controller.replication.objects.ChangeListener` marks keys
  dirty and the flow settles them between scans; prints ``ready`` once listening and runs
  for ``seconds``.

Credentials come from the environment (never the command line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

import boto3
from pydantic import SecretStr

from controller.api.models import CloudProviderSpec
from controller.providers.aws.connector import AwsConnector, AwsCredentials
from controller.providers.aws.events import SqsChangeFeed
from controller.providers.aws.objects import S3ObjectStore
from controller.providers.openstack.connector import OpenStackConnector, OpenStackCredentials
from controller.providers.openstack.objects import SwiftObjectStore
from controller.providers.protocols import ObjectStore
from controller.replication.objects import ChangeListener, FlowSettings, Location, ObjectFlow

CLOUD = "lifeboat"


def aws(job: dict[str, Any], regions: list[str]) -> AwsConnector:
    spec = CloudProviderSpec.model_validate(
        {
            "type": "aws",
            "regions": regions,
            "credentials": {"source": "Secret", "secretRef": {"name": "bench"}},
            "endpointOverrides": [{"url": job["s3_endpoint"]}],
        }
    )
    credentials = AwsCredentials(
        os.environ["BENCH_AWS_ACCESS_KEY_ID"], SecretStr(os.environ["BENCH_AWS_SECRET_ACCESS_KEY"])
    )
    return AwsConnector("bench-aws", spec, credentials, max_concurrency=job["concurrency"])


def openstack(job: dict[str, Any], region: str) -> OpenStackConnector:
    spec = CloudProviderSpec.model_validate(
        {
            "type": "openstack",
            "regions": [region],
            "credentials": {"source": "Secret", "secretRef": {"name": "bench"}},
            "openstack": {"cloud": CLOUD},
        }
    )
    credentials = OpenStackCredentials.from_secret_data(
        {"clouds.yaml": os.environ["BENCH_OPENSTACK_CLOUDS_YAML"]}, CLOUD
    )
    return OpenStackConnector(
        "bench-openstack", spec, credentials, max_concurrency=job["concurrency"]
    )


def store(job: dict[str, Any], end: dict[str, Any]) -> ObjectStore:
    if end["kind"] == "s3":
        regions = sorted({job["source"]["region"], end["region"]})
        return S3ObjectStore(aws(job, regions), end["region"], end["bucket"])
    return SwiftObjectStore(openstack(job, end["region"]), end["region"], end["bucket"])


def settings(job: dict[str, Any], scan_interval: float) -> FlowSettings:
    return FlowSettings(
        app="bench/objects",
        dataset="data",
        epoch=1,
        max_concurrency=job["concurrency"],
        scan_interval=scan_interval,
    )


async def one_pass(job: dict[str, Any]) -> dict[str, Any]:
    flow = ObjectFlow(
        settings(job, 3600),
        Location("source", store(job, job["source"])),
        Location("destination", store(job, job["destination"])),
    )
    started = time.monotonic()
    clean = await flow.scan()
    figures = flow.figures
    return {
        "clean": clean,
        "seconds": time.monotonic() - started,
        "pending_after": len(figures.pending),
        "last_error": figures.last_error,
    }


def subscribe(job: dict[str, Any]) -> str:
    """Point the source bucket's notifications at a new SQS queue (the bucket owner's set-up,
    done here directly against the server); the queue's name."""
    source = job["source"]
    common = {
        "region_name": source["region"],
        "endpoint_url": job["s3_endpoint"],
        "aws_access_key_id": os.environ["BENCH_AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": os.environ["BENCH_AWS_SECRET_ACCESS_KEY"],
    }
    sqs = boto3.client("sqs", **common)
    name = f"bench-{source['bucket']}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    boto3.client("s3", **common).put_bucket_notification_configuration(
        Bucket=source["bucket"],
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )
    return name


async def follow(job: dict[str, Any]) -> dict[str, Any]:
    queue = subscribe(job)
    source = store(job, job["source"])
    flow = ObjectFlow(
        settings(job, job.get("scan_interval", 3600)),
        Location("source", source),
        Location("destination", store(job, job["destination"])),
    )
    feed = SqsChangeFeed(aws(job, [job["source"]["region"]]), job["source"]["region"], queue)
    listener = ChangeListener(feed, job["source"]["bucket"], "", [flow], poll_min=0.1)
    await flow.scan()  # the initial pass: manifests loaded, nothing pending
    print("ready", flush=True)
    tasks = [asyncio.create_task(flow.run()), asyncio.create_task(listener.run())]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=job["seconds"])
    return {"pending_after": len(flow.figures.pending)}


def main() -> int:
    job = json.loads(sys.argv[1])
    run = one_pass if job["mode"] == "pass" else follow
    result = asyncio.run(run(job))
    print(json.dumps(result), flush=True)
    return 0 if result.get("clean", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
