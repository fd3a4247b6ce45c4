"""The emulated Nova: compute API v2.1, microversions 2.1 to 2.79, in one region.

Servers (from an image, or booted from volumes), flavors and images (fixed sets: there is
no Glance), availability zones, server metadata and server groups, scheduled the way
Nova's filter scheduler would place them; see :class:`NovaEmulator`.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import itertools
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Unpack

from aiohttp import web

from sandbox.openstack.base import (
    API_VERSION_HEADER,
    JSON,
    ApiError,
    ApiVersion,
    ServiceOptions,
    TokenInfo,
    ZonalService,
    base_url,
    int_param,
    json_body,
    negotiate_microversion,
    new_id,
    next_link,
    now_iso,
    paginate,
    request_token,
    request_version,
    require_admin,
    string_map,
    truthy,
    visible,
)

NOVA_MIN_VERSION = ApiVersion(2, 1)
NOVA_MAX_VERSION = ApiVersion(2, 79)
LEGACY_NOVA_VERSION_HEADER = "X-OpenStack-Nova-API-Version"


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


class NovaEmulator(ZonalService[ComputeZone]):
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
        hosts_per_zone: int = 2,
        build_seconds: float = 0.5,
        delete_seconds: float = 0.2,
        **options: Unpack[ServiceOptions],
    ) -> None:
        super().__init__(region, zones, **options)
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
        self._instance_quota = -1

    # --- test hooks and state

    def set_zone_capacity(self, zone: str, servers: int | None) -> None:
        """How many servers ``zone`` holds at most (``0``: out of capacity; ``None``: no limit)."""
        if servers is not None and servers < 0:
            raise ValueError(f"capacity must be >= 0 or None, got {servers}")
        with self._lock:
            self._zone(zone).capacity = servers

    def set_instance_quota(self, instances: int) -> None:
        """Every project's ``instances`` quota (-1: unlimited, the emulator's default; real
        Nova's default is 10). Creating beyond it is refused as Nova refuses it, and
        ``GET /limits`` reports it with the project's use."""
        if instances < -1:
            raise ValueError(f"quota must be >= -1, got {instances}")
        with self._lock:
            self._instance_quota = instances

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
            server.updated = now_iso(microseconds=False)
            server.fault = (
                {
                    "code": 500,
                    "created": server.updated,
                    "message": fault_message or "Unexpected error",
                }
                if status == "ERROR"
                else None
            )

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
            web.get(f"{p}/limits", self._limits),
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
        return negotiate_microversion(
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
            server.updated = now_iso(microseconds=False)
            if server.status == "ACTIVE":
                server.launched_at = now_iso(microseconds=True)

    # --- versions

    def _version_entry(self, request: web.Request) -> JSON:
        return {
            "id": "v2.1",
            "status": "CURRENT",
            "version": str(NOVA_MAX_VERSION),
            "min_version": str(NOVA_MIN_VERSION),
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base_url(request)}/v2.1/"}],
        }

    async def _versions(self, request: web.Request) -> web.Response:
        legacy = {
            "id": "v2.0",
            "status": "SUPPORTED",
            "version": "",
            "min_version": "",
            "updated": "2011-01-21T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base_url(request)}/v2/"}],
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
        require_admin(request, "os_compute_api:os-availability-zone:detail")
        updated = now_iso(microseconds=True)

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
        version = request_version(request)
        base = base_url(request)
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
        if request_version(request) >= (2, 75):
            _reject_unknown_params(request, _FLAVOR_QUERY_PARAMS)
        flavors: list[Flavor] = list(FLAVORS)
        if request.query.get("is_public", "true").lower() in ("false", "0", "no"):
            flavors = []  # every flavor here is public
        min_ram, min_disk = int_param(request, "minRam"), int_param(request, "minDisk")
        flavors = [
            f
            for f in flavors
            if (min_ram is None or f.ram >= min_ram) and (min_disk is None or f.disk >= min_disk)
        ]
        page, marker = paginate(request, flavors, key=lambda f: f.id)
        detail = request.path.endswith("/detail")
        body: JSON = {"flavors": [self._flavor_body(request, f, detail=detail) for f in page]}
        if marker is not None:
            body["flavors_links"] = [{"rel": "next", "href": next_link(request, marker)}]
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
        base = base_url(request)
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
        if request_version(request) >= (2, 36):
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
        version = request_version(request)
        info = request_token(request)
        base = base_url(request)
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
        return visible(
            request, self._servers, server_id, f"Instance {server_id} could not be found."
        )

    async def _list_servers(self, request: web.Request) -> web.Response:
        version, info = request_version(request), request_token(request)
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
            page, marker = paginate(request, servers, key=lambda s: s.id)
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
            body["servers_links"] = [{"rel": "next", "href": next_link(request, marker)}]
        return web.json_response(body)

    def _server_matches(self, server: Server, request: web.Request, info: TokenInfo) -> bool:
        query = request.query
        everyone = info.is_admin and truthy(query.get("all_tenants", "false"))
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
            ("locked", lambda v: server.locked == truthy(v)),
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
        body = await json_body(request)
        version, info = request_version(request), request_token(request)
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
        metadata = string_map(spec.get("metadata", {}), "metadata")
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
        least = _int_value(spec.get("min_count", 1), "min_count")
        security_groups = [
            str(group.get("name", "default")) for group in spec.get("security_groups", [])
        ] or ["default"]
        with self._lock:
            count = self._within_quota(info, least, count)
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
        if truthy(str(spec.get("return_reservation_id", "false"))):
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

    def _used(self, info: TokenInfo) -> list[Server]:
        self._advance(self._clock())
        return [s for s in self._servers.values() if s.project_id == info.project_id]

    def _within_quota(self, info: TokenInfo, least: int, most: int) -> int:
        """How many of ``least``..``most`` servers the project's quota allows (Nova boots as
        many as it may, at least ``least``, or refuses the request)."""
        quota = self._instance_quota
        if quota < 0:
            return most
        used = len(self._used(info))
        if used + least > quota:
            raise ApiError(
                403,
                f"Quota exceeded for instances: Requested {least}, but already used {used} "
                f"of {quota} instances",
            )
        return min(most, quota - used)

    async def _limits(self, request: web.Request) -> web.Response:
        """The project's absolute limits (instances, cores and RAM in use); only the
        instance quota is ever set (:meth:`set_instance_quota`), the others are unlimited."""
        info = request_token(request)
        with self._lock:
            servers = self._used(info)
            groups = [g for g in self._groups.values() if g.project_id == info.project_id]
            absolute: JSON = {
                "maxTotalInstances": self._instance_quota,
                "totalInstancesUsed": len(servers),
                "maxTotalCores": -1,
                "totalCoresUsed": sum(s.flavor.vcpus for s in servers),
                "maxTotalRAMSize": -1,
                "totalRAMUsed": sum(s.flavor.ram for s in servers),
                "maxServerMeta": 128,
                "maxImageMeta": 128,
                "maxTotalKeypairs": 100,
                "maxServerGroups": 10,
                "maxServerGroupMembers": 10,
                "totalServerGroupsUsed": len(groups),
            }
        return web.json_response({"limits": {"rate": [], "absolute": absolute}})

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
        now = now_iso(microseconds=False)
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
            id=new_id(),
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
        body = await json_body(request)
        spec = body.get("server")
        if not isinstance(spec, dict):
            raise ApiError(400, "Invalid input for field/attribute server.")
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            if "name" in spec:
                if not isinstance(spec["name"], str) or not 1 <= len(spec["name"]) <= 255:
                    raise ApiError(400, "Invalid input for field/attribute name.")
                server.name = spec["name"]
            if "description" in spec and request_version(request) >= (2, 19):
                server.description = spec["description"]
            server.updated = now_iso(microseconds=False)
            return web.json_response({"server": self._server_body(request, server)})

    async def _delete_server(self, request: web.Request) -> web.Response:
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            if server.locked and not request_token(request).is_admin:
                raise ApiError(409, f"Instance {server.id} is locked")
            if server.settle_to != "DELETED":
                server.task_state = "deleting"
                server.settle_at = self._clock() + self.delete_seconds
                server.settle_to = "DELETED"
        return web.Response(status=204)

    async def _server_action(self, request: web.Request) -> web.Response:
        body = await json_body(request)
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
            server.updated = now_iso(microseconds=False)
        return web.Response(status=202)

    # --- server metadata

    async def _show_metadata(self, request: web.Request) -> web.Response:
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            return web.json_response({"metadata": dict(server.metadata)})

    async def _update_metadata(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        metadata = string_map(body.get("metadata"), "metadata")
        with self._lock:
            server = self._visible_server(request, request.match_info["server_id"])
            server.metadata.update(metadata)
            return web.json_response({"metadata": dict(server.metadata)})

    async def _replace_metadata(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        metadata = string_map(body.get("metadata"), "metadata")
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
        body = await json_body(request)
        meta = string_map(body.get("meta"), "meta")
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
        if request_version(request) >= (2, 64):
            body.update({"policy": group.policy, "rules": dict(group.rules)})
        else:
            body.update({"policies": [group.policy], "metadata": {}})
        return body

    def _visible_group(self, request: web.Request, group_id: str) -> ServerGroup:
        return visible(
            request, self._groups, group_id, f"Instance group {group_id} could not be found."
        )

    async def _list_groups(self, request: web.Request) -> web.Response:
        info = request_token(request)
        everyone = info.is_admin and truthy(request.query.get("all_projects", "false"))
        with self._lock:
            groups = [
                self._group_body(request, g)
                for g in self._groups.values()
                if everyone or g.project_id == info.project_id
            ]
        return web.json_response({"server_groups": groups})

    async def _create_group(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        spec = body.get("server_group")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ApiError(400, "Invalid input for field/attribute server_group.")
        if request_version(request) >= (2, 64):
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
        info = request_token(request)
        group = ServerGroup(
            id=new_id(),
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


def _int_value(value: Any, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid input for field/attribute {what}.") from None
    if not 1 <= number <= 100:
        raise ApiError(400, f"Invalid input for field/attribute {what}.")
    return number
