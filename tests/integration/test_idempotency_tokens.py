"""Idempotency tokens reach the cloud unchanged when a step is repeated: counted at the
fault proxy in front of moto, with the first answer lost (the request was carried out,
its answer never came back, the step is done again)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from controller.api.models import CloudProviderSpec
from controller.providers.aws.connector import AwsConnector, AwsCredentials
from controller.providers.aws.volumes import CLIENT_TOKEN_LENGTH, EbsSnapshots
from controller.providers.retry import RetryPolicy
from sandbox.faults import FaultProxy, FaultSpec
from sandbox.moto_server import MotoServer

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ONE_ATTEMPT = RetryPolicy(attempts=1, deadline_seconds=5.0)


def _connector(proxy: FaultProxy) -> AwsConnector:
    spec = CloudProviderSpec.model_validate(
        {
            "type": "aws",
            "regions": [REGION],
            "credentials": {"source": "Secret", "secretRef": {"name": "aws"}},
            "endpointOverrides": [{"region": REGION, "url": proxy.url}],
        }
    )
    credentials = AwsCredentials.from_secret_data(
        {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    )
    return AwsConnector("aws", spec, credentials, timeout_seconds=2.0, retry_policy=ONE_ATTEMPT)


def _snapshot(moto: MotoServer) -> tuple[str, str]:
    ec2: Any = boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    volume = ec2.create_volume(AvailabilityZone=zone, Size=1)["VolumeId"]
    return ec2.create_snapshot(VolumeId=volume)["SnapshotId"], zone


async def test_a_restore_done_again_after_a_lost_answer_sends_the_same_client_token(
    fault_proxy: FaultProxy, moto: MotoServer
) -> None:
    """Regression: every restore drew a fresh ClientToken (uuid4), so a CreateVolume whose
    answer was lost, done again by the next attempt of the step, made a second volume."""
    snapshot, zone = _snapshot(moto)
    connector = _connector(fault_proxy)
    volumes = EbsSnapshots(connector, REGION)
    key = "shop/web/db/vol-a/usw2/7"
    tags = {"lifeboat.dev/app": "shop/web"}
    fault_proxy.set_faults(FaultSpec(action="CreateVolume", lost=1.0, max_hold=5.0, times=1))
    try:
        with pytest.raises(Exception):  # noqa: B017, PT011 - the answer never comes
            await volumes.restore(snapshot, zone, tags, key=key)
        made = await volumes.restore(snapshot, zone, tags, key=key)
        other = await volumes.restore(snapshot, zone, tags, key=f"{key}-next-epoch")
    finally:
        connector.close()
    creates = [r for r in fault_proxy.records() if r.action == "CreateVolume"]
    assert len(creates) == 3
    assert creates[0].fault is not None  # the first answer was lost
    tokens = [r.params.get("ClientToken") for r in creates]
    assert tokens[0] == tokens[1], "the repeated step must carry the first one's token"
    assert tokens[2] != tokens[0], "another step (another epoch) must not"
    assert all(t and len(t) <= CLIENT_TOKEN_LENGTH for t in tokens)
    assert made and other != made
