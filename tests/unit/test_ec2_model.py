"""The trimmed EC2 model (controller/providers/aws/ec2_model.py): the connector's EC2
clients use it, it is what the installed botocore's model cut to our operations is, every
EC2 call the providers make is in it, and those calls work through it (moto)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name
from moto import mock_aws
from pydantic import SecretStr

from controller.api.models import CloudProviderSpec
from controller.providers.aws import apiplane, capacity, volumes
from controller.providers.aws.connector import AwsConnector, AwsCredentials
from controller.providers.aws.ec2_model import DATA_PATH, EC2_OPERATIONS
from hack.ec2_model import model_file

REGION = "us-east-1"


@pytest.fixture
def connector() -> Iterator[AwsConnector]:
    spec = CloudProviderSpec.model_validate(
        {
            "type": "aws",
            "regions": [REGION],
            "credentials": {"source": "Secret", "secretRef": {"name": "creds"}},
            "tenancy": {"namespaces": ["*"]},
        }
    )
    with mock_aws():
        made = AwsConnector("aws", spec, AwsCredentials("AKIDEXAMPLE", SecretStr("secret")))
        try:
            yield made
        finally:
            made.close()


def test_the_connectors_ec2_client_knows_only_our_operations(connector: AwsConnector) -> None:
    client: Any = connector.client("ec2", REGION)
    assert sorted(client.meta.service_model.operation_names) == sorted(EC2_OPERATIONS)
    # Other services are botocore's own, whole.
    sts: Any = connector.client("sts", REGION)
    assert "GetCallerIdentity" in sts.meta.service_model.operation_names


def test_the_file_is_the_installed_botocore_model_cut_to_our_operations() -> None:
    """Fails after a botocore upgrade that changed the model: run ``python -m
    hack.ec2_model``."""
    version, text = model_file()
    stored = DATA_PATH / "ec2" / version / "service-2.json"
    assert stored.is_file(), f"no {stored}: run python -m hack.ec2_model"
    assert json.loads(stored.read_text("utf-8")) == json.loads(text)
    assert [p.name for p in (DATA_PATH / "ec2").iterdir()] == [version]


def test_every_ec2_call_of_the_providers_is_in_the_model() -> None:
    """The EC2 clients' methods named in the modules that make EC2 calls."""
    loader = botocore.session.get_session().get_component("data_loader")
    every = loader.load_service_model("ec2", "service-2")["operations"]
    by_method = {xform_name(name): name for name in every}
    autoscaling = loader.load_service_model("autoscaling", "service-2")["operations"]
    not_ec2 = {xform_name(name) for name in autoscaling}  # capacity.py calls both
    called = set()
    for module in (apiplane, volumes, capacity):
        source = Path(str(module.__file__)).read_text("utf-8")
        for method in re.findall(r"\.([a-z_]+)\b", source):
            if method in by_method and method not in not_ec2:
                called.add(by_method[method])
    assert called, "no EC2 call found: the scan is broken"
    assert called <= set(EC2_OPERATIONS), called - set(EC2_OPERATIONS)


def test_the_calls_work_through_the_trimmed_model(connector: AwsConnector) -> None:
    ec2: Any = connector.client("ec2", REGION)
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert zones and all(zone["State"] == "available" for zone in zones)
    assert ec2.describe_subnets()["Subnets"]  # moto's default VPC has one per zone
    volume = ec2.create_volume(AvailabilityZone=zones[0]["ZoneName"], Size=1)
    assert ec2.describe_volumes(VolumeIds=[volume["VolumeId"]])["Volumes"][0]["Size"] == 1
    snapshot = ec2.create_snapshot(VolumeId=volume["VolumeId"], Description="lifeboat")
    found = ec2.describe_snapshots(SnapshotIds=[snapshot["SnapshotId"]])["Snapshots"]
    assert found[0]["VolumeId"] == volume["VolumeId"]
    copy = ec2.copy_snapshot(SourceRegion=REGION, SourceSnapshotId=snapshot["SnapshotId"])
    ec2.delete_snapshot(SnapshotId=copy["SnapshotId"])
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert snapshot["SnapshotId"] in left and copy["SnapshotId"] not in left
