"""Tenancy on the real kube-apiserver: a tenant reaches no other namespace.

The operator runs in-process as its ServiceAccount, under the shipped RBAC (which cannot
tell tenants apart: it may scale Deployments in every namespace). Reproduced before
tenancy: an app in one namespace scaled a Deployment in another from 3 to 0, and any
namespace could use any CloudProvider. Now a CloudProvider admits namespaces by name or by
label, an app scales Deployments only in its own namespace unless its CloudProvider grants
another, and every refusal reaches the app's status and Events while nothing is done.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from controller.providers.kubernetes.capacity import client_from_kubeconfig
from sandbox.world import CONTROLLER_NAMESPACE, EXAMPLES, GLOBAL, Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION = "lifeboat.dev", "v1alpha1"
PROVIDER = "aws-tenants"
ZONES = ("us-west-2a", "us-west-2b", "us-west-2c")
ZONE_LABEL = "topology.kubernetes.io/zone"
_serial = itertools.count(1)


def namespace_body(name: str, labels: dict[str, str] | None = None) -> Any:
    meta = kubernetes.client.V1ObjectMeta(name=name, labels=labels)
    return kubernetes.client.V1Namespace(metadata=meta)


@pytest.fixture
def provider(sandbox: Sandbox) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Creates CloudProvider aws-tenants: the sandbox's AWS with the ``tenancy`` given."""
    custom = kubernetes.client.CustomObjectsApi(sandbox.kube.api_client())
    example = next(d for d in sandbox.example_documents(EXAMPLES) if d["kind"] == "CloudProvider")
    created: list[str] = []

    def create(tenancy: dict[str, Any]) -> None:
        spec = {**copy.deepcopy(example["spec"]), "tenancy": tenancy}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CloudProvider",
            "metadata": {"name": PROVIDER},
            "spec": spec,
        }
        custom.create_cluster_custom_object(GROUP, VERSION, "cloudproviders", body)
        created.append(PROVIDER)

    yield create
    for name in created:
        custom.delete_cluster_custom_object(GROUP, VERSION, "cloudproviders", name)


def at(provider_name: str) -> Callable[[dict[str, Any]], None]:
    """An app mutation: every site and the traffic at ``provider_name``."""

    def mutate(body: dict[str, Any]) -> None:
        for site in body["spec"]["sites"]:
            site["provider"] = provider_name
        body["spec"]["traffic"]["provider"] = provider_name

    return mutate


@pytest.fixture
def victim(sandbox: Sandbox) -> Iterator[str]:
    """Another team's namespace: one Deployment of 3 replicas per zone of site usw2."""
    api = sandbox.kube.api_client()
    name = f"victim-{next(_serial)}"
    core, apps = kubernetes.client.CoreV1Api(api), kubernetes.client.AppsV1Api(api)
    core.create_namespace(namespace_body(name))
    for zone in ZONES:
        labels = {"app": "ledger", ZONE_LABEL: zone}
        template = {
            "metadata": {"labels": {"app": "ledger", "zone": zone}},
            "spec": {"containers": [{"name": "ledger", "image": "example/ledger:1"}]},
        }
        body: Any = {
            "metadata": {"name": f"ledger-{zone}", "labels": labels},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "ledger", "zone": zone}},
                "template": template,
            },
        }
        apps.create_namespaced_deployment(name, body)
    yield name
    core.delete_namespace(name)


def replicas(sandbox: Sandbox, namespace: str) -> dict[str, int]:
    listed: Any = kubernetes.client.AppsV1Api(sandbox.kube.api_client()).list_namespaced_deployment(
        namespace
    )
    return {d.metadata.name: d.spec.replicas for d in listed.items}


def scaling(namespace: str) -> Callable[[dict[str, Any]], None]:
    """An app mutation: site usw2 (a standby of one instance per zone) runs on the
    Deployments labelled app=ledger in ``namespace``."""

    def mutate(body: dict[str, Any]) -> None:
        usw2 = next(s for s in body["spec"]["sites"] if s["name"] == "usw2")
        usw2["capacity"] = {
            "perZone": 2,
            "standbyPerZone": 1,
            "kubernetesDeployments": {"namespace": namespace, "selector": {"app": "ledger"}},
        }

    return mutate


def dns_changes(sandbox: Sandbox) -> int:
    """ChangeResourceRecordSets calls seen at the sandbox's Route 53 fault proxy (a REST
    call: recorded by method and path)."""
    return sandbox.proxies[GLOBAL].count(service="route53", action="POST */rrset*")


def route53_writes(sandbox: Sandbox) -> int:
    """Every mutating Route 53 call (record changes, health checks)."""
    return sandbox.proxies[GLOBAL].count(service="route53", mutating=True)


def refusal(apps: Apps, ns: str, name: str, reason: str) -> dict[str, Any]:
    def refused() -> dict[str, Any] | None:
        condition = apps.condition(ns, name, "ConfigurationValid")
        return condition if condition and condition["reason"] == reason else None

    condition = wait_for(refused, 60, f"ConfigurationValid {reason}")
    assert condition["status"] == "False"
    return condition


