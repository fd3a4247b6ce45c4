"""boto3 → FaultProxy → moto: two regions and a global endpoint, each behind its own proxy.

Also the moto process itself: reset, start failures, and children dying with their parent.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from mypy_boto3_ec2 import EC2Client
from mypy_boto3_route53 import Route53Client
from mypy_boto3_s3 import S3Client
from mypy_boto3_s3.type_defs import CompletedMultipartUploadTypeDef
from mypy_boto3_sts import STSClient

from sandbox.faults import MOTO_UNVERSIONED_BUCKETS, Fault, FaultProxy, FaultSpec
from sandbox.moto_server import MotoError, MotoServer
from tests.fixtures.cloud import MakeFaultProxy

pytestmark = pytest.mark.integration

EAST: Final = "us-east-1"
WEST: Final = "us-west-2"
RETRIES_OFF = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10)
AMI = "ami-12c6146b"  # one of moto's built-in images


@dataclass
class AwsSandbox:
    """Per-region proxies in front of one moto, plus one for global services."""

    proxies: dict[str, FaultProxy]
    session: boto3.Session

    def ec2(self, region: str, config: Config = RETRIES_OFF) -> EC2Client:
        return self.session.client(
            "ec2", region_name=region, endpoint_url=self.proxies[region].url, config=config
        )

    def route53(self) -> Route53Client:
        return self.session.client(
            "route53", region_name=EAST, endpoint_url=self.proxies["global"].url, config=RETRIES_OFF
        )

    def s3(self, region: str) -> S3Client:
        return self.session.client(
            "s3", region_name=region, endpoint_url=self.proxies[region].url, config=RETRIES_OFF
        )

    def sts(self, region: str) -> STSClient:
        return self.session.client(
            "sts", region_name=region, endpoint_url=self.proxies[region].url, config=RETRIES_OFF
        )


@pytest.fixture
def cloud(moto: MotoServer, make_fault_proxy: MakeFaultProxy) -> AwsSandbox:
    proxies = {name: make_fault_proxy(moto.url, name=name) for name in (EAST, WEST, "global")}
    return AwsSandbox(
        proxies, boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    )


def test_each_region_answers_through_its_own_proxy(cloud: AwsSandbox) -> None:
    for region in (EAST, WEST):
        zones = cloud.ec2(region).describe_availability_zones()["AvailabilityZones"]
        assert zones
        assert {zone["RegionName"] for zone in zones} == {region}

        (record,) = cloud.proxies[region].records()
        assert (record.service, record.action) == ("ec2", "DescribeAvailabilityZones")
        assert (record.mutating, record.fault, record.status) == (False, None, 200)


def test_route53_changes_are_recorded_as_mutations(cloud: AwsSandbox) -> None:
    route53 = cloud.route53()
    zone_id = route53.create_hosted_zone(Name="app.example.com", CallerReference="drill-1")[
        "HostedZone"
    ]["Id"]
    route53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": "www.app.example.com",
                        "Type": "A",
                        "TTL": 30,
                        "ResourceRecords": [{"Value": "127.10.1.1"}],
                    },
                }
            ]
        },
    )
    records = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    assert any(r["Name"] == "www.app.example.com." for r in records)

    proxy = cloud.proxies["global"]
    assert [(r.service, r.method, r.mutating, r.status) for r in proxy.records()] == [
        ("route53", "POST", True, 201),
        ("route53", "POST", True, 200),
        ("route53", "GET", False, 200),
    ]
    assert proxy.count(action="POST /2013-04-01/hostedzone/*/rrset*") == 1


def test_mutating_throttle_freezes_one_region_only(cloud: AwsSandbox) -> None:
    east = cloud.proxies[EAST]
    east.set_faults(FaultSpec(throttle=1.0, service="ec2", mutating_only=True))

    with pytest.raises(ClientError) as raised:
        cloud.ec2(EAST).run_instances(ImageId=AMI, MinCount=1, MaxCount=1)
    assert raised.value.response["Error"]["Code"] == "RequestLimitExceeded"
    cloud.ec2(EAST).describe_instances()  # reads still pass
    cloud.ec2(WEST).run_instances(ImageId=AMI, MinCount=1, MaxCount=1)

    assert east.count(mutating=True, forwarded=True) == 0
    assert east.count(action="RunInstances", fault=Fault.THROTTLE) == 1
    assert east.count(action="DescribeInstances", forwarded=True) == 1
    assert cloud.proxies[WEST].count(action="RunInstances", mutating=True, forwarded=True) == 1


@pytest.mark.parametrize(
    ("fault", "code"), [(Fault.THROTTLE, "Throttling"), (Fault.AUTH, "InvalidClientTokenId")]
)
def test_sts_errors(cloud: AwsSandbox, fault: Fault, code: str) -> None:
    shares: dict[str, Any] = {fault.value: 1.0}
    cloud.proxies[WEST].set_faults(FaultSpec(**shares, service="sts"))
    with pytest.raises(ClientError) as raised:
        cloud.sts(WEST).get_caller_identity()
    assert raised.value.response["Error"]["Code"] == code
    assert cloud.sts(EAST).get_caller_identity()["Account"]


def test_latency_is_added(cloud: AwsSandbox) -> None:
    cloud.proxies[EAST].set_faults(FaultSpec(latency=0.3))
    ec2 = cloud.ec2(EAST)
    started = time.monotonic()
    ec2.describe_availability_zones()
    assert time.monotonic() - started >= 0.3
    assert cloud.proxies[EAST].count(fault=Fault.LATENCY, forwarded=True) == 1


def test_timeout_makes_boto3_give_up(cloud: AwsSandbox) -> None:
    cloud.proxies[EAST].set_faults(FaultSpec(timeout=1.0, max_hold=30.0))
    impatient = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=0.5)
    with pytest.raises(ReadTimeoutError):
        cloud.ec2(EAST, impatient).describe_availability_zones()
    deadline = time.monotonic() + 5.0
    while not cloud.proxies[EAST].records():  # recorded on arrival, even under heavy load
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (record,) = cloud.proxies[EAST].records()
    assert (record.action, record.fault, record.status) == (
        "DescribeAvailabilityZones",
        Fault.TIMEOUT,
        None,
    )


def test_reset_closes_the_connection(cloud: AwsSandbox) -> None:
    cloud.proxies[EAST].set_faults(FaultSpec(reset=1.0))
    with pytest.raises(ConnectionClosedError):
        cloud.ec2(EAST).describe_availability_zones()
    assert cloud.proxies[EAST].count(fault=Fault.RESET) == 1


def test_retries_are_counted(cloud: AwsSandbox) -> None:
    cloud.proxies[EAST].set_faults(FaultSpec(server_error=1.0))
    three_attempts = Config(retries={"total_max_attempts": 3, "mode": "standard"})
    with pytest.raises(ClientError):
        cloud.ec2(EAST, three_attempts).describe_availability_zones()
    assert cloud.proxies[EAST].count(fault=Fault.SERVER_ERROR) == 3


def test_region_down_and_up(cloud: AwsSandbox) -> None:
    cloud.proxies[EAST].down()
    with pytest.raises(EndpointConnectionError):
        cloud.ec2(EAST).describe_availability_zones()
    cloud.ec2(WEST).describe_availability_zones()
    cloud.proxies[EAST].up()
    cloud.ec2(EAST).describe_availability_zones()


def test_s3_objects_stream_through_and_slow_down(cloud: AwsSandbox) -> None:
    s3 = cloud.s3(WEST)
    s3.create_bucket(Bucket="lifeboat-data", CreateBucketConfiguration={"LocationConstraint": WEST})
    body = os.urandom(8 * 1024 * 1024)
    s3.put_object(Bucket="lifeboat-data", Key="blob", Body=body)
    fetched = s3.get_object(Bucket="lifeboat-data", Key="blob")["Body"].read()
    assert hashlib.sha256(fetched).digest() == hashlib.sha256(body).digest()

    proxy = cloud.proxies[WEST]
    assert proxy.count(service="s3", mutating=True) == 2
    proxy.set_faults(FaultSpec(throttle=1.0, service="s3"))
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket="lifeboat-data", Key="blob", Body=b"x")
    assert raised.value.response["Error"]["Code"] == "SlowDown"


def _multipart_upload(s3: S3Client, bucket: str) -> dict[str, Any]:
    """Complete a one-part multipart upload of 5 MiB into a new, unversioned bucket."""
    s3.create_bucket(Bucket=bucket)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    body = b"x" * 5 * 1024 * 1024
    part = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=body)
    parts: CompletedMultipartUploadTypeDef = {"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]}
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload, MultipartUpload=parts
    )
    return dict(done)


def test_a_mended_proxy_answers_multipart_uploads_as_s3_does_for_unversioned_buckets(
    moto: MotoServer,
) -> None:
    """moto names a version ``null`` that it then refuses to HEAD (moto is pinned by
    uv.lock; when an upgrade mends it, the first half fails and the mend can go). Through
    a proxy with MOTO_UNVERSIONED_BUCKETS there is no version, as on S3."""

    def client(url: str) -> S3Client:
        return boto3.client(
            "s3",
            region_name=EAST,
            endpoint_url=url,
            aws_access_key_id="AKIDTEST",
            aws_secret_access_key="test-secret",
            config=RETRIES_OFF,
        )

    raw = client(moto.url)
    assert _multipart_upload(raw, "raw")["VersionId"] == "null"
    with pytest.raises(ClientError) as refused:
        raw.head_object(Bucket="raw", Key="big", VersionId="null")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    with FaultProxy(moto.url, drop_answer_headers=MOTO_UNVERSIONED_BUCKETS) as proxy:
        mended = client(proxy.url)
        assert "VersionId" not in _multipart_upload(mended, "mended")
        assert mended.head_object(Bucket="mended", Key="big")["ContentLength"] == 5 << 20


# --- the moto process ------------------------------------------------------------------------


def test_reset_wipes_all_state(cloud: AwsSandbox, moto: MotoServer) -> None:
    s3 = cloud.s3(EAST)
    s3.create_bucket(Bucket="lifeboat-reset")
    moto.reset()
    assert s3.list_buckets()["Buckets"] == []


def test_start_failure_explains_itself(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: moto cannot bind, probes are refused
        server = MotoServer(port=taken.getsockname()[1], log_path=tmp_path / "moto.log")
        with pytest.raises(MotoError, match="exited with code") as raised:
            server.start()
    assert "Address already in use" in str(raised.value)


def test_children_die_with_their_parent(tmp_path: Path) -> None:
    parent_script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from sandbox.procs import ChildProcess\n"
        "child = ChildProcess([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        f"                     log_path=Path({str(tmp_path / 'child.log')!r}), name='sleeper')\n"
        "child.start()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_script], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)

    parent.kill()  # SIGKILL: no atexit, no cleanup; only the kernel can end the child
    parent.wait()
    parent.stdout.close()

    deadline = time.monotonic() + 5.0
    while _alive(child_pid):
        assert time.monotonic() < deadline, f"child {child_pid} outlived its parent"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
