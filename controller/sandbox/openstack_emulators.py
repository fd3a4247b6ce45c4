"""Emulated OpenStack APIs for the sandbox: Nova (compute), Designate (dns), Cinder (volumev3).

Keystone and Swift run for real in the sandbox (see :mod:`controller.sandbox.openstack`);
Nova, Designate and Cinder need hypervisors, DNS servers, message queues and
storage back ends, so they are emulated here: one aiohttp application per
service and region, served on its own loopback port from a background thread
(:class:`~controller.sandbox.procs.BackgroundHttpServer`).

The emulators follow the API references where openstacksdk and Lifeboat depend
on them: URL layout, version documents (what keystoneauth's discovery reads),
microversion negotiation (``OpenStack-API-Version`` request and response
headers, 400 for a malformed version, 406 outside the supported range), status
codes, the JSON shapes of resources and of errors (``{"itemNotFound": {"code":
404, "message": ...}}`` for Nova and Cinder, ``{"code", "type", "message",
"request_id"}`` for Designate) and asynchronous state changes: a server is
``BUILD`` and becomes ``ACTIVE`` (or ``ERROR`` with the fault "No valid host was
found") a moment later, a volume goes ``creating`` -> ``available``, a DNS zone
``PENDING`` -> ``ACTIVE``. Those changes are applied lazily, whenever the state
is next looked at, so no timer thread races the tests.

Every request but the version documents must carry an ``X-Auth-Token`` that
Keystone accepts (:class:`KeystoneTokenValidator`, the check keystonemiddleware
makes); without one the answer is keystonemiddleware's 401. Policies follow the
services' defaults where it shows: admin-only calls answer 403 to project members.

What is deliberately left out: networking (servers get made-up addresses from
198.18.0.0/15, the benchmarking range, and ``networks`` is only validated for
shape), images beyond a fixed set (there is no Glance), keypairs, quotas,
volume attachments and sort parameters (accepted; lists come newest first).
Backup data stands in for a shared backup store: an exported backup record
carries the backup's content, so importing it into another region's Cinder
brings the data along — and the backed-up volume's metadata, which a restore puts in
place of the new volume's own when it ends, as Cinder's backup drivers do.

Each emulator exposes its state for tests (snapshots of servers, volumes,
zones, ...), test hooks (a zone unavailable or out of capacity, a server put in
``ERROR`` or ``SHUTOFF``) and counts the requests it served.
"""

from __future__ import annotations

import ast
import base64
import binascii
import copy
import dataclasses
import hashlib
import ipaddress
import itertools
import json
import logging
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Self
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from controller.sandbox.procs import BackgroundHttpServer

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
Clock = Callable[[], float]

# --- versions --------------------------------------------------------------------------------


