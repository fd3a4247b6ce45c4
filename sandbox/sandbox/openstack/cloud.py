"""The sandbox's OpenStack: real Keystone and Swift, emulated Nova, Designate and Cinder.

What runs, for a cloud with two regions (``RegionOne``, ``RegionTwo``):

==================  ========  ==========================================================
service             how       why
==================  ========  ==========================================================
identity            real      Keystone (uWSGI, SQLite, Fernet tokens, in-memory
                              dogpile cache), one for the cloud: authentication,
                              catalog and token validation are exactly production's
object-store        real      Swift, one all-in-one per region: proxy (``authtoken``
                              + ``keystoneauth``) and account, container and object
                              servers on loopback, data under the world's directory
compute             emulated  Nova needs hypervisors, Placement, Neutron, a message
                              queue: :class:`~sandbox.openstack.nova.NovaEmulator`
dns                 emulated  Designate needs name servers and workers:
                              :class:`~sandbox.openstack.designate.DesignateEmulator`
volumev3            emulated  Cinder needs storage back ends:
                              :class:`~sandbox.openstack.cinder.CinderEmulator`
==================  ========  ==========================================================

Cinder's backups keep their data in a backup store, as real Cinder's do (a Swift
container per backup, the record in the region's database): an exported backup record
carries metadata only, and a restore from an imported record works only in a region
whose backup service reaches the store holding its objects. By default every region's
Cinder writes to one :class:`~sandbox.openstack.cinder.BackupStore` (like a cloud whose
regions share one ``backup_swift_url``); ``shared_backup_store=False`` gives each region
a store of its own, where restores of another region's backups fail
(``error_restoring``). The store is modelled in the emulator; it is not the sandbox's
real Swift.

Keystone and Swift run from an isolated virtualenv
(:mod:`sandbox.openstack.env`), as child processes that never
outlive this one; the emulators run in this process, each on its own port.
Keystone is bootstrapped like ``keystone-manage bootstrap`` would: an ``admin``
user and project, regions ``RegionOne`` and ``RegionTwo``, a ``lifeboat``
project and user (role ``member``), a ``service`` user (roles ``service`` and
``admin``) that Swift and the emulators validate tokens with, and the catalog.

Every public catalog endpoint points at its own
:class:`~sandbox.faults.FaultProxy` (one per region and service,
plus one for Keystone), so a test can fail one region's API plane and leave the
other alone: ``world.proxy("RegionOne", "compute").set_faults(FaultSpec(throttle=1))``.
The ``internal`` identity endpoints point straight at Keystone: it is the path
the services use to validate tokens, which a client-side API-plane fault does
not break.

Pointing the catalog at a nova-api of your own (opt-in, untested)
------------------------------------------------------------------
The tests never run a real Nova (it needs a hypervisor or the fake virt driver,
Placement, Neutron, a message queue and a database, none of which runs here), and no
test has run against one: what follows is plumbing that swaps the catalog's ``compute``
entry, not a supported or verified set-up. Tests that need the emulator's hooks fail
against it (those of ``tests/integration/test_sandbox_openstack.py`` skip). Run
nova-api (for instance from devstack) on a loopback address, configured to
trust this Keystone::

    [keystone_authtoken]
    www_authenticate_uri = http://127.0.0.1:<port>/v3
    auth_url = http://127.0.0.1:<port>/v3
    auth_type = password
    username = service
    password = <the service password>
    project_name = service
    user_domain_id = default
    project_domain_id = default

then start the world with a fixed Keystone port and service password and the
Nova URL (the fixture :func:`OpenStackWorld.from_environment` reads them)::

    LIFEBOAT_OPENSTACK_KEYSTONE_PORT=35357
    LIFEBOAT_OPENSTACK_SERVICE_PASSWORD=<the service password>
    LIFEBOAT_OPENSTACK_NOVA_URL=http://127.0.0.1:8774/v2.1    # every region, or
    LIFEBOAT_OPENSTACK_NOVA_URL=RegionOne=http://127.0.0.1:8774/v2.1,RegionTwo=http://127.0.0.1:18774/v2.1

The catalog's ``compute`` entry of those regions then points at a fault proxy
in front of the real Nova; :meth:`OpenStackWorld.nova` raises for them, so tests
that need the emulator's hooks should check :meth:`OpenStackWorld.compute_emulated`.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openstack
import yaml
from yarl import URL

from sandbox.faults import Cloud, FaultProxy
from sandbox.openstack.base import EmulatedService, KeystoneTokenValidator, ServiceCredentials
from sandbox.openstack.cinder import BackupStore, CinderEmulator
from sandbox.openstack.designate import DesignateEmulator
from sandbox.openstack.env import OpenStackEnv
from sandbox.openstack.nova import NovaEmulator
from sandbox.procs import ChildProcess, Service, free_loopback_port, require_loopback

logger = logging.getLogger(__name__)

DEFAULT_REGIONS: Mapping[str, tuple[str, ...]] = {
    "RegionOne": ("az-1a", "az-1b", "az-1c"),
    "RegionTwo": ("az-2a", "az-2b", "az-2c"),
}
CLOUD_NAME = "lifeboat"
DOMAIN = "Default"
ADMIN_USER = ADMIN_PROJECT = "admin"
LIFEBOAT_USER = LIFEBOAT_PROJECT = "lifeboat"
SERVICE_USER = SERVICE_PROJECT = "service"

IDENTITY = "identity"
OBJECT_STORE = "object-store"
COMPUTE = "compute"
DNS = "dns"
VOLUME = "volumev3"
REGIONAL_SERVICES = (OBJECT_STORE, COMPUTE, DNS, VOLUME)
_SERVICE_NAMES = {
    IDENTITY: ("keystone", "Identity"),
    OBJECT_STORE: ("swift", "Object Storage"),
    COMPUTE: ("nova", "Compute (emulated)"),
    DNS: ("designate", "DNS (emulated)"),
    VOLUME: ("cinderv3", "Block Storage v3 (emulated)"),
}
# How the fault proxies classify requests (openstacksdk's service-type names).
_PROXY_SERVICE = {
    IDENTITY: "identity",
    OBJECT_STORE: "object-store",
    COMPUTE: "compute",
    DNS: "dns",
    VOLUME: "block-storage",
}

NOVA_URL_ENV = "LIFEBOAT_OPENSTACK_NOVA_URL"
KEYSTONE_PORT_ENV = "LIFEBOAT_OPENSTACK_KEYSTONE_PORT"
SERVICE_PASSWORD_ENV = "LIFEBOAT_OPENSTACK_SERVICE_PASSWORD"  # noqa: S105 - a variable name

_HOST = "127.0.0.1"
_START_ATTEMPTS = 3  # a port picked for Keystone can be taken before uWSGI binds it
_UNIX_SOCKET_PATH_MAX = 100
_SWIFT_SERVERS = ("proxy", "account", "container", "object")
_PORT_TAKEN = "Address already in use"  # what uWSGI logs when Keystone's port is taken


class OpenStackWorldError(RuntimeError):
    """The OpenStack part of the sandbox could not be started."""


class _PortTakenError(OpenStackWorldError):
    """Keystone's port was taken before uWSGI could bind it."""


