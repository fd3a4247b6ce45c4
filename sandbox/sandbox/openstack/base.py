"""What the emulated OpenStack APIs share: Keystone token checks, request handling, errors.

Keystone and Swift run for real in the sandbox (see :mod:`sandbox.openstack.cloud`);
Nova, Designate and Cinder need hypervisors, DNS servers, message queues and
storage back ends, so they are emulated, one service per module
(:mod:`~sandbox.openstack.nova`, :mod:`~sandbox.openstack.designate`,
:mod:`~sandbox.openstack.cinder`): one aiohttp application per service and region,
served on its own loopback port from a background thread
(:class:`~sandbox.procs.BackgroundHttpServer`). This module holds their common
base, :class:`EmulatedService`, and the helpers they share.

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

import copy
import json
import logging
import re
import threading
import time
import uuid
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import (
    Any,
    ClassVar,
    Generic,
    NamedTuple,
    Protocol,
    Required,
    TypedDict,
    TypeVar,
    Unpack,
)
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from sandbox.procs import HttpService

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


API_VERSION_HEADER = "OpenStack-API-Version"

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


def now_iso(*, microseconds: bool) -> str:
    now = datetime.now(UTC)
    if microseconds:
        return now.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def base_url(request: web.Request) -> str:
    """The scheme and authority the client used (the fault proxy keeps the Host header)."""
    return f"{request.scheme}://{request.host}"


def new_id() -> str:
    return str(uuid.uuid4())


class ServiceOptions(TypedDict, total=False):
    """What every emulator is built with, besides its region (and zones)."""

    validator: Required[KeystoneTokenValidator]
    """Checks the tokens of requests (shared by a world's emulators)."""
    www_authenticate_uri: Required[str]
    """Where a 401 sends clients to authenticate (Keystone's public URL)."""
    host: str
    """The loopback address to serve on (default 127.0.0.1)."""
    clock: Clock
    """When state changes are due (default ``time.monotonic``)."""
    max_records: int
    """How many answered requests are kept for :meth:`EmulatedService.requests`."""


class EmulatedService(HttpService):
    """One emulated OpenStack API in one region, served on its own loopback port.

    Subclasses declare the routes, which of them are public (version
    documents), how errors look and whether microversions apply. State is
    guarded by one lock: handlers and test hooks run on different threads.
    """

    service_type: ClassVar[str]
    service_name: ClassVar[str]

    def __init__(self, region: str, **options: Unpack[ServiceOptions]) -> None:
        super().__init__(
            f"{self.service_name} emulator {region}", host=options.get("host", "127.0.0.1")
        )
        self.region = region
        self.validator = options["validator"]
        self.www_authenticate_uri = options["www_authenticate_uri"]
        self._clock = options.get("clock", time.monotonic)
        self._lock = threading.RLock()
        self._records: deque[RequestRecord] = deque(maxlen=options.get("max_records", 100_000))

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<{type(self).__name__} {self.region} {where}>"

    @property
    @abstractmethod
    def endpoint_path(self) -> str:
        """What the catalog URL adds to the root (``/v2.1``, ``/v3/$(project_id)s``, ``""``)."""

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


async def json_body(request: web.Request) -> JSON:
    """The request's JSON object; 400 "Malformed request body" otherwise."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "Malformed request body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Malformed request body")
    return body


def request_token(request: web.Request) -> TokenInfo:
    return request[_TOKEN]


def request_version(request: web.Request) -> ApiVersion:
    return request[_VERSION]


def require_admin(request: web.Request, rule: str) -> None:
    if not request_token(request).is_admin:
        raise ApiError(403, f"Policy doesn't allow {rule} to be performed.")


class Owned(Protocol):
    """A resource that belongs to one project."""

    @property
    def project_id(self) -> str: ...


OwnedT = TypeVar("OwnedT", bound=Owned)


def visible(
    request: web.Request, items: Mapping[str, OwnedT], item_id: str, not_found: str
) -> OwnedT:
    """``items[item_id]`` if the request's project owns it (an admin sees every project's);
    else Nova's and Cinder's 404 with the message ``not_found``."""
    item = items.get(item_id)
    info = request_token(request)
    if item is None or (item.project_id != info.project_id and not info.is_admin):
        raise ApiError(404, not_found)
    return item


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


def fault_body(error: ApiError) -> JSON:
    name = error.kind or _FAULT_NAMES.get(error.status, "computeFault")
    return {name: {"code": error.status, "message": error.message}}


class AvailabilityZone(Protocol):
    """A zone of a zonal service: its name, and whether the tests keep it available."""

    name: str
    available: bool


ZoneT = TypeVar("ZoneT", bound=AvailabilityZone)


class ZonalService(EmulatedService, Generic[ZoneT]):
    """An emulated service whose resources live in availability zones (Nova, Cinder).

    The zones are named at construction; tests take one down with
    :meth:`set_zone_available`. Subclasses build ``_zones`` in ``_reset_state`` and
    answer errors with the webob fault bodies both services share.
    """

    def __init__(
        self, region: str, zones: Sequence[str], **options: Unpack[ServiceOptions]
    ) -> None:
        if not zones:
            raise ValueError(f"{type(self).__name__} needs at least one availability zone")
        super().__init__(region, **options)
        self.zone_names = tuple(zones)
        self._zones: dict[str, ZoneT] = {}

    def set_zone_available(self, zone: str, available: bool = True) -> None:
        """Mark ``zone`` up or down: its listed state, and whether what is created there
        works (Nova schedules no server there; a new Cinder volume there ends in ``error``)."""
        with self._lock:
            self._zone(zone).available = available

    def zones(self) -> list[ZoneT]:
        """A snapshot of the zones."""
        with self._lock:
            return [copy.copy(zone) for zone in self._zones.values()]

    def _zone(self, name: str) -> ZoneT:
        try:
            return self._zones[name]
        except KeyError:
            raise KeyError(f"{self!r} has no zone {name!r} (zones: {self.zone_names})") from None

    def _error_body(self, error: ApiError, request_id: str) -> JSON:
        return fault_body(error)


def negotiate_microversion(
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


def int_param(request: web.Request, name: str, *, minimum: int = 0) -> int | None:
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


def paginate(
    request: web.Request, items: Sequence[Any], key: Callable[[Any], str]
) -> tuple[list[Any], str | None]:
    """Nova/Cinder paging: ``limit`` and ``marker`` (the last id seen); the next marker."""
    limit = int_param(request, "limit")
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


def next_link(request: web.Request, marker: str) -> str:
    query = {k: v for k, v in request.query.items() if k != "marker"}
    query["marker"] = marker
    return f"{base_url(request)}{request.path}?{urlencode(query)}"


def truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "t", "yes", "y", "on")


def string_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and 1 <= len(k) <= 255 and isinstance(v, str) and len(v) <= 255
        for k, v in value.items()
    ):
        raise ApiError(400, f"Invalid input for field/attribute {what}.")
    return dict(value)
