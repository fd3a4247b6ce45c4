"""The fault proxy: transparent streaming forwarding, classification, records and faults.

Everything runs on real loopback sockets against a small aiohttp upstream that
reports what it received. Error shapes are checked with boto3 itself, since the
point is that botocore parses them into the intended error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from multidict import CIMultiDict

from sandbox.faults import (
    Cloud,
    Fault,
    FaultProxy,
    FaultSpec,
    RequestInfo,
    WireProtocol,
    classify,
)
from sandbox.procs import BackgroundHttpServer
from tests.fixtures.cloud import MakeFaultProxy

EC2_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/ec2/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=abc"
)
FORM = "application/x-www-form-urlencoded; charset=utf-8"
GATE_TIMEOUT = 5.0


class Upstream:
    """A loopback upstream that echoes what it received and streams on cue."""

    def __init__(self) -> None:
        self.first_chunk_received = threading.Event()
        self.release_response = threading.Event()
        self.server = BackgroundHttpServer(self._make_app, host="127.0.0.1", name="test upstream")

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("POST", "/stream-in", self._stream_in)
        app.router.add_get("/stream-out", self._stream_out)
        app.router.add_get("/teapot", self._teapot)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        return app

    async def _echo(self, request: web.Request) -> web.Response:
        report = {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[name, value] for name, value in request.headers.items()],
            **await self._digest(request),
        }
        return web.json_response(report)

    async def _stream_in(self, request: web.Request) -> web.Response:
        return web.json_response(await self._digest(request))

    async def _digest(self, request: web.Request) -> dict[str, Any]:
        digest, length = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            self.first_chunk_received.set()
            digest.update(chunk)
            length += len(chunk)
        return {"sha256": digest.hexdigest(), "length": length}

    async def _stream_out(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Stream": "yes"})
        await response.prepare(request)
        await response.write(b"first-")
        released = await asyncio.to_thread(self.release_response.wait, GATE_TIMEOUT)
        await response.write(b"second" if released else b"never-released")
        await response.write_eof()
        return response

    async def _teapot(self, request: web.Request) -> web.Response:
        return web.Response(status=418, reason="I'm a teapot", headers={"X-Upstream": "1"})


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    upstream = Upstream()
    with upstream.server:
        yield upstream


@pytest.fixture
def proxy(make_fault_proxy: MakeFaultProxy, upstream: Upstream) -> FaultProxy:
    return make_fault_proxy(upstream.server.url, name="test-region")


def request(
    proxy: FaultProxy,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | Iterator[bytes] | None = None,
    timeout: float = 5.0,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        connection.request(
            method, path, body=body, headers=headers or {}, encode_chunked=not _sized(body)
        )
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def always(fault: Fault) -> FaultSpec:
    """A rule that gives every request ``fault``."""
    shares: dict[str, Any] = {fault.value: 1.0}
    return FaultSpec(**shares)


def _sized(body: bytes | Iterator[bytes] | None) -> bool:
    return body is None or isinstance(body, bytes)


def echo(proxy: FaultProxy, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, _, body = request(proxy, method, path, **kwargs)
    assert status == 200, body
    report: dict[str, Any] = json.loads(body)
    return report


def ec2_call(proxy: FaultProxy, action: str) -> int:
    status, _, _ = request(
        proxy,
        "POST",
        "/",
        headers={"Authorization": EC2_AUTH, "Content-Type": FORM},
        body=f"Action={action}&Version=2016-11-15".encode(),
    )
    return status


# --- classification --------------------------------------------------------------------------


def _headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict({name.replace("_", "-"): value for name, value in values.items()})


@pytest.mark.parametrize(
    ("method", "path", "headers", "query", "form", "expected"),
    [
        pytest.param(
            "POST", "/", _headers(Authorization=EC2_AUTH), {}, {"Action": "RunInstances"},
            RequestInfo("ec2", "RunInstances", True, WireProtocol.EC2),
            id="ec2-form",
        ),
        pytest.param(
            "GET", "/", _headers(Authorization=EC2_AUTH), {"Action": "DescribeInstances"}, None,
            RequestInfo("ec2", "DescribeInstances", False, WireProtocol.EC2),
            id="ec2-query-string",
        ),
        pytest.param(
            "POST", "/", _headers(Authorization=EC2_AUTH.replace("/ec2/", "/sts/")), {},
            {"Action": "GetCallerIdentity"},
            RequestInfo("sts", "GetCallerIdentity", False, WireProtocol.QUERY),
            id="sts-query",
        ),
        pytest.param(
            "POST", "/", _headers(Authorization=EC2_AUTH.replace("/ec2/", "/autoscaling/")), {},
            {"Action": "SetDesiredCapacity"},
            RequestInfo("autoscaling", "SetDesiredCapacity", True, WireProtocol.QUERY),
            id="autoscaling-query",
        ),
        pytest.param(
            "POST", "/",
            _headers(
                Authorization=EC2_AUTH.replace("/ec2/", "/dynamodb/"),
                X_Amz_Target="DynamoDB_20120810.ListTables",
            ),
            {}, None,
            RequestInfo("dynamodb", "ListTables", False, WireProtocol.JSON),
            id="json-target",
        ),
        pytest.param(
            "POST", "/2013-04-01/hostedzone/Z1/rrset/",
            _headers(Authorization=EC2_AUTH.replace("/ec2/", "/route53/")), {}, None,
            RequestInfo(
                "route53", "POST /2013-04-01/hostedzone/Z1/rrset/", True, WireProtocol.REST_XML
            ),
            id="route53-rest",
        ),
        pytest.param(
            "GET", "/bucket/key", _headers(),
            {"X-Amz-Credential": "AKID/20240101/us-west-2/s3/aws4_request"}, None,
            RequestInfo("s3", "GET /bucket/key", False, WireProtocol.S3),
            id="s3-presigned-v4",
        ),
        pytest.param(
            "GET", "/bucket/key", _headers(),
            {"AWSAccessKeyId": "AKID", "Signature": "sig", "Expires": "1"}, None,
            RequestInfo("s3", "GET /bucket/key", False, WireProtocol.S3),
            id="s3-presigned-v2",
        ),
        pytest.param(
            "DELETE", "/2015-03-31/functions/f",
            _headers(Authorization=EC2_AUTH.replace("/ec2/", "/lambda/")), {}, None,
            RequestInfo("lambda", "DELETE /2015-03-31/functions/f", True, WireProtocol.JSON),
            id="rest-json",
        ),
        pytest.param(
            "POST", "/", _headers(), {}, {"Action": "AssumeRoleWithWebIdentity"},
            RequestInfo("unknown", "AssumeRoleWithWebIdentity", True, WireProtocol.QUERY),
            id="unsigned",
        ),
    ],
)  # fmt: skip
def test_classify_aws(
    method: str,
    path: str,
    headers: CIMultiDict[str],
    query: dict[str, str],
    form: dict[str, str] | None,
    expected: RequestInfo,
) -> None:
    assert classify(method, path, headers, query, form) == expected


@pytest.mark.parametrize(
    ("method", "path", "service", "mutating"),
    [
        ("GET", "/v3/projects", "identity", False),
        ("POST", "/v3/auth/tokens", "identity", False),
        ("POST", "/identity/v3/auth/tokens", "identity", False),
        ("POST", "/compute/v2.1/servers", "compute", True),
        ("DELETE", "/v2.1/servers/abc", "compute", True),
        ("PUT", "/v1/AUTH_demo/container/object", "object-store", True),
        ("HEAD", "/v1/AUTH_demo/container", "object-store", False),
        ("GET", "/somewhere/else", "openstack", False),
    ],
)
def test_classify_openstack(method: str, path: str, service: str, mutating: bool) -> None:
    info = classify(method, path, CIMultiDict(), {}, cloud=Cloud.OPENSTACK)
    assert info == RequestInfo(service, f"{method} {path}", mutating, WireProtocol.OPENSTACK)


def test_classify_openstack_default_service_wins() -> None:
    info = classify("GET", "/v3/volumes", CIMultiDict(), {}, cloud=Cloud.OPENSTACK,
                    default_service="block-storage")  # fmt: skip
    assert info.service == "block-storage"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"throttle": 1.5},
        {"reset": -0.1},
        {"timeout": 0.6, "throttle": 0.6},
        {"latency": -1.0},
        {"max_hold": 0.0},
    ],
)
def test_fault_spec_rejects_invalid_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="FaultSpec"):
        FaultSpec(**kwargs)


def test_proxy_refuses_non_loopback_upstream() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        FaultProxy("http://10.0.0.1:5000")


# --- transparent forwarding ------------------------------------------------------------------


def test_forwards_method_raw_path_headers_and_body(proxy: FaultProxy) -> None:
    body = b"x" * 1000
    report = echo(
        proxy,
        "PUT",
        "/echo/a%2Fb%20c?x=1&y=%2B",
        headers={
            "Host": "ec2.us-east-1.sandbox.internal",
            "X-Amz-Date": "20240101T000000Z",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
            "Keep-Alive": "timeout=5",
        },
        body=body,
    )
    headers = {name.lower(): value for name, value in report["headers"]}
    assert report["method"] == "PUT"
    assert report["raw_path"] == "/echo/a%2Fb%20c?x=1&y=%2B"
    assert headers["host"] == "ec2.us-east-1.sandbox.internal"
    assert headers["x-amz-date"] == "20240101T000000Z"
    assert "x-hop" not in headers
    assert "keep-alive" not in headers
    assert "user-agent" not in headers  # the proxy adds nothing of its own
    assert report["length"] == len(body)
    assert report["sha256"] == hashlib.sha256(body).hexdigest()


def test_preserves_status_reason_and_headers(proxy: FaultProxy) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        connection.request("GET", "/teapot")
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert (response.status, response.reason) == (418, "I'm a teapot")
    assert response.headers["X-Upstream"] == "1"


@pytest.mark.parametrize(
    ("dropped", "kept"), [({"x-upstream": "1"}, False), ({"X-Upstream": "2"}, True)]
)
def test_answer_headers_are_dropped_by_name_and_value(
    upstream: Upstream, dropped: dict[str, str], kept: bool
) -> None:
    with FaultProxy(upstream.server.url, drop_answer_headers=dropped) as proxy:
        status, headers, _ = request(proxy, "GET", "/teapot")
    assert status == 418
    assert ("X-Upstream" in headers) is kept


def test_a_corrupted_answer_keeps_status_and_headers_and_flips_one_bit(
    proxy: FaultProxy,
) -> None:
    whole = request(proxy, "GET", "/some/object")
    proxy.set_faults(FaultSpec(corrupt=1.0, action="GET /some/*", times=1))
    assert request(proxy, "GET", "/other")[2] == request(proxy, "GET", "/other")[2]
    status, headers, body = request(proxy, "GET", "/some/object")
    assert status == whole[0] and headers["Content-Type"] == whole[1]["Content-Type"]
    assert len(body) == len(whole[2]) and body != whole[2]
    assert bytes([body[0] ^ 1]) + body[1:] == whole[2]  # the first byte's lowest bit
    assert request(proxy, "GET", "/some/object")[2] == whole[2]  # times=1: once only
    faults = [(r.fault, r.status, r.forwarded) for r in proxy.records()]
    assert faults == [(None, 200, True)] * 3 + [(Fault.CORRUPT, 200, True), (None, 200, True)]


def test_a_rule_may_apply_a_number_of_times() -> None:
    with pytest.raises(ValueError, match="times"):
        FaultSpec(reset=1.0, times=0)


def test_form_body_is_read_for_the_action_and_forwarded_intact(proxy: FaultProxy) -> None:
    body = b"Action=RunInstances&ImageId=ami-1&UserData=" + b"A" * 4096
    report = echo(
        proxy, "POST", "/", headers={"Authorization": EC2_AUTH, "Content-Type": FORM}, body=body
    )
    assert report["sha256"] == hashlib.sha256(body).hexdigest()
    (record,) = proxy.records()
    assert (record.service, record.action, record.mutating) == ("ec2", "RunInstances", True)
    assert (record.fault, record.status) == (None, 200)


def test_streams_request_body_without_buffering(proxy: FaultProxy, upstream: Upstream) -> None:
    def body() -> Iterator[bytes]:
        yield b"a" * 65536
        # The upstream must see the first chunk while the client still holds the rest.
        assert upstream.first_chunk_received.wait(GATE_TIMEOUT), "proxy buffered the request"
        yield b"b" * 65536

    status, _, answer = request(proxy, "POST", "/stream-in", body=body())
    assert status == 200
    assert json.loads(answer)["length"] == 2 * 65536


def test_streams_response_body_without_buffering(proxy: FaultProxy, upstream: Upstream) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=GATE_TIMEOUT)
    try:
        connection.request("GET", "/stream-out")
        response = connection.getresponse()
        assert response.headers["X-Stream"] == "yes"
        assert response.read(len(b"first-")) == b"first-"  # before the upstream finished
        upstream.release_response.set()
        assert response.read() == b"second"
    finally:
        connection.close()


def test_large_body_round_trip(proxy: FaultProxy) -> None:
    body = bytes(range(256)) * (32 * 1024 * 4)  # 32 MiB
    report = echo(proxy, "POST", "/big", body=body, headers={"Content-Type": "binary/octet"})
    assert report["length"] == len(body)
    assert report["sha256"] == hashlib.sha256(body).hexdigest()


def test_unreachable_upstream_answers_502(make_fault_proxy: MakeFaultProxy) -> None:
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{placeholder.getsockname()[1]}"
        proxy = make_fault_proxy(dead)
        status, _, body = request(proxy, "GET", "/")
    assert status == 502
    assert b"upstream" in body
    assert proxy.records()[0].status == 502


# --- records -----------------------------------------------------------------------------------


def test_total_counts_requests_beyond_the_kept_records(upstream: Upstream) -> None:
    with FaultProxy(upstream.server.url, max_records=2) as proxy:
        for _ in range(5):
            request(proxy, "GET", "/plain")
        assert len(proxy.records()) == 2  # the oldest were discarded...
        assert proxy.total_requests == 5  # ...but still counted
        proxy.clear_records()
        assert (proxy.records(), proxy.total_requests) == ([], 0)


def test_records_and_counts(proxy: FaultProxy) -> None:
    proxy.set_faults(FaultSpec(throttle=1.0, action="TerminateInstances"))
    assert ec2_call(proxy, "DescribeInstances") == 200
    assert ec2_call(proxy, "RunInstances") == 200
    assert ec2_call(proxy, "TerminateInstances") == 503
    request(proxy, "GET", "/plain")

    records = proxy.records()
    assert [r.action for r in records] == [
        "DescribeInstances",
        "RunInstances",
        "TerminateInstances",
        "GET /plain",
    ]
    assert [r.status for r in records] == [200, 200, 503, 200]
    assert records[2].fault is Fault.THROTTLE
    assert all(r.time > 0 and r.method in ("POST", "GET") for r in records)
    assert proxy.count() == 4
    assert proxy.count(service="ec2") == 3
    assert proxy.count(service="ec2", mutating=True) == 2
    assert proxy.count(mutating=True, forwarded=True) == 1
    assert proxy.count(fault=Fault.THROTTLE) == 1
    assert proxy.count(action="Describe*") == 1

    proxy.clear_records()
    assert proxy.records() == []


# --- faults --------------------------------------------------------------------------------------

RETRIES_OFF = Config(
    retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5, region_name="us-east-1"
)


@pytest.fixture(scope="module")
def aws() -> boto3.Session:
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")


AWS_CALLS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "ec2": ("ec2", lambda client: client.describe_availability_zones()),
    "sts": ("sts", lambda client: client.get_caller_identity()),
    "autoscaling": ("autoscaling", lambda client: client.describe_auto_scaling_groups()),
    "route53": ("route53", lambda client: client.list_hosted_zones()),
    "s3": ("s3", lambda client: client.list_buckets()),
    "sqs-json": ("sqs", lambda client: client.list_queues()),
}

EXPECTED_CODES = [
    ("ec2", Fault.THROTTLE, "RequestLimitExceeded", 503),
    ("ec2", Fault.SERVER_ERROR, "InternalError", 500),
    ("ec2", Fault.UNAVAILABLE, "Unavailable", 503),
    ("ec2", Fault.AUTH, "AuthFailure", 401),
    ("sts", Fault.THROTTLE, "Throttling", 400),
    ("sts", Fault.SERVER_ERROR, "InternalFailure", 500),
    ("sts", Fault.UNAVAILABLE, "ServiceUnavailable", 503),
    ("sts", Fault.AUTH, "InvalidClientTokenId", 403),
    ("autoscaling", Fault.THROTTLE, "Throttling", 400),
    ("route53", Fault.THROTTLE, "Throttling", 400),
    ("route53", Fault.SERVER_ERROR, "InternalFailure", 500),
    ("route53", Fault.UNAVAILABLE, "ServiceUnavailable", 503),
    ("route53", Fault.AUTH, "InvalidClientTokenId", 403),
    ("s3", Fault.THROTTLE, "SlowDown", 503),
    ("s3", Fault.SERVER_ERROR, "InternalError", 500),
    ("s3", Fault.UNAVAILABLE, "ServiceUnavailable", 503),
    ("s3", Fault.AUTH, "InvalidAccessKeyId", 403),
    ("sqs-json", Fault.THROTTLE, "ThrottlingException", 400),
    ("sqs-json", Fault.SERVER_ERROR, "InternalFailure", 500),
    ("sqs-json", Fault.UNAVAILABLE, "ServiceUnavailable", 503),
    ("sqs-json", Fault.AUTH, "UnrecognizedClientException", 403),
]


@pytest.mark.parametrize(("call", "fault", "code", "status"), EXPECTED_CODES)
def test_error_shapes_parse_into_botocore_error_codes(
    proxy: FaultProxy, aws: boto3.Session, call: str, fault: Fault, code: str, status: int
) -> None:
    service, invoke = AWS_CALLS[call]
    client = aws.client(service, endpoint_url=proxy.url, config=RETRIES_OFF)  # type: ignore[call-overload]
    proxy.set_faults(always(fault))

    with pytest.raises(ClientError) as raised:
        invoke(client)

    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    (record,) = proxy.records()
    assert (record.fault, record.status) == (fault, status)


@pytest.mark.parametrize(
    ("fault", "status", "key", "retry_after"),
    [
        (Fault.THROTTLE, 429, "overLimit", "1"),
        (Fault.SERVER_ERROR, 500, "computeFault", None),
        (Fault.UNAVAILABLE, 503, "serviceUnavailable", "1"),
        (Fault.AUTH, 401, "error", None),
    ],
)
def test_openstack_error_shapes(
    make_fault_proxy: MakeFaultProxy,
    upstream: Upstream,
    fault: Fault,
    status: int,
    key: str,
    retry_after: str | None,
) -> None:
    proxy = make_fault_proxy(upstream.server.url, cloud=Cloud.OPENSTACK)
    proxy.set_faults(always(fault))

    answer_status, headers, body = request(proxy, "GET", "/compute/v2.1/servers")

    assert answer_status == status
    assert headers["Content-Type"].startswith("application/json")
    assert headers.get("Retry-After") == retry_after
    assert json.loads(body)[key]["code"] == status


def test_latency_delays_and_forwards(proxy: FaultProxy) -> None:
    proxy.set_faults(FaultSpec(latency=0.2))
    started = time.monotonic()
    status, _, _ = request(proxy, "GET", "/slow")
    assert status == 200
    assert time.monotonic() - started >= 0.2
    assert proxy.count(fault=Fault.LATENCY, forwarded=True) == 1


def test_jitter_stays_within_bounds(proxy: FaultProxy) -> None:
    proxy.set_faults(FaultSpec(latency=0.05, jitter=0.1, seed=3))
    for _ in range(3):
        started = time.monotonic()
        request(proxy, "GET", "/")
        assert 0.05 <= time.monotonic() - started < 1.0


def test_timeout_holds_until_the_client_gives_up(proxy: FaultProxy) -> None:
    proxy.set_faults(FaultSpec(timeout=1.0, max_hold=30.0))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        request(proxy, "GET", "/held", timeout=0.3)
    assert time.monotonic() - started < 5.0
    _wait_until(lambda: proxy.count() == 1)  # recorded on arrival, even under heavy load
    (record,) = proxy.records()
    assert (record.fault, record.status, record.forwarded) == (Fault.TIMEOUT, None, False)


def test_timeout_is_bounded_by_max_hold(proxy: FaultProxy) -> None:
    proxy.set_faults(FaultSpec(timeout=1.0, max_hold=0.2))
    started = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        request(proxy, "GET", "/held", timeout=10.0)
    assert 0.2 <= time.monotonic() - started < 5.0


def test_a_lost_answer_is_carried_out_upstream_and_never_returned(proxy: FaultProxy) -> None:
    """The write landed; its caller never learns it (the case fencing and read-back are
    for)."""
    proxy.set_faults(FaultSpec(lost=1.0, max_hold=0.3))
    with pytest.raises(http.client.RemoteDisconnected):
        request(proxy, "GET", "/teapot", timeout=10.0)
    (record,) = proxy.records()
    assert (record.fault, record.status, record.forwarded) == (Fault.LOST, 418, True)


def test_reset_sends_a_tcp_rst(proxy: FaultProxy) -> None:
    proxy.set_faults(FaultSpec(reset=1.0))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n")
        # A FIN would read as b""; only a RST raises ECONNRESET.
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
    assert proxy.count(fault=Fault.RESET) == 1


def test_filters_select_requests(proxy: FaultProxy) -> None:
    proxy.set_faults(FaultSpec(throttle=1.0, service="ec2", mutating_only=True))
    assert ec2_call(proxy, "DescribeInstances") == 200
    assert ec2_call(proxy, "RunInstances") == 503
    assert request(proxy, "POST", "/not-ec2")[0] == 200

    proxy.set_faults(FaultSpec(server_error=1.0, action="POST /2013-04-01/*"))
    assert request(proxy, "POST", "/2013-04-01/hostedzone")[0] == 500
    assert request(proxy, "POST", "/2014-01-01/other")[0] == 200


def test_first_matching_rule_decides(proxy: FaultProxy) -> None:
    proxy.set_faults(
        FaultSpec(action="DescribeInstances"),  # matches, but does nothing
        FaultSpec(throttle=1.0),
    )
    assert ec2_call(proxy, "DescribeInstances") == 200
    assert ec2_call(proxy, "RunInstances") == 503
    assert len(proxy.faults) == 2


def test_seeded_shares_are_reproducible(proxy: FaultProxy) -> None:
    def statuses() -> list[int]:
        proxy.set_faults(FaultSpec(throttle=0.5, seed=42))
        return [request(proxy, "GET", "/")[0] for _ in range(20)]

    first = statuses()
    assert first == statuses()
    assert set(first) == {200, 400}


def test_clear_faults(proxy: FaultProxy) -> None:
    proxy.set_faults(FaultSpec(throttle=1.0))
    proxy.clear_faults()
    assert proxy.faults == ()
    assert request(proxy, "GET", "/")[0] == 200


def test_down_refuses_connections_and_up_restores_the_same_port(
    proxy: FaultProxy, aws: boto3.Session
) -> None:
    port = proxy.port
    ec2 = aws.client("ec2", endpoint_url=proxy.url, config=RETRIES_OFF)
    proxy.down()
    assert proxy.is_down
    with pytest.raises(EndpointConnectionError):
        ec2.describe_availability_zones()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    proxy.up()
    assert proxy.port == port
    assert request(proxy, "GET", "/")[0] == 200


def test_down_drops_held_requests(proxy: FaultProxy) -> None:
    proxy.set_faults(FaultSpec(timeout=1.0, max_hold=30.0))
    errors: list[BaseException] = []

    def held() -> None:
        try:
            request(proxy, "GET", "/held", timeout=10.0)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    client = threading.Thread(target=held)
    client.start()
    _wait_until(lambda: proxy.count() == 1)
    proxy.down()
    client.join(5.0)
    assert not client.is_alive()
    assert len(errors) == 1


def test_stop_releases_held_requests_quickly(
    make_fault_proxy: MakeFaultProxy, upstream: Upstream
) -> None:
    proxy = make_fault_proxy(upstream.server.url)
    proxy.set_faults(FaultSpec(timeout=1.0, max_hold=30.0))
    client = threading.Thread(target=_ignore_errors(lambda: request(proxy, "GET", "/", timeout=10)))
    client.start()
    _wait_until(lambda: proxy.count() == 1)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 3.0
    client.join(5.0)
    assert not client.is_alive()


def _ignore_errors(call: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            call()

    return run


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_restarts_on_the_same_port(make_fault_proxy: MakeFaultProxy, upstream: Upstream) -> None:
    proxy = make_fault_proxy(upstream.server.url)
    port = proxy.port
    proxy.stop()
    proxy.stop()  # idempotent
    proxy.start()
    assert proxy.port == port
    assert request(proxy, "GET", "/")[0] == 200