@dataclass(frozen=True)
class Credentials:
    """Password credentials for one user, scoped to one project."""

    auth_url: str
    username: str
    password: str = field(repr=False)
    project_name: str
    user_domain_name: str = DOMAIN
    project_domain_name: str = DOMAIN

    def auth(self) -> dict[str, str]:
        """The ``auth`` mapping of openstacksdk and clouds.yaml."""
        return {
            "auth_url": self.auth_url,
            "username": self.username,
            "password": self.password,
            "project_name": self.project_name,
            "user_domain_name": self.user_domain_name,
            "project_domain_name": self.project_domain_name,
        }


@dataclass
class _Region:
    name: str
    zones: tuple[str, ...]
    swift: _SwiftRegion
    nova: NovaEmulator | None
    designate: DesignateEmulator
    cinder: CinderEmulator
    real_nova_url: str | None
    proxies: dict[str, FaultProxy] = field(default_factory=dict)

    def emulators(self) -> list[EmulatedService]:
        found: list[EmulatedService] = [self.designate, self.cinder]
        if self.nova is not None:
            found.insert(0, self.nova)
        return found


class OpenStackWorld(Service):
    """Keystone, per-region Swift, emulated Nova/Designate/Cinder and a fault proxy per endpoint.

    ``start()`` (or ``with``) brings everything up and returns when Keystone
    authenticates and every Swift answers; ``stop()`` ends the child
    processes, proxies and emulators and removes the working directory
    (unless ``keep``). Call ``start()`` from the main thread: child processes
    are tied to the thread that starts them (see
    :class:`~sandbox.procs.ChildProcess`).
    """

    log_tail_lines = 40

    def __init__(
        self,
        env: OpenStackEnv,
        *,
        regions: Mapping[str, tuple[str, ...]] = DEFAULT_REGIONS,
        workdir: Path | None = None,
        keep: bool = False,
        nova_urls: Mapping[str, str] | None = None,
        keystone_port: int = 0,
        service_password: str | None = None,
        startup_timeout: float = 180.0,
        swift_proxy_process: bool = False,
        shared_backup_store: bool = True,
        log: Callable[[str], None] = logger.info,
    ) -> None:
        """``swift_proxy_process`` serves each region's Swift proxy from a second process
        (the account, container and object servers stay in the first): one more
        interpreter per region (~100 MiB), for load that would hold one core.
        ``shared_backup_store``: every region's Cinder keeps its backups in one store, so
        each region can restore the others' backups (False: a store per region, and a
        restore of another region's backup fails, as in a real cloud whose regions'
        backup services reach different stores)."""
        super().__init__("OpenStack world")
        if not regions:
            raise ValueError("an OpenStack world needs at least one region")
        unknown = set(nova_urls or {}) - set(regions)
        if unknown:
            raise ValueError(f"Nova URLs given for unknown regions {sorted(unknown)}")
        self.env = env
        self.region_zones = {name: tuple(zones) for name, zones in regions.items()}
        self.keep = keep
        self.startup_timeout = startup_timeout
        self.swift_proxy_process = swift_proxy_process
        self.backup_store = BackupStore("backups") if shared_backup_store else None
        """The store every region's Cinder backs up to (None: one per region)."""
        self._requested_workdir = workdir
        self._nova_urls = dict(nova_urls or {})
        for url in self._nova_urls.values():
            _loopback_url(url)
        self._requested_keystone_port = keystone_port
        self._log = log
        self._passwords = {
            ADMIN_USER: secrets.token_urlsafe(18),
            LIFEBOAT_USER: secrets.token_urlsafe(18),
            SERVICE_USER: service_password or secrets.token_urlsafe(18),
        }
        self._workdir: Path | None = None
        self._scratch_dirs: list[Path] = []
        self._keystone: ChildProcess | None = None
        self._keystone_port = 0
        self._keystone_proxy: FaultProxy | None = None
        self._validator: KeystoneTokenValidator | None = None
        self._regions: dict[str, _Region] = {}
        self.started_in: float | None = None

    @classmethod
    def from_environment(cls, env: OpenStackEnv, **kwargs: Any) -> OpenStackWorld:
        """A world configured by ``$LIFEBOAT_OPENSTACK_*`` too (see the module docstring)."""
        regions: Mapping[str, tuple[str, ...]] = kwargs.get("regions", DEFAULT_REGIONS)
        nova = os.environ.get(NOVA_URL_ENV, "").strip()
        if nova and "nova_urls" not in kwargs:
            kwargs["nova_urls"] = _parse_nova_urls(nova, tuple(regions))
        port = os.environ.get(KEYSTONE_PORT_ENV, "").strip()
        if port and "keystone_port" not in kwargs:
            if not port.isdigit():
                raise OpenStackWorldError(f"${KEYSTONE_PORT_ENV} must be a port number: {port!r}")
            kwargs["keystone_port"] = int(port)
        password = os.environ.get(SERVICE_PASSWORD_ENV)
        if password and "service_password" not in kwargs:
            kwargs["service_password"] = password
        return cls(env, **kwargs)

    def __repr__(self) -> str:
        state = f"Keystone at {self.auth_url}" if self._keystone is not None else "stopped"
        return f"<OpenStackWorld {list(self.region_zones)} {state}>"

    # --- lifecycle

    def _start(self) -> None:
        started = time.monotonic()
        attempts = 1 if self._requested_keystone_port else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                break
            except _PortTakenError:
                self._stop()
                if attempt == attempts:
                    raise
                self._log("Keystone's port was taken before it could bind it; starting again")
        self.started_in = time.monotonic() - started
        self._log(f"OpenStack ready in {self.started_in:.1f} s: {self.describe()}")

    def _stop(self) -> None:
        """Stop everything this world started."""
        keystone, self._keystone = self._keystone, None
        if keystone is not None:
            keystone.stop()
        for region in self._regions.values():
            region.swift.stop()
            for proxy in region.proxies.values():
                proxy.stop()
            for emulator in region.emulators():
                emulator.stop()
        self._regions.clear()
        keystone_proxy, self._keystone_proxy = self._keystone_proxy, None
        if keystone_proxy is not None:
            keystone_proxy.stop()
        for scratch in self._scratch_dirs:
            shutil.rmtree(scratch, ignore_errors=True)
        self._scratch_dirs.clear()
        workdir, self._workdir = self._workdir, None
        if workdir is not None and not self.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    def _startup_error(self, message: str, exited: ChildProcess | None) -> Exception:
        keystone = self._keystone
        if (
            exited is keystone
            and keystone
            and _PORT_TAKEN in keystone.log_tail(self.log_tail_lines)
        ):
            return _PortTakenError(f"Keystone's port was taken: {message}")
        return OpenStackWorldError(message)

    # --- accessors

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise OpenStackWorldError("the OpenStack world is not running")
        return self._workdir

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self.region_zones)

    def zones(self, region: str) -> tuple[str, ...]:
        return self.region_zones[region]

    @property
    def keystone_url(self) -> str:
        """Keystone itself (the services' internal path), not through the fault proxy."""
        if not self._keystone_port:
            raise OpenStackWorldError("the OpenStack world is not running")
        return f"http://{_HOST}:{self._keystone_port}"

    @property
    def auth_url(self) -> str:
        """The public identity v3 URL clients authenticate against (Keystone's fault proxy)."""
        return f"{self.keystone_proxy.url}/v3"

    @property
    def keystone_proxy(self) -> FaultProxy:
        if self._keystone_proxy is None:
            raise OpenStackWorldError("the OpenStack world is not running")
        return self._keystone_proxy

    @property
    def credentials(self) -> Credentials:
        """The ``lifeboat`` user in the ``lifeboat`` project (role ``member``)."""
        return Credentials(
            self.auth_url, LIFEBOAT_USER, self._passwords[LIFEBOAT_USER], LIFEBOAT_PROJECT
        )

    @property
    def admin_credentials(self) -> Credentials:
        return Credentials(self.auth_url, ADMIN_USER, self._passwords[ADMIN_USER], ADMIN_PROJECT)

    @property
    def service_credentials(self) -> Credentials:
        """The user Swift and the emulators validate tokens with (roles service, admin)."""
        return Credentials(
            f"{self.keystone_url}/v3",
            SERVICE_USER,
            self._passwords[SERVICE_USER],
            SERVICE_PROJECT,
        )

    def clouds_yaml(self, *, admin: bool = False) -> str:
        """A clouds.yaml for the cloud ``lifeboat``: every region, the first by default."""
        credentials = self.admin_credentials if admin else self.credentials
        cloud = {
            "auth_type": "password",
            "auth": credentials.auth(),
            "regions": list(self.region_zones),
            "identity_api_version": 3,
            "interface": "public",
        }
        return yaml.safe_dump({"clouds": {CLOUD_NAME: cloud}}, sort_keys=False)

    def connection(self, region: str | None = None, *, admin: bool = False) -> Any:
        """An openstacksdk Connection as ``lifeboat`` (or ``admin``), for one region.

        Ignores the environment's ``OS_*`` variables and clouds.yaml files.
        """
        region = region or self.regions[0]
        if region not in self.region_zones:
            raise ValueError(f"unknown region {region!r}; regions: {self.regions}")
        credentials = self.admin_credentials if admin else self.credentials
        return openstack.connect(
            load_yaml_config=False,
            load_envvars=False,
            auth_type="password",
            auth=credentials.auth(),
            region_name=region,
            identity_api_version="3",
            interface="public",
        )

    def direct_connection(self, region: str | None = None, *, admin: bool = False) -> Any:
        """Like :meth:`connection`, but past every fault proxy: Keystone, Swift, Nova,
        Designate and Cinder are reached directly, so faults set on the proxies do not
        touch it and the proxies do not count its requests (set-up and checks in tests).
        """
        region = region or self.regions[0]
        if region not in self.region_zones:
            raise ValueError(f"unknown region {region!r}; regions: {self.regions}")
        credentials = self.admin_credentials if admin else self.credentials
        state = self._region(region)
        compute = state.real_nova_url or f"{self.nova(region).url}{self.nova(region).endpoint_path}"
        return openstack.connect(
            load_yaml_config=False,
            load_envvars=False,
            auth_type="password",
            auth={**credentials.auth(), "auth_url": f"{self.keystone_url}/v3"},
            region_name=region,
            identity_api_version="3",
            interface="public",
            compute_endpoint_override=compute,
            dns_endpoint_override=state.designate.url,
            # keystoneauth fills in the token's project; with the API version given the
            # SDK trusts the override instead of discovering versions at the raw template.
            block_storage_endpoint_override=f"{state.cinder.url}/v3/%(project_id)s",
            block_storage_api_version="3",
            object_store_endpoint_override=f"{state.swift.proxy_url}/v1/AUTH_%(project_id)s",
        )

    def proxy(self, region: str, service: str) -> FaultProxy:
        """The fault proxy in front of ``service`` (a catalog type) of ``region``.

        ``identity`` gives Keystone's proxy, which every region shares.
        """
        if service == IDENTITY:
            return self.keystone_proxy
        if service == "block-storage":
            service = VOLUME
        try:
            return self._region(region).proxies[service]
        except KeyError:
            raise KeyError(
                f"no service {service!r} in region {region}; services: "
                f"{[IDENTITY, *REGIONAL_SERVICES]}"
            ) from None

    def proxies(self) -> dict[tuple[str, str], FaultProxy]:
        """Every fault proxy by (region, service); Keystone's under ("global", "identity")."""
        found = {("global", IDENTITY): self.keystone_proxy}
        for region in self._regions.values():
            found.update({(region.name, s): p for s, p in region.proxies.items()})
        return found

    def compute_emulated(self, region: str) -> bool:
        return self._region(region).nova is not None

    def nova(self, region: str) -> NovaEmulator:
        nova = self._region(region).nova
        if nova is None:
            raise OpenStackWorldError(
                f"{region}'s compute is a real Nova ({self._nova_urls[region]}), not the emulator"
            )
        return nova

    def designate(self, region: str) -> DesignateEmulator:
        return self._region(region).designate

    def cinder(self, region: str) -> CinderEmulator:
        return self._region(region).cinder

    def swift_url(self, region: str) -> str:
        """Swift's proxy server itself, not through the fault proxy."""
        return self._region(region).swift.proxy_url

    def process_ids(self) -> list[int]:
        """The child processes (Keystone, one Swift per region), for resource accounting."""
        children = [self._keystone] + [r.swift.child for r in self._regions.values()]
        return [c.pid for c in children if c is not None and c.pid is not None]

    def reset_faults(self) -> None:
        """Clear every proxy's faults and bring downed proxies up; emulator zones healthy."""
        for proxy in self.proxies().values():
            proxy.clear_faults()
            if proxy.is_down:
                proxy.up()
        for region in self._regions.values():
            for zone in region.zones:
                if region.nova is not None:
                    region.nova.set_zone_available(zone, True)
                    region.nova.set_zone_capacity(zone, None)
                region.cinder.set_zone_available(zone, True)
                region.cinder.set_zone_capacity(zone, None)

    def describe(self) -> str:
        """A one-line summary of the endpoints."""
        parts = [f"Keystone {self.auth_url} (direct {self.keystone_url})"]
        for region in self._regions.values():
            services = ", ".join(f"{s} {p.url}" for s, p in region.proxies.items())
            parts.append(f"{region.name}: {services}")
        return "; ".join(parts)

    def _region(self, name: str) -> _Region:
        try:
            return self._regions[name]
        except KeyError:
            raise KeyError(
                f"unknown or stopped region {name!r}; regions: {list(self._regions)}"
            ) from None

    # --- starting

    def _start_once(self) -> None:
        workdir = self._make_workdir()
        self._keystone_port = self._requested_keystone_port or free_loopback_port(_HOST)
        keystone_direct = f"http://{_HOST}:{self._keystone_port}"
        self._keystone_proxy = FaultProxy(
            keystone_direct,
            name="openstack-keystone",
            cloud=Cloud.OPENSTACK,
            default_service=_PROXY_SERVICE[IDENTITY],
        )
        self._keystone_proxy.start()
        service = self.service_credentials
        self._validator = KeystoneTokenValidator(
            ServiceCredentials(
                auth_url=service.auth_url,
                username=service.username,
                password=service.password,
                project_name=service.project_name,
            )
        )
        deadline = time.monotonic() + self.startup_timeout
        for name, zones in self.region_zones.items():
            self._regions[name] = region = self._start_region(name, zones, workdir, deadline)
            self._add_proxies(region, region.swift.ports["proxy"])
        self._start_keystone(workdir, deadline)
        for region in self._regions.values():
            region.swift.wait_until_serving()

    def _make_workdir(self) -> Path:
        if self._requested_workdir is not None:
            workdir = self._requested_workdir
            workdir.mkdir(parents=True, exist_ok=True)
            # A previous start's Keystone database and Swift rings name other ports.
            for stale in [workdir / "keystone", *workdir.glob("swift-*")]:
                shutil.rmtree(stale, ignore_errors=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="lifeboat-openstack-"))
        self._workdir = workdir
        return workdir

    def _start_region(
        self, name: str, zones: tuple[str, ...], workdir: Path, deadline: float
    ) -> _Region:
        assert self._validator is not None  # set by _start_once
        directory = workdir / f"swift-{name}"
        log_socket = directory / "log.sock"
        if len(str(log_socket)) > _UNIX_SOCKET_PATH_MAX:  # AF_UNIX paths are short
            short = Path(tempfile.mkdtemp(prefix="lbsw-", dir="/tmp"))
            self._scratch_dirs.append(short)
            log_socket = short / "log.sock"
        swift = _SwiftRegion(
            self.env,
            region=name,
            directory=directory,
            log_socket=log_socket,
            keystone_url=self.keystone_url,
            public_auth_url=self.auth_url,
            service=self.service_credentials,
            proxy_process=self.swift_proxy_process,
            deadline=deadline,
        )
        swift.start()
        emulator_options: dict[str, Any] = {
            "validator": self._validator,
            "www_authenticate_uri": self.auth_url,
        }
        real_nova = self._nova_urls.get(name)
        nova = None if real_nova else NovaEmulator(name, zones, **emulator_options)
        region = _Region(
            name=name,
            zones=zones,
            swift=swift,
            nova=nova,
            designate=DesignateEmulator(name, **emulator_options),
            # This cloud lets project members move backups between regions (Cinder's
            # default policy keeps export and import to admins).
            cinder=CinderEmulator(
                name,
                zones,
                backup_record_roles=("admin", "member"),
                backup_store=self.backup_store,
                **emulator_options,
            ),
            real_nova_url=real_nova,
        )
        for emulator in region.emulators():
            emulator.start()
        return region

    def _add_proxies(self, region: _Region, swift_proxy_port: int) -> None:
        upstreams = {
            OBJECT_STORE: f"http://{_HOST}:{swift_proxy_port}",
            DNS: region.designate.url,
            VOLUME: region.cinder.url,
            COMPUTE: (
                _origin(region.real_nova_url)
                if region.real_nova_url
                else self.nova(region.name).url
            ),
        }
        for service in REGIONAL_SERVICES:
            proxy = FaultProxy(
                upstreams[service],
                name=f"openstack-{region.name}-{service}",
                cloud=Cloud.OPENSTACK,
                default_service=_PROXY_SERVICE[service],
            )
            proxy.start()
            region.proxies[service] = proxy

    def _catalog(self) -> list[dict[str, str]]:
        """Every endpoint: (type, region, interface, url); public ones through the proxies."""
        endpoints = []
        for region in self._regions.values():
            compute_path = (
                URL(region.real_nova_url).path.rstrip("/")
                if region.real_nova_url
                else self.nova(region.name).endpoint_path
            )
            urls = [
                (IDENTITY, "public", self.auth_url),
                (IDENTITY, "internal", f"{self.keystone_url}/v3"),
                (
                    OBJECT_STORE,
                    "public",
                    f"{region.proxies[OBJECT_STORE].url}/v1/AUTH_$(project_id)s",
                ),
                (COMPUTE, "public", region.proxies[COMPUTE].url + compute_path),
                (DNS, "public", region.proxies[DNS].url + region.designate.endpoint_path),
                (VOLUME, "public", region.proxies[VOLUME].url + region.cinder.endpoint_path),
            ]
            endpoints += [
                {"type": kind, "region": region.name, "interface": interface, "url": url}
                for kind, interface, url in urls
            ]
        return endpoints

    def _start_keystone(self, workdir: Path, deadline: float) -> None:
        directory = workdir / "keystone"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "keystone.conf"
        config.write_text(_keystone_config(directory), encoding="utf-8")
        plan = {
            "config_file": str(config),
            "done_marker": str(directory / "bootstrapped"),
            "admin": {
                "user": ADMIN_USER,
                "password": self._passwords[ADMIN_USER],
                "project": ADMIN_PROJECT,
            },
            "regions": list(self.region_zones),
            "identity": {"public": self.auth_url, "internal": f"{self.keystone_url}/v3"},
            "projects": [LIFEBOAT_PROJECT, SERVICE_PROJECT],
            "users": [
                {
                    "name": LIFEBOAT_USER,
                    "password": self._passwords[LIFEBOAT_USER],
                    "project": LIFEBOAT_PROJECT,
                    "roles": ["member"],
                },
                {
                    "name": SERVICE_USER,
                    "password": self._passwords[SERVICE_USER],
                    "project": SERVICE_PROJECT,
                    "roles": ["service", "admin"],
                },
            ],
            "services": [
                {"type": kind, "name": name, "description": description}
                for kind, (name, description) in _SERVICE_NAMES.items()
            ],
            "endpoints": self._catalog(),
        }
        plan_path = directory / "plan.json"
        plan_path.write_text(json.dumps(plan, indent=2), encoding="utf-8")
        plan_path.chmod(0o600)  # holds passwords
        app = directory / "keystone_app.py"
        app.write_text(_KEYSTONE_APP, encoding="utf-8")
        argv = [
            str(self.env.uwsgi),
            "--http11-socket",
            f"{_HOST}:{self._keystone_port}",
            "--wsgi-file",
            str(app),
            "--need-app",
            "--strict",
            "--die-on-term",
            # One process: the in-memory token cache is per process. Threads serve in parallel.
            "--processes",
            "1",
            "--threads",
            "4",
            "--buffer-size",
            "65535",
            "--disable-logging",
            "--chdir",
            str(directory),
        ]
        child = ChildProcess(
            argv,
            log_path=directory / "keystone.log",
            name="keystone",
            env=self.env.environ({"LIFEBOAT_KEYSTONE_PLAN": str(plan_path)}),
        )
        self._keystone = child
        child.start()
        self._await_ready(
            functools.partial(_not_answering, f"{self.keystone_url}/v3"),
            what=f"Keystone on {self.keystone_url}",
            deadline=deadline,
            children=[child],
        )


