"""The API server refuses invalid resources with the rules' own words (CEL + schema)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from sandbox.world import Sandbox
from tests.factories import (
    INVALID_APPS,
    INVALID_BY_SCHEMA,
    INVALID_PROVIDERS,
    Invalid,
    app,
    provider_spec,
)

pytestmark = pytest.mark.integration

NAMESPACE = "admission"


@pytest.fixture(scope="module")
def custom(sandbox: Sandbox) -> kubernetes.client.CustomObjectsApi:
    client = sandbox.kube.api_client()
    try:
        kubernetes.client.CoreV1Api(client).create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=NAMESPACE))
        )
    except ApiException as error:
        if error.status != 409:
            raise
    return kubernetes.client.CustomObjectsApi(client)


def create(custom: kubernetes.client.CustomObjectsApi, body: dict[str, Any]) -> Any:
    return custom.create_namespaced_custom_object(
        "lifeboat.dev", "v1alpha1", NAMESPACE, "resilientapps", body, dry_run="All"
    )


@pytest.mark.parametrize("case", INVALID_APPS + INVALID_BY_SCHEMA, ids=lambda c: c.name)
def test_invalid_app_is_refused(custom: kubernetes.client.CustomObjectsApi, case: Invalid) -> None:
    body = {**app(namespace=NAMESPACE), "spec": case.spec()}
    with pytest.raises(ApiException) as caught:
        create(custom, body)
    assert caught.value.status == 422
    message = json.loads(caught.value.body or "{}")["message"]
    assert case.message in message


def test_valid_app_is_accepted_with_defaults(custom: kubernetes.client.CustomObjectsApi) -> None:
    body = app(namespace=NAMESPACE)
    del body["spec"]["health"]
    created = create(custom, body)
    spec = created["spec"]
    assert spec["health"] == {
        "intervalSeconds": 10,
        "timeoutSeconds": 2.0,
        "failureThreshold": 3,
        "successThreshold": 2,
    }
    assert spec["failover"]["mode"] == "Automatic"
    assert spec["failover"]["failback"] == {"mode": "Manual", "stableSeconds": 900}
    assert spec["failover"]["cascade"] == {"zonesDown": 2, "apiPlane": "Impaired"}
    assert spec["sites"][1]["role"] == "standby"
    assert spec["traffic"]["ttl"] == 60
    # A planned switchover's write fence defaults to none: the user stops writes.
    assert spec["failover"]["planned"] == {"writeFence": {"none": {}}, "drainTimeoutSeconds": 300}


def test_invalid_cloud_provider_is_refused(sandbox: Sandbox) -> None:
    api = kubernetes.client.CustomObjectsApi(sandbox.kube.api_client())
    body = {
        "apiVersion": "lifeboat.dev/v1alpha1",
        "kind": "CloudProvider",
        "metadata": {"name": "broken"},
        "spec": {"type": "aws", "regions": ["us-east-1"], "credentials": {"source": "Secret"}},
    }
    with pytest.raises(ApiException) as caught:
        api.create_cluster_custom_object(
            "lifeboat.dev", "v1alpha1", "cloudproviders", body, dry_run="All"
        )
    assert "credentials.secretRef is required when credentials.source is Secret" in str(
        caught.value.body
    )


def test_kubectl_shows_the_refusal_to_a_user(sandbox: Sandbox) -> None:
    case = INVALID_APPS[0]
    body = {**app(namespace=NAMESPACE), "spec": case.spec()}
    result = sandbox.kube.kubectl(
        "apply", "--dry-run=server", "--filename=-", input=json.dumps(body), check=False
    )
    assert result.returncode != 0
    assert "exactly one site must have role primary" in result.stderr


def test_unknown_field_is_refused_by_kubectl(sandbox: Sandbox) -> None:
    body = app(namespace=NAMESPACE)
    body["spec"]["sites"][0]["zone"] = "us-east-1a"  # a typo of "zones"
    result = sandbox.kube.kubectl(
        "apply", "--dry-run=server", "--filename=-", input=json.dumps(body), check=False
    )
    assert result.returncode != 0
    assert 'unknown field "spec.sites[0].zone"' in result.stderr


def create_provider(sandbox: Sandbox, spec: dict[str, Any]) -> Any:
    body = {
        "apiVersion": "lifeboat.dev/v1alpha1",
        "kind": "CloudProvider",
        "metadata": {"name": "tenancy"},
        "spec": spec,
    }
    return kubernetes.client.CustomObjectsApi(
        sandbox.kube.api_client()
    ).create_cluster_custom_object(
        "lifeboat.dev", "v1alpha1", "cloudproviders", body, dry_run="All"
    )


@pytest.mark.parametrize("case", INVALID_PROVIDERS, ids=lambda c: c.name)
def test_invalid_tenancy_is_refused(sandbox: Sandbox, case: Invalid) -> None:
    with pytest.raises(ApiException) as caught:
        create_provider(sandbox, case.spec())
    assert caught.value.status == 422
    assert case.message in json.loads(caught.value.body or "{}")["message"]


def test_tenancy_defaults_to_no_namespace_and_takes_selectors_and_clusters(
    sandbox: Sandbox,
) -> None:
    spec = provider_spec()
    del spec["tenancy"]
    assert create_provider(sandbox, spec)["spec"]["tenancy"] == {
        "namespaces": [],
        "capacityNamespaces": [],
    }
    tenancy = {
        "namespaces": ["shop"],
        "namespaceSelector": {
            "matchLabels": {"team": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod"]},
                {"key": "frozen", "operator": "DoesNotExist"},
            ],
        },
        "capacityNamespaces": ["*"],
    }
    clusters = [{"name": "east", "kubeconfigSecretRef": {"name": "east-kubeconfig"}}]
    created = create_provider(sandbox, provider_spec(tenancy=tenancy, clusters=clusters))
    assert created["spec"]["tenancy"]["namespaceSelector"]["matchExpressions"][1] == {
        "key": "frozen",
        "operator": "DoesNotExist",
        "values": [],
    }
    assert created["spec"]["clusters"][0]["kubeconfigSecretRef"]["key"] == "kubeconfig"
