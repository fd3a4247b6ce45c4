"""The backend registry: every CloudProvider type builds every capability it offers and
refuses the others with their reason; capacity drivers are found by kind; unknown types,
kinds at the wrong cloud and unusable credentials are refused in words."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any, get_args

import kubernetes.client
import pytest

from controller.api.models import CapacitySpec, CloudProviderSpec, ResilientAppSpec, Site
from controller.providers import protocols, registry
from controller.providers.backend import Capability, Cloud, capacity_kind
from controller.providers.errors import CapabilityUnsupported, ProviderUnavailable
from controller.providers.kubernetes.capacity import DeploymentsCapacity
from tests.unit.test_replication_providers import event_queues_at_openstack

REGIONS = {"aws": "us-east-1", "openstack": "RegionOne", "rfc2136": "dc1", "external-dns": "mgmt"}
KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""
SECRETS: Mapping[str, Mapping[str, str] | None] = {
    "rfc2136": {"tsig_secret": "c2VjcmV0LWtleQ=="},
    "external-dns": {"kubeconfig": KUBECONFIG},
}
SETTINGS: Mapping[str, dict[str, Any]] = {
    "rfc2136": {
        "rfc2136": {"server": "127.0.0.1", "zones": ["example.test"], "tsigKeyName": "lb"},
        "credentials": {"secretRef": {"name": "tsig"}},
    },
    "external-dns": {"externalDNS": {"namespace": "dns"}},
}
CAPACITY: Mapping[str, dict[str, Any]] = {
    "autoScalingGroup": {"name": "web-asg"},
    "openstackServers": {"namePrefix": "web", "flavor": "m1.small", "image": "cirros"},
    "kubernetesDeployments": {"namespace": "shop", "selector": {"app": "web"}},
}
PROTOCOLS: Mapping[Capability, type] = {
    Capability.TRAFFIC: protocols.TrafficManager,
    Capability.OBJECT_STORE: protocols.ObjectStore,
    Capability.CHANGE_FEED: protocols.ObjectChangeFeed,
    Capability.VOLUME_SNAPSHOTS: protocols.VolumeSnapshots,
    Capability.CAPACITY: protocols.CapacityDriver,
}


def spec(type_: str) -> CloudProviderSpec:
    return CloudProviderSpec.model_validate(
        {
            "type": type_,
            "regions": [REGIONS[type_]],
            "credentials": {"source": "Environment"},
            **SETTINGS.get(type_, {}),
        }
    )


def site(type_: str, kind: str, provider: str = "p") -> Site:
    return Site.model_validate(
        {
            "name": "s1",
            "provider": provider,
            "region": REGIONS[type_],
            "zones": ["z1", "z2"],
            "trafficTargets": ["192.0.2.1"],
            "capacity": {"perZone": 1, kind: CAPACITY[kind]},
        }
    )


def members(protocol: type) -> set[str]:
    """What an implementation of ``protocol`` must have: its methods and attributes."""
    names = {n for n in vars(protocol) if not n.startswith("_")}
    return names | set(getattr(protocol, "__annotations__", {}))


def build(cloud: Cloud, capability: Capability, type_: str) -> object:
    region = REGIONS[type_]
    kind = next(iter(registry.backend(type_).capacity_kinds), "autoScalingGroup")
    builders: dict[Capability, Callable[[], object]] = {
        Capability.TRAFFIC: lambda: cloud.traffic(region),
        Capability.OBJECT_STORE: lambda: cloud.object_store(region, "bucket"),
        Capability.CHANGE_FEED: lambda: cloud.change_feed(region, "queue"),
        Capability.VOLUME_SNAPSHOTS: lambda: cloud.volume_snapshots(region),
        Capability.CAPACITY: lambda: cloud.capacity(site(type_, kind)),
    }
    return builders[capability]()


@pytest.mark.parametrize("type_", sorted(registry.BACKENDS))
def test_every_type_builds_what_it_offers_and_refuses_the_rest(type_: str) -> None:
    cloud = registry.connect("p", spec(type_), SECRETS.get(type_))
    try:
        assert cloud.spec.type == type_ and cloud.connector.calls is not None
        for part, protocol in (
            (cloud.probe, protocols.ApiPlaneProbe),
            (cloud.identity, protocols.IdentityChecker),
        ):
            assert all(hasattr(part, m) for m in members(protocol)), part
        offered = registry.backend(type_).offers
        for capability in Capability:
            if capability in offered:
                built = build(cloud, capability, type_)
                missing = {m for m in members(PROTOCOLS[capability]) if not hasattr(built, m)}
                assert not missing, f"{type_} {capability.name}: {built!r} lacks {missing}"
            else:
                with pytest.raises(CapabilityUnsupported) as refused:
                    build(cloud, capability, type_)
                assert refused.value.reason == capability.unsupported_reason
                assert refused.value.capability is capability
                assert f"CloudProvider p (type {type_}) offers no" in str(refused.value)
    finally:
        cloud.close()


def test_openstack_sends_no_change_notices() -> None:
    assert registry.offering(Capability.CHANGE_FEED) == ("aws",)
    cloud = registry.connect("os", spec("openstack"), None)
    with pytest.raises(CapabilityUnsupported, match="offers no change notices") as refused:
        cloud.change_feed("RegionOne", "queue")
    assert refused.value.reason == "EventsUnsupported"


def test_the_crd_enum_and_the_registry_name_the_same_types() -> None:
    assert set(get_args(CloudProviderSpec.model_fields["type"].annotation)) == set(
        registry.BACKENDS
    )


def test_every_capacity_kind_of_the_crd_has_exactly_one_builder() -> None:
    kinds = [
        capacity_kind(CapacitySpec.model_validate({"perZone": 1, kind: template}))
        for kind, template in CAPACITY.items()
    ]
    assert kinds == list(CAPACITY)
    drivers = [
        info.alias or name
        for name, info in CapacitySpec.model_fields.items()
        if name not in ("per_zone", "standby_per_zone")
    ]
    for kind in drivers:
        builders = [t for t, b in registry.BACKENDS.items() if kind in b.capacity_kinds]
        builders += [kind] if kind in registry.SITE_CAPACITY else []
        assert len(builders) == 1, f"{kind}: built by {builders or 'nothing'}"


def test_an_unknown_type_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ProviderUnavailable) as refused:
        registry.backend("gcp")
    assert refused.value.reason == "UnknownProviderType"
    assert str(refused.value) == (
        "no backend for CloudProvider type 'gcp'; "
        "known types: aws, openstack, rfc2136, external-dns"
    )


@pytest.mark.parametrize(
    ("type_", "secret", "words"),
    [
        ("aws", {"aws_access_key_id": "AKIA"}, r"lacks key\(s\): aws_secret_access_key"),
        ("openstack", {"region": "RegionOne"}, "neither clouds.yaml"),
    ],
)
def test_unusable_credentials_are_incomplete_not_a_crash(
    type_: str, secret: dict[str, str], words: str
) -> None:
    with pytest.raises(ProviderUnavailable, match=words) as refused:
        registry.connect("p", spec(type_), secret)
    assert refused.value.reason == "CredentialsIncomplete"


class Clusters:
    def __init__(
        self, secrets: Mapping[str, Mapping[str, str]] | None = None, namespace: str = "shop"
    ) -> None:
        self.local = kubernetes.client.ApiClient()
        self.secrets = secrets or {}
        self.namespace = namespace

    async def secret(self, name: str) -> Mapping[str, str]:
        if name not in self.secrets:
            raise ProviderUnavailable("SecretNotFound", f"Secret {name} not found")
        return self.secrets[name]


async def test_capacity_is_built_by_kind_whatever_cloud_runs_kubernetes() -> None:
    clusters = Clusters()
    aws = registry.connect("aws", spec("aws"), None)
    driver = await registry.capacity_driver(site("aws", "kubernetesDeployments"), aws, clusters)
    assert isinstance(driver, DeploymentsCapacity) and driver.api is clusters.local
    asg = await registry.capacity_driver(site("aws", "autoScalingGroup"), aws, clusters)
    assert (asg.region, type(asg).__name__) == ("us-east-1", "AutoScalingGroupCapacity")


async def test_a_capacity_kind_at_the_wrong_cloud_is_unsupported() -> None:
    openstack = registry.connect("os", spec("openstack"), None)
    with pytest.raises(CapabilityUnsupported) as refused:
        await registry.capacity_driver(
            site("openstack", "autoScalingGroup", "os"), openstack, Clusters()
        )
    assert refused.value.reason == "CapacityUnsupported"
    assert str(refused.value) == (
        "site s1: capacity autoScalingGroup needs a CloudProvider of type aws, "
        "CloudProvider os is openstack"
    )


def kubernetes_site(**deployments: Any) -> Site:
    raw = site("aws", "kubernetesDeployments").model_dump(by_alias=True, exclude_none=True)
    raw["capacity"]["kubernetesDeployments"].update(deployments)
    return Site.model_validate(raw)


def provider_with(**extra: Any) -> Cloud:
    raw = {**spec("aws").model_dump(by_alias=True, exclude_none=True), **extra}
    return registry.connect("aws", CloudProviderSpec.model_validate(raw), None)


async def test_a_member_cluster_is_the_cloud_providers_with_its_kubeconfig_secret() -> None:
    aws = provider_with(clusters=[{"name": "east", "kubeconfigSecretRef": {"name": "member"}}])
    member = kubernetes_site(cluster="east")
    with pytest.raises(ProviderUnavailable, match="site s1, cluster east: Secret member not found"):
        await registry.capacity_driver(member, aws, Clusters())
    with pytest.raises(ProviderUnavailable, match="has no kubeconfig") as refused:
        await registry.capacity_driver(member, aws, Clusters({"member": {"other": "x"}}))
    assert refused.value.reason == "SecretKeyMissing"
    with pytest.raises(ProviderUnavailable) as refused:
        await registry.capacity_driver(kubernetes_site(cluster="west"), aws, Clusters())
    assert refused.value.reason == "ClusterNotFound"
    assert str(refused.value) == (
        "site s1: CloudProvider aws lists no member cluster west in spec.clusters"
    )


async def test_deployments_scale_in_the_apps_namespace_unless_the_provider_grants_more() -> None:
    aws = provider_with()
    own = await registry.capacity_driver(kubernetes_site(), aws, Clusters(namespace="shop"))
    assert isinstance(own, DeploymentsCapacity) and own.namespace == "shop"
    unset = kubernetes_site()
    raw = unset.model_dump(by_alias=True, exclude_none=True)
    del raw["capacity"]["kubernetesDeployments"]["namespace"]
    default = await registry.capacity_driver(
        Site.model_validate(raw), aws, Clusters(namespace="team")
    )
    assert isinstance(default, DeploymentsCapacity) and default.namespace == "team"
    with pytest.raises(ProviderUnavailable) as refused:
        await registry.capacity_driver(kubernetes_site(), aws, Clusters(namespace="tenant-a"))
    assert refused.value.reason == "NamespaceNotPermitted"
    assert "add shop to the CloudProvider's spec.tenancy.capacityNamespaces" in str(refused.value)
    granted = provider_with(tenancy={"capacityNamespaces": ["shop"]})
    other = await registry.capacity_driver(
        kubernetes_site(), granted, Clusters(namespace="tenant-a")
    )
    assert isinstance(other, DeploymentsCapacity) and other.namespace == "shop"


def test_what_an_app_asks_of_a_type_that_lacks_it_is_a_configuration_problem() -> None:
    raw = event_queues_at_openstack()
    raw["sites"][1]["capacity"] = {"perZone": 1, "autoScalingGroup": {"name": "web"}}
    spec = ResilientAppSpec.model_validate(raw)
    problems = registry.unsupported(spec, {"aws": "aws", "os": "openstack"}.get)
    assert [reason for reason, _ in problems] == ["EventsUnsupported", "CapacityUnsupported"]
    assert problems[1][1] == (
        "site usw2: capacity autoScalingGroup needs a CloudProvider of type aws, "
        "CloudProvider os is openstack"
    )
    assert registry.unsupported(spec, lambda _: None) == []  # unknown: reported elsewhere


def test_the_operator_does_not_import_openstacksdk_until_an_openstack_provider_is_used() -> None:
    code = (
        "import sys\n"
        "import controller.operator.handlers, controller.cli.main\n"
        "from controller.providers import registry\n"
        "assert 'openstack' not in sys.modules, 'openstacksdk imported at start'\n"
        "from controller.api.models import CloudProviderSpec\n"
        "spec = CloudProviderSpec.model_validate({'type': 'openstack', 'regions': ['R'],"
        " 'credentials': {'source': 'Environment'}})\n"
        "registry.connect('os', spec, None)\n"
        "assert 'openstack' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