# --- Swift -----------------------------------------------------------------------------------


class _SwiftRegion(Service):
    """One region's Swift all-in-one: configuration files, the child process, readiness.

    ``start()`` writes the configuration, starts the process and returns once its servers
    have bound their ports (:attr:`ports`); :meth:`wait_until_serving` waits for them to
    answer (the world starts Keystone in between).
    """

    log_tail_lines = 40

    def __init__(
        self,
        env: OpenStackEnv,
        *,
        region: str,
        directory: Path,
        log_socket: Path,
        keystone_url: str,
        public_auth_url: str,
        service: Credentials,
        proxy_process: bool = False,
        deadline: float,
    ) -> None:
        super().__init__(f"Swift {region}")
        self.env = env
        self.region = region
        self.deadline = deadline
        self.proxy_process = proxy_process
        self.directory = directory
        self.log_socket = log_socket
        self.keystone_url = keystone_url
        self.public_auth_url = public_auth_url
        self.service = service
        self.child: ChildProcess | None = None
        self.ports: dict[str, int] = {}

    @property
    def proxy_url(self) -> str:
        return f"http://{_HOST}:{self.ports['proxy']}"

    def _start(self) -> None:
        (self.directory / "devices" / "sdb1").mkdir(parents=True, exist_ok=True)
        files = _swift_configs(self)
        for name, text in files.items():
            path = self.directory / name
            path.write_text(text, encoding="utf-8")
            path.chmod(0o600)  # the proxy's holds the service password
        plan = {
            "region": self.region,
            "host": _HOST,
            "swift_dir": str(self.directory),
            "device": "sdb1",
            "part_power": 8,
            "ports_file": str(self.directory / "ports.json"),
            "log_socket": str(self.log_socket),
            "proxy_process": self.proxy_process,
            "configs": {s: str(self.directory / f"{s}-server.conf") for s in _SWIFT_SERVERS},
        }
        plan_path = self.directory / "plan.json"
        plan_path.write_text(json.dumps(plan, indent=2), encoding="utf-8")
        launcher = self.directory / "swift_all_in_one.py"
        launcher.write_text(_SWIFT_LAUNCHER, encoding="utf-8")
        self.child = child = ChildProcess(
            [str(self.env.python), str(launcher), str(plan_path)],
            log_path=self.directory / "swift.log",
            name=f"swift {self.region}",
            env=self.env.environ(),
        )
        child.start()
        ports_file = self.directory / "ports.json"
        self._await_ready(
            lambda: None if ports_file.exists() else "no ports file yet",
            what=f"Swift {self.region} to bind its ports",
            deadline=self.deadline,
            children=[child],
        )
        self.ports = {k: int(v) for k, v in json.loads(ports_file.read_text()).items()}

    def wait_until_serving(self) -> None:
        if self.child is None:
            raise OpenStackWorldError(f"Swift {self.region} is not running")
        for server in _SWIFT_SERVERS:
            self._await_ready(
                functools.partial(
                    _not_answering, f"http://{_HOST}:{self.ports[server]}/healthcheck"
                ),
                what=f"Swift {self.region} {server} server",
                deadline=self.deadline,
                children=[self.child],
            )

    def _stop(self) -> None:
        child, self.child = self.child, None
        if child is not None:
            child.stop()

    def _startup_error(self, message: str, exited: ChildProcess | None) -> Exception:
        return OpenStackWorldError(message)