def test_a_tenant_cannot_scale_a_deployment_in_another_namespace(
    apps: Apps, sandbox: Sandbox, victim: str
) -> None:
    """The reproduced defect: the sandbox's CloudProvider admits every namespace but grants
    no capacity namespace, so the app's Deployments in another namespace are refused."""
    ns, name = apps.create(scaling(victim))
    condition = refusal(apps, ns, name, "NamespaceNotPermitted")
    assert condition["message"] == (
        f"site usw2: kubernetesDeployments in namespace {victim}, not the app's own ({ns}), "
        "and CloudProvider aws-sandbox grants no capacity there; to grant it, add "
        f"{victim} to the CloudProvider's spec.tenancy.capacityNamespaces"
    )
    failed = wait_for(
        lambda: [
            m for _, r, m in apps.events(ns, name) if r == "NamespaceNotPermitted" and "failed" in m
        ],
        60,
        "the refused capacity change's Event",
    )
    assert failed[0].startswith(
        "capacity of usw2 (us-west-2): us-west-2a=1, us-west-2b=1, us-west-2c=1 (epoch 1) "
        f"failed: site usw2: kubernetesDeployments in namespace {victim}, not the app's own"
    )
    time.sleep(3)  # more rounds: the refused change is retried, and refused again
    assert replicas(sandbox, victim) == {f"ledger-{zone}": 3 for zone in ZONES}
    # The rest of the app is served: traffic through its (admitted) CloudProvider.
    wait_for(lambda: apps.dns_weights(ns, name) == {"use1": 100, "usw2": 0}, 60, "its DNS")


def test_a_granted_capacity_namespace_is_scaled(
    apps: Apps, sandbox: Sandbox, victim: str, provider: Callable[[dict[str, Any]], None]
) -> None:
    provider({"namespaces": ["*"], "capacityNamespaces": [victim]})

    def mutate(body: dict[str, Any]) -> None:
        at(PROVIDER)(body)
        scaling(victim)(body)

    ns, name = apps.create(mutate)
    wait_for(
        lambda: replicas(sandbox, victim) == {f"ledger-{zone}": 1 for zone in ZONES},
        60,
        "the standby's Deployments scaled to one replica per zone",
    )
    condition = apps.condition(ns, name, "ConfigurationValid")
    assert condition is not None and condition["status"] == "True"
    assert any(r == "CapacitySet" and "usw2" in m for _, r, m in apps.events(ns, name))


def test_a_namespace_the_provider_does_not_admit_changes_no_dns_until_granted(
    apps: Apps, sandbox: Sandbox, provider: Callable[[dict[str, Any]], None]
) -> None:
    provider({"namespaceSelector": {"matchLabels": {"lifeboat.dev/tenant": "admitted"}}})
    changes, writes = dns_changes(sandbox), route53_writes(sandbox)
    ns, name = apps.create(at(PROVIDER))

    condition = refusal(apps, ns, name, "ProviderNotPermitted")
    assert condition["message"] == (
        f"site use1, site usw2, traffic: CloudProvider {PROVIDER} does not admit namespace "
        f"{ns}: spec.tenancy neither lists it nor selects it by its labels; to grant it, add "
        f"{ns} to the CloudProvider's spec.tenancy.namespaces, label the namespace to match "
        "spec.tenancy.namespaceSelector, or write namespaces: ['*'] to admit every namespace"
    )
    warned = wait_for(
        lambda: [m for t, r, m in apps.events(ns, name) if r == "ProviderNotPermitted"],
        30,
        "the ProviderNotPermitted Event",
    )
    assert f"CloudProvider {PROVIDER} does not admit namespace {ns}" in warned[0]
    time.sleep(5)  # five rounds, each deciding to set DNS: every one refused
    assert (dns_changes(sandbox), route53_writes(sandbox)) == (changes, writes)
    assert apps.dns_weights(ns, name) == {}
    assert apps.status(ns, name)["phase"] != "Invalid"  # a refusal, not a broken spec

    # Granted by labelling the namespace: the app is served from then on.
    apps.core.patch_namespace(ns, {"metadata": {"labels": {"lifeboat.dev/tenant": "admitted"}}})
    apps.wait_serving(ns, name, 60)
    assert apps.dns_weights(ns, name) == {"use1": 100, "usw2": 0}
    assert dns_changes(sandbox) > changes  # counted where it happens
    granted = apps.condition(ns, name, "ConfigurationValid")
    assert granted is not None and granted["status"] == "True"


def test_the_service_account_reads_no_secret_outside_the_controller_namespace(
    sandbox: Sandbox,
) -> None:
    """What the operator's ServiceAccount may read, as the API server enforces it: the
    Secrets of its own namespace by name, namespaces' labels, and no other Secret."""
    admin = kubernetes.client.CoreV1Api(sandbox.kube.api_client())
    tenant = f"tenant-{next(_serial)}"
    admin.create_namespace(namespace_body(tenant))
    secret = kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name="kubeconfig"),
        string_data={"kubeconfig": "a tenant's own"},
    )
    admin.create_namespaced_secret(tenant, secret)
    operator = kubernetes.client.CoreV1Api(
        client_from_kubeconfig(sandbox.operator_kubeconfig.read_text())
    )
    try:
        own: Any = operator.read_namespaced_secret("aws-sandbox-credentials", CONTROLLER_NAMESPACE)
        assert own.metadata.name == "aws-sandbox-credentials"
        for attempt in (
            lambda: operator.read_namespaced_secret("kubeconfig", tenant),
            lambda: operator.list_namespaced_secret(tenant),
            lambda: operator.list_secret_for_all_namespaces(),
            lambda: operator.list_namespaced_secret(CONTROLLER_NAMESPACE),
        ):
            with pytest.raises(ApiException) as refused:
                attempt()
            assert refused.value.status == 403
        listed: Any = operator.list_namespace()  # the tenancy index: labels of namespaces
        assert tenant in {n.metadata.name for n in listed.items}
    finally:
        admin.delete_namespace(tenant)
