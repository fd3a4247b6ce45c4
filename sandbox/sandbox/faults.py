"""The cloud fault layer: an HTTP reverse proxy that injects API-plane failures.

One :class:`FaultProxy` sits in front of one upstream base URL: one per cloud
region, so that regions fail independently, and one more for global services
such as Route 53. Clients (boto3, openstacksdk) are pointed at the proxy's URL.

Every request is forwarded transparently (method, raw path and query, headers
including ``Host``, which SigV4 signs, and the body), with request and response
bodies streamed, never buffered. Each request is classified (service, action,
mutating or not) and recorded, so tests and drills can assert, for example,
that no mutating call reached a frozen region.

Faults are set at runtime with :meth:`FaultProxy.set_faults` as a list of
:class:`FaultSpec` rules: added latency, held requests (timeouts), TCP resets,
error answers shaped exactly like the real cloud's for the request's wire
protocol, so that botocore raises ``ClientError`` with the real error code
(``RequestLimitExceeded``, ``Throttling``, ``SlowDown``, ...), and corrupted answers (the
upstream's status and headers, one bit of the body flipped). ``down()`` /
``up()`` make the whole endpoint refuse connections and come back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from sandbox.procs import HttpService, require_loopback

logger = logging.getLogger(__name__)

# --- vocabulary ----------------------------------------------------------------------------


class Cloud(StrEnum):
    """Which cloud's API the upstream speaks: decides classification and error shapes."""

    AWS = "aws"
    OPENSTACK = "openstack"


class Fault(StrEnum):
    """What the proxy did to a request instead of (or on top of) forwarding it."""

    LATENCY = "latency"  # forwarded after an added delay
    TIMEOUT = "timeout"  # held without an answer until the client gave up
    RESET = "reset"  # connection reset (TCP RST)
    THROTTLE = "throttle"
    SERVER_ERROR = "server_error"
    UNAVAILABLE = "unavailable"
    AUTH = "auth"
    CORRUPT = "corrupt"  # forwarded, one bit of the answer's body flipped
    LOST = "lost"  # forwarded and carried out, its answer never sent (held, then dropped)
    ANSWERED = "answered"  # answered by the proxy with a canned answer, never forwarded


ERROR_FAULTS = frozenset({Fault.THROTTLE, Fault.SERVER_ERROR, Fault.UNAVAILABLE, Fault.AUTH})

# Route 53 speaks REST: its calls are classified ``"METHOD /path"``; these globs name them.
ROUTE53_CHANGE = "POST /2013-04-01/hostedzone/*/rrset*"
"""ChangeResourceRecordSets."""
ROUTE53_GET_CHANGE = "GET /2013-04-01/change/*"
"""GetChange (polled until a change is INSYNC)."""


class WireProtocol(StrEnum):
    """The API protocol of a request, which fixes the shape of its error answers."""

    EC2 = "ec2"  # EC2 query: <Response><Errors><Error>...
    QUERY = "query"  # AWS query (STS, Auto Scaling, ELB): <ErrorResponse><Error>...
    REST_XML = "rest-xml"  # Route 53, CloudFront: <ErrorResponse xmlns=...><Error>...
    S3 = "s3"  # S3: <Error><Code>...
    JSON = "json"  # awsJson / restJson: {"__type": ...} + x-amzn-ErrorType
    OPENSTACK = "openstack"  # Nova / Keystone style JSON bodies


@dataclass(frozen=True)
class RequestInfo:
    """What a request is, as far as fault matching and error shaping are concerned."""

    service: str
    action: str
    mutating: bool
    protocol: WireProtocol


@dataclass(frozen=True)
class RequestRecord:
    """One request seen by a proxy.

    ``time`` is the wall-clock arrival time (``time.time()``). ``fault`` is what
    the proxy did (``None``: forwarded untouched). ``status`` is the HTTP status
    sent to the client (for a ``lost`` answer: the upstream's, which the client never
    saw); ``None`` while pending or when no answer was made (timeout, reset, client gone).
    ``params``: the parameters of a query-protocol request (its form body, the EC2 and
    Auto Scaling calls: ``Action``, ``ClientToken``, ...) of at most
    :data:`PARAMS_RECORDED_LIMIT` bytes, so that tests can tell a retry from a new request;
    empty for other requests.
    """

    time: float
    method: str
    path: str
    service: str
    action: str
    mutating: bool
    fault: Fault | None
    status: int | None
    params: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def forwarded(self) -> bool:
        """Whether the request was passed on to the upstream."""
        return self.fault in (None, Fault.LATENCY, Fault.CORRUPT, Fault.LOST)