def _swift_configs(swift: _SwiftRegion) -> dict[str, str]:
    """swift.conf and the paste configurations of the four servers."""
    common = (
        "[DEFAULT]\n"
        f"bind_ip = {_HOST}\n"
        "workers = 0\n"
        f"swift_dir = {swift.directory}\n"
        f"devices = {swift.directory / 'devices'}\n"
        "mount_check = false\n"
        "disable_fallocate = true\n"
        f"log_address = {swift.log_socket}\n"
        "log_level = INFO\n"
    )
    files = {
        "swift.conf": (
            "[swift-hash]\n"
            f"swift_hash_path_suffix = {secrets.token_hex(8)}\n"
            f"swift_hash_path_prefix = {secrets.token_hex(8)}\n\n"
            "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
        )
    }
    for server in ("account", "container", "object"):
        files[f"{server}-server.conf"] = (
            f"{common}\n[pipeline:main]\npipeline = healthcheck {server}-server\n\n"
            f"[app:{server}-server]\nuse = egg:swift#{server}\n\n"
            "[filter:healthcheck]\nuse = egg:swift#healthcheck\n"
        )
    middlewares = (
        "catch_errors gatekeeper healthcheck proxy-logging listing_formats bulk tempurl "
        "authtoken keystoneauth copy container-quotas account-quotas slo dlo "
        "versioned_writes symlink"
    )
    options = {"tempurl": "allowed_digests = sha256 sha512\n"}
    filters = "".join(
        f"\n[filter:{name}]\nuse = egg:swift#{name.replace('-', '_')}\n{options.get(name, '')}"
        for name in middlewares.split()
        if name not in ("authtoken", "keystoneauth")
    )
    service = swift.service
    files["proxy-server.conf"] = (
        f"{common}\n[pipeline:main]\npipeline = {middlewares} proxy-logging proxy-server\n\n"
        "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n"
        "[filter:authtoken]\n"
        "paste.filter_factory = keystonemiddleware.auth_token:filter_factory\n"
        f"www_authenticate_uri = {swift.public_auth_url}\n"
        f"auth_url = {swift.keystone_url}/v3\n"
        "auth_type = password\n"
        f"username = {service.username}\n"
        f"password = {service.password}\n"
        f"project_name = {service.project_name}\n"
        "user_domain_id = default\n"
        "project_domain_id = default\n"
        f"region_name = {swift.region}\n"
        "interface = internal\n"
        "delay_auth_decision = true\n\n"
        "[filter:keystoneauth]\nuse = egg:swift#keystoneauth\n"
        "operator_roles = admin, member\nreseller_admin_role = ResellerAdmin\n"
        f"{filters}"
    )
    return files


