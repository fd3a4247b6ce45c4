"""The whole local sandbox, assembled: what ``lifeboat-sandbox demo``, ``lifeboat-sandbox up``
and the end-to-end tests run against.

* a real kube-apiserver + etcd (envtest style) with Lifeboat's CRDs and RBAC installed;
* moto in server mode, serving AWS for every region;
* one fault proxy per AWS region in front of moto, and one for global services
  (Route 53), so that each fails on its own;
* zonal endpoints of a sample app: one HTTP server per zone on its own loopback address;
* a Route 53 hosted zone for the app's DNS name;
* opt-in (``openstack=True``): an OpenStack cloud, :class:`OpenStackWorld` (real Keystone
  and Swift, emulated Nova, Designate and Cinder, a fault proxy per catalog endpoint), and
  zonal endpoints for one site per OpenStack region (``os1`` in RegionOne, ...).

The example resources in ``manifests/examples/sandbox`` (and, with OpenStack,
``manifests/examples/sandbox-openstack``) are rendered with the addresses and credentials
started here and applied through the Kubernetes API, as a user would.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
import kubernetes.client
import yaml

import controller
from controller.operator.runner import OperatorConfig
from controller.operator.shards import Shard
from sandbox.assets import Assets
from sandbox.faults import FaultProxy
from sandbox.fleets import Fleet, create_fleet
from sandbox.kube import KubeControlPlane
from sandbox.moto_server import MotoServer
from sandbox.openstack.cloud import OpenStackWorld
from sandbox.openstack.env import ensure_openstack_env
from sandbox.procs import Service
from sandbox.zones import ZoneFleet

CONTROLLER_NAMESPACE = "lifeboat-system"
SERVICE_ACCOUNT = "lifeboat"
GLOBAL = "global"
HOSTED_ZONE = "example.test."
S = TypeVar("S", bound=Service)


@dataclass(frozen=True)
class SiteLayout:
    site: str
    region: str
    zones: tuple[str, ...]


DEFAULT_LAYOUT = (
    SiteLayout("use1", "us-east-1", ("us-east-1a", "us-east-1b", "us-east-1c")),
    SiteLayout("usw2", "us-west-2", ("us-west-2a", "us-west-2b", "us-west-2c")),
)
FLEET_PER_ZONE = 2
EXAMPLES = "sandbox"
OPENSTACK_EXAMPLES = "sandbox-openstack"


def manifests_dir() -> Path:
    """The repository's ``manifests/`` (or the copy shipped inside the lifeboat wheel)."""
    package = Path(controller.__file__).resolve().parent
    for candidate in (package.parent / "manifests", package / "_manifests"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("manifests/ not found next to the controller package")


def install_lifeboat(kube: KubeControlPlane, *, token_seconds: int = 3600) -> Path:
    """CRDs, namespace, ServiceAccount and RBAC from manifests/, as a user installs them;
    the path of a kubeconfig that authenticates as Lifeboat's ServiceAccount (a token valid
    for ``token_seconds``)."""
    manifests = manifests_dir()
    kube.install_crds([manifests / "crds"])
    kube.kubectl("apply", "--server-side", "--filename", str(manifests / "rbac"))
    return kube.service_account_kubeconfig(
        CONTROLLER_NAMESPACE,
        SERVICE_ACCOUNT,
        kube.workdir / "operator.kubeconfig",
        expiration_seconds=token_seconds,
    )


def _var(text: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_")


@dataclass
class Sandbox(Service):
    """Start with :meth:`start` (or ``with``); everything stops on :meth:`stop`."""

    assets: Assets
    layout: tuple[SiteLayout, ...] = DEFAULT_LAYOUT
    keep: bool = False
    control_plane: KubeControlPlane | None = None
    """A control plane to use (and leave running) instead of starting one."""
    openstack: bool = False
    """Also run an OpenStack cloud, its sites' zonal endpoints and its examples."""
    openstack_world: OpenStackWorld | None = None
    """A running OpenStack world to use (and leave running) instead of starting one; given,
    it turns ``openstack`` on. Once started, the world in use either way."""
    openstack_layout: tuple[SiteLayout, ...] = field(init=False, default=())
    """One site per OpenStack region (``os1``, ``os2``, ...), with the world's zones."""
    kube: KubeControlPlane = field(init=False)
    moto: MotoServer = field(init=False)
    proxies: dict[str, FaultProxy] = field(init=False, default_factory=dict)
    fleets: dict[str, Fleet] = field(init=False, default_factory=dict)
    """The sample app's Auto Scaling group per AWS site."""
    zones: ZoneFleet = field(init=False)
    access_key_id: str = field(init=False, default="AKIDLIFEBOATSANDBOX")
    secret_access_key: str = field(init=False, default_factory=lambda: secrets.token_urlsafe(24))
    operator_kubeconfig: Path = field(init=False)
    _components: list[Service] = field(init=False, default_factory=list)
    """What this sandbox started, in order (a given control plane or world is not)."""

    def __post_init__(self) -> None:
        super().__init__("sandbox")

    def _start(self) -> None:
        self.kube = self.control_plane or self._started_one(
            KubeControlPlane(self.assets, keep=self.keep)
        )
        self.moto = self._started_one(MotoServer())
        for region in [GLOBAL, *sorted({s.region for s in self.layout})]:
            proxy = FaultProxy(self.moto.url, name=f"aws-{region}")
            self.proxies[region] = self._started_one(proxy)
        if self.openstack or self.openstack_world is not None:
            self._start_openstack()
        pairs = [(s.site, z) for s in self.sites() for z in s.zones]
        self.zones = self._started_one(ZoneFleet(pairs))
        self._install_lifeboat()
        self._create_hosted_zone()
        self._warm_moto()
        self._create_fleets()

    def _start_openstack(self) -> None:
        """Keystone, Swift and the emulators (unless a running world was given)."""
        self.openstack = True
        if self.openstack_world is None:
            world = OpenStackWorld(ensure_openstack_env(), keep=self.keep)
            self.openstack_world = self._started_one(world)
        world = self.openstack_world
        self.openstack_layout = tuple(
            SiteLayout(f"os{n}", region, world.zones(region))
            for n, region in enumerate(world.regions, start=1)
        )

    def _started_one(self, component: S) -> S:
        self._components.append(component)
        return component.start()

    def _stop(self) -> None:
        for component in reversed(self._components):
            component.stop()
        self._components.clear()

    # ------------------------------------------------------------------ set-up

    def _install_lifeboat(self) -> None:
        self.operator_kubeconfig = install_lifeboat(self.kube)

    def _warm_moto(self) -> None:
        """moto builds each region's EC2 data on the first call (seconds); do it now so
        that the API-plane latencies Lifeboat measures are those of a warm service."""
        for region in sorted({s.region for s in self.layout}):
            self.aws_client("ec2", region).describe_availability_zones()
            self.aws_client("sts", region).get_caller_identity()

    def _create_fleets(self) -> None:
        """A VPC, a subnet per zone and an Auto Scaling group for every AWS site."""
        for index, layout in enumerate(self.layout, start=1):
            self.fleets[layout.site] = create_fleet(
                self.aws_client, layout.site, layout.region, layout.zones, FLEET_PER_ZONE, index
            )

    def _create_hosted_zone(self) -> None:
        self.aws_client("route53").create_hosted_zone(
            Name=HOSTED_ZONE, CallerReference=secrets.token_hex(8)
        )

    # ------------------------------------------------------------------ accessors

    def aws_client(self, service: str, region: str = "us-east-1") -> Any:
        """A boto3 client straight to moto (bypassing the fault layer), for checks."""
        return boto3.client(  # type: ignore[call-overload]
            service,
            region_name=region,
            endpoint_url=self.moto.url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def variables(self) -> dict[str, str]:
        """What the example templates in manifests/examples/sandbox* refer to."""
        values = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }
        for region, proxy in self.proxies.items():
            values[f"AWS_ENDPOINT_{_var(region)}"] = proxy.url
        for layout in self.sites():
            for zone in layout.zones:
                values[f"ZONE_{_var(layout.site)}_{_var(zone)}"] = self.zones.url(layout.site, zone)
        for site, fleet in self.fleets.items():
            for zone, subnet in fleet.subnets.items():
                values[f"SUBNET_{_var(site)}_{_var(zone)}"] = subnet
        if self.openstack_world is not None:
            credentials = self.openstack_world.credentials
            values.update(
                OPENSTACK_AUTH_URL=credentials.auth_url,
                OPENSTACK_USERNAME=credentials.username,
                OPENSTACK_PASSWORD=credentials.password,
                OPENSTACK_PROJECT_NAME=credentials.project_name,
            )
        return values

    def example_sets(self) -> list[str]:
        """The example directories this sandbox renders (under manifests/examples)."""
        return [EXAMPLES, OPENSTACK_EXAMPLES] if self.openstack else [EXAMPLES]

    def example_documents(self, examples: str | None = None) -> list[dict[str, Any]]:
        """The sandbox examples, rendered: one set (``sandbox``, ``sandbox-openstack``), or
        every set this sandbox runs."""
        documents: list[dict[str, Any]] = []
        for name in [examples] if examples else self.example_sets():
            for path in sorted((manifests_dir() / "examples" / name).glob("*.yaml")):
                template = string.Template(path.read_text(encoding="utf-8"))
                text = template.substitute(self.variables())
                documents.extend(d for d in yaml.safe_load_all(text) if d)
        return documents

    def apply_examples(self) -> str:
        """Apply the rendered examples with kubectl; kubectl's own output."""
        rendered = "---\n".join(
            yaml.safe_dump(d, sort_keys=False) for d in self.example_documents()
        )
        return self.kube.kubectl("apply", "--server-side", "--filename=-", input=rendered).stdout

    def operator_config(self, **overrides: Any) -> OperatorConfig:
        """How to run the operator here: as its ServiceAccount, no metrics/health ports."""
        settings: dict[str, Any] = {
            "kubeconfig": str(self.operator_kubeconfig),
            "controller_namespace": CONTROLLER_NAMESPACE,
            "metrics_address": None,
            "liveness_endpoint": None,
            "lease_seconds": 5.0,
        }
        settings.update(overrides)
        return OperatorConfig(**settings)

    @contextmanager
    def shard_leases(self, shards: int) -> Iterator[None]:
        """The operator's Role granted the Leases of ``shards`` shards for the block, as
        docs/operations.md#shards tells a kubectl user to (the Helm chart renders them
        from its ``shards`` value); the Role as it was afterwards."""
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.kube.api_client())
        role = rbac.read_namespaced_role("lifeboat", CONTROLLER_NAMESPACE)
        before = [rule.resource_names for rule in role.rules or []]
        for rule in role.rules or []:
            if rule.resource_names == ["lifeboat"]:
                rule.resource_names = ["lifeboat"] + [
                    Shard(i, shards).lease_name for i in range(shards)
                ]
        rbac.replace_namespaced_role("lifeboat", CONTROLLER_NAMESPACE, role)
        try:
            yield
        finally:
            role = rbac.read_namespaced_role("lifeboat", CONTROLLER_NAMESPACE)
            for rule, names in zip(role.rules or [], before, strict=True):
                rule.resource_names = names
            rbac.replace_namespaced_role("lifeboat", CONTROLLER_NAMESPACE, role)

    def dns_weights(self, record: str = f"web.{HOSTED_ZONE}") -> dict[str, int]:
        """The weights of ``record``'s weighted record sets in moto, by site."""
        route53 = self.aws_client("route53")
        zone_id = route53.list_hosted_zones_by_name(DNSName=HOSTED_ZONE)["HostedZones"][0]["Id"]
        # From the record's own name: a zone holding a fleet's records has more than one
        # page of record sets (Route 53 gives at most 300 per call, in name order).
        sets = route53.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=record)[
            "ResourceRecordSets"
        ]
        return {
            r["SetIdentifier"]: int(r["Weight"])
            for r in sets
            if r["Name"] == record and "SetIdentifier" in r
        }

    def designate_values(self, record: str, region: str | None = None) -> tuple[str, ...]:
        """What Designate's name servers answer for ``record`` (A), in ``region`` (default:
        the first OpenStack region)."""
        if self.openstack_world is None:
            raise RuntimeError("this sandbox runs no OpenStack")
        designate = self.openstack_world.designate(region or self.openstack_world.regions[0])
        return tuple(sorted(designate.resolve(record, "A")))

    def sites(self) -> Iterator[SiteLayout]:
        """Every site with zonal endpoints: AWS's, then OpenStack's."""
        yield from self.layout
        yield from self.openstack_layout
