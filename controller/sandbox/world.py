"""The whole local sandbox, assembled: what ``lifeboat demo``, ``lifeboat sandbox up`` and
the end-to-end tests run against.

* a real kube-apiserver + etcd (envtest style) with Lifeboat's CRDs and RBAC installed;
* moto in server mode, serving AWS for every region;
* one fault proxy per AWS region in front of moto, and one for global services
  (Route 53), so that each fails on its own;
* zonal endpoints of a sample app: one HTTP server per zone on its own loopback address;
* a Route 53 hosted zone for the app's DNS name.

The example resources in ``manifests/examples/sandbox`` are rendered with the addresses
started here and applied through the Kubernetes API, as a user would.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import boto3
import yaml

from controller.api.crd import KINDS
from controller.cli.generate import dump
from controller.operator.runner import OperatorConfig
from controller.sandbox.assets import Assets
from controller.sandbox.faults import FaultProxy
from controller.sandbox.kube import KubeControlPlane
from controller.sandbox.moto_server import MotoServer
from controller.sandbox.zones import ZoneFleet

CONTROLLER_NAMESPACE = "lifeboat-system"
SERVICE_ACCOUNT = "lifeboat"
GLOBAL = "global"
HOSTED_ZONE = "example.test."


@dataclass(frozen=True)
class SiteLayout:
    site: str
    region: str
    zones: tuple[str, ...]


DEFAULT_LAYOUT = (
    SiteLayout("use1", "us-east-1", ("us-east-1a", "us-east-1b", "us-east-1c")),
    SiteLayout("usw2", "us-west-2", ("us-west-2a", "us-west-2b", "us-west-2c")),
)


def manifests_dir() -> Path:
    """The repository's ``manifests/`` (or the copy shipped inside the wheel)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "manifests", package / "_manifests"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("manifests/ not found next to the controller package")


def _var(text: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_")


@dataclass
class Sandbox:
    """Start with :meth:`start` (or ``with``); everything stops on :meth:`stop`."""

    assets: Assets
    layout: tuple[SiteLayout, ...] = DEFAULT_LAYOUT
    keep: bool = False
    control_plane: KubeControlPlane | None = None
    """A control plane to use (and leave running) instead of starting one."""
    kube: KubeControlPlane = field(init=False)
    moto: MotoServer = field(init=False)
    proxies: dict[str, FaultProxy] = field(init=False, default_factory=dict)
    zones: ZoneFleet = field(init=False)
    access_key_id: str = field(init=False, default="AKIDLIFEBOATSANDBOX")
    secret_access_key: str = field(init=False, default_factory=lambda: secrets.token_urlsafe(24))
    operator_kubeconfig: Path = field(init=False)
    _started: list[Any] = field(init=False, default_factory=list)

    def start(self) -> Self:
        try:
            self.kube = self.control_plane or self._started_one(
                KubeControlPlane(self.assets, keep=self.keep)
            )
            self.moto = self._started_one(MotoServer())
            for region in [GLOBAL, *sorted({s.region for s in self.layout})]:
                proxy = FaultProxy(self.moto.url, name=f"aws-{region}")
                self.proxies[region] = self._started_one(proxy)
            pairs = [(s.site, z) for s in self.layout for z in s.zones]
            self.zones = self._started_one(ZoneFleet(pairs))
            self._install_lifeboat()
            self._create_hosted_zone()
            self._warm_moto()
        except BaseException:
            self.stop()
            raise
        return self

    def _started_one(self, component: Any) -> Any:
        component.start()
        self._started.append(component)
        return component

    def stop(self) -> None:
        for component in reversed(self._started):
            component.stop() if not isinstance(component, ZoneFleet) else component.close()
        self._started.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ set-up

    def _install_lifeboat(self) -> None:
        """CRDs, namespace, ServiceAccount and RBAC from manifests/, as a user installs them."""
        manifests = manifests_dir()
        self.kube.install_crds([manifests / "crds"])
        self.kube.kubectl("apply", "--server-side", "--filename", str(manifests / "rbac"))
        self.operator_kubeconfig = self.kube.service_account_kubeconfig(
            CONTROLLER_NAMESPACE, SERVICE_ACCOUNT, self.kube.workdir / "operator.kubeconfig"
        )

    def _warm_moto(self) -> None:
        """moto builds each region's EC2 data on the first call (seconds); do it now so
        that the API-plane latencies Lifeboat measures are those of a warm service."""
        for region in sorted({s.region for s in self.layout}):
            self.aws_client("ec2", region).describe_availability_zones()
            self.aws_client("sts", region).get_caller_identity()

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
        """What the example templates in manifests/examples/sandbox refer to."""
        values = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }
        for region, proxy in self.proxies.items():
            values[f"AWS_ENDPOINT_{_var(region)}"] = proxy.url
        for layout in self.layout:
            for zone in layout.zones:
                values[f"ZONE_{_var(layout.site)}_{_var(zone)}"] = self.zones.url(layout.site, zone)
        return values

    def example_documents(self) -> list[dict[str, Any]]:
        """The sandbox examples, rendered."""
        documents: list[dict[str, Any]] = []
        for path in sorted((manifests_dir() / "examples" / "sandbox").glob("*.yaml")):
            text = string.Template(path.read_text(encoding="utf-8")).substitute(self.variables())
            documents.extend(d for d in yaml.safe_load_all(text) if d)
        return documents

    def apply_examples(self) -> str:
        """Apply the rendered examples with kubectl; kubectl's own output."""
        rendered = "---\n".join(dump(d) for d in self.example_documents())
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

    def dns_weights(self, record: str = f"web.{HOSTED_ZONE}") -> dict[str, int]:
        """The weights of ``record``'s weighted record sets in moto, by site."""
        route53 = self.aws_client("route53")
        zone_id = route53.list_hosted_zones_by_name(DNSName=HOSTED_ZONE)["HostedZones"][0]["Id"]
        sets = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        return {
            r["SetIdentifier"]: int(r["Weight"])
            for r in sets
            if r["Name"] == record and "SetIdentifier" in r
        }

    def sites(self) -> Iterator[SiteLayout]:
        yield from self.layout


def crd_documents() -> list[dict[str, Any]]:
    """The CRDs as generated from the models (for checks without the repository)."""
    return [kind.crd() for kind in KINDS]