# --- helpers ---------------------------------------------------------------------------------


def _keystone_config(directory: Path) -> str:
    return (
        "[DEFAULT]\n"
        "debug = false\n\n"
        "[database]\n"
        f"connection = sqlite:///{directory / 'keystone.db'}\n\n"
        "[token]\nprovider = fernet\n\n"
        f"[fernet_tokens]\nkey_repository = {directory / 'fernet-keys'}\n\n"
        f"[fernet_receipts]\nkey_repository = {directory / 'fernet-receipts'}\n\n"
        f"[credential]\nkey_repository = {directory / 'credential-keys'}\n\n"
        # Without a cache every token validation costs ~0.5 s.
        "[cache]\nenabled = true\nbackend = dogpile.cache.memory\n\n"
        # Cheap password hashing: every connection authenticates with a password.
        "[identity]\npassword_hash_algorithm = bcrypt\npassword_hash_rounds = 4\n"
        "max_password_length = 72\n"
    )


def _not_answering(url: str) -> str | None:
    """``None`` once ``GET url`` answers 200; else what it answers."""
    status = _http_status(url)
    return None if status == 200 else f"GET {url}: {status or 'no answer'}"


def _http_status(url: str) -> int | None:
    """The status of ``GET url``, or None when nothing answers yet."""
    target = URL(url)
    connection = http.client.HTTPConnection(target.host or _HOST, target.port, timeout=5)
    try:
        connection.request("GET", target.path_qs)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


