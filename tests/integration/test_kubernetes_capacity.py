"""Capacity on a Kubernetes site: Deployments per zone on the real API server."""

from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest

from controller.providers.kubernetes.capacity import DeploymentsCapacity, client_from_kubeconfig
from controller.sandbox.world import Sandbox

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