@dataclass(frozen=True)
class CannedAnswer:
    """An answer the proxy gives itself, without forwarding the request: what the cloud says
    of work it failed to carry out where the emulator behind the proxy cannot fail it (moto
    launches every instance an Auto Scaling group asks for)."""

    status: int
    body: str
    content_type: str = "text/xml"


@dataclass(frozen=True)
class FaultSpec:
    """One fault rule.

    Requests that match the filters (``service``, ``action`` glob,
    ``mutating_only``) are delayed by ``latency`` plus a uniform random
    ``0..jitter`` seconds, then meet at most one outcome, drawn with the given
    shares (probabilities, summing to at most 1): ``timeout``, ``reset``,
    ``throttle``, ``server_error``, ``unavailable``, ``auth``, ``corrupt`` (forwarded,
    but the first byte of the answer's body has its lowest bit flipped, as by a faulty
    link or middlebox that TCP's checksum missed; an empty body is left whole), ``lost``
    (forwarded and carried out upstream, but its answer is never sent: the caller waits
    up to ``max_hold`` and sees the connection close — "did my write land?"). The rest
    are forwarded. A timeout holds the request until the client gives up, at most
    ``max_hold`` seconds, then closes the connection without an answer.

    ``action`` is matched case-sensitively against :attr:`RequestInfo.action`:
    the API action name (``RunInstances``) or, for REST calls, ``"METHOD /path"``
    (``"POST /2013-04-01/hostedzone/*"``). With a ``seed`` the draws are
    reproducible for a given request order. With ``times`` the rule applies to the first
    ``times`` matching requests only (``times=1``: the next matching request), and lets
    the later ones pass to the rules after it.
    """

    latency: float = 0.0
    jitter: float = 0.0
    timeout: float = 0.0
    reset: float = 0.0
    throttle: float = 0.0
    server_error: float = 0.0
    unavailable: float = 0.0
    auth: float = 0.0
    corrupt: float = 0.0
    lost: float = 0.0
    service: str | None = None
    action: str | None = None
    mutating_only: bool = False
    max_hold: float = 30.0
    seed: int | None = None
    times: int | None = None
    answer: CannedAnswer | None = None
    """Answer every matching request with this (the outcome shares do not apply)."""

    def __post_init__(self) -> None:
        if self.times is not None and self.times < 1:
            raise ValueError(f"FaultSpec.times must be >= 1 (or None: always), got {self.times}")
        for name in ("latency", "jitter"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"FaultSpec.{name} must be >= 0 seconds, got {getattr(self, name)}"
                )
        if self.max_hold <= 0:
            raise ValueError(f"FaultSpec.max_hold must be > 0 seconds, got {self.max_hold}")
        for fault, share in self.shares():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"FaultSpec.{fault} is a share and must be in 0..1, got {share}")
        total = sum(share for _, share in self.shares())
        if total > 1.0 + 1e-9:
            raise ValueError(f"FaultSpec outcome shares add up to {total:g}; they must total <= 1")

    def shares(self) -> tuple[tuple[Fault, float], ...]:
        """The outcome shares, in the order they are drawn."""
        return (
            (Fault.TIMEOUT, self.timeout),
            (Fault.RESET, self.reset),
            (Fault.THROTTLE, self.throttle),
            (Fault.SERVER_ERROR, self.server_error),
            (Fault.UNAVAILABLE, self.unavailable),
            (Fault.AUTH, self.auth),
            (Fault.CORRUPT, self.corrupt),
            (Fault.LOST, self.lost),
        )

    def matches(self, info: RequestInfo) -> bool:
        if self.service is not None and info.service != self.service:
            return False
        if self.action is not None and not fnmatchcase(info.action, self.action):
            return False
        return info.mutating or not self.mutating_only


# --- classification ------------------------------------------------------------------------

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")
_READ_ACTION_PREFIXES = ("Describe", "List", "Get")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_REST_XML_SERVICES = frozenset({"route53", "cloudfront", "s3control"})
# First path segment -> OpenStack service type, for devstack-style and standalone endpoints.
_OPENSTACK_PATH_SERVICES = {
    "identity": "identity",
    "v3": "identity",
    "compute": "compute",
    "v2.1": "compute",
    "volume": "block-storage",
    "image": "image",
    "network": "network",
    "networking": "network",
    "v1": "object-store",
    "auth": "object-store",
}
_KEYSTONE_TOKENS_PATH = re.compile(r"/auth/tokens/?$")


