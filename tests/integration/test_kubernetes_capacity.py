"""Capacity on a Kubernetes site: Deployments per zone on the real API server."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest

from controller.api.models import Site
from controller.operator.capacity import CapacityDrivers
from controller.operator.kube import KubeClient
from controller.operator.providers import ProviderInfo, ProviderRegistry
from controller.providers.errors import ProviderUnavailable
from controller.providers.kubernetes.capacity import DeploymentsCapacity, client_from_kubeconfig
from sandbox.world import Sandbox

pytestmark = pytest.mark.integration

NAMESPACE = "capacity"


def deployment(zone: str, replicas: int, name: str | None = None) -> Any:
    labels = {"app": "web", "topology.kubernetes.io/zone": zone}
    return {
        "metadata": {"name": name or f"web-{zone}", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web", "zone": zone}},
            "template": {
                "metadata": {"labels": {"app": "web", "zone": zone}},
                "spec": {
                    "nodeSelector": {"topology.kubernetes.io/zone": zone},
                    "containers": [{"name": "web", "image": "example/web:1"}],
                },
            },
        },
    }


@pytest.fixture(scope="module")
def cluster(sandbox: Sandbox) -> kubernetes.client.ApiClient:
    api = sandbox.kube.api_client()
    kubernetes.client.CoreV1Api(api).create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=NAMESPACE))
    )
    apps = kubernetes.client.AppsV1Api(api)
    for body in (deployment("zone-a", 2), deployment("zone-b", 2), deployment("zone-c", 1)):
        apps.create_namespaced_deployment(NAMESPACE, body)
    apps.create_namespaced_deployment(NAMESPACE, deployment("zone-c", 1, name="web-zone-c-2"))
    return api


async def test_observe_and_evacuate_a_zone(cluster: kubernetes.client.ApiClient) -> None:
    driver = DeploymentsCapacity(cluster, NAMESPACE, {"app": "web"})
    state = await driver.observe()
    assert [(z.zone, z.desired, z.running) for z in state.zones] == [
        ("zone-a", 2, 0),  # no kubelet in the test cluster: nothing becomes ready
        ("zone-b", 2, 0),
        ("zone-c", 2, 0),
    ]
    await driver.set_zones({"zone-a": 0, "zone-b": 3, "zone-c": 3})
    state = await driver.observe()
    assert {z.zone: z.desired for z in state.zones} == {"zone-a": 0, "zone-b": 3, "zone-c": 3}
    listed: Any = kubernetes.client.AppsV1Api(cluster).list_namespaced_deployment(NAMESPACE)
    replicas: dict[str, int] = {d.metadata.name: d.spec.replicas for d in listed.items}
    assert replicas["web-zone-c"] + replicas["web-zone-c-2"] == 3  # spread over both


async def test_unknown_zone_is_refused(cluster: kubernetes.client.ApiClient) -> None:
    driver = DeploymentsCapacity(cluster, NAMESPACE, {"app": "web"})
    with pytest.raises(LookupError, match="zone-x"):
        await driver.set_zones({"zone-x": 1})


async def test_member_cluster_from_a_kubeconfig(sandbox: Sandbox) -> None:
    text = sandbox.kube.kubeconfig_path.read_text()
    driver = DeploymentsCapacity(client_from_kubeconfig(text), NAMESPACE, {"app": "web"})
    assert len((await driver.observe()).zones) == 3


async def test_a_member_cluster_site_is_driven_through_the_registry(
    cluster: kubernetes.client.ApiClient, sandbox: Sandbox
) -> None:
    """The operator's path: a site's kubernetesDeployments at an aws CloudProvider that
    lists the member cluster, its kubeconfig read from the Secret the CloudProvider names
    by the registry's Kubernetes backend; the app names the cluster only."""
    kubernetes.client.CoreV1Api(cluster).create_namespaced_secret(
        NAMESPACE,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="member"),
            string_data={"kubeconfig": sandbox.kube.kubeconfig_path.read_text()},
        ),
    )
    provider = {
        "type": "aws",
        "regions": ["us-east-1"],
        "credentials": {"source": "Environment"},
        "tenancy": {"namespaces": [NAMESPACE]},
        "clusters": [
            {"name": "member", "kubeconfigSecretRef": {"name": "member"}},
            {"name": "gone", "kubeconfigSecretRef": {"name": "gone"}},
        ],
    }
    info = ProviderInfo("aws", "uid", 1, provider, {})
    kube = KubeClient(cluster)
    registry = ProviderRegistry(kube, NAMESPACE, lookup=lambda n: info if n == "aws" else None)
    drivers = CapacityDrivers(registry.tenant(NAMESPACE), kube, cluster, NAMESPACE)

    def site(member: str) -> Site:
        deployments = {"selector": {"app": "web"}, "cluster": member}
        return Site.model_validate(
            {
                "name": "member",
                "provider": "aws",
                "region": "us-east-1",
                "zones": ["zone-a", "zone-b", "zone-c"],
                "trafficTargets": ["192.0.2.1"],
                "capacity": {"perZone": 1, "kubernetesDeployments": deployments},
            }
        )

    driver = await drivers.for_site("capacity/web", site("member"))
    assert isinstance(driver, DeploymentsCapacity) and driver.api is not cluster
    assert driver.namespace == NAMESPACE  # the app's own
    assert len((await driver.observe()).zones) == 3
    assert await drivers.for_site("capacity/web", site("member")) is driver  # cached
    with pytest.raises(ProviderUnavailable, match="Secret capacity/gone not found") as refused:
        await drivers.for_site("capacity/other", site("gone"))
    assert refused.value.reason == "SecretNotFound"
    elsewhere = CapacityDrivers(registry.tenant("other"), kube, cluster, NAMESPACE)
    with pytest.raises(ProviderUnavailable) as refused:
        await elsewhere.for_site("other/web", site("member"))
    assert refused.value.reason == "ProviderNotPermitted"