def _loopback_url(url: str) -> URL:
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or parsed.host is None:
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    require_loopback(parsed.host)
    return parsed


def _origin(url: str) -> str:
    parsed = _loopback_url(url)
    return str(parsed.origin())


def _parse_nova_urls(text: str, regions: tuple[str, ...]) -> dict[str, str]:
    """``URL`` (every region) or ``Region=URL,Region=URL``."""
    if "=" not in text:
        return dict.fromkeys(regions, text)
    urls = {}
    for item in text.split(","):
        region, _, url = item.partition("=")
        if not url:
            raise OpenStackWorldError(f"${NOVA_URL_ENV}: expected Region=URL, got {item!r}")
        urls[region.strip()] = url.strip()
    return urls


# --- programs run inside the OpenStack environment -------------------------------------------
# They are written into the world's directory at start-up and run by the isolated
# virtualenv's interpreter, which cannot import Lifeboat.

_KEYSTONE_APP = '''\
"""Keystone's WSGI application for the Lifeboat sandbox, bootstrapped on its first load.

Runs inside uWSGI. Reads the plan named by $LIFEBOAT_KEYSTONE_PLAN. The first
load does, in this one process, what `keystone-manage db_sync`, `fernet_setup`,
`credential_setup` and `bootstrap` do, then creates the plan's regions,
projects, users, role grants, services and endpoints. Keystone's imports take
seconds: doing all of it in one process saves four interpreter starts.
"""

import json
import os
import uuid
from unittest import mock

import keystone.conf
from keystone.cmd import bootstrap
from keystone.common import fernet_utils, provider_api
from keystone.common.sql import upgrades
from keystone.credential.providers import fernet as credential_fernet
from keystone.server.flask import core

CONF = keystone.conf.CONF
PROVIDERS = provider_api.ProviderAPIs

with open(os.environ["LIFEBOAT_KEYSTONE_PLAN"], encoding="utf-8") as plan_file:
    PLAN = json.load(plan_file)


def key_repository(path, max_active_keys, group):
    keys = fernet_utils.FernetUtils(path, max_active_keys, group)
    keys.create_key_directory()
    if keys.validate_key_repository(requires_write=True):
        keys.initialize_key_repository()


def prepare_storage():
    """Schema and key repositories; runs once the configuration is parsed."""
    if os.path.exists(PLAN["done_marker"]):
        return
    upgrades.offline_sync_database_to_version()
    for group in ("fernet_tokens", "fernet_receipts"):
        options = getattr(CONF, group)
        key_repository(options.key_repository, options.max_active_keys, group)
    key_repository(CONF.credential.key_repository, credential_fernet.MAX_ACTIVE_KEYS, "credential")


def populate():
    admin = PLAN["admin"]
    # The application has loaded the backends, which keystone allows once per process:
    # the bootstrapper must use them instead of loading its own.
    with mock.patch.object(bootstrap.backends, "load_backends"):
        bootstrapper = bootstrap.Bootstrapper()
    bootstrapper.admin_username = admin["user"]
    bootstrapper.admin_password = admin["password"]
    bootstrapper.project_name = admin["project"]
    bootstrapper.admin_role_name = "admin"
    bootstrapper.service_name = "keystone"
    bootstrapper.region_id = PLAN["regions"][0]
    bootstrapper.public_url = PLAN["identity"]["public"]
    bootstrapper.internal_url = PLAN["identity"]["internal"]
    bootstrapper.immutable_roles = True
    bootstrapper.bootstrap()
    domain_id = bootstrapper.default_domain_id

    for region in PLAN["regions"][1:]:
        PROVIDERS.catalog_api.create_region({"id": region, "description": ""})

    projects = {admin["project"]: bootstrapper.project_id}
    for name in PLAN["projects"]:
        project_id = uuid.uuid4().hex
        project = {
            "id": project_id, "name": name, "domain_id": domain_id, "enabled": True,
            "description": "", "is_domain": False, "parent_id": domain_id,
        }
        PROVIDERS.resource_api.create_project(project_id, project)
        projects[name] = project_id

    roles = {role["name"]: role["id"] for role in PROVIDERS.role_api.list_roles()}
    for user in PLAN["users"]:
        created = PROVIDERS.identity_api.create_user({
            "name": user["name"], "domain_id": domain_id, "password": user["password"],
            "enabled": True, "default_project_id": projects[user["project"]],
        })
        for role in user["roles"]:
            PROVIDERS.assignment_api.create_grant(
                roles[role], user_id=created["id"], project_id=projects[user["project"]]
            )

    services = {s["type"]: s["id"] for s in PROVIDERS.catalog_api.list_services()}
    for service in PLAN["services"]:
        if service["type"] not in services:
            service_id = uuid.uuid4().hex
            PROVIDERS.catalog_api.create_service(service_id, {
                "id": service_id, "type": service["type"], "name": service["name"],
                "enabled": True, "description": service["description"],
            })
            services[service["type"]] = service_id
    existing = {
        (e["service_id"], e["region_id"], e["interface"])
        for e in PROVIDERS.catalog_api.list_endpoints()
    }
    for endpoint in PLAN["endpoints"]:
        key = (services[endpoint["type"]], endpoint["region"], endpoint["interface"])
        if key not in existing:
            endpoint_id = uuid.uuid4().hex
            PROVIDERS.catalog_api.create_endpoint(endpoint_id, {
                "id": endpoint_id, "service_id": key[0], "region_id": key[1],
                "interface": key[2], "url": endpoint["url"], "enabled": True,
            })
    with open(PLAN["done_marker"], "w", encoding="utf-8") as marker:
        marker.write("bootstrapped\\n")


application = core.initialize_application(
    name="public", post_log_configured_function=prepare_storage, config_files=[PLAN["config_file"]]
)
if not os.path.exists(PLAN["done_marker"]):
    populate()
'''