def classify(
    method: str,
    path: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    form: Mapping[str, str] | None = None,
    *,
    cloud: Cloud = Cloud.AWS,
    default_service: str | None = None,
) -> RequestInfo:
    """Classify a request by service, action and whether it mutates.

    AWS: the service comes from the SigV4 credential scope (``Authorization``
    header or presigned ``X-Amz-Credential``), or is S3 for SigV2; the action
    from ``X-Amz-Target`` (JSON protocols), ``Action`` in the query or the form
    body ``form`` (query protocols), else ``"METHOD /path"`` (REST). Named actions are reads when
    they start with Describe/List/Get; REST calls when the method is GET, HEAD
    or OPTIONS. OpenStack: ``"METHOD /path"``, read by method, and Keystone
    token requests count as reads. ``headers`` must be case-insensitive.
    ``default_service`` names the service when the request does not.
    """
    if cloud is Cloud.OPENSTACK:
        return _classify_openstack(method, path, default_service)
    service = _aws_service(headers, query) or default_service or "unknown"
    target = headers.get("X-Amz-Target")
    if target:
        action = target.rsplit(".", 1)[-1]
        return RequestInfo(service, action, _mutating_action(action), WireProtocol.JSON)
    named = query.get("Action") or (form or {}).get("Action")
    if named:
        protocol = WireProtocol.EC2 if service == "ec2" else WireProtocol.QUERY
        return RequestInfo(service, named, _mutating_action(named), protocol)
    return RequestInfo(
        service, f"{method} {path}", method not in _READ_METHODS, _aws_rest_protocol(service)
    )