class ApiVersion(NamedTuple):
    """A microversion, ``major.minor``, ordered numerically (2.9 < 2.10)."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> ApiVersion:
        match = re.fullmatch(r"([1-9]\d*)\.([1-9]\d*|0)", text.strip())
        if match is None:
            raise ValueError(text)
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


NOVA_MIN_VERSION = ApiVersion(2, 1)
NOVA_MAX_VERSION = ApiVersion(2, 79)
CINDER_MIN_VERSION = ApiVersion(3, 0)
CINDER_MAX_VERSION = ApiVersion(3, 71)

API_VERSION_HEADER = "OpenStack-API-Version"
LEGACY_NOVA_VERSION_HEADER = "X-OpenStack-Nova-API-Version"

# --- Keystone token validation ---------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    """Who a validated token belongs to."""

    user_id: str
    user_name: str
    project_id: str | None
    project_name: str | None
    roles: frozenset[str]
    expires_at: float  # seconds since the epoch

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass(frozen=True)
class ServiceCredentials:
    """The service user the emulators validate tokens with (a ``service`` role holder)."""

    auth_url: str  # Keystone's identity v3 URL, e.g. http://127.0.0.1:5000/v3
    username: str
    password: str = field(repr=False)
    project_name: str
    user_domain_id: str = "default"
    project_domain_id: str = "default"


class KeystoneUnavailableError(RuntimeError):
    """Keystone could not be asked whether a token is valid."""


class KeystoneTokenValidator:
    """Validates user tokens against Keystone the way keystonemiddleware's auth_token does.

    It authenticates as the service user, then asks ``GET /v3/auth/tokens``
    with the user's token as ``X-Subject-Token``. Answers are cached for
    ``cache_seconds`` (never past the token's expiry): like keystonemiddleware's
    token cache, a revoked token is accepted until its entry expires. Shared by
    every emulator of a world; thread-safe (each emulator calls it from its own
    event loop with its own HTTP session).
    """

    def __init__(
        self,
        credentials: ServiceCredentials,
        *,
        cache_seconds: float = 60.0,
        negative_cache_seconds: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        self.credentials = credentials
        self.cache_seconds = cache_seconds
        self.negative_cache_seconds = negative_cache_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[TokenInfo | None, float]] = {}
        self._service_token: tuple[str, float] | None = None

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._service_token = None

    async def validate(self, session: aiohttp.ClientSession, token: str) -> TokenInfo | None:
        """The token's owner, or ``None`` when Keystone does not accept the token.

        Raises :class:`KeystoneUnavailableError` when Keystone cannot be asked.
        """
        now = time.time()
        with self._lock:
            cached = self._cache.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        info = await self._ask_keystone(session, token)
        if info is None:
            until = now + self.negative_cache_seconds
        else:
            until = min(now + self.cache_seconds, info.expires_at)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            self._cache[token] = (info, until)
        return info

    async def _ask_keystone(self, session: aiohttp.ClientSession, token: str) -> TokenInfo | None:
        for attempt in (1, 2):
            service_token = await self._get_service_token(session, renew=attempt == 2)
            try:
                async with session.get(
                    f"{self.credentials.auth_url}/auth/tokens",
                    headers={"X-Auth-Token": service_token, "X-Subject-Token": token},
                    timeout=self._timeout,
                ) as response:
                    if response.status == 200:
                        return _token_info(await response.json())
                    if response.status == 401 and attempt == 1:
                        continue  # our own token expired or was revoked: renew it once
                    if response.status in (401, 404):
                        return None  # the user's token is unknown, expired or revoked
                    raise KeystoneUnavailableError(
                        f"Keystone answered {response.status} to a token validation"
                    )
            except (aiohttp.ClientError, TimeoutError) as error:
                raise KeystoneUnavailableError(f"Keystone unreachable: {error!r}") from error
        return None

    async def _get_service_token(self, session: aiohttp.ClientSession, *, renew: bool) -> str:
        now = time.time()
        with self._lock:
            current = self._service_token
        if current is not None and not renew and current[1] - 60 > now:
            return current[0]
        credentials = self.credentials
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": credentials.username,
                            "domain": {"id": credentials.user_domain_id},
                            "password": credentials.password,
                        }
                    },
                },
                "scope": {
                    "project": {
                        "name": credentials.project_name,
                        "domain": {"id": credentials.project_domain_id},
                    }
                },
            }
        }
        try:
            async with session.post(
                f"{credentials.auth_url}/auth/tokens", json=body, timeout=self._timeout
            ) as response:
                if response.status != 201:
                    raise KeystoneUnavailableError(
                        f"the emulators' service user cannot authenticate: Keystone answered "
                        f"{response.status}: {(await response.text())[:200]}"
                    )
                token = response.headers["X-Subject-Token"]
                expires_at = _parse_iso(((await response.json())["token"])["expires_at"])
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KeystoneUnavailableError(f"Keystone unreachable: {error!r}") from error
        with self._lock:
            self._service_token = (token, expires_at)
        return token


def _token_info(body: JSON) -> TokenInfo:
    token = body["token"]
    project = token.get("project") or {}
    return TokenInfo(
        user_id=token["user"]["id"],
        user_name=token["user"]["name"],
        project_id=project.get("id"),
        project_name=project.get("name"),
        roles=frozenset(role["name"] for role in token.get("roles", [])),
        expires_at=_parse_iso(token["expires_at"]),
    )


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- shared service plumbing -----------------------------------------------------------------


class ApiError(Exception):
    """An error answer; each service renders it in its own JSON shape.

    ``kind`` is the fault name for Nova and Cinder (``itemNotFound``; derived
    from the status when empty) or the error type for Designate (``zone_not_found``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "",
        errors: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.errors = errors
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class RequestRecord:
    """One request an emulator answered (after authentication, or the 401 it gave)."""

    time: float
    method: str
    path: str
    route: str  # the route template, e.g. "/v2.1/servers/{server_id}"
    status: int
    project_id: str | None


_TOKEN = web.RequestKey("token", TokenInfo)
_VERSION = web.RequestKey("version", ApiVersion)
_REQUEST_ID = web.RequestKey("request_id", str)
_HTTP = web.AppKey("keystone_http", aiohttp.ClientSession)
_AUTH_MESSAGE = "The request you have made requires authentication."


def _now_iso(*, microseconds: bool) -> str:
    now = datetime.now(UTC)
    if microseconds:
        return now.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _base_url(request: web.Request) -> str:
    """The scheme and authority the client used (the fault proxy keeps the Host header)."""
    return f"{request.scheme}://{request.host}"


def _new_id() -> str:
    return str(uuid.uuid4())


class EmulatedService(ABC):
    """One emulated OpenStack API in one region, served on its own loopback port.

    Subclasses declare the routes, which of them are public (version
    documents), how errors look and whether microversions apply. State is
    guarded by one lock: handlers and test hooks run on different threads.
    """

    service_type: ClassVar[str]
    service_name: ClassVar[str]

    def __init__(
        self,
        region: str,
        *,
        validator: KeystoneTokenValidator,
        www_authenticate_uri: str,
        host: str = "127.0.0.1",
        clock: Clock = time.monotonic,
        max_records: int = 100_000,
    ) -> None:
        self.region = region
        self.validator = validator
        self.www_authenticate_uri = www_authenticate_uri
        self._clock = clock
        self._lock = threading.RLock()
        self._records: deque[RequestRecord] = deque(maxlen=max_records)
        self._server = BackgroundHttpServer(
            self._make_app, host=host, name=f"{self.service_name} emulator {region}"
        )

    def __repr__(self) -> str:
        where = self._server.url if self._server.running else "stopped"
        return f"<{type(self).__name__} {self.region} {where}>"

    # lifecycle

    @property
    def url(self) -> str:
        """The root URL of the server (``http://127.0.0.1:PORT``)."""
        return self._server.url

    @property
    @abstractmethod
    def endpoint_path(self) -> str:
        """What the catalog URL adds to the root (``/v2.1``, ``/v3/$(project_id)s``, ``""``)."""

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # request accounting

    def requests(self) -> list[RequestRecord]:
        """The requests answered so far, oldest first (the latest ``max_records`` of them)."""
        with self._lock:
            return list(self._records)

    def request_count(self, method: str | None = None, route: str | None = None) -> int:
        """How many answered requests match ``method`` and the route template ``route``."""
        with self._lock:
            return sum(
                1
                for record in self._records
                if (method is None or record.method == method)
                and (route is None or record.route == route)
            )

    def clear_requests(self) -> None:
        with self._lock:
            self._records.clear()

    def reset(self) -> None:
        """Forget every resource, request record and test hook: as freshly started."""
        with self._lock:
            self._records.clear()
            self._reset_state()

    # subclass interface

    @abstractmethod
    def _routes(self) -> list[web.RouteDef]: ...

    @abstractmethod
    def _reset_state(self) -> None: ...

    @abstractmethod
    def _error_body(self, error: ApiError, request_id: str) -> JSON: ...

    def _is_public(self, request: web.Request) -> bool:
        """Whether the request needs no token (version documents)."""
        return False

    def _negotiate(self, request: web.Request) -> ApiVersion | None:
        """The microversion of the request; services without microversions return None."""
        return None

    def _version_headers(self, version: ApiVersion) -> dict[str, str]:
        return {}

    @abstractmethod
    def _advance(self, now: float) -> None:
        """Apply the state changes that are due (called under the lock before each request)."""

    # the application

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        app.add_routes(self._routes())
        app.cleanup_ctx.append(self._http_session)
        return app

    async def _http_session(self, app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession()
        app[_HTTP] = session
        yield
        await session.close()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        request_id = f"req-{uuid.uuid4()}"
        request[_REQUEST_ID] = request_id
        response = await self._serve(request, handler, request_id)
        response.headers["X-OpenStack-Request-Id"] = request_id
        info = request.get(_TOKEN)
        resource = request.match_info.route.resource
        with self._lock:
            self._records.append(
                RequestRecord(
                    time=time.time(),
                    method=request.method,
                    path=request.path,
                    route=resource.canonical if resource is not None else request.path,
                    status=response.status,
                    project_id=info.project_id if info is not None else None,
                )
            )
        return response

    async def _serve(
        self, request: web.Request, handler: Callable[[web.Request], Any], request_id: str
    ) -> web.StreamResponse:
        if not self._is_public(request):
            denied = await self._authenticate(request)
            if denied is not None:
                return denied
        version: ApiVersion | None = None
        try:
            version = self._negotiate(request)
            if version is not None:
                request[_VERSION] = version
            with self._lock:
                self._advance(self._clock())
            response: web.StreamResponse = await handler(request)
        except ApiError as error:
            response = self._render_error(error, request_id)
        except web.HTTPException as error:  # no such route or method
            response = self._render_error(
                ApiError(error.status, _http_message(error.status)), request_id
            )
        except Exception:
            logger.exception("%r: %s %s failed", self, request.method, request.path)
            response = self._render_error(
                ApiError(500, "Unexpected API Error. Please try again."), request_id
            )
        if version is not None:
            response.headers.update(self._version_headers(version))
        return response

    async def _authenticate(self, request: web.Request) -> web.Response | None:
        """keystonemiddleware's answers: 401 without a valid token, 503 without Keystone."""
        token = request.headers.get("X-Auth-Token", "")
        if not token:
            return self._unauthorized()
        try:
            info = await self.validator.validate(request.app[_HTTP], token)
        except KeystoneUnavailableError as error:
            logger.warning("%r: cannot validate a token: %s", self, error)
            return web.json_response(
                {
                    "error": {
                        "code": 503,
                        "title": "Service Unavailable",
                        "message": "The Keystone service is temporarily unavailable.",
                    }
                },
                status=503,
            )
        if info is None:
            return self._unauthorized()
        if info.project_id is None:
            forbidden = ApiError(403, "Project-scoped token required.")
            return self._render_error(forbidden, request[_REQUEST_ID])
        request[_TOKEN] = info
        return None

    def _unauthorized(self) -> web.Response:
        return web.json_response(
            {"error": {"code": 401, "title": "Unauthorized", "message": _AUTH_MESSAGE}},
            status=401,
            headers={"WWW-Authenticate": f'Keystone uri="{self.www_authenticate_uri}"'},
        )

    def _render_error(self, error: ApiError, request_id: str) -> web.Response:
        return web.json_response(
            self._error_body(error, request_id), status=error.status, headers=error.headers
        )


def _http_message(status: int) -> str:
    if status == 404:
        return "The resource could not be found."
    if status == 405:
        return "The method is not allowed for the requested URL."
    return "Unexpected API Error. Please try again."


async def _json_body(request: web.Request) -> JSON:
    """The request's JSON object; 400 "Malformed request body" otherwise."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "Malformed request body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Malformed request body")
    return body


def _token(request: web.Request) -> TokenInfo:
    return request[_TOKEN]


def _version(request: web.Request) -> ApiVersion:
    return request[_VERSION]


def _require_admin(request: web.Request, rule: str) -> None:
    if not _token(request).is_admin:
        raise ApiError(403, f"Policy doesn't allow {rule} to be performed.")


# Nova and Cinder share the webob fault names: the key of an error body by status.
_FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}


def _fault_body(error: ApiError) -> JSON:
    name = error.kind or _FAULT_NAMES.get(error.status, "computeFault")
    return {name: {"code": error.status, "message": error.message}}


def _negotiate_microversion(
    request: web.Request,
    *,
    service: str,
    minimum: ApiVersion,
    maximum: ApiVersion,
    legacy_header: str | None = None,
) -> ApiVersion:
    """Pick the request's microversion as Nova and Cinder do (default: the minimum)."""
    requested: str | None = None
    for item in request.headers.get(API_VERSION_HEADER, "").split(","):
        parts = item.strip().split(None, 1)
        if len(parts) == 2 and parts[0].lower() == service:
            requested = parts[1].strip()
    if requested is None and legacy_header is not None:
        requested = request.headers.get(legacy_header)
    if requested is None:
        return minimum
    if requested.lower() == "latest":
        return maximum
    try:
        version = ApiVersion.parse(requested)
    except ValueError:
        raise ApiError(
            400,
            f"API Version String {requested} is of invalid format. "
            "Must be of format MajorNum.MinorNum.",
        ) from None
    if not minimum <= version <= maximum:
        raise ApiError(
            406,
            f"Version {version} is not supported by the API. "
            f"Minimum is {minimum} and maximum is {maximum}.",
        )
    return version


def _int_param(request: web.Request, name: str, *, minimum: int = 0) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} param must be an integer") from None
    if value < minimum:
        raise ApiError(400, f"{name} param must be positive")
    return value


def _paginate(
    request: web.Request, items: Sequence[Any], key: Callable[[Any], str]
) -> tuple[list[Any], str | None]:
    """Nova/Cinder paging: ``limit`` and ``marker`` (the last id seen); the next marker."""
    limit = _int_param(request, "limit")
    marker = request.query.get("marker")
    start = 0
    if marker is not None:
        ids = [key(item) for item in items]
        if marker not in ids:
            raise ApiError(400, f"marker [{marker}] not found")
        start = ids.index(marker) + 1
    page = list(items[start:])
    if limit is None or len(page) < limit or limit == 0:
        return page, None
    # Like Nova and Cinder: a full page always links to the next one, which may be empty.
    page = page[:limit]
    return page, key(page[-1])


def _next_link(request: web.Request, marker: str) -> str:
    query = {k: v for k, v in request.query.items() if k != "marker"}
    query["marker"] = marker
    return f"{_base_url(request)}{request.path}?{urlencode(query)}"


# --- Nova ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    ram: int  # MiB
    disk: int  # GiB
    vcpus: int
    ephemeral: int = 0
    swap: int = 0
    description: str | None = None


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    min_disk: int = 0
    min_ram: int = 0
    size: int = 21_430_272


# devstack's flavors, and the CirrOS image devstack uploads.
FLAVORS = (
    Flavor("42", "m1.nano", ram=128, disk=1, vcpus=1),
    Flavor("84", "m1.micro", ram=192, disk=1, vcpus=1),
    Flavor("1", "m1.tiny", ram=512, disk=1, vcpus=1),
    Flavor("2", "m1.small", ram=2048, disk=20, vcpus=1),
    Flavor("3", "m1.medium", ram=4096, disk=40, vcpus=2),
    Flavor("4", "m1.large", ram=8192, disk=80, vcpus=4),
)
IMAGES = (Image("6e5f4a4e-6a27-4d7b-9c45-0b5a8d0c3f11", "cirros-0.6.3-x86_64-disk"),)

NO_VALID_HOST = "No valid host was found. There are not enough hosts available."

SERVER_STATES = {
    # status: (vm_state, power_state)
    "BUILD": ("building", 0),
    "ACTIVE": ("active", 1),
    "SHUTOFF": ("stopped", 4),
    "ERROR": ("error", 0),
}


@dataclass
class ComputeZone:
    """An availability zone of the emulated Nova, with its hosts and test-controlled health."""

    name: str
    hosts: tuple[str, ...]
    available: bool = True
    capacity: int | None = None  # servers the zone can hold; None: unlimited


@dataclass
class Server:
    id: str
    name: str
    project_id: str
    user_id: str
    flavor: Flavor
    image_id: str | None
    availability_zone: str
    host: str | None
    metadata: dict[str, str]
    tags: list[str]
    description: str | None
    status: str
    task_state: str | None
    created: str
    updated: str
    addresses: dict[str, list[JSON]]
    security_groups: list[str]
    server_group: str | None
    reservation_id: str
    launch_index: int
    user_data: str | None
    config_drive: str
    volumes: list[JSON]
    launched_at: str | None = None
    fault: JSON | None = None
    locked: bool = False
    settle_at: float | None = None  # when BUILD ends (or the deletion completes)
    settle_to: str | None = None  # "ACTIVE", "ERROR" or "DELETED"


@dataclass
class ServerGroup:
    id: str
    name: str
    policy: str
    rules: JSON
    members: list[str]
    project_id: str
    user_id: str


_SERVER_GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
_SERVER_QUERY_PARAMS = frozenset(
    [
        "user_id",
        "project_id",
        "tenant_id",
        "launch_index",
        "image_ref",
        "image",
        "kernel_id",
        "ramdisk_id",
        "hostname",
        "key_name",
        "power_state",
        "vm_state",
        "task_state",
        "host",
        "node",
        "flavor",
        "reservation_id",
        "launched_at",
        "terminated_at",
        "availability_zone",
        "name",
        "display_name",
        "description",
        "display_description",
        "locked_by",
        "uuid",
        "root_device_name",
        "config_drive",
        "access_ip_v4",
        "access_ip_v6",
        "auto_disk_config",
        "progress",
        "sort_key",
        "sort_dir",
        "all_tenants",
        "soft_deleted",
        "deleted",
        "status",
        "changes-since",
        "changes-before",
        "ip",
        "ip6",
        "created_at",
        "block_device_mapping",
        "services",
        "metadata",
        "pci_devices",
        "security_groups",
        "info_cache",
        "system_metadata",
        "tags",
        "tags-any",
        "not-tags",
        "not-tags-any",
        "limit",
        "marker",
        "locked",
    ]
)
_FLAVOR_QUERY_PARAMS = frozenset(
    {"is_public", "minRam", "minDisk", "sort_key", "sort_dir", "limit", "marker"}
)
_ADDRESS_POOL = ipaddress.IPv4Network("198.18.0.0/15")


class NovaEmulator(EmulatedService):
    """Nova's compute API v2.1, microversions 2.1 to 2.79, in one region.

    Servers are scheduled when created: into the requested zone, or the
    available zone with the fewest servers; a zone that is unavailable or full
    (see :meth:`set_zone_available`, :meth:`set_zone_capacity`), or server
    group rules that no host satisfies, make the server end in ``ERROR`` with
    the fault "No valid host was found", as Nova's scheduler does.
    ``build_seconds`` after creation the server is ``ACTIVE`` (or ``ERROR``);
    a deleted server disappears ``delete_seconds`` after the request.
    """

    service_type = "compute"
    service_name = "nova"

    def __init__(
        self,
        region: str,
        zones: Sequence[str],
        *,
        validator: KeystoneTokenValidator,
        www_authenticate_uri: str,
        host: str = "127.0.0.1",
        hosts_per_zone: int = 2,
        build_seconds: float = 0.5,
        delete_seconds: float = 0.2,
        clock: Clock = time.monotonic,
    ) -> None:
        if not zones:
            raise ValueError("Nova needs at least one availability zone")
        super().__init__(
            region,
            validator=validator,
            www_authenticate_uri=www_authenticate_uri,
            host=host,
            clock=clock,
        )
        self.zone_names = tuple(zones)
        self.hosts_per_zone = hosts_per_zone
        self.build_seconds = build_seconds
        self.delete_seconds = delete_seconds
        self._reset_state()

    @property
    def endpoint_path(self) -> str:
        return "/v2.1"

    def _reset_state(self) -> None:
        self._zones = {
            name: ComputeZone(
                name, tuple(f"{name}-compute-{n}" for n in range(1, self.hosts_per_zone + 1))
            )
            for name in self.zone_names
        }
        self._servers: dict[str, Server] = {}
        self._groups: dict[str, ServerGroup] = {}
        self._addresses = itertools.islice(_ADDRESS_POOL.hosts(), 1, None)

    # --- test hooks and state

    def set_zone_available(self, zone: str, available: bool = True) -> None:
        """Mark every compute host of ``zone`` up or down: the zone's state, and scheduling."""
        with self._lock:
            self._zone(zone).available = available

    def set_zone_capacity(self, zone: str, servers: int | None) -> None:
        """How many servers ``zone`` holds at most (``0``: out of capacity; ``None``: no limit)."""
        if servers is not None and servers < 0:
            raise ValueError(f"capacity must be >= 0 or None, got {servers}")
        with self._lock:
            self._zone(zone).capacity = servers

    def set_server_status(
        self, server_id: str, status: str, *, fault_message: str | None = None
    ) -> None:
        """Put a server in ``ACTIVE``, ``SHUTOFF`` or ``ERROR`` (with a fault) at once."""
        if status not in ("ACTIVE", "SHUTOFF", "ERROR"):
            raise ValueError(f"status must be ACTIVE, SHUTOFF or ERROR, got {status!r}")
        with self._lock:
            self._advance(self._clock())
            server = self._servers.get(server_id)
            if server is None:
                raise KeyError(f"no server {server_id} in {self!r}")
            server.status, server.task_state = status, None
            server.settle_at = server.settle_to = None
            server.updated = _now_iso(microseconds=False)
            server.fault = (
                {
                    "code": 500,
                    "created": server.updated,
                    "message": fault_message or "Unexpected error",
                }
                if status == "ERROR"
                else None
            )

    def zones(self) -> list[ComputeZone]:
        with self._lock:
            return [dataclasses.replace(zone) for zone in self._zones.values()]

    def servers(self) -> list[Server]:
        """Every server (all projects), as of now."""
        with self._lock:
            self._advance(self._clock())
            return [copy.deepcopy(server) for server in self._servers.values()]

    def server(self, server_id: str) -> Server:
        with self._lock:
            self._advance(self._clock())
            return copy.deepcopy(self._servers[server_id])

    def server_groups(self) -> list[ServerGroup]:
        with self._lock:
            return [copy.deepcopy(group) for group in self._groups.values()]

    def _zone(self, name: str) -> ComputeZone:
        try:
            return self._zones[name]
        except KeyError:
            raise KeyError(f"{self!r} has no zone {name!r} (zones: {self.zone_names})") from None

    # --- plumbing

    def _routes(self) -> list[web.RouteDef]:
        p = "/v2.1"
        return [
            web.get("/", self._versions),
            web.get(p, self._version_document),
            web.get(f"{p}/", self._version_document),
            web.get(f"{p}/os-availability-zone", self._list_zones),
            web.get(f"{p}/os-availability-zone/detail", self._list_zones_detail),
            web.get(f"{p}/flavors", self._list_flavors),
            web.get(f"{p}/flavors/detail", self._list_flavors),
            web.get(f"{p}/flavors/{{flavor_id}}", self._show_flavor),
            web.get(f"{p}/images", self._list_images),
            web.get(f"{p}/images/detail", self._list_images),
            web.get(f"{p}/images/{{image_id}}", self._show_image),
            web.get(f"{p}/servers", self._list_servers),
            web.post(f"{p}/servers", self._create_server),
            web.get(f"{p}/servers/detail", self._list_servers),
            web.get(f"{p}/servers/{{server_id}}", self._show_server),
            web.put(f"{p}/servers/{{server_id}}", self._update_server),
            web.delete(f"{p}/servers/{{server_id}}", self._delete_server),
            web.post(f"{p}/servers/{{server_id}}/action", self._server_action),
            web.get(f"{p}/servers/{{server_id}}/metadata", self._show_metadata),
            web.post(f"{p}/servers/{{server_id}}/metadata", self._update_metadata),
            web.put(f"{p}/servers/{{server_id}}/metadata", self._replace_metadata),
            web.get(f"{p}/servers/{{server_id}}/metadata/{{key}}", self._show_metadata_item),
            web.put(f"{p}/servers/{{server_id}}/metadata/{{key}}", self._set_metadata_item),
            web.delete(f"{p}/servers/{{server_id}}/metadata/{{key}}", self._delete_metadata_item),
            web.get(f"{p}/os-server-groups", self._list_groups),
            web.post(f"{p}/os-server-groups", self._create_group),
            web.get(f"{p}/os-server-groups/{{group_id}}", self._show_group),
            web.delete(f"{p}/os-server-groups/{{group_id}}", self._delete_group),
        ]

    def _is_public(self, request: web.Request) -> bool:
        return request.path in ("/", "/v2.1", "/v2.1/")

    def _negotiate(self, request: web.Request) -> ApiVersion | None:
        if self._is_public(request):
            return None
        return _negotiate_microversion(
            request,
            service="compute",
            minimum=NOVA_MIN_VERSION,
            maximum=NOVA_MAX_VERSION,
            legacy_header=LEGACY_NOVA_VERSION_HEADER,
        )

    def _version_headers(self, version: ApiVersion) -> dict[str, str]:
        return {
            API_VERSION_HEADER: f"compute {version}",
            LEGACY_NOVA_VERSION_HEADER: str(version),
            "Vary": f"{API_VERSION_HEADER}, {LEGACY_NOVA_VERSION_HEADER}",
        }

    def _error_body(self, error: ApiError, request_id: str) -> JSON:
        return _fault_body(error)

    def _render_error(self, error: ApiError, request_id: str) -> web.Response:
        response = super()._render_error(error, request_id)
        response.headers["X-Compute-Request-Id"] = request_id
        return response

    def _advance(self, now: float) -> None:
        for server in list(self._servers.values()):
            if server.settle_at is None or server.settle_at > now:
                continue
            target, server.settle_at, server.settle_to = server.settle_to, None, None
            if target == "DELETED":
                del self._servers[server.id]
                for group in self._groups.values():
                    if server.id in group.members:
                        group.members.remove(server.id)
                continue
            server.status, server.task_state = target or "ACTIVE", None
            server.updated = _now_iso(microseconds=False)
            if server.status == "ACTIVE":
                server.launched_at = _now_iso(microseconds=True)

    # --- versions

    def _version_entry(self, request: web.Request) -> JSON:
        return {
            "id": "v2.1",
            "status": "CURRENT",
            "version": str(NOVA_MAX_VERSION),
            "min_version": str(NOVA_MIN_VERSION),
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{_base_url(request)}/v2.1/"}],
        }

    async def _versions(self, request: web.Request) -> web.Response:
        legacy = {
            "id": "v2.0",
            "status": "SUPPORTED",
            "version": "",
            "min_version": "",
            "updated": "2011-01-21T11:33:21Z",
            "links": [{"rel": "self", "href": f"{_base_url(request)}/v2/"}],
        }
        return web.json_response({"versions": [legacy, self._version_entry(request)]})

    async def _version_document(self, request: web.Request) -> web.Response:
        entry = self._version_entry(request)
        entry["links"].append(
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
        )
        entry["media-types"] = [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ]
        return web.json_response({"version": entry})

    # --- availability zones

    async def _list_zones(self, request: web.Request) -> web.Response:
        with self._lock:
            zones = [
                {"zoneName": zone.name, "zoneState": {"available": zone.available}, "hosts": None}
                for zone in self._zones.values()
            ]
        return web.json_response({"availabilityZoneInfo": zones})

    async def _list_zones_detail(self, request: web.Request) -> web.Response:
        _require_admin(request, "os_compute_api:os-availability-zone:detail")
        updated = _now_iso(microseconds=True)

        def service(available: bool) -> JSON:
            return {"available": available, "active": True, "updated_at": updated}

        with self._lock:
            zones: list[JSON] = [
                {
                    "zoneName": "internal",
                    "zoneState": {"available": True},
                    "hosts": {
                        "controller": {
                            "nova-conductor": service(True),
                            "nova-scheduler": service(True),
                        }
                    },
                }
            ]
            zones.extend(
                {
                    "zoneName": zone.name,
                    "zoneState": {"available": zone.available},
                    "hosts": {
                        host: {"nova-compute": service(zone.available)} for host in zone.hosts
                    },
                }
                for zone in self._zones.values()
            )
        return web.json_response({"availabilityZoneInfo": zones})

    # --- flavors and images

    def _flavor_body(self, request: web.Request, flavor: Flavor, *, detail: bool) -> JSON:
        version = _version(request)
        base = _base_url(request)
        body: JSON = {
            "id": flavor.id,
            "name": flavor.name,
            "links": [
                {"rel": "self", "href": f"{base}/v2.1/flavors/{flavor.id}"},
                {"rel": "bookmark", "href": f"{base}/flavors/{flavor.id}"},
            ],
        }
        if version >= (2, 55):
            body["description"] = flavor.description
        if detail:
            body.update(
                {
                    "ram": flavor.ram,
                    "disk": flavor.disk,
                    "vcpus": flavor.vcpus,
                    "OS-FLV-EXT-DATA:ephemeral": flavor.ephemeral,
                    "OS-FLV-DISABLED:disabled": False,
                    "swap": flavor.swap if flavor.swap or version >= (2, 75) else "",
                    "rxtx_factor": 1.0,
                    "os-flavor-access:is_public": True,
                }
            )
            if version >= (2, 61):
                body["extra_specs"] = {}
        return body

    async def _list_flavors(self, request: web.Request) -> web.Response:
        if _version(request) >= (2, 75):
            _reject_unknown_params(request, _FLAVOR_QUERY_PARAMS)
        flavors: list[Flavor] = list(FLAVORS)
        if request.query.get("is_public", "true").lower() in ("false", "0", "no"):
            flavors = []  # every flavor here is public
        min_ram, min_disk = _int_param(request, "minRam"), _int_param(request, "minDisk")
        flavors = [
            f
            for f in flavors
            if (min_ram is None or f.ram >= min_ram) and (min_disk is None or f.disk >= min_disk)
        ]
        page, marker = _paginate(request, flavors, key=lambda f: f.id)
        detail = request.path.endswith("/detail")
        body: JSON = {"flavors": [self._flavor_body(request, f, detail=detail) for f in page]}
        if marker is not None:
            body["flavors_links"] = [{"rel": "next", "href": _next_link(request, marker)}]
        return web.json_response(body)

    async def _show_flavor(self, request: web.Request) -> web.Response:
        flavor_id = request.match_info["flavor_id"]
        for flavor in FLAVORS:
            if flavor.id == flavor_id:
                return web.json_response(
                    {"flavor": self._flavor_body(request, flavor, detail=True)}
                )
        raise ApiError(404, f"Flavor {flavor_id} could not be found.")

    def _image_body(self, request: web.Request, image: Image, *, detail: bool) -> JSON:
        base = _base_url(request)
        body: JSON = {
            "id": image.id,
            "name": image.name,
            "links": [
                {"rel": "self", "href": f"{base}/v2.1/images/{image.id}"},
                {"rel": "bookmark", "href": f"{base}/images/{image.id}"},
            ],
        }
        if detail:
            body.update(
                {
                    "status": "ACTIVE",
                    "progress": 100,
                    "minDisk": image.min_disk,
                    "minRam": image.min_ram,
                    "metadata": {},
                    "created": "2024-01-01T00:00:00Z",
                    "updated": "2024-01-01T00:00:00Z",
                    "OS-EXT-IMG-SIZE:size": image.size,
                }
            )
        return body

    def _require_image_proxy(self, request: web.Request) -> None:
        # The image proxy API is gone from 2.36 on: Glance serves images.
        if _version(request) >= (2, 36):
            raise ApiError(404, "The resource could not be found.")

    async def _list_images(self, request: web.Request) -> web.Response:
        self._require_image_proxy(request)
        detail = request.path.endswith("/detail")
        name = request.query.get("name")
        images = [i for i in IMAGES if name is None or i.name == name]
        return web.json_response(
            {"images": [self._image_body(request, i, detail=detail) for i in images]}
        )

    async def _show_image(self, request: web.Request) -> web.Response:
        self._require_image_proxy(request)
        image_id = request.match_info["image_id"]
        for image in IMAGES:
            if image.id == image_id:
                return web.json_response({"image": self._image_body(request, image, detail=True)})
        raise ApiError(404, "Image not found.")

    # --- servers

    def _server_body(self, request: web.Request, server: Server) -> JSON:
        version = _version(request)
        info = _token(request)
        base = _base_url(request)
        vm_state, power_state = SERVER_STATES[server.status]
        flavor = server.flavor
        flavor_body: JSON
        if version >= (2, 47):
            flavor_body = {
                "vcpus": flavor.vcpus,
                "ram": flavor.ram,
                "disk": flavor.disk,
                "ephemeral": flavor.ephemeral,
                "swap": flavor.swap,
                "original_name": flavor.name,
                "extra_specs": {},
            }
        else:
            flavor_body = {
                "id": flavor.id,
                "links": [{"rel": "bookmark", "href": f"{base}/flavors/{flavor.id}"}],
            }
        image_body: JSON | str = (
            {
                "id": server.image_id,
                "links": [{"rel": "bookmark", "href": f"{base}/images/{server.image_id}"}],
            }
            if server.image_id
            else ""
        )
        volumes = [
            {"id": v["id"], "delete_on_termination": v["delete_on_termination"]}
            if version >= (2, 3)
            else {"id": v["id"]}
            for v in server.volumes
        ]
        body: JSON = {
            "id": server.id,
            "name": server.name,
            "status": server.status,
            "tenant_id": server.project_id,
            "user_id": server.user_id,
            "metadata": dict(server.metadata),
            "hostId": _host_id(server.project_id, server.host),
            "image": image_body,
            "flavor": flavor_body,
            "created": server.created,
            "updated": server.updated,
            "addresses": copy.deepcopy(server.addresses),
            "accessIPv4": "",
            "accessIPv6": "",
            "links": [
                {"rel": "self", "href": f"{base}/v2.1/servers/{server.id}"},
                {"rel": "bookmark", "href": f"{base}/servers/{server.id}"},
            ],
            "OS-DCF:diskConfig": "MANUAL",
            "OS-EXT-AZ:availability_zone": server.availability_zone,
            "config_drive": server.config_drive,
            "key_name": None,
            "OS-SRV-USG:launched_at": server.launched_at,
            "OS-SRV-USG:terminated_at": None,
            "OS-EXT-STS:task_state": server.task_state,
            "OS-EXT-STS:vm_state": vm_state,
            "OS-EXT-STS:power_state": power_state,
            "os-extended-volumes:volumes_attached": volumes,
        }
        if server.status in ("BUILD", "ACTIVE"):
            body["progress"] = 0
        if server.security_groups:
            body["security_groups"] = [{"name": name} for name in server.security_groups]
        if server.fault is not None:
            body["fault"] = dict(server.fault)
            if info.is_admin and server.fault["message"] == NO_VALID_HOST:
                body["fault"]["details"] = "Traceback: nova.exception.NoValidHost"
        if version >= (2, 9):
            body["locked"] = server.locked
        if version >= (2, 19):
            body["description"] = server.description
        if version >= (2, 26):
            body["tags"] = list(server.tags)
        if version >= (2, 63):
            body["trusted_image_certificates"] = None
        if version >= (2, 71):
            body["server_groups"] = [server.server_group] if server.server_group else []
        if version >= (2, 73):
            body["locked_reason"] = None
        if info.is_admin:
            body.update(
                {
                    "OS-EXT-SRV-ATTR:host": server.host,
                    "OS-EXT-SRV-ATTR:hypervisor_hostname": server.host,
                    "OS-EXT-SRV-ATTR:instance_name": f"instance-{server.launch_index:08x}",
                }
            )
            if version >= (2, 3):
                body.update(
                    {
                        "OS-EXT-SRV-ATTR:reservation_id": server.reservation_id,
                        "OS-EXT-SRV-ATTR:launch_index": server.launch_index,
                        "OS-EXT-SRV-ATTR:hostname": _hostname(server.name),
                        "OS-EXT-SRV-ATTR:kernel_id": "",
                        "OS-EXT-SRV-ATTR:ramdisk_id": "",
                        "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                        "OS-EXT-SRV-ATTR:user_data": server.user_data,
                    }
                )
            if version >= (2, 16):
                body["host_status"] = "UP" if server.host else ""
        return body

    def _visible_server(self, request: web.Request, server_id: str) -> Server:
        server = self._servers.get(server_id)
        info = _token(request)
        if server is None or (server.project_id != info.project_id and not info.is_admin):
            raise ApiError(404, f"Instance {server_id} could not be found.")
        return server

    async def _list_servers(self, request: web.Request) -> web.Response:
        version, info = _version(request), _token(request)
        if version >= (2, 75):
            _reject_unknown_params(request, _SERVER_QUERY_PARAMS)
        query = request.query
        if "all_tenants" in query and not info.is_admin:
            raise ApiError(
                403,
                "Policy doesn't allow os_compute_api:servers:index:get_all_tenants to be "
                "performed.",
            )
        with self._lock:
            servers = [s for s in self._servers.values() if self._server_matches(s, request, info)]
            servers.sort(key=lambda s: (s.created, s.id), reverse=True)
            page, marker = _paginate(request, servers, key=lambda s: s.id)
            detail = request.path.endswith("/detail")
            items = [
                self._server_body(request, s)
                if detail
                else {
                    "id": s.id,
                    "name": s.name,
                    "links": self._server_body(request, s)["links"],
                }
                for s in page
            ]
        body: JSON = {"servers": items}
        if marker is not None:
            body["servers_links"] = [{"rel": "next", "href": _next_link(request, marker)}]
        return web.json_response(body)

    def _server_matches(self, server: Server, request: web.Request, info: TokenInfo) -> bool:
        query = request.query
        everyone = info.is_admin and _truthy(query.get("all_tenants", "false"))
        project = (query.get("project_id") or query.get("tenant_id")) if info.is_admin else None
        if project is not None:
            if server.project_id != project:
                return False
        elif not everyone and server.project_id != info.project_id:
            return False
        checks: list[tuple[str, Callable[[str], bool]]] = [
            ("name", lambda v: re.search(v, server.name) is not None),
            ("status", lambda v: server.status == v.upper()),
            ("image", lambda v: server.image_id == v.rsplit("/", 1)[-1]),
            ("flavor", lambda v: server.flavor.id == v.rsplit("/", 1)[-1]),
            ("reservation_id", lambda v: server.reservation_id == v),
            ("changes-since", lambda v: server.updated >= _nova_time(v)),
            ("changes-before", lambda v: server.updated <= _nova_time(v)),
            ("locked", lambda v: server.locked == _truthy(v)),
            ("ip", lambda v: any(re.search(v, a["addr"]) for a in _all_addresses(server))),
            ("tags", lambda v: set(v.split(",")) <= set(server.tags)),
            ("tags-any", lambda v: bool(set(v.split(",")) & set(server.tags))),
            ("not-tags", lambda v: not set(v.split(",")) <= set(server.tags)),
            ("not-tags-any", lambda v: not set(v.split(",")) & set(server.tags)),
        ]
        if info.is_admin:  # filters Nova ignores for project members before 2.83
            checks += [
                ("availability_zone", lambda v: server.availability_zone == v),
                ("host", lambda v: server.host == v),
                ("user_id", lambda v: server.user_id == v),
                ("vm_state", lambda v: SERVER_STATES[server.status][0] == v),
            ]
        return all(check(query[name]) for name, check in checks if name in query)

    async def _show_server(self, request: web.Request) -> web.Response:
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            return web.json_response({"server": self._server_body(request, server)})

    async def _create_server(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        version, info = _version(request), _token(request)
        spec = body.get("server")
        if not isinstance(spec, dict):
            raise ApiError(400, "Invalid input for field/attribute server. Value: None.")
        name = spec.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 255 or name.strip() != name:
            raise ApiError(400, f"Invalid input for field/attribute name. Value: {name!r}.")
        flavor = _find_flavor(spec.get("flavorRef"))
        image_id, volumes = _boot_source(spec)
        networks = spec.get("networks")
        if version >= (2, 37) and networks is None:
            raise ApiError(
                400,
                "Invalid input for field/attribute server. 'networks' is a required property",
            )
        metadata = _string_map(spec.get("metadata", {}), "metadata")
        tags = spec.get("tags", [])
        if tags and version < (2, 52):
            raise ApiError(400, "Additional properties are not allowed ('tags' was unexpected)")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ApiError(400, "Invalid input for field/attribute tags.")
        if spec.get("key_name") is not None:
            raise ApiError(400, "Invalid key_name provided.")
        description = spec.get("description")
        if description is not None and version < (2, 19):
            raise ApiError(
                400, "Additional properties are not allowed ('description' was unexpected)"
            )
        hints = body.get("os:scheduler_hints") or body.get("OS-SCH-HNT:scheduler_hints") or {}
        count = _int_value(spec.get("max_count", spec.get("min_count", 1)), "max_count")
        security_groups = [
            str(group.get("name", "default")) for group in spec.get("security_groups", [])
        ] or ["default"]
        with self._lock:
            zone = self._requested_zone(spec.get("availability_zone"))
            group = self._hinted_group(hints, info)
            reservation = f"r-{uuid.uuid4().hex[:8]}"
            created: list[Server] = []
            for index in range(count):
                server = self._new_server(
                    info,
                    name=name if count == 1 else f"{name}-{index + 1}",
                    flavor=flavor,
                    image_id=image_id,
                    volumes=volumes,
                    networks=networks,
                    metadata=metadata,
                    tags=tags,
                    description=description if version >= (2, 19) else name,
                    security_groups=security_groups if networks != "none" else [],
                    reservation=reservation,
                    launch_index=index,
                    user_data=spec.get("user_data"),
                    config_drive="True" if spec.get("config_drive") else "",
                )
                self._schedule(server, zone, group)
                self._servers[server.id] = server
                created.append(server)
            first = created[0]
            links = self._server_body(request, first)["links"]
        if _truthy(str(spec.get("return_reservation_id", "false"))):
            return web.json_response({"reservation_id": reservation}, status=202)
        return web.json_response(
            {
                "server": {
                    "id": first.id,
                    "links": links,
                    "OS-DCF:diskConfig": "MANUAL",
                    "security_groups": [{"name": g} for g in first.security_groups],
                    "adminPass": uuid.uuid4().hex[:12],
                }
            },
            status=202,
            headers={"Location": links[0]["href"]},
        )

    def _requested_zone(self, requested: Any) -> str | None:
        if requested is None or requested == "":
            return None
        if not isinstance(requested, str):
            raise ApiError(400, "Invalid input for field/attribute availability_zone.")
        zone = requested.split(":", 1)[0]
        if zone not in self._zones:
            raise ApiError(400, "The requested availability zone is not available")
        return zone

    def _hinted_group(self, hints: Any, info: TokenInfo) -> ServerGroup | None:
        group_id = hints.get("group") if isinstance(hints, dict) else None
        if group_id is None:
            return None
        group = self._groups.get(str(group_id))
        if group is None or (group.project_id != info.project_id and not info.is_admin):
            raise ApiError(400, f"Invalid server group {group_id}")
        return group

    def _new_server(
        self,
        info: TokenInfo,
        *,
        name: str,
        flavor: Flavor,
        image_id: str | None,
        volumes: list[JSON],
        networks: Any,
        metadata: dict[str, str],
        tags: list[str],
        description: str | None,
        security_groups: list[str],
        reservation: str,
        launch_index: int,
        user_data: Any,
        config_drive: str,
    ) -> Server:
        now = _now_iso(microseconds=False)
        addresses: dict[str, list[JSON]] = {}
        if networks != "none":
            address = str(next(self._addresses))
            addresses["private"] = [
                {
                    "version": 4,
                    "addr": address,
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": _mac_address(address),
                }
            ]
        return Server(
            id=_new_id(),
            name=name,
            project_id=str(info.project_id),
            user_id=info.user_id,
            flavor=flavor,
            image_id=image_id,
            availability_zone="",
            host=None,
            metadata=dict(metadata),
            tags=list(tags),
            description=description,
            status="BUILD",
            task_state="scheduling",
            created=now,
            updated=now,
            addresses=addresses,
            security_groups=security_groups,
            server_group=None,
            reservation_id=reservation,
            launch_index=launch_index,
            user_data=user_data if isinstance(user_data, str) else None,
            config_drive=config_drive,
            volumes=copy.deepcopy(volumes),
        )

    def _schedule(self, server: Server, zone_name: str | None, group: ServerGroup | None) -> None:
        """Pick a zone and host as Nova's scheduler would; no valid host means ERROR."""
        live = [s for s in self._servers.values() if s.settle_to != "DELETED" and s.host]
        load = {zone: sum(1 for s in live if s.availability_zone == zone) for zone in self._zones}
        candidates = [zone_name] if zone_name else sorted(self._zones, key=lambda z: load[z])
        server.availability_zone = zone_name or ""
        server.settle_at = self._clock() + self.build_seconds
        server.task_state = "spawning"
        if group is not None:
            server.server_group = group.id
            group.members.append(server.id)
        for candidate in candidates:
            zone = self._zones[candidate]
            if not zone.available or (
                zone.capacity is not None and load[candidate] >= zone.capacity
            ):
                continue
            host = self._pick_host(zone, live, group)
            if host is not None:
                server.availability_zone, server.host = candidate, host
                server.settle_to = "ACTIVE"
                return
        server.settle_to = "ERROR"
        server.fault = {"code": 500, "created": server.created, "message": NO_VALID_HOST}

    def _pick_host(
        self, zone: ComputeZone, live: list[Server], group: ServerGroup | None
    ) -> str | None:
        per_host = {host: sum(1 for s in live if s.host == host) for host in zone.hosts}
        hosts = sorted(zone.hosts, key=lambda h: per_host[h])
        if group is None:
            return hosts[0]
        member_hosts = {s.host for s in live if s.id in group.members}
        if group.policy == "anti-affinity":
            limit = int(group.rules.get("max_server_per_host", 1))
            members_on = {
                h: sum(1 for s in live if s.id in group.members and s.host == h) for h in hosts
            }
            allowed = [h for h in hosts if members_on[h] < limit]
            return allowed[0] if allowed else None
        if group.policy == "affinity":
            if not member_hosts:
                return hosts[0]
            return next((h for h in hosts if h in member_hosts), None)
        if group.policy == "soft-affinity" and member_hosts & set(hosts):
            return next(h for h in hosts if h in member_hosts)
        if group.policy == "soft-anti-affinity":
            free = [h for h in hosts if h not in member_hosts]
            return (free or hosts)[0]
        return hosts[0]

    async def _update_server(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        spec = body.get("server")
        if not isinstance(spec, dict):
            raise ApiError(400, "Invalid input for field/attribute server.")
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            if "name" in spec:
                if not isinstance(spec["name"], str) or not 1 <= len(spec["name"]) <= 255:
                    raise ApiError(400, "Invalid input for field/attribute name.")
                server.name = spec["name"]
            if "description" in spec and _version(request) >= (2, 19):
                server.description = spec["description"]
            server.updated = _now_iso(microseconds=False)
            return web.json_response({"server": self._server_body(request, server)})

    async def _delete_server(self, request: web.Request) -> web.Response:
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            if server.locked and not _token(request).is_admin:
                raise ApiError(409, f"Instance {server.id} is locked")
            if server.settle_to != "DELETED":
                server.task_state = "deleting"
                server.settle_at = self._clock() + self.delete_seconds
                server.settle_to = "DELETED"
        return web.Response(status=204)

    async def _server_action(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if len(body) != 1:
            raise ApiError(400, "Malformed request body")
        action = next(iter(body))
        transitions = {"os-start": ("SHUTOFF", "ACTIVE"), "os-stop": ("ACTIVE", "SHUTOFF")}
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            if action in transitions:
                source, target = transitions[action]
                verb = action.removeprefix("os-")
                if server.status != source or server.task_state is not None:
                    raise ApiError(
                        409,
                        f"Cannot '{verb}' instance {server.id} while it is in vm_state "
                        f"{SERVER_STATES[server.status][0]}",
                    )
                server.status = target
            elif action == "reboot":
                if server.status not in ("ACTIVE", "SHUTOFF", "ERROR"):
                    raise ApiError(
                        409,
                        f"Cannot 'reboot' instance {server.id} while it is in vm_state "
                        f"{SERVER_STATES[server.status][0]}",
                    )
                server.status, server.fault = "ACTIVE", None
            else:
                raise ApiError(400, f"There is no such action: {action}")
            server.updated = _now_iso(microseconds=False)
        return web.Response(status=202)

    # --- server metadata

    async def _show_metadata(self, request: web.Request) -> web.Response:
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            return web.json_response({"metadata": dict(server.metadata)})

    async def _update_metadata(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        metadata = _string_map(body.get("metadata"), "metadata")
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            server.metadata.update(metadata)
            return web.json_response({"metadata": dict(server.metadata)})

    async def _replace_metadata(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        metadata = _string_map(body.get("metadata"), "metadata")
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            server.metadata = dict(metadata)
            return web.json_response({"metadata": dict(server.metadata)})

    async def _show_metadata_item(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            if key not in server.metadata:
                raise ApiError(404, "Metadata item was not found")
            return web.json_response({"meta": {key: server.metadata[key]}})

    async def _set_metadata_item(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        body = await _json_body(request)
        meta = _string_map(body.get("meta"), "meta")
        if list(meta) != [key]:
            raise ApiError(400, "Request body and URI mismatch")
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            server.metadata[key] = meta[key]
        return web.json_response({"meta": meta})

    async def _delete_metadata_item(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            if server.metadata.pop(key, None) is None:
                raise ApiError(404, "Metadata item was not found")
        return web.Response(status=204)

    # --- server groups

    def _group_body(self, request: web.Request, group: ServerGroup) -> JSON:
        body: JSON = {
            "id": group.id,
            "name": group.name,
            "members": list(group.members),
            "project_id": group.project_id,
            "user_id": group.user_id,
        }
        if _version(request) >= (2, 64):
            body.update({"policy": group.policy, "rules": dict(group.rules)})
        else:
            body.update({"policies": [group.policy], "metadata": {}})
        return body

    def _visible_group(self, request: web.Request, group_id: str) -> ServerGroup:
        group = self._groups.get(group_id)
        info = _token(request)
        if group is None or (group.project_id != info.project_id and not info.is_admin):
            raise ApiError(404, f"Instance group {group_id} could not be found.")
        return group

    async def _list_groups(self, request: web.Request) -> web.Response:
        info = _token(request)
        everyone = info.is_admin and _truthy(request.query.get("all_projects", "false"))
        with self._lock:
            groups = [
                self._group_body(request, g)
                for g in self._groups.values()
                if everyone or g.project_id == info.project_id
            ]
        return web.json_response({"server_groups": groups})

    async def _create_group(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        spec = body.get("server_group")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ApiError(400, "Invalid input for field/attribute server_group.")
        if _version(request) >= (2, 64):
            policy, rules = spec.get("policy"), spec.get("rules", {})
            if "policies" in spec:
                raise ApiError(
                    400, "Additional properties are not allowed ('policies' was unexpected)"
                )
        else:
            policies, rules = spec.get("policies"), {}
            if not isinstance(policies, list) or len(policies) != 1:
                raise ApiError(400, "Invalid input for field/attribute policies.")
            policy = policies[0]
        if policy not in _SERVER_GROUP_POLICIES:
            raise ApiError(400, f"Invalid input for field/attribute policy. Value: {policy}.")
        if not isinstance(rules, dict) or (rules and policy != "anti-affinity"):
            raise ApiError(400, "Only anti-affinity policy supports rules.")
        info = _token(request)
        group = ServerGroup(
            id=_new_id(),
            name=spec["name"],
            policy=str(policy),
            rules=dict(rules),
            members=[],
            project_id=str(info.project_id),
            user_id=info.user_id,
        )
        with self._lock:
            self._groups[group.id] = group
            return web.json_response({"server_group": self._group_body(request, group)})

    async def _show_group(self, request: web.Request) -> web.Response:
        with self._lock:
            group = self._visible_group(request, request.match_info["group_id"])
            return web.json_response({"server_group": self._group_body(request, group)})

    async def _delete_group(self, request: web.Request) -> web.Response:
        with self._lock:
            group = self._visible_group(request, request.match_info["group_id"])
            del self._groups[group.id]
            for server in self._servers.values():
                if server.server_group == group.id:
                    server.server_group = None
        return web.Response(status=204)


def _reject_unknown_params(request: web.Request, known: frozenset[str]) -> None:
    unknown = sorted(set(request.query) - known)
    if unknown:
        raise ApiError(
            400,
            f"Invalid input for query parameters {unknown[0]}. Value: "
            f"{request.query[unknown[0]]}. Additional properties are not allowed "
            f"('{unknown[0]}' was unexpected)",
        )


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "t", "yes", "y", "on")


def _nova_time(value: str) -> str:
    """An ISO 8601 filter value in the form Nova stores timestamps, for comparison."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"Invalid filter time {value}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _host_id(project_id: str, host: str | None) -> str:
    if not host:
        return ""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


def _hostname(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63] or "server"


def _mac_address(address: str) -> str:
    packed = ipaddress.IPv4Address(address).packed
    return "fa:16:3e:" + ":".join(f"{byte:02x}" for byte in packed[1:])


def _all_addresses(server: Server) -> Iterable[JSON]:
    for addresses in server.addresses.values():
        yield from addresses


def _find_flavor(reference: Any) -> Flavor:
    flavor_id = str(reference).rstrip("/").rsplit("/", 1)[-1] if reference is not None else None
    for flavor in FLAVORS:
        if flavor.id == flavor_id:
            return flavor
    raise ApiError(400, "Invalid flavorRef provided.")


def _boot_source(spec: JSON) -> tuple[str | None, list[JSON]]:
    """The image to boot from and the volumes of ``block_device_mapping_v2``."""
    volumes = [
        {"id": str(m["uuid"]), "delete_on_termination": bool(m.get("delete_on_termination"))}
        for m in spec.get("block_device_mapping_v2") or []
        if isinstance(m, dict) and m.get("destination_type") == "volume" and m.get("uuid")
    ]
    reference = spec.get("imageRef")
    if not reference:
        if volumes:
            return None, volumes
        raise ApiError(400, "Missing imageRef attribute")
    image_id = str(reference).rstrip("/").rsplit("/", 1)[-1]
    if image_id not in {image.id for image in IMAGES}:
        raise ApiError(400, "Can not find requested image")
    return image_id, volumes


def _restored_metadata(backup: Backup | None) -> dict[str, str] | None:
    """What a restore of ``backup`` leaves as the volume's metadata: the backed-up volume's,
    in place of the volume's own, when it had any (else the volume keeps its own)."""
    if backup is None or not backup.volume_metadata:
        return None
    return dict(backup.volume_metadata)


def _string_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and 1 <= len(k) <= 255 and isinstance(v, str) and len(v) <= 255
        for k, v in value.items()
    ):
        raise ApiError(400, f"Invalid input for field/attribute {what}.")
    return dict(value)


def _int_value(value: Any, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid input for field/attribute {what}.") from None
    if not 1 <= number <= 100:
        raise ApiError(400, f"Invalid input for field/attribute {what}.")
    return number


# --- Designate -------------------------------------------------------------------------------

_DNS_NAME = re.compile(r"^(?=.{1,254}$)((?!-)[A-Za-z0-9_-]{1,63}(?<!-)\.)+$")
_RECORD_TYPES = frozenset(
    {"A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SPF", "SRV", "SSHFP", "TXT", "CAA", "NAPTR"}
)
_ZONE_QUERY = ("name", "type", "email", "status", "description", "ttl")
_RECORDSET_QUERY = ("name", "type", "ttl", "data", "status", "description")
NAMESERVER = "ns1.lifeboat.test."
_POOL_ID = "794ccc2c-d751-44fe-b57f-8894c9f5c842"


@dataclass
class DnsZone:
    id: str
    name: str
    email: str
    ttl: int
    description: str | None
    type: str
    project_id: str
    serial: int
    created_at: str
    status: str = "PENDING"
    action: str = "CREATE"
    updated_at: str | None = None
    version: int = 1
    settle_at: float | None = None


@dataclass
class RecordSet:
    id: str
    zone_id: str
    name: str
    type: str
    records: list[str]
    ttl: int | None
    description: str | None
    project_id: str
    created_at: str
    status: str = "PENDING"
    action: str = "CREATE"
    updated_at: str | None = None
    version: int = 1
    settle_at: float | None = None
    published: list[str] | None = None  # what the name servers serve; None: not yet


class DesignateEmulator(EmulatedService):
    """Designate's DNS API v2 in one region: zones and record sets.

    Changes are ``PENDING`` and become ``ACTIVE`` ``propagation_seconds``
    later, as when Designate's workers have pushed them to the name servers;
    :meth:`resolve` answers from what is ``ACTIVE``, like a name server.
    """

    service_type = "dns"
    service_name = "designate"

    def __init__(
        self,
        region: str,
        *,
        validator: KeystoneTokenValidator,
        www_authenticate_uri: str,
        host: str = "127.0.0.1",
        propagation_seconds: float = 0.2,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            region,
            validator=validator,
            www_authenticate_uri=www_authenticate_uri,
            host=host,
            clock=clock,
        )
        self.propagation_seconds = propagation_seconds
        self._reset_state()

    @property
    def endpoint_path(self) -> str:
        return ""

    def _reset_state(self) -> None:
        self._zones: dict[str, DnsZone] = {}
        self._recordsets: dict[str, RecordSet] = {}

    # --- state for tests

    def zones(self) -> list[DnsZone]:
        with self._lock:
            self._advance(self._clock())
            return [dataclasses.replace(zone) for zone in self._zones.values()]

    def recordsets(self, zone_name: str | None = None) -> list[RecordSet]:
        with self._lock:
            self._advance(self._clock())
            zone_ids = {z.id for z in self._zones.values() if zone_name in (None, z.name)}
            return [copy.deepcopy(rs) for rs in self._recordsets.values() if rs.zone_id in zone_ids]

    def resolve(self, name: str, record_type: str = "A") -> list[str]:
        """What a name server of this region answers for ``name`` (ACTIVE data only)."""
        fqdn = name if name.endswith(".") else f"{name}."
        with self._lock:
            self._advance(self._clock())
            for rs in self._recordsets.values():
                if rs.name == fqdn and rs.type == record_type and rs.published is not None:
                    return list(rs.published)
        return []

    # --- plumbing

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._versions),
            web.get("/v2/zones", self._list_zones),
            web.post("/v2/zones", self._create_zone),
            web.get("/v2/zones/{zone_id}", self._show_zone),
            web.patch("/v2/zones/{zone_id}", self._update_zone),
            web.delete("/v2/zones/{zone_id}", self._delete_zone),
            web.get("/v2/zones/{zone_id}/recordsets", self._list_recordsets),
            web.post("/v2/zones/{zone_id}/recordsets", self._create_recordset),
            web.get("/v2/zones/{zone_id}/recordsets/{recordset_id}", self._show_recordset),
            web.put("/v2/zones/{zone_id}/recordsets/{recordset_id}", self._update_recordset),
            web.delete("/v2/zones/{zone_id}/recordsets/{recordset_id}", self._delete_recordset),
            web.get("/v2/recordsets", self._list_recordsets),
        ]

    def _is_public(self, request: web.Request) -> bool:
        return request.path == "/"

    def _error_body(self, error: ApiError, request_id: str) -> JSON:
        kind = error.kind or {
            400: "bad_request",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            409: "duplicate",
        }.get(error.status, "unknown")
        body: JSON = {"code": error.status, "type": kind, "message": error.message}
        if error.errors is not None:
            body["errors"] = error.errors
        body["request_id"] = request_id
        return body

    def _advance(self, now: float) -> None:
        for rs in list(self._recordsets.values()):
            if rs.settle_at is not None and rs.settle_at <= now:
                if rs.action == "DELETE":
                    del self._recordsets[rs.id]
                    continue
                rs.status, rs.action, rs.settle_at = "ACTIVE", "NONE", None
                rs.published = list(rs.records)
        for zone in list(self._zones.values()):
            if zone.settle_at is not None and zone.settle_at <= now:
                if zone.action == "DELETE":
                    del self._zones[zone.id]
                    for rs in [r for r in self._recordsets.values() if r.zone_id == zone.id]:
                        del self._recordsets[rs.id]
                    continue
                zone.status, zone.action, zone.settle_at = "ACTIVE", "NONE", None

    async def _versions(self, request: web.Request) -> web.Response:
        entry = {
            "id": "v2",
            "status": "CURRENT",
            "links": [{"href": f"{_base_url(request)}/v2", "rel": "self"}],
        }
        return web.json_response({"versions": {"values": [entry]}})

    # --- zones

    def _zone_body(self, request: web.Request, zone: DnsZone) -> JSON:
        return {
            "id": zone.id,
            "pool_id": _POOL_ID,
            "project_id": zone.project_id,
            "name": zone.name,
            "email": zone.email,
            "ttl": zone.ttl,
            "serial": zone.serial,
            "status": zone.status,
            "action": zone.action,
            "description": zone.description,
            "masters": [],
            "type": zone.type,
            "transferred_at": None,
            "version": zone.version,
            "created_at": zone.created_at,
            "updated_at": zone.updated_at,
            "attributes": {},
            "shared": False,
            "links": {"self": f"{_base_url(request)}/v2/zones/{zone.id}"},
        }

    def _visible_zone(self, request: web.Request, zone_id: str) -> DnsZone:
        _check_uuid(zone_id)
        zone = self._zones.get(zone_id)
        info = _token(request)
        everyone = info.is_admin and _truthy(request.headers.get("X-Auth-All-Projects", "false"))
        if zone is None or (zone.project_id != info.project_id and not everyone):
            raise ApiError(404, "Could not find Zone", kind="zone_not_found")
        return zone

    def _touch_zone(self, zone: DnsZone) -> None:
        """A change is on its way to the name servers: PENDING UPDATE, a new serial."""
        zone.serial = max(zone.serial + 1, int(time.time()))
        zone.updated_at = _now_iso(microseconds=True)
        zone.version += 1
        if zone.action != "CREATE":
            zone.status, zone.action = "PENDING", "UPDATE"
        zone.settle_at = self._clock() + self.propagation_seconds
        soa = self._find_recordset(zone.id, zone.name, "SOA")
        if soa is not None:
            soa.records = [_soa_record(zone)]

    def _find_recordset(self, zone_id: str, name: str, rtype: str) -> RecordSet | None:
        return next(
            (
                rs
                for rs in self._recordsets.values()
                if rs.zone_id == zone_id and rs.name == name and rs.type == rtype
            ),
            None,
        )

    async def _list_zones(self, request: web.Request) -> web.Response:
        info = _token(request)
        everyone = info.is_admin and _truthy(request.headers.get("X-Auth-All-Projects", "false"))
        with self._lock:
            zones = [
                z
                for z in sorted(self._zones.values(), key=lambda z: (z.created_at, z.id))
                if (everyone or z.project_id == info.project_id)
                and _designate_filters(request, _ZONE_QUERY, self._zone_body(request, z))
            ]
            return self._designate_page(request, "zones", zones, self._zone_body)

    def _designate_page(
        self,
        request: web.Request,
        key: str,
        items: Sequence[Any],
        render: Callable[[web.Request, Any], JSON],
    ) -> web.Response:
        limit = _int_param(request, "limit", minimum=1)
        marker = request.query.get("marker")
        start = 0
        if marker is not None:
            ids = [item.id for item in items]
            if marker not in ids:
                raise ApiError(400, "Marker not found", kind="marker_not_found")
            start = ids.index(marker) + 1
        page = list(items[start:])
        links: JSON = {"self": f"{_base_url(request)}{request.path_qs}"}
        if limit is not None and len(page) > limit:
            page = page[:limit]
            links["next"] = _next_link(request, page[-1].id)
        body = {key: [render(request, item) for item in page], "links": links}
        body["metadata"] = {"total_count": len(items)}
        return web.json_response(body)

    async def _create_zone(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        info = _token(request)
        name, email = body.get("name"), body.get("email")
        zone_type = str(body.get("type", "PRIMARY")).upper()
        problems = []
        if not isinstance(name, str) or not _DNS_NAME.match(name):
            problems.append(_schema_error("name", f"{name!r} is not a 'zonename'"))
        if zone_type not in ("PRIMARY", "SECONDARY"):
            problems.append(
                _schema_error("type", f"{zone_type!r} is not one of ['PRIMARY', 'SECONDARY']")
            )
        if zone_type == "PRIMARY" and (not isinstance(email, str) or "@" not in email):
            problems.append(_schema_error("email", f"{email!r} is not a 'email'"))
        ttl = body.get("ttl", 3600)
        if not isinstance(ttl, int) or not 1 <= ttl <= 2147483647:
            problems.append(_schema_error("ttl", f"{ttl!r} is not valid under any given schema"))
        if problems:
            raise _invalid_object(problems)
        assert isinstance(name, str)  # checked above
        with self._lock:
            if any(z.name == name for z in self._zones.values()):
                raise ApiError(409, "Duplicate Zone", kind="duplicate_zone")
            now = _now_iso(microseconds=True)
            zone = DnsZone(
                id=_new_id(),
                name=name,
                email=str(email or ""),
                ttl=ttl,
                description=body.get("description"),
                type=zone_type,
                project_id=str(info.project_id),
                serial=int(time.time()),
                created_at=now,
                settle_at=self._clock() + self.propagation_seconds,
            )
            self._zones[zone.id] = zone
            if zone_type == "PRIMARY":
                for rtype, records in (("SOA", [_soa_record(zone)]), ("NS", [NAMESERVER])):
                    rs = RecordSet(
                        id=_new_id(),
                        zone_id=zone.id,
                        name=name,
                        type=rtype,
                        records=records,
                        ttl=None,
                        description=None,
                        project_id=zone.project_id,
                        created_at=now,
                        settle_at=zone.settle_at,
                    )
                    self._recordsets[rs.id] = rs
            rendered = self._zone_body(request, zone)
        return web.json_response(
            rendered, status=202, headers={"Location": rendered["links"]["self"]}
        )

    async def _show_zone(self, request: web.Request) -> web.Response:
        with self._lock:
            zone = self._visible_zone(request, request.match_info["zone_id"])
            return web.json_response(self._zone_body(request, zone))

    async def _update_zone(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        allowed = {"email", "ttl", "description"}
        if set(body) - allowed:
            raise _invalid_object(
                [_schema_error(k, f"'{k}' is a read-only field") for k in set(body) - allowed]
            )
        with self._lock:
            zone = self._visible_zone(request, request.match_info["zone_id"])
            if zone.action == "DELETE":
                raise ApiError(400, "Zone is being deleted", kind="bad_request")
            if "ttl" in body:
                zone.ttl = int(body["ttl"])
            if "email" in body:
                zone.email = str(body["email"])
            if "description" in body:
                zone.description = body["description"]
            self._touch_zone(zone)
            return web.json_response(self._zone_body(request, zone), status=202)

    async def _delete_zone(self, request: web.Request) -> web.Response:
        with self._lock:
            zone = self._visible_zone(request, request.match_info["zone_id"])
            zone.status, zone.action = "PENDING", "DELETE"
            zone.settle_at = self._clock() + self.propagation_seconds
            return web.json_response(self._zone_body(request, zone), status=202)

    # --- record sets

    def _recordset_body(self, request: web.Request, rs: RecordSet) -> JSON:
        zone = self._zones[rs.zone_id]
        return {
            "id": rs.id,
            "zone_id": rs.zone_id,
            "zone_name": zone.name,
            "project_id": rs.project_id,
            "name": rs.name,
            "type": rs.type,
            "records": list(rs.records),
            "ttl": rs.ttl,
            "description": rs.description,
            "status": rs.status,
            "action": rs.action,
            "version": rs.version,
            "created_at": rs.created_at,
            "updated_at": rs.updated_at,
            "links": {"self": f"{_base_url(request)}/v2/zones/{rs.zone_id}/recordsets/{rs.id}"},
        }

    def _visible_recordset(self, request: web.Request) -> tuple[DnsZone, RecordSet]:
        zone = self._visible_zone(request, request.match_info["zone_id"])
        recordset_id = request.match_info["recordset_id"]
        _check_uuid(recordset_id)
        rs = self._recordsets.get(recordset_id)
        if rs is None or rs.zone_id != zone.id:
            raise ApiError(404, "Could not find RecordSet", kind="recordset_not_found")
        return zone, rs

    async def _list_recordsets(self, request: web.Request) -> web.Response:
        info = _token(request)
        with self._lock:
            if "zone_id" in request.match_info:
                zone_ids = {self._visible_zone(request, request.match_info["zone_id"]).id}
            else:
                zone_ids = {z.id for z in self._zones.values() if z.project_id == info.project_id}
            recordsets = [
                rs
                for rs in sorted(self._recordsets.values(), key=lambda r: (r.created_at, r.id))
                if rs.zone_id in zone_ids
                and _designate_filters(request, _RECORDSET_QUERY, self._recordset_body(request, rs))
            ]
            return self._designate_page(request, "recordsets", recordsets, self._recordset_body)

    async def _create_recordset(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        with self._lock:
            zone = self._visible_zone(request, request.match_info["zone_id"])
            name, rtype, records, ttl = _validate_recordset(body)
            if rtype == "SOA":
                raise ApiError(400, "Creating a SOA recordset is not allowed")
            self._check_placement(zone, name, rtype)
            if self._find_recordset(zone.id, name, rtype) is not None:
                raise ApiError(409, "Duplicate RecordSet", kind="duplicate_recordset")
            rs = RecordSet(
                id=_new_id(),
                zone_id=zone.id,
                name=name,
                type=rtype,
                records=records,
                ttl=ttl,
                description=body.get("description"),
                project_id=zone.project_id,
                created_at=_now_iso(microseconds=True),
                settle_at=self._clock() + self.propagation_seconds,
            )
            self._recordsets[rs.id] = rs
            self._touch_zone(zone)
            rendered = self._recordset_body(request, rs)
        return web.json_response(
            rendered, status=202, headers={"Location": rendered["links"]["self"]}
        )

    def _check_placement(self, zone: DnsZone, name: str, rtype: str) -> None:
        if not (name == zone.name or name.endswith(f".{zone.name}")):
            raise ApiError(
                400,
                "RecordSet is not contained within it's zone",
                kind="invalid_recordset_location",
            )
        if rtype == "CNAME" and name == zone.name:
            raise ApiError(
                400,
                "CNAME recordsets may not be created at the zone apex.",
                kind="invalid_recordset_location",
            )
        same_name = [
            rs for rs in self._recordsets.values() if rs.zone_id == zone.id and rs.name == name
        ]
        if any((rtype == "CNAME") != (rs.type == "CNAME") for rs in same_name):
            raise ApiError(
                400,
                "CNAME recordsets may not share a name with any other records",
                kind="invalid_recordset_location",
            )

    async def _show_recordset(self, request: web.Request) -> web.Response:
        with self._lock:
            _, rs = self._visible_recordset(request)
            return web.json_response(self._recordset_body(request, rs))

    async def _update_recordset(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        with self._lock:
            zone, rs = self._visible_recordset(request)
            if rs.type == "SOA":
                raise ApiError(400, "Updating SOA recordsets is not allowed")
            if rs.type == "NS" and rs.name == zone.name:
                raise ApiError(400, "Updating a root zone NS record is not allowed")
            if set(body) - {"records", "ttl", "description"}:
                unknown = sorted(set(body) - {"records", "ttl", "description"})
                raise _invalid_object(
                    [_schema_error(k, f"'{k}' is a read-only field") for k in unknown]
                )
            merged = {"name": rs.name, "type": rs.type, "records": rs.records, "ttl": rs.ttl}
            merged.update(body)
            _, _, records, ttl = _validate_recordset(merged)
            rs.records, rs.ttl = records, ttl
            if "description" in body:
                rs.description = body["description"]
            rs.status, rs.action = "PENDING", "UPDATE"
            rs.version += 1
            rs.updated_at = _now_iso(microseconds=True)
            rs.settle_at = self._clock() + self.propagation_seconds
            self._touch_zone(zone)
            return web.json_response(self._recordset_body(request, rs), status=202)

    async def _delete_recordset(self, request: web.Request) -> web.Response:
        with self._lock:
            zone, rs = self._visible_recordset(request)
            if rs.type == "SOA":
                raise ApiError(400, "Deleting a SOA recordset is not allowed")
            rs.status, rs.action = "PENDING", "DELETE"
            rs.settle_at = self._clock() + self.propagation_seconds
            self._touch_zone(zone)
            return web.json_response(self._recordset_body(request, rs), status=202)


def _metadata_filter(text: str) -> dict[str, str]:
    """Cinder's ``metadata`` filter: a dict, written as JSON or as a Python literal."""
    try:
        parsed = json.loads(text)
    except ValueError:
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = None
    if not isinstance(parsed, dict):
        raise ApiError(400, f"Invalid input received: Invalid metadata filter {text!r}")
    return {str(k): str(v) for k, v in parsed.items()}


def _check_uuid(value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ApiError(400, "Invalid UUID", kind="invalid_uuid") from None


def _schema_error(path: str, message: str) -> JSON:
    return {"path": [path], "message": message, "validator": "format", "raw": message}


def _invalid_object(problems: list[JSON]) -> ApiError:
    return ApiError(
        400,
        "Provided object does not match schema",
        kind="invalid_object",
        errors={"errors": problems},
    )


def _soa_record(zone: DnsZone) -> str:
    mailbox = zone.email.replace("@", ".") + "."
    return f"{NAMESERVER} {mailbox} {zone.serial} 3585 600 86400 3600"


def _designate_filters(request: web.Request, names: Sequence[str], body: JSON) -> bool:
    """Designate's exact-match filters, ``*`` as a wildcard; ``data`` looks into records."""
    for name in names:
        wanted = request.query.get(name)
        if wanted is None:
            continue
        pattern = re.compile("^" + re.escape(wanted).replace(r"\*", ".*") + "$", re.IGNORECASE)
        values = body.get("records", []) if name == "data" else [body.get(name)]
        if not any(pattern.match(str(value)) for value in values):
            return False
    return True


def _validate_recordset(body: JSON) -> tuple[str, str, list[str], int | None]:
    name, rtype, records, ttl = (body.get(k) for k in ("name", "type", "records", "ttl"))
    problems = []
    if not isinstance(name, str) or not _DNS_NAME.match(name):
        problems.append(_schema_error("name", f"{name!r} is not a 'hostname'"))
    if not isinstance(rtype, str) or rtype.upper() not in _RECORD_TYPES:
        problems.append(_schema_error("type", f"{rtype!r} is not a valid record type"))
    if not isinstance(records, list) or not records or not all(isinstance(r, str) for r in records):
        problems.append(_schema_error("records", f"{records!r} is not a list of records"))
    if ttl is not None and (not isinstance(ttl, int) or not 1 <= ttl <= 2147483647):
        problems.append(_schema_error("ttl", f"{ttl!r} is not valid under any given schema"))
    if problems:
        raise _invalid_object(problems)
    assert isinstance(name, str) and isinstance(rtype, str) and isinstance(records, list)
    rtype = rtype.upper()
    for record in records:
        if not _valid_record(rtype, record):
            raise _invalid_object(
                [_schema_error("records", f"{record!r} is not a valid {rtype} record")]
            )
    if rtype == "CNAME" and len(records) > 1:
        raise _invalid_object(
            [_schema_error("records", "only one CNAME record is allowed per rrset")]
        )
    return name, rtype, list(records), ttl


def _valid_record(rtype: str, record: str) -> bool:
    try:
        if rtype == "A":
            ipaddress.IPv4Address(record)
        elif rtype == "AAAA":
            ipaddress.IPv6Address(record)
        elif rtype in ("CNAME", "NS", "PTR"):
            return bool(_DNS_NAME.match(record))
        elif rtype == "MX":
            priority, _, host = record.partition(" ")
            return priority.isdigit() and bool(_DNS_NAME.match(host))
    except ValueError:
        return False
    return True


# --- Cinder ----------------------------------------------------------------------------------

BACKUP_SERVICE = "cinder.backup.drivers.swift.SwiftBackupDriver"
VOLUME_TYPE = "__DEFAULT__"
_VOLUME_TYPE_ID = "b0f8f0a6-2b44-4d9d-8f0f-7d0d7d5f0c3e"
_DELETABLE_VOLUME_STATES = ("available", "error", "error_restoring", "error_extending")


@dataclass
class VolumeZone:
    """An availability zone of the emulated Cinder, with test-controlled health."""

    name: str
    available: bool = True
    capacity_gb: int | None = None  # None: unlimited


@dataclass
class Volume:
    id: str
    name: str | None
    description: str | None
    size: int
    availability_zone: str
    project_id: str
    user_id: str
    metadata: dict[str, str]
    created_at: str
    status: str = "creating"
    updated_at: str | None = None
    backup_id: str | None = None
    data: bytes = b""
    settle_at: float | None = None
    settle_to: str | None = None  # "available", "error" or "deleted"
    restored_metadata: dict[str, str] | None = None
    """A backup's volume metadata, put in place of this volume's when its restore ends."""


@dataclass
class Backup:
    id: str
    name: str | None
    description: str | None
    volume_id: str
    size: int
    availability_zone: str
    container: str
    project_id: str
    user_id: str
    metadata: dict[str, str]
    created_at: str
    data_timestamp: str
    status: str = "creating"
    updated_at: str | None = None
    is_incremental: bool = False
    object_count: int = 0
    fail_reason: str | None = None
    data: bytes = b""
    volume_metadata: dict[str, str] = field(default_factory=dict)
    """The backed-up volume's metadata, kept with the data (as Cinder's backup drivers do)."""
    settle_at: float | None = None
    settle_to: str | None = None  # "available" or "deleted"


class CinderEmulator(EmulatedService):
    """Cinder's block storage API v3, microversions 3.0 to 3.71, in one region.

    Volumes (also from a backup), backups (and their updates: name, description,
    metadata), their export and import records and restores. Volumes hold bytes
    (:meth:`write_volume`, :meth:`read_volume`) that backups copy, so a test can
    follow data across regions. Exporting and
    importing backup records is admin-only in Cinder's default policy; pass
    ``backup_record_roles`` to allow other roles, as a cloud offering
    cross-region recovery to its tenants would.
    """

    service_type = "volumev3"
    service_name = "cinder"

    def __init__(
        self,
        region: str,
        zones: Sequence[str],
        *,
        validator: KeystoneTokenValidator,
        www_authenticate_uri: str,
        host: str = "127.0.0.1",
        backup_record_roles: Iterable[str] = ("admin",),
        create_seconds: float = 0.3,
        backup_seconds: float = 0.3,
        delete_seconds: float = 0.2,
        clock: Clock = time.monotonic,
    ) -> None:
        if not zones:
            raise ValueError("Cinder needs at least one availability zone")
        super().__init__(
            region,
            validator=validator,
            www_authenticate_uri=www_authenticate_uri,
            host=host,
            clock=clock,
        )
        self.zone_names = tuple(zones)
        self.backup_record_roles = frozenset(backup_record_roles)
        self.create_seconds = create_seconds
        self.backup_seconds = backup_seconds
        self.delete_seconds = delete_seconds
        self._reset_state()

    @property
    def endpoint_path(self) -> str:
        return "/v3/$(project_id)s"

    def _reset_state(self) -> None:
        self._zones = {name: VolumeZone(name) for name in self.zone_names}
        self._volumes: dict[str, Volume] = {}
        self._backups: dict[str, Backup] = {}

    # --- test hooks and state

    def set_zone_available(self, zone: str, available: bool = True) -> None:
        """Mark ``zone``'s storage back ends up or down (new volumes there end in ``error``)."""
        with self._lock:
            self._zone(zone).available = available

    def set_zone_capacity(self, zone: str, gigabytes: int | None) -> None:
        """Cap the GiB that volumes may take in ``zone`` (``None``: no limit)."""
        with self._lock:
            self._zone(zone).capacity_gb = gigabytes

    def write_volume(self, volume_id: str, data: bytes) -> None:
        """Put ``data`` on a volume (what an instance would write to it)."""
        with self._lock:
            self._volumes[volume_id].data = bytes(data)

    def read_volume(self, volume_id: str) -> bytes:
        with self._lock:
            return self._volumes[volume_id].data

    def zones(self) -> list[VolumeZone]:
        with self._lock:
            return [dataclasses.replace(zone) for zone in self._zones.values()]

    def volumes(self) -> list[Volume]:
        with self._lock:
            self._advance(self._clock())
            return [copy.deepcopy(volume) for volume in self._volumes.values()]

    def backups(self) -> list[Backup]:
        with self._lock:
            self._advance(self._clock())
            return [copy.deepcopy(backup) for backup in self._backups.values()]

    def _zone(self, name: str) -> VolumeZone:
        try:
            return self._zones[name]
        except KeyError:
            raise KeyError(f"{self!r} has no zone {name!r} (zones: {self.zone_names})") from None

    # --- plumbing

    def _routes(self) -> list[web.RouteDef]:
        routes = [web.get("/", self._versions), web.get("/v3", self._versions)]
        routes.append(web.get("/v3/", self._versions))
        # Cinder serves every API both under /v3/{project_id}/... and, since 3.67, /v3/...
        for prefix in ("/v3/{project_id}", "/v3"):
            routes += [
                web.get(f"{prefix}/os-availability-zone", self._list_zones),
                web.get(f"{prefix}/volumes", self._list_volumes),
                web.get(f"{prefix}/volumes/detail", self._list_volumes),
                web.post(f"{prefix}/volumes", self._create_volume),
                web.get(f"{prefix}/volumes/{{volume_id}}", self._show_volume),
                web.delete(f"{prefix}/volumes/{{volume_id}}", self._delete_volume),
                web.get(f"{prefix}/backups", self._list_backups),
                web.get(f"{prefix}/backups/detail", self._list_backups),
                web.post(f"{prefix}/backups", self._create_backup),
                web.post(f"{prefix}/backups/import_record", self._import_backup),
                web.get(f"{prefix}/backups/{{backup_id}}", self._show_backup),
                web.put(f"{prefix}/backups/{{backup_id}}", self._update_backup),
                web.delete(f"{prefix}/backups/{{backup_id}}", self._delete_backup),
                web.get(f"{prefix}/backups/{{backup_id}}/export_record", self._export_backup),
                web.post(f"{prefix}/backups/{{backup_id}}/restore", self._restore_backup),
            ]
        return routes

    def _is_public(self, request: web.Request) -> bool:
        return request.path in ("/", "/v3", "/v3/")

    def _negotiate(self, request: web.Request) -> ApiVersion | None:
        if self._is_public(request):
            return None
        version = _negotiate_microversion(
            request, service="volume", minimum=CINDER_MIN_VERSION, maximum=CINDER_MAX_VERSION
        )
        project_id = request.match_info.get("project_id")
        info = _token(request)
        if project_id is not None and project_id != info.project_id:
            raise ApiError(
                400,
                f"Malformed request url: URL's project_id '{project_id}' doesn't match "
                f"Context's project_id '{info.project_id}'",
            )
        if project_id is None and version < (3, 67):
            raise ApiError(404, "The resource could not be found.")
        return version

    def _version_headers(self, version: ApiVersion) -> dict[str, str]:
        return {API_VERSION_HEADER: f"volume {version}", "Vary": API_VERSION_HEADER}

    def _error_body(self, error: ApiError, request_id: str) -> JSON:
        return _fault_body(error)

    def _advance(self, now: float) -> None:
        for volume in list(self._volumes.values()):
            if volume.settle_at is None or volume.settle_at > now:
                continue
            target, volume.settle_at, volume.settle_to = volume.settle_to, None, None
            if target == "deleted":
                del self._volumes[volume.id]
                continue
            volume.status = target or "available"
            volume.updated_at = _now_iso(microseconds=True)
            if volume.restored_metadata is not None and volume.status == "available":
                # Cinder restores a backup's volume metadata over the volume's own
                # (BackupMetadataAPI._restore_vol_meta), when the backup had any.
                volume.metadata = volume.restored_metadata
            volume.restored_metadata = None
        for backup in list(self._backups.values()):
            if backup.settle_at is None or backup.settle_at > now:
                continue
            target, backup.settle_at, backup.settle_to = backup.settle_to, None, None
            if target == "deleted":
                del self._backups[backup.id]
                continue
            backup.status = target or "available"
            backup.updated_at = _now_iso(microseconds=True)
            source = self._volumes.get(backup.volume_id)
            if source is not None and source.status == "backing-up":
                source.status = "available"

    def _links(self, request: web.Request, kind: str, item_id: str) -> list[JSON]:
        base = _base_url(request)
        project = _token(request).project_id
        return [
            {"rel": "self", "href": f"{base}/v3/{project}/{kind}/{item_id}"},
            {"rel": "bookmark", "href": f"{base}/{project}/{kind}/{item_id}"},
        ]

    async def _versions(self, request: web.Request) -> web.Response:
        entry = {
            "id": "v3.0",
            "status": "CURRENT",
            "version": str(CINDER_MAX_VERSION),
            "min_version": str(CINDER_MIN_VERSION),
            "updated": "2023-08-31T00:00:00Z",
            "links": [
                {"href": "https://docs.openstack.org/", "rel": "describedby", "type": "text/html"},
                {"href": f"{_base_url(request)}/v3/", "rel": "self"},
            ],
            "media-types": [
                {
                    "base": "application/json",
                    "type": "application/vnd.openstack.volume+json;version=3",
                }
            ],
        }
        status = 300 if request.path == "/" else 200
        return web.json_response({"versions": [entry]}, status=status)

    async def _list_zones(self, request: web.Request) -> web.Response:
        with self._lock:
            zones = [
                {"zoneName": zone.name, "zoneState": {"available": zone.available}}
                for zone in self._zones.values()
            ]
        return web.json_response({"availabilityZoneInfo": zones})

    # --- volumes

    def _volume_body(self, request: web.Request, volume: Volume) -> JSON:
        version = _version(request)
        body: JSON = {
            "id": volume.id,
            "name": volume.name,
            "description": volume.description,
            "status": volume.status,
            "size": volume.size,
            "availability_zone": volume.availability_zone,
            "created_at": volume.created_at,
            "updated_at": volume.updated_at,
            "attachments": [],
            "bootable": "false",
            "encrypted": False,
            "multiattach": False,
            "metadata": dict(volume.metadata),
            "volume_type": VOLUME_TYPE,
            "snapshot_id": None,
            "source_volid": None,
            "consistencygroup_id": None,
            "replication_status": None,
            "migration_status": None,
            "user_id": volume.user_id,
            "os-vol-tenant-attr:tenant_id": volume.project_id,
            "links": self._links(request, "volumes", volume.id),
        }
        if version >= (3, 13):
            body["group_id"] = None
        if version >= (3, 21):
            body["provider_id"] = None
        if version >= (3, 48):
            body["shared_targets"] = True
            body["service_uuid"] = None
        if version >= (3, 61):
            body["cluster_name"] = None
        if version >= (3, 63):
            body["volume_type_id"] = _VOLUME_TYPE_ID
        if version >= (3, 64):
            body["encryption_key_id"] = None
        if version >= (3, 65):
            body["consumes_quota"] = True
        if _token(request).is_admin:
            body["os-vol-host-attr:host"] = f"cinder-{volume.availability_zone}@lvm#lvm"
        return body

    def _visible_volume(self, request: web.Request, volume_id: str) -> Volume:
        volume = self._volumes.get(volume_id)
        info = _token(request)
        if volume is None or (volume.project_id != info.project_id and not info.is_admin):
            raise ApiError(404, f"Volume {volume_id} could not be found.")
        return volume

    async def _list_volumes(self, request: web.Request) -> web.Response:
        info = _token(request)
        everyone = info.is_admin and _truthy(request.query.get("all_tenants", "false"))
        query = request.query
        metadata: dict[str, str] = {}
        if "metadata" in query:
            metadata = _metadata_filter(query["metadata"])
        with self._lock:
            volumes = [
                v
                for v in sorted(
                    self._volumes.values(), key=lambda v: (v.created_at, v.id), reverse=True
                )
                if (everyone or v.project_id == info.project_id)
                and ("name" not in query or v.name == query["name"])
                and ("status" not in query or v.status == query["status"])
                and (
                    "availability_zone" not in query
                    or v.availability_zone == query["availability_zone"]
                )
                and all(v.metadata.get(k) == value for k, value in metadata.items())
            ]
            page, marker = _paginate(request, volumes, key=lambda v: v.id)
            detail = request.path.endswith("/detail")
            items = [
                self._volume_body(request, v)
                if detail
                else {"id": v.id, "name": v.name, "links": self._links(request, "volumes", v.id)}
                for v in page
            ]
        body: JSON = {"volumes": items}
        if marker is not None:
            body["volumes_links"] = [{"rel": "next", "href": _next_link(request, marker)}]
        if _version(request) >= (3, 45) and _truthy(query.get("with_count", "false")):
            body["count"] = len(volumes)
        return web.json_response(body)

    async def _show_volume(self, request: web.Request) -> web.Response:
        with self._lock:
            volume = self._visible_volume(request, request.match_info["volume_id"])
            return web.json_response({"volume": self._volume_body(request, volume)})

    async def _create_volume(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        version, info = _version(request), _token(request)
        spec = body.get("volume")
        if not isinstance(spec, dict):
            raise ApiError(400, "Missing required element 'volume' in request body.")
        backup_id = spec.get("backup_id")
        if backup_id is not None and version < (3, 47):
            raise ApiError(
                400,
                "Invalid input for field/attribute volume. Additional properties are not "
                "allowed ('backup_id' was unexpected)",
            )
        metadata = _string_map(spec.get("metadata", {}), "metadata")
        with self._lock:
            backup = self._usable_backup(request, str(backup_id)) if backup_id else None
            size = spec.get("size", backup.size if backup else None)
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ApiError(400, f"Invalid input for field/attribute size. Value: {size}.")
            if backup is not None and size < backup.size:
                raise ApiError(
                    400,
                    f"Volume size '{size}'GB cannot be smaller than the backup size "
                    f"{backup.size}GB. It must be >= backup size.",
                )
            zone_name = spec.get("availability_zone") or self.zone_names[0]
            if zone_name not in self._zones:
                raise ApiError(400, f"Availability zone '{zone_name}' is invalid.")
            volume = Volume(
                id=_new_id(),
                name=spec.get("name"),
                description=spec.get("description"),
                size=size,
                availability_zone=str(zone_name),
                project_id=str(info.project_id),
                user_id=info.user_id,
                metadata=metadata,
                created_at=_now_iso(microseconds=True),
                backup_id=backup.id if backup else None,
                data=backup.data if backup else b"",
                restored_metadata=_restored_metadata(backup),
                settle_at=self._clock() + self.create_seconds,
                settle_to="available" if self._fits(str(zone_name), size) else "error",
            )
            self._volumes[volume.id] = volume
            if backup is not None:
                backup.status = "restoring"
                backup.settle_at, backup.settle_to = volume.settle_at, "available"
            return web.json_response({"volume": self._volume_body(request, volume)}, status=202)

    def _fits(self, zone_name: str, size: int) -> bool:
        zone = self._zones[zone_name]
        if not zone.available:
            return False
        if zone.capacity_gb is None:
            return True
        used = sum(
            v.size
            for v in self._volumes.values()
            if v.availability_zone == zone_name
            and v.settle_to not in ("error", "deleted")
            and v.status != "error"
        )
        return used + size <= zone.capacity_gb

    async def _delete_volume(self, request: web.Request) -> web.Response:
        with self._lock:
            volume = self._visible_volume(request, request.match_info["volume_id"])
            if volume.status not in _DELETABLE_VOLUME_STATES:
                raise ApiError(
                    400,
                    "Invalid volume: Volume status must be available or error or "
                    "error_restoring or error_extending or error_managing and must not be "
                    "migrating, attached, belong to a group, have snapshots, awaiting a "
                    "transfer, or be disassociated from snapshots after volume transfer.",
                )
            volume.status = "deleting"
            volume.settle_at, volume.settle_to = self._clock() + self.delete_seconds, "deleted"
        return web.Response(status=202)

    # --- backups

    def _backup_body(self, request: web.Request, backup: Backup) -> JSON:
        version = _version(request)
        body: JSON = {
            "id": backup.id,
            "name": backup.name,
            "description": backup.description,
            "status": backup.status,
            "volume_id": backup.volume_id,
            "size": backup.size,
            "availability_zone": backup.availability_zone,
            "container": backup.container,
            "object_count": backup.object_count,
            "created_at": backup.created_at,
            "updated_at": backup.updated_at,
            "data_timestamp": backup.data_timestamp,
            "fail_reason": backup.fail_reason,
            "has_dependent_backups": False,
            "is_incremental": backup.is_incremental,
            "snapshot_id": None,
            "links": self._links(request, "backups", backup.id),
        }
        if version >= (3, 18):
            body["os-backup-project-attr:project_id"] = backup.project_id
        if version >= (3, 43):
            body["metadata"] = dict(backup.metadata)
        if version >= (3, 56):
            body["user_id"] = backup.user_id
        if version >= (3, 64):
            body["encryption_key_id"] = None
        return body

    def _visible_backup(self, request: web.Request, backup_id: str) -> Backup:
        backup = self._backups.get(backup_id)
        info = _token(request)
        if backup is None or (backup.project_id != info.project_id and not info.is_admin):
            raise ApiError(404, f"Backup {backup_id} could not be found.")
        return backup

    def _usable_backup(self, request: web.Request, backup_id: str) -> Backup:
        backup = self._visible_backup(request, backup_id)
        if backup.status != "available":
            raise ApiError(400, "Invalid backup: Backup status must be available.")
        return backup

    async def _list_backups(self, request: web.Request) -> web.Response:
        info = _token(request)
        everyone = info.is_admin and _truthy(request.query.get("all_tenants", "false"))
        query = request.query
        with self._lock:
            backups = [
                b
                for b in sorted(
                    self._backups.values(), key=lambda b: (b.created_at, b.id), reverse=True
                )
                if (everyone or b.project_id == info.project_id)
                and all(
                    name not in query or str(getattr(b, name)) == query[name]
                    for name in ("name", "status", "volume_id")
                )
            ]
            page, marker = _paginate(request, backups, key=lambda b: b.id)
            detail = request.path.endswith("/detail")
            items = [
                self._backup_body(request, b)
                if detail
                else {"id": b.id, "name": b.name, "links": self._links(request, "backups", b.id)}
                for b in page
            ]
        body: JSON = {"backups": items}
        if marker is not None:
            body["backups_links"] = [{"rel": "next", "href": _next_link(request, marker)}]
        return web.json_response(body)

    async def _show_backup(self, request: web.Request) -> web.Response:
        with self._lock:
            backup = self._visible_backup(request, request.match_info["backup_id"])
            return web.json_response({"backup": self._backup_body(request, backup)})

    async def _create_backup(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        version, info = _version(request), _token(request)
        spec = body.get("backup")
        if not isinstance(spec, dict) or not isinstance(spec.get("volume_id"), str):
            raise ApiError(400, "Invalid input for field/attribute backup.")
        metadata = _string_map(spec.get("metadata", {}), "metadata")
        if metadata and version < (3, 43):
            raise ApiError(400, "Additional properties are not allowed ('metadata' was unexpected)")
        with self._lock:
            volume = self._visible_volume(request, spec["volume_id"])
            if volume.status not in ("available", "in-use"):
                raise ApiError(
                    400,
                    "Invalid volume: Volume to be backed up must be available or in-use, but "
                    f'the current status is "{volume.status}".',
                )
            zone = spec.get("availability_zone") if version >= (3, 51) else None
            now = _now_iso(microseconds=True)
            backup = Backup(
                id=_new_id(),
                name=spec.get("name"),
                description=spec.get("description"),
                volume_id=volume.id,
                size=volume.size,
                availability_zone=str(zone or volume.availability_zone),
                container=str(spec.get("container") or "volumebackups"),
                project_id=str(info.project_id),
                user_id=info.user_id,
                metadata=metadata,
                created_at=now,
                data_timestamp=now,
                is_incremental=bool(spec.get("incremental", False)),
                object_count=max(1, volume.size),
                data=volume.data,
                volume_metadata=dict(volume.metadata),
                settle_at=self._clock() + self.backup_seconds,
                settle_to="available",
            )
            self._backups[backup.id] = backup
            volume.status = "backing-up"
            return web.json_response(
                {
                    "backup": {
                        "id": backup.id,
                        "name": backup.name,
                        "links": self._links(request, "backups", backup.id),
                    }
                },
                status=202,
            )

    async def _update_backup(self, request: web.Request) -> web.Response:
        """``PUT /backups/{id}`` (3.9+): name and description; metadata from 3.43, replaced
        whole as Cinder does. Answers 200 with the backup's summary."""
        version = _version(request)
        if version < (3, 9):
            raise ApiError(404, "The resource could not be found.")
        body = await _json_body(request)
        spec = body.get("backup")
        if not isinstance(spec, dict) or not spec:
            raise ApiError(400, "Invalid input for field/attribute backup.")
        allowed = {"name", "description"} | ({"metadata"} if version >= (3, 43) else set())
        unexpected = sorted(set(spec) - allowed)
        if unexpected:
            raise ApiError(
                400,
                "Invalid input for field/attribute backup. Additional properties are not "
                f"allowed ({', '.join(repr(k) for k in unexpected)} was unexpected)",
            )
        metadata = _string_map(spec["metadata"], "metadata") if "metadata" in spec else None
        with self._lock:
            backup = self._visible_backup(request, request.match_info["backup_id"])
            if "name" in spec:
                backup.name = spec["name"]
            if "description" in spec:
                backup.description = spec["description"]
            if metadata is not None:
                backup.metadata = metadata
            backup.updated_at = _now_iso(microseconds=True)
            summary: JSON = {
                "id": backup.id,
                "name": backup.name,
                "links": self._links(request, "backups", backup.id),
            }
            if version >= (3, 43):
                summary["metadata"] = dict(backup.metadata)
        return web.json_response({"backup": summary})

    async def _delete_backup(self, request: web.Request) -> web.Response:
        with self._lock:
            backup = self._visible_backup(request, request.match_info["backup_id"])
            if backup.status not in ("available", "error"):
                raise ApiError(400, "Invalid backup: Backup status must be available or error")
            backup.status = "deleting"
            backup.settle_at, backup.settle_to = self._clock() + self.delete_seconds, "deleted"
        return web.Response(status=202)

    def _check_record_policy(self, request: web.Request) -> None:
        if not self.backup_record_roles & _token(request).roles:
            raise ApiError(403, "Policy doesn't allow backup:export-import to be performed.")

    async def _export_backup(self, request: web.Request) -> web.Response:
        self._check_record_policy(request)
        with self._lock:
            backup = self._visible_backup(request, request.match_info["backup_id"])
            if backup.status != "available":
                raise ApiError(
                    400, "Invalid backup: Backup status must be available and not restoring."
                )
            record = {
                "id": backup.id,
                "display_name": backup.name,
                "display_description": backup.description,
                "volume_id": backup.volume_id,
                "size": backup.size,
                "availability_zone": backup.availability_zone,
                "container": backup.container,
                "object_count": backup.object_count,
                "data_timestamp": backup.data_timestamp,
                "metadata": dict(backup.metadata),
                "service": BACKUP_SERVICE,
                "service_metadata": f"volume_{backup.volume_id}/az_{backup.availability_zone}"
                f"_backup_{backup.id}",
                # Stands in for the backup store both regions can reach (see the module doc).
                "data": base64.b64encode(backup.data).decode(),
                "volume_metadata": dict(backup.volume_metadata),
            }
        url = base64.b64encode(json.dumps(record).encode()).decode()
        return web.json_response(
            {"backup-record": {"backup_service": BACKUP_SERVICE, "backup_url": url}}
        )

    async def _import_backup(self, request: web.Request) -> web.Response:
        self._check_record_policy(request)
        body = await _json_body(request)
        info = _token(request)
        record_spec = body.get("backup-record")
        if not isinstance(record_spec, dict):
            raise ApiError(400, "Incorrect request body format.")
        service = record_spec.get("backup_service")
        if service != BACKUP_SERVICE:
            raise ApiError(404, f"Service {service} could not be found.")
        try:
            record = json.loads(base64.b64decode(str(record_spec.get("backup_url", ""))))
            backup_id = str(record["id"])
            size = int(record["size"])
            data = base64.b64decode(record.get("data", ""))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiError(400, "Invalid input received: Can't parse backup record.") from None
        with self._lock:
            if backup_id in self._backups:
                raise ApiError(400, "Invalid backup: Backup already exists in database.")
            zone = record.get("availability_zone")
            now = _now_iso(microseconds=True)
            backup = Backup(
                id=backup_id,
                name=record.get("display_name"),
                description=record.get("display_description"),
                volume_id=str(record.get("volume_id")),
                size=size,
                availability_zone=zone if zone in self._zones else self.zone_names[0],
                container=str(record.get("container") or "volumebackups"),
                project_id=str(info.project_id),
                user_id=info.user_id,
                metadata={str(k): str(v) for k, v in (record.get("metadata") or {}).items()},
                created_at=now,
                data_timestamp=str(record.get("data_timestamp") or now),
                object_count=int(record.get("object_count") or 1),
                data=data,
                volume_metadata={
                    str(k): str(v) for k, v in (record.get("volume_metadata") or {}).items()
                },
                settle_at=self._clock() + self.backup_seconds,
                settle_to="available",
            )
            self._backups[backup.id] = backup
            return web.json_response(
                {
                    "backup": {
                        "id": backup.id,
                        "name": backup.name,
                        "links": self._links(request, "backups", backup.id),
                    }
                },
                status=201,
            )

    async def _restore_backup(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        info = _token(request)
        spec = body.get("restore")
        if not isinstance(spec, dict):
            raise ApiError(400, "Incorrect request body format.")
        with self._lock:
            backup = self._usable_backup(request, request.match_info["backup_id"])
            volume_id = spec.get("volume_id")
            if volume_id:
                volume = self._visible_volume(request, str(volume_id))
                if volume.status != "available":
                    raise ApiError(
                        400, "Invalid volume: Volume to be restored to must be available"
                    )
                if volume.size < backup.size:
                    raise ApiError(
                        400,
                        f"Invalid volume: volume size {volume.size} is too small to restore "
                        f"backup of size {backup.size}.",
                    )
                volume.data = backup.data
                volume.status = "restoring-backup"
                volume.restored_metadata = _restored_metadata(backup)
            else:
                zone = spec.get("availability_zone") or backup.availability_zone
                if zone not in self._zones:
                    zone = self.zone_names[0]
                volume = Volume(
                    id=_new_id(),
                    name=spec.get("name") or f"restore_backup_{backup.id}",
                    description=f"auto-created_from_restore_from_backup {backup.id}",
                    size=backup.size,
                    availability_zone=str(zone),
                    project_id=str(info.project_id),
                    user_id=info.user_id,
                    metadata={},
                    created_at=_now_iso(microseconds=True),
                    data=backup.data,
                    restored_metadata=_restored_metadata(backup),
                )
                self._volumes[volume.id] = volume
                volume.status = "restoring-backup"
            volume.settle_at = self._clock() + self.create_seconds
            volume.settle_to = "available"
            backup.status = "restoring"
            backup.settle_at, backup.settle_to = volume.settle_at, "available"
            return web.json_response(
                {
                    "restore": {
                        "backup_id": backup.id,
                        "volume_id": volume.id,
                        "volume_name": volume.name,
                    }
                },
                status=202,
            )