_SWIFT_LAUNCHER = '''\
"""One region's Swift for the Lifeboat sandbox: proxy, account, container and object servers.

Run by the isolated environment's interpreter: `python swift_all_in_one.py PLAN.json`.
Each server is the stock Swift WSGI application, loaded from its paste
configuration as `swift-<server>-server` loads it, served by eventlet on its own
loopback socket with Swift's own HTTP protocol class. The four run as green
threads of this one process (as in Swift's in-process functional tests),
which saves three interpreter starts and ~150 MiB per region. With the plan's
proxy_process (for load that would hold one core), the proxy is served by a
forked second process instead.

Order: bind every socket (port 0, the kernel picks) and write the ports to
the plan's ports_file; build the rings for those ports; load the applications;
serve until SIGTERM. What the servers log to syslog (the socket named by
log_address) is copied to stdout.
"""

import json
import os
import signal
import socket
import sys

SERVERS = ("proxy", "account", "container", "object")


def bind_sockets(plan):
    sockets = {}
    for server in SERVERS:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((plan["host"], 0))
        listener.listen(128)
        sockets[server] = listener
    ports = {server: listener.getsockname()[1] for server, listener in sockets.items()}
    partial = plan["ports_file"] + ".partial"
    with open(partial, "w", encoding="utf-8") as ports_file:
        json.dump(ports, ports_file)
    os.replace(partial, plan["ports_file"])
    return sockets, ports


def build_rings(plan, ports):
    from swift.common.ring import RingBuilder

    for ring in ("account", "container", "object"):
        builder = RingBuilder(part_power=plan["part_power"], replicas=1, min_part_hours=0)
        builder.add_dev({
            "region": 1, "zone": 1, "ip": plan["host"], "port": ports[ring],
            "device": plan["device"], "weight": 100.0, "meta": "",
        })
        builder.rebalance()
        builder.save(os.path.join(plan["swift_dir"], ring + ".builder"))
        builder.get_ring().save(os.path.join(plan["swift_dir"], ring + ".ring.gz"))


def relay_syslog(log_socket):
    while True:
        message = log_socket.recv(65536).decode("utf-8", "replace").rstrip("\\x00\\n")
        sys.stdout.write(message.split(">", 1)[-1] + "\\n")
        sys.stdout.flush()


def die_with_parent():
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def split_off_proxy(plan):
    """The servers this process serves, and what it calls once the rings are built.

    With the plan's proxy_process, fork before eventlet is imported (no hub is
    shared): the child serves the proxy once the parent has built the rings
    (it writes to a pipe), and dies with the parent; the parent serves the
    others and stops the child when it is stopped. Otherwise this one process
    serves all four.
    """
    if not plan.get("proxy_process"):
        return SERVERS, lambda: None
    parent = os.getpid()
    rings_built, announce = os.pipe()
    child = os.fork()
    if child == 0:
        die_with_parent()
        if os.getppid() != parent:
            os._exit(0)
        os.close(announce)
        os.read(rings_built, 1)  # returns when the parent writes or dies
        os.close(rings_built)
        return ("proxy",), None
    os.close(rings_built)

    def stop(*_):
        try:
            os.kill(child, signal.SIGTERM)
        finally:
            os._exit(0)

    def built():
        os.write(announce, b"1")
        os.close(announce)

    signal.signal(signal.SIGTERM, stop)
    return ("account", "container", "object"), built


def main(plan_path):
    with open(plan_path, encoding="utf-8") as plan_file:
        plan = json.load(plan_file)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sockets, ports = bind_sockets(plan)
    if os.path.exists(plan["log_socket"]):
        os.unlink(plan["log_socket"])
    log_listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log_listener.bind(plan["log_socket"])
    served, rings_built = split_off_proxy(plan)
    for server in SERVERS:
        if server not in served:
            sockets.pop(server).close()
    if rings_built is None:  # the proxy's own process: the other one relays every log
        log_listener.close()

    import eventlet
    import eventlet.wsgi
    from swift.common import constraints, utils, wsgi

    utils.monkey_patch()
    if rings_built is not None:
        build_rings(plan, ports)
        rings_built()
        eventlet.spawn(relay_syslog, eventlet.greenio.GreenSocket(log_listener))

    applications = {}
    for server in served:
        conf_path = plan["configs"][server]
        conf = wsgi.appconfig(conf_path, name=server + "-server")
        utils.set_swift_dir(conf.get("swift_dir"))
        utils.validate_configuration()
        applications[server] = wsgi.loadapp(conf_path, global_conf={"log_name": server + "-server"})
    threads = [
        eventlet.spawn(
            eventlet.wsgi.server,
            eventlet.greenio.GreenSocket(sockets[server]),
            applications[server],
            utils.NullLogger(),
            protocol=wsgi.SwiftHttpProtocol,
            custom_pool=eventlet.GreenPool(1024),
            socket_timeout=60.0,
            capitalize_response_headers=False,
            url_length_limit=constraints.MAX_REQUEST_LINE,
        )
        for server in served
    ]
    names = ", ".join(served)
    print(f"swift {names} for {plan['region']} serving on {json.dumps(ports)}", flush=True)
    for thread in threads:
        thread.wait()


if __name__ == "__main__":
    main(sys.argv[1])
'''