def _aws_service(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    authorization = headers.get("Authorization", "")
    match = _CREDENTIAL_SCOPE.search(authorization)
    if match:
        return match.group(1)
    scope = query.get("X-Amz-Credential", "").split("/")
    if len(scope) == 5:
        return scope[3]
    # SigV2 without an Action: only S3 still speaks it (header auth, presigned URLs).
    sigv2_query = "AWSAccessKeyId" in query and "Signature" in query and "Action" not in query
    return "s3" if authorization.startswith("AWS ") or sigv2_query else None


def _mutating_action(action: str) -> bool:
    return not action.startswith(_READ_ACTION_PREFIXES)


def _aws_rest_protocol(service: str) -> WireProtocol:
    if service == "s3":
        return WireProtocol.S3
    if service == "ec2":
        return WireProtocol.EC2
    if service in _REST_XML_SERVICES:
        return WireProtocol.REST_XML
    return WireProtocol.JSON


def _classify_openstack(method: str, path: str, default_service: str | None) -> RequestInfo:
    first_segment = path.lstrip("/").split("/", 1)[0]
    service = default_service or _OPENSTACK_PATH_SERVICES.get(first_segment, "openstack")
    authenticating = method == "POST" and _KEYSTONE_TOKENS_PATH.search(path) is not None
    mutating = method not in _READ_METHODS and not authenticating
    return RequestInfo(service, f"{method} {path}", mutating, WireProtocol.OPENSTACK)


# --- error answers -------------------------------------------------------------------------


@dataclass(frozen=True)
class _AwsError:
    status: int
    code: str
    message: str
    sender: bool = True  # <Type>Sender</Type> (the client's fault) or Receiver (the server's)
    json_namespace: str = "com.amazon.coral.service"


_INTERNAL_FAILURE = _AwsError(
    500,
    "InternalFailure",
    "The request processing has failed because of an unknown error, exception or failure.",
    sender=False,
)
_SERVICE_UNAVAILABLE = _AwsError(
    503,
    "ServiceUnavailable",
    "The request has failed due to a temporary failure of the server.",
    sender=False,
    json_namespace="com.amazon.coral.availability",
)
_REJECTED_CREDENTIALS_MESSAGE = "The security token included in the request is invalid."
_COMMON_AWS_ERRORS = {
    Fault.THROTTLE: _AwsError(400, "Throttling", "Rate exceeded"),
    Fault.SERVER_ERROR: _INTERNAL_FAILURE,
    Fault.UNAVAILABLE: _SERVICE_UNAVAILABLE,
    Fault.AUTH: _AwsError(403, "InvalidClientTokenId", _REJECTED_CREDENTIALS_MESSAGE),
}

# What each protocol's services really answer; botocore turns Code into ClientError codes.
_AWS_ERRORS: dict[WireProtocol, dict[Fault, _AwsError]] = {
    WireProtocol.EC2: {
        Fault.THROTTLE: _AwsError(503, "RequestLimitExceeded", "Request limit exceeded."),
        Fault.SERVER_ERROR: _AwsError(
            500, "InternalError", "An internal error has occurred.", sender=False
        ),
        Fault.UNAVAILABLE: _AwsError(
            503, "Unavailable", "The server is overloaded and can't handle the request.", False
        ),
        Fault.AUTH: _AwsError(
            401, "AuthFailure", "AWS was not able to validate the provided access credentials"
        ),
    },
    WireProtocol.QUERY: _COMMON_AWS_ERRORS,
    WireProtocol.REST_XML: _COMMON_AWS_ERRORS,
    WireProtocol.S3: {
        Fault.THROTTLE: _AwsError(503, "SlowDown", "Please reduce your request rate."),
        Fault.SERVER_ERROR: _AwsError(
            500, "InternalError", "We encountered an internal error. Please try again.", False
        ),
        Fault.UNAVAILABLE: _AwsError(
            503, "ServiceUnavailable", "Service is unable to handle request.", sender=False
        ),
        Fault.AUTH: _AwsError(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        ),
    },
    WireProtocol.JSON: {
        Fault.THROTTLE: _AwsError(
            400,
            "ThrottlingException",
            "Rate exceeded",
            json_namespace="com.amazon.coral.availability",
        ),
        Fault.SERVER_ERROR: _INTERNAL_FAILURE,
        Fault.UNAVAILABLE: _SERVICE_UNAVAILABLE,
        Fault.AUTH: _AwsError(403, "UnrecognizedClientException", _REJECTED_CREDENTIALS_MESSAGE),
    },
}

# Namespaces real services put on <ErrorResponse>; botocore ignores them, humans read them.
_XML_NAMESPACES = {
    "route53": "https://route53.amazonaws.com/doc/2013-04-01/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "autoscaling": "http://autoscaling.amazonaws.com/doc/2011-01-01/",
    "elasticloadbalancing": "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
}

_OPENSTACK_RETRY_AFTER_SECONDS = 1
# Nova's rate-limit and fault bodies; Keystone's 401.
_OPENSTACK_ERRORS: dict[Fault, tuple[int, dict[str, object]]] = {
    Fault.THROTTLE: (
        429,
        {
            "overLimit": {
                "code": 429,
                "message": "This request was rate-limited.",
                "retryAfter": str(_OPENSTACK_RETRY_AFTER_SECONDS),
            }
        },
    ),
    Fault.SERVER_ERROR: (
        500,
        {"computeFault": {"code": 500, "message": "Unexpected API Error. Please try again."}},
    ),
    Fault.UNAVAILABLE: (
        503,
        {"serviceUnavailable": {"code": 503, "message": "The service is temporarily unavailable."}},
    ),
    Fault.AUTH: (
        401,
        {
            "error": {
                "code": 401,
                "title": "Unauthorized",
                "message": "The request you have made requires authentication.",
            }
        },
    ),
}


def error_response(
    info: RequestInfo, fault: Fault, *, request_content_type: str = ""
) -> web.Response:
    """The answer the real cloud gives for ``fault`` in the protocol of ``info``.

    ``request_content_type`` lets JSON errors echo the request's
    ``application/x-amz-json-1.x`` flavour.
    """
    if fault not in ERROR_FAULTS:
        raise ValueError(f"{fault} is not an error fault; expected one of {sorted(ERROR_FAULTS)}")
    if info.protocol is WireProtocol.OPENSTACK:
        return _openstack_error(fault)
    error = _AWS_ERRORS[info.protocol][fault]
    if info.protocol is WireProtocol.JSON:
        return _json_error(error, request_content_type)
    if info.protocol is WireProtocol.S3:
        return _s3_error(error)
    if info.protocol is WireProtocol.EC2:
        return _ec2_error(error)
    return _query_error(error, _XML_NAMESPACES.get(info.service))


def _ec2_error(error: _AwsError) -> web.Response:
    request_id = str(uuid.uuid4())
    body = (
        f"<Response><Errors><Error><Code>{error.code}</Code>"
        f"<Message>{escape(error.message)}</Message></Error></Errors>"
        f"<RequestID>{request_id}</RequestID></Response>"
    )
    return _xml_response(error.status, body, {"x-amzn-RequestId": request_id})


def _query_error(error: _AwsError, namespace: str | None) -> web.Response:
    """AWS query protocol and REST-XML (Route 53) errors share this shape."""
    request_id = str(uuid.uuid4())
    opening = f'<ErrorResponse xmlns="{namespace}">' if namespace else "<ErrorResponse>"
    body = (
        f"{opening}<Error><Type>{'Sender' if error.sender else 'Receiver'}</Type>"
        f"<Code>{error.code}</Code><Message>{escape(error.message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return _xml_response(error.status, body, {"x-amzn-RequestId": request_id})


def _s3_error(error: _AwsError) -> web.Response:
    request_id, host_id = uuid.uuid4().hex[:16].upper(), uuid.uuid4().hex
    body = (
        f"<Error><Code>{error.code}</Code><Message>{escape(error.message)}</Message>"
        f"<RequestId>{request_id}</RequestId><HostId>{host_id}</HostId></Error>"
    )
    headers = {"x-amz-request-id": request_id, "x-amz-id-2": host_id}
    return _xml_response(error.status, body, headers, content_type="application/xml")


def _xml_response(
    status: int, body: str, headers: dict[str, str], *, content_type: str = "text/xml"
) -> web.Response:
    return web.Response(
        status=status,
        body=f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'.encode(),
        content_type=content_type,
        charset="utf-8",
        headers=headers,
    )


def _json_error(error: _AwsError, request_content_type: str) -> web.Response:
    content_type = (
        request_content_type
        if request_content_type.startswith("application/x-amz-json")
        else "application/json"
    )
    body = {"__type": f"{error.json_namespace}#{error.code}", "message": error.message}
    return web.Response(
        status=error.status,
        body=json.dumps(body).encode(),
        content_type=content_type,
        headers={"x-amzn-ErrorType": error.code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def _openstack_error(fault: Fault) -> web.Response:
    status, body = _OPENSTACK_ERRORS[fault]
    headers = {"X-Openstack-Request-Id": f"req-{uuid.uuid4()}"}
    if status in (429, 503):
        headers["Retry-After"] = str(_OPENSTACK_RETRY_AFTER_SECONDS)
    return web.json_response(body, status=status, headers=headers)


# --- what an emulator cannot fail ----------------------------------------------------------

_AUTOSCALING_NS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"


def failed_scale_up(group: str, message: str, *, cause: str = "") -> tuple[FaultSpec, FaultSpec]:
    """Auto Scaling failing to launch, as AWS shows it, in front of moto (which launches every
    instance a group asks for and keeps no scaling activities): rules for a region's proxy.

    * ``UpdateAutoScalingGroup`` is answered OK and not forwarded: no instance is launched.
      (AWS would record the new desired capacity and fail the launches; moto's group keeps
      its old desired capacity, so DescribeAutoScalingGroups shows fewer wanted than AWS
      would. What Lifeboat compares, the instances InService against what it asked for, is
      the same either way.)
    * ``DescribeScalingActivities`` answers one activity of ``group`` with ``StatusCode``
      ``Failed`` and ``message`` as its ``StatusMessage``, as AWS words it (e.g.
      "We currently do not have sufficient capacity ... InsufficientInstanceCapacity").
    """
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    activity = (
        "<member>"
        f"<ActivityId>{uuid.uuid4()}</ActivityId>"
        f"<AutoScalingGroupName>{escape(group)}</AutoScalingGroupName>"
        "<Description>Launching a new EC2 instance.  Status Reason: "
        f"{escape(message)}</Description>"
        f"<Cause>{escape(cause or 'a user request update of AutoScalingGroup constraints')}"
        "</Cause>"
        f"<StartTime>{now}</StartTime><EndTime>{now}</EndTime>"
        "<StatusCode>Failed</StatusCode>"
        f"<StatusMessage>{escape(message)}</StatusMessage>"
        "<Progress>100</Progress>"
        "</member>"
    )
    activities = (
        f'<DescribeScalingActivitiesResponse xmlns="{_AUTOSCALING_NS}">'
        f"<DescribeScalingActivitiesResult><Activities>{activity}</Activities>"
        "</DescribeScalingActivitiesResult>"
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
        "</DescribeScalingActivitiesResponse>"
    )
    updated = (
        f'<UpdateAutoScalingGroupResponse xmlns="{_AUTOSCALING_NS}">'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
        "</UpdateAutoScalingGroupResponse>"
    )
    return (
        FaultSpec(
            service="autoscaling",
            action="UpdateAutoScalingGroup",
            answer=CannedAnswer(200, updated),
        ),
        FaultSpec(
            service="autoscaling",
            action="DescribeScalingActivities",
            answer=CannedAnswer(200, activities),
        ),
    )


# --- decisions and records -----------------------------------------------------------------


@dataclass(frozen=True)
class _Decision:
    fault: Fault | None
    delay: float = 0.0
    max_hold: float = 0.0
    answer: CannedAnswer | None = None


_UNTOUCHED = _Decision(fault=None)


@dataclass
class _Rule:
    spec: FaultSpec
    rng: random.Random
    matched: int = 0

    def decide(self, info: RequestInfo) -> _Decision | None:
        spec = self.spec
        if not spec.matches(info):
            return None
        if spec.times is not None and self.matched >= spec.times:
            return None
        self.matched += 1
        delay = spec.latency + (self.rng.uniform(0.0, spec.jitter) if spec.jitter else 0.0)
        if spec.answer is not None:
            return _Decision(Fault.ANSWERED, delay, spec.max_hold, spec.answer)
        draw = self.rng.random()
        threshold = 0.0
        for fault, share in spec.shares():
            threshold += share
            if draw < threshold:
                return _Decision(fault, delay, spec.max_hold)
        return _Decision(Fault.LATENCY if delay > 0 else None, delay, spec.max_hold)


@dataclass
class _Entry:
    """A mutable slot for one record: the status arrives after the request is logged."""

    record: RequestRecord


class _RecordLog:
    """A thread-safe, bounded log of request records; the oldest are discarded first."""

    def __init__(self, max_records: int) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        self._entries: deque[_Entry] = deque(maxlen=max_records)
        self._lock = threading.Lock()
        self.total = 0
        """Requests recorded since the last :meth:`clear`, discarded ones included."""

    def add(self, record: RequestRecord) -> _Entry:
        entry = _Entry(record)
        with self._lock:
            self._entries.append(entry)
            self.total += 1
        return entry

    def set_status(self, entry: _Entry, status: int) -> None:
        with self._lock:
            entry.record = replace(entry.record, status=status)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return [entry.record for entry in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.total = 0


# --- the proxy -----------------------------------------------------------------------------

MOTO_UNVERSIONED_BUCKETS: Mapping[str, str] = {"x-amz-version-id": "null"}
"""For ``drop_answer_headers`` in front of moto: moto's CompleteMultipartUpload answers
``x-amz-version-id: null`` in a bucket that was never versioned, where S3 sends no
version, and then refuses (400) a HEAD that names that version. A client that checks its
uploads by version (rclone does) fails on moto alone. Only for buckets whose versioning
was never suspended, where S3 itself answers ``null``."""

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# aiohttp answers "Expect: 100-continue" itself; SigV4 never signs Expect.
_NOT_FORWARDED_REQUEST_HEADERS = _HOP_BY_HOP | {"expect"}
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_FORM_PEEK_LIMIT = 256 * 1024
PARAMS_RECORDED_LIMIT = 8 * 1024
"""Form bodies up to this size are kept in :attr:`RequestRecord.params`."""
_SESSION = web.AppKey("upstream_session", aiohttp.ClientSession)


def _end_to_end_headers(
    headers: CIMultiDictProxy[str], dropped: frozenset[str]
) -> CIMultiDict[str]:
    listed = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
    }
    return CIMultiDict(
        (name, value)
        for name, value in headers.items()
        if name.lower() not in dropped and name.lower() not in listed
    )


async def _peek_form(request: web.BaseRequest) -> bytes | None:
    """The body of a small form-encoded request (query protocols put Action there)."""
    if request.content_type != "application/x-www-form-urlencoded":
        return None
    length = request.content_length
    if length is None or length > _FORM_PEEK_LIMIT:
        return None
    return await request.read()


def _drop_connection(request: web.BaseRequest, *, reset: bool) -> None:
    """Close the client connection without an answer; ``reset`` sends a TCP RST."""
    transport = request.transport
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FaultProxy(HttpService):
    """A fault-injecting reverse proxy in front of one upstream base URL.

    Runs its own event loop in a daemon thread; every public method is
    synchronous and thread-safe. Use as a context manager or call ``start()`` /
    ``stop()`` (which drops all connections, held requests included). See the module
    docstring for what it does to requests.
    """

    def __init__(
        self,
        upstream: str,
        *,
        name: str = "fault-proxy",
        host: str = "127.0.0.1",
        port: int = 0,
        cloud: Cloud = Cloud.AWS,
        default_service: str | None = None,
        max_records: int = 100_000,
        connect_timeout: float = 5.0,
        drop_answer_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Create (not start) a proxy.

        ``upstream`` is a loopback base URL (``http://127.0.0.1:5000``, may carry
        a path prefix). ``port`` 0 picks a free port at ``start()``.
        ``default_service`` names the service of requests that carry no SigV4
        scope (unsigned AWS calls, OpenStack endpoints). The oldest records are
        discarded beyond ``max_records``. ``drop_answer_headers`` (name -> value,
        names case-insensitive) are taken out of the upstream's answers: a way to
        mend where an emulator answers unlike the real cloud (see
        :data:`MOTO_UNVERSIONED_BUCKETS`).
        """
        super().__init__(name, host=host, port=port, server_name=f"fault-proxy {name}")
        self.upstream = _loopback_base_url(upstream)
        self._dropped_answer_headers = frozenset(
            (name.lower(), value) for name, value in (drop_answer_headers or {}).items()
        )
        self.cloud = cloud
        self.default_service = default_service
        self._connect_timeout = connect_timeout
        self._rules: tuple[_Rule, ...] = ()
        self._rules_lock = threading.Lock()
        self._log = _RecordLog(max_records)

    def __repr__(self) -> str:
        return f"<FaultProxy {self.name} -> {self.upstream}>"

    # outages of the whole endpoint

    def down(self) -> None:
        """Refuse connections (and drop open ones) until :meth:`up`."""
        self._server.stop_listening()
        logger.info("fault proxy %s: down (connections refused)", self.name)

    def up(self) -> None:
        """Accept connections again, on the same port."""
        self._server.start_listening()
        logger.info("fault proxy %s: up at %s", self.name, self.url)

    @property
    def is_down(self) -> bool:
        return self._server.running and not self._server.listening

    # faults

    def set_faults(self, *specs: FaultSpec) -> None:
        """Replace the fault rules. For each request the first matching rule decides."""
        rules = tuple(_Rule(spec, random.Random(spec.seed)) for spec in specs)
        with self._rules_lock:
            self._rules = rules
        logger.info("fault proxy %s: faults %s", self.name, list(specs) or "cleared")

    def clear_faults(self) -> None:
        self.set_faults()

    @property
    def faults(self) -> tuple[FaultSpec, ...]:
        with self._rules_lock:
            return tuple(rule.spec for rule in self._rules)

    # records

    def records(self) -> list[RequestRecord]:
        """A snapshot of the recorded requests, oldest first."""
        return self._log.snapshot()

    def clear_records(self) -> None:
        self._log.clear()

    @property
    def total_requests(self) -> int:
        """Requests seen since the last :meth:`clear_records`, beyond ``max_records`` too."""
        return self._log.total

    def count(
        self,
        *,
        service: str | None = None,
        action: str | None = None,
        mutating: bool | None = None,
        fault: Fault | None = None,
        forwarded: bool | None = None,
    ) -> int:
        """How many recorded requests match every given filter (``action`` is a glob)."""
        return sum(
            1
            for record in self._log.snapshot()
            if (service is None or record.service == service)
            and (action is None or fnmatchcase(record.action, action))
            and (mutating is None or record.mutating == mutating)
            and (fault is None or record.fault == fault)
            and (forwarded is None or record.forwarded == forwarded)
        )

    # request handling (event-loop thread)

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.cleanup_ctx.append(self._upstream_session)
        return app

    async def _upstream_session(self, app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
        )
        app[_SESSION] = session
        yield
        await session.close()

    def _decide(self, info: RequestInfo) -> _Decision:
        with self._rules_lock:
            for rule in self._rules:
                decision = rule.decide(info)
                if decision is not None:
                    return decision
        return _UNTOUCHED

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form_body = await _peek_form(request)
        form = dict(parse_qsl(form_body.decode("utf-8", "replace"))) if form_body else None
        info = classify(
            request.method,
            request.path,
            request.headers,
            request.query,
            form,
            cloud=self.cloud,
            default_service=self.default_service,
        )
        decision = self._decide(info)
        entry = self._log.add(
            RequestRecord(
                time=time.time(),
                method=request.method,
                path=request.path,
                service=info.service,
                action=info.action,
                mutating=info.mutating,
                fault=decision.fault,
                status=None,
                params=form if form and len(form_body or b"") <= PARAMS_RECORDED_LIMIT else {},
            )
        )
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        return await self._apply(decision, request, info, form_body, entry)

    async def _apply(
        self,
        decision: _Decision,
        request: web.Request,
        info: RequestInfo,
        form_body: bytes | None,
        entry: _Entry,
    ) -> web.StreamResponse:
        fault = decision.fault
        if fault is Fault.TIMEOUT:
            await asyncio.sleep(decision.max_hold)  # cancelled as soon as the client leaves
            _drop_connection(request, reset=False)
            return web.Response()  # never sent: the connection is gone
        if fault is Fault.RESET:
            _drop_connection(request, reset=True)
            return web.Response()
        if fault is Fault.LOST:
            await self._forward_silently(request, form_body, entry)
            await asyncio.sleep(decision.max_hold)  # cancelled as soon as the client leaves
            _drop_connection(request, reset=False)
            return web.Response()  # never sent: the connection is gone
        if fault is Fault.ANSWERED and decision.answer is not None:
            canned = decision.answer
            self._log.set_status(entry, canned.status)
            return web.Response(
                status=canned.status, text=canned.body, content_type=canned.content_type
            )
        if fault is None or fault is Fault.LATENCY or fault is Fault.CORRUPT:
            return await self._forward(request, form_body, entry, corrupt=fault is Fault.CORRUPT)
        response = error_response(info, fault, request_content_type=request.content_type)
        self._log.set_status(entry, response.status)
        return response

    async def _forward_silently(
        self, request: web.Request, form_body: bytes | None, entry: _Entry
    ) -> None:
        """Send the request upstream and read its answer, for no one."""
        url = URL(f"{self.upstream}{request.raw_path}", encoded=True)
        body = (
            form_body if form_body is not None else request.content if request.body_exists else None
        )
        try:
            async with request.app[_SESSION].request(
                request.method,
                url,
                headers=_end_to_end_headers(request.headers, _NOT_FORWARDED_REQUEST_HEADERS),
                data=body,
                allow_redirects=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
            ) as upstream:
                await upstream.read()
                self._log.set_status(entry, upstream.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("fault proxy %s: upstream %s failed: %r", self.name, url, exc)

    async def _forward(
        self, request: web.Request, form_body: bytes | None, entry: _Entry, *, corrupt: bool = False
    ) -> web.StreamResponse:
        url = URL(f"{self.upstream}{request.raw_path}", encoded=True)
        body = (
            form_body if form_body is not None else request.content if request.body_exists else None
        )
        response: web.StreamResponse | None = None
        try:
            async with request.app[_SESSION].request(
                request.method,
                url,
                headers=_end_to_end_headers(request.headers, _NOT_FORWARDED_REQUEST_HEADERS),
                data=body,
                allow_redirects=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
            ) as upstream:
                self._log.set_status(entry, upstream.status)
                headers = _end_to_end_headers(upstream.headers, _HOP_BY_HOP)
                if self._dropped_answer_headers:
                    headers = CIMultiDict(
                        (name, value)
                        for name, value in headers.items()
                        if (name.lower(), value) not in self._dropped_answer_headers
                    )
                response = web.StreamResponse(
                    status=upstream.status, reason=upstream.reason, headers=headers
                )
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    if corrupt and chunk:
                        chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
                        corrupt = False
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            if response is not None:  # the answer is half sent: the client must see it break
                _drop_connection(request, reset=False)
                return response
            logger.warning("fault proxy %s: upstream %s failed: %r", self.name, url, exc)
            self._log.set_status(entry, 502)
            return web.Response(
                status=502,
                text=f"fault proxy {self.name}: upstream {self.upstream} failed: {exc!r}",
            )


def _loopback_base_url(upstream: str) -> str:
    url = URL(upstream)
    if url.scheme not in ("http", "https") or url.host is None:
        raise ValueError(
            f"upstream must be an http(s) URL like http://127.0.0.1:5000, got {upstream!r}"
        )
    require_loopback(url.host)
    return str(url).rstrip("/")