async def test_the_operator_service_account_may_observe_and_scale(
    cluster: kubernetes.client.ApiClient, sandbox: Sandbox
) -> None:
    """The ClusterRole grants what the driver calls (RBAC enforced, as the operator runs)."""
    text = sandbox.operator_kubeconfig.read_text()
    driver = DeploymentsCapacity(client_from_kubeconfig(text), NAMESPACE, {"app": "web"})
    before = {z.zone: z.desired for z in (await driver.observe()).zones}
    moved = {zone: replicas + (1 if zone == "zone-a" else 0) for zone, replicas in before.items()}
    await driver.set_zones(moved)
    assert {z.zone: z.desired for z in (await driver.observe()).zones} == moved
    await driver.set_zones(before)


async def test_ready_replicas_and_failed_scale_ups_as_the_deployment_controller_says(
    cluster: kubernetes.client.ApiClient,
) -> None:
    """No controller-manager runs in the test cluster, so the test writes each Deployment's
    status as the deployment controller would: ready replicas count as Ready, and a
    ReplicaFailure (pods refused, here by a ResourceQuota) is a failed scale-up."""
    apps = kubernetes.client.AppsV1Api(cluster)
    names = ("web-ready-a", "web-ready-b")
    for name, zone in zip(names, ("zone-a", "zone-b"), strict=True):
        body = deployment(zone, 2, name=name)
        body["metadata"]["labels"]["app"] = "ready"
        apps.create_namespaced_deployment(NAMESPACE, body)
    refused = (
        'pods "web-ready-b-1" is forbidden: exceeded quota: compute, requested: cpu=1, '
        "used: cpu=4, limited: cpu=4"
    )
    statuses: dict[str, dict[str, Any]] = {
        "web-ready-a": {"replicas": 2, "readyReplicas": 2},
        "web-ready-b": {
            "replicas": 1,
            "readyReplicas": 1,
            "conditions": [
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": refused,
                }
            ],
        },
    }
    for name, status in statuses.items():
        apps.patch_namespaced_deployment_status(name, NAMESPACE, {"status": status})

    state = await DeploymentsCapacity(cluster, NAMESPACE, {"app": "ready"}).observe()
    assert [(z.zone, z.desired, z.running) for z in state.zones] == [
        ("zone-a", 2, 2),
        ("zone-b", 2, 1),
    ]
    assert state.unit == "replicas ready"
    assert state.failures == (f"Deployment web-ready-b: FailedCreate: {refused}",)
