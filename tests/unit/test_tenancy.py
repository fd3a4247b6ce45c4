"""Tenancy: which namespaces a CloudProvider admits (by name, by label selector, or every
one on purpose), where an app's Deployments may be scaled, and the registry's view of one
namespace that refuses every CloudProvider not admitting it, before anything is built."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from controller.api.models import CloudProviderSpec, LabelSelector, ResilientAppSpec, Tenancy
from controller.core import tenancy
from controller.core.apiplane import ApiPlaneState
from controller.operator.providers import ProviderInfo, ProviderRegistry
from controller.providers.errors import ProviderUnavailable
from tests.factories import INVALID_PROVIDERS, Invalid, app_spec
from tests.unit.test_provider_registry import NoKube

TEAM = {"team": "payments", "env": "prod"}


def selector(**raw: Any) -> LabelSelector:
    return LabelSelector.model_validate(raw)


def grants(**raw: Any) -> Tenancy:
    return Tenancy.model_validate(raw)


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    """A selector of one matchExpressions requirement."""
    return {"matchExpressions": [{"key": key, "operator": operator, "values": list(values)}]}


@pytest.mark.parametrize(
    ("raw", "labels", "expected"),
    [
        ({"matchLabels": {"team": "payments"}}, TEAM, True),
        ({"matchLabels": {"team": "payments", "env": "dev"}}, TEAM, False),
        ({"matchLabels": {"team": "payments"}}, {}, False),
        (expr("team", "In", "a", "payments"), TEAM, True),
        (expr("team", "In", "a"), TEAM, False),
        (expr("team", "In", "a"), {}, False),
        (expr("team", "NotIn", "a"), TEAM, True),
        (expr("team", "NotIn", "payments"), TEAM, False),
        (expr("team", "NotIn", "a"), {}, True),
        (expr("env", "Exists"), TEAM, True),
        (expr("tier", "Exists"), TEAM, False),
        (expr("tier", "DoesNotExist"), TEAM, True),
        (expr("env", "DoesNotExist"), TEAM, False),
        ({"matchLabels": {"env": "prod"}, **expr("team", "In", "payments")}, TEAM, True),
        ({"matchLabels": {"env": "prod"}, **expr("team", "In", "shop")}, TEAM, False),
    ],
)
def test_label_selectors_match_as_kubernetes_does(
    raw: dict[str, Any], labels: Mapping[str, str], expected: bool
) -> None:
    assert tenancy.selects(selector(**raw), labels) is expected


def test_an_empty_tenancy_admits_no_namespace() -> None:
    empty = Tenancy()
    assert not tenancy.admits(empty, "shop", {})
    assert not tenancy.admits(empty, "default", None)
    assert not tenancy.admits(empty, "shop", TEAM)


def test_namespaces_are_admitted_by_name_by_label_or_all_on_purpose() -> None:
    listed = grants(namespaces=["shop", "payments"])
    assert tenancy.admits(listed, "shop", None)
    assert not tenancy.admits(listed, "shopping", None)
    everyone = grants(namespaces=["*"])
    assert tenancy.admits(everyone, "anything", None)
    by_label = grants(namespaceSelector={"matchLabels": {"team": "payments"}})
    assert tenancy.admits(by_label, "pay-1", TEAM)
    assert not tenancy.admits(by_label, "pay-1", {"team": "shop"})
    assert not tenancy.admits(by_label, "pay-1", None)  # labels unknown: not admitted
    both = grants(namespaces=["shop"], namespaceSelector={"matchLabels": {"team": "payments"}})
    assert tenancy.admits(both, "shop", {})
    assert tenancy.admits(both, "pay-1", TEAM)
    assert not tenancy.admits(both, "other", {"team": "shop"})


def test_an_empty_selector_never_admits_even_if_it_slipped_past_admission() -> None:
    slipped = Tenancy.model_construct(
        namespaces=(), namespace_selector=LabelSelector(), capacity_namespaces=()
    )
    assert not tenancy.admits(slipped, "shop", TEAM)


def test_deployments_scale_in_the_apps_namespace_or_a_granted_one() -> None:
    assert tenancy.scales_in(Tenancy(), "shop", "shop")
    assert not tenancy.scales_in(Tenancy(), "shop", "payments")
    assert not tenancy.scales_in(grants(namespaces=["*"]), "shop", "payments")  # admission only
    assert tenancy.scales_in(grants(capacityNamespaces=["payments"]), "shop", "payments")
    assert not tenancy.scales_in(grants(capacityNamespaces=["payments"]), "shop", "billing")
    assert tenancy.scales_in(grants(capacityNamespaces=["*"]), "shop", "billing")


@pytest.mark.parametrize("case", INVALID_PROVIDERS, ids=lambda c: c.name)
def test_invalid_provider_is_refused_with_a_clear_message(case: Invalid) -> None:
    with pytest.raises(ValidationError) as caught:
        CloudProviderSpec.model_validate(case.spec())
    assert case.message in str(caught.value)


# ---------------------------------------------------------------------- an app's refusals

PROVIDER = {
    "type": "aws",
    "regions": ["us-east-1", "us-west-2"],
    "credentials": {"source": "Environment"},
}


def provider(**extra: Any) -> CloudProviderSpec:
    return CloudProviderSpec.model_validate({**PROVIDER, **extra})


def kubernetes_app(**deployments: Any) -> ResilientAppSpec:
    raw = app_spec()
    raw["sites"][1]["capacity"] = {
        "perZone": 1,
        "kubernetesDeployments": {"selector": {"app": "web"}, **deployments},
    }
    return ResilientAppSpec.model_validate(raw)


def test_a_provider_that_does_not_admit_the_namespace_is_refused_once_naming_its_users() -> None:
    spec = ResilientAppSpec.model_validate(app_spec())
    problems = tenancy.refusals(spec, "shop", {}, {"aws-sandbox": provider()}.get)
    assert problems == [
        (
            "ProviderNotPermitted",
            "site use1, site usw2, traffic: CloudProvider aws-sandbox does not admit namespace "
            "shop: its spec.tenancy is empty, and a CloudProvider admits only the namespaces it "
            "grants (CloudProviders from before tenancy included); to grant it, add shop to the "
            "CloudProvider's spec.tenancy.namespaces, label the namespace to match "
            "spec.tenancy.namespaceSelector, or write namespaces: ['*'] to admit every namespace",
        )
    ]
    selective = provider(tenancy={"namespaceSelector": {"matchLabels": {"team": "payments"}}})
    problems = tenancy.refusals(spec, "shop", {"team": "shop"}, {"aws-sandbox": selective}.get)
    assert [reason for reason, _ in problems] == ["ProviderNotPermitted"]
    assert "spec.tenancy neither lists it nor selects it by its labels" in problems[0][1]
    assert tenancy.refusals(spec, "shop", TEAM, {"aws-sandbox": selective}.get) == []
    assert tenancy.refusals(spec, "shop", {}, lambda _: None) == []  # missing: reported elsewhere


def test_deployments_in_another_namespace_need_the_providers_grant() -> None:
    admitted = provider(tenancy={"namespaces": ["shop"]})
    own = kubernetes_app()
    assert tenancy.refusals(own, "shop", {}, {"aws-sandbox": admitted}.get) == []
    elsewhere = kubernetes_app(namespace="payments")
    problems = tenancy.refusals(elsewhere, "shop", {}, {"aws-sandbox": admitted}.get)
    assert problems == [
        (
            "NamespaceNotPermitted",
            "site usw2: kubernetesDeployments in namespace payments, not the app's own (shop), "
            "and CloudProvider aws-sandbox grants no capacity there; to grant it, add payments "
            "to the CloudProvider's spec.tenancy.capacityNamespaces",
        )
    ]
    granted = provider(tenancy={"namespaces": ["shop"], "capacityNamespaces": ["payments"]})
    assert tenancy.refusals(elsewhere, "shop", {}, {"aws-sandbox": granted}.get) == []


def test_a_member_cluster_must_be_listed_by_the_provider() -> None:
    admitted = provider(tenancy={"namespaces": ["*"]})
    spec = kubernetes_app(cluster="east")
    problems = tenancy.refusals(spec, "shop", {}, {"aws-sandbox": admitted}.get)
    assert problems == [
        (
            "ClusterNotFound",
            "site usw2: CloudProvider aws-sandbox lists no member cluster east in spec.clusters",
        )
    ]
    member = {"name": "east", "kubeconfigSecretRef": {"name": "east-kubeconfig"}}
    listed = provider(tenancy={"namespaces": ["*"]}, clusters=[member])
    assert tenancy.refusals(spec, "shop", {}, {"aws-sandbox": listed}.get) == []


def test_an_app_names_no_secret() -> None:
    raw = app_spec()
    raw["sites"][1]["capacity"] = {
        "perZone": 1,
        "kubernetesDeployments": {
            "selector": {"app": "web"},
            "kubeconfigSecretRef": {"name": "lifeboat-aws-credentials"},
        },
    }
    with pytest.raises(ValidationError, match="kubeconfigSecretRef is no longer accepted"):
        ResilientAppSpec.model_validate(raw)


# ---------------------------------------------------------------------- the registry's view


def registry(tenancy_: dict[str, Any], labels: Mapping[str, Mapping[str, str]]) -> ProviderRegistry:
    info = ProviderInfo("aws", "uid", 1, {**PROVIDER, "tenancy": tenancy_}, {})
    return ProviderRegistry(
        NoKube(),
        "lifeboat-system",
        lookup=lambda n: info if n == "aws" else None,
        namespace_labels=labels.get,
    )


async def test_a_namespace_not_admitted_reaches_nothing_through_the_provider() -> None:
    providers = registry({"namespaceSelector": {"matchLabels": {"team": "payments"}}}, {})
    view = providers.tenant("shop")
    for use in (
        view.handle("aws"),
        view.traffic("aws"),
        view.object_store("aws", "us-east-1", "photos"),
        view.change_feed("aws", "us-east-1", "photos-events"),
        view.volume_snapshots("aws", "us-east-1"),
    ):
        with pytest.raises(ProviderUnavailable) as refused:
            await use
        assert refused.value.reason == "ProviderNotPermitted"
        assert "CloudProvider aws does not admit namespace shop" in str(refused.value)
    assert await view.api_plane("aws", "us-east-1") is ApiPlaneState.UNKNOWN
    assert await view.traffic_plane("aws", None) is ApiPlaneState.UNKNOWN
    assert providers.cached("aws") is None  # never connected
    with pytest.raises(ProviderUnavailable) as missing:
        await view.handle("gone")
    assert missing.value.reason == "ProviderNotFound"


def test_a_running_flow_asks_whether_it_is_still_admitted() -> None:
    labels: dict[str, dict[str, str]] = {"pay-1": {"team": "payments"}}
    view = registry({"namespaceSelector": {"matchLabels": {"team": "payments"}}}, labels).tenant(
        "pay-1"
    )
    assert view.refused("aws") is None
    labels["pay-1"] = {}
    assert (view.refused("aws") or "").startswith("CloudProvider aws does not admit namespace")
    assert view.refused("gone") is None  # missing: reported elsewhere, not a tenancy refusal


async def test_labels_are_read_at_every_use() -> None:
    labels: dict[str, dict[str, str]] = {"pay-1": {"team": "shop"}}
    providers = registry({"namespaceSelector": {"matchLabels": {"team": "payments"}}}, labels)
    view = providers.tenant("pay-1")
    with pytest.raises(ProviderUnavailable):
        await view.handle("aws")
    labels["pay-1"] = {"team": "payments"}  # relabelled: admitted from now on
    assert (await view.handle("aws")).name == "aws"
    labels["pay-1"] = {}
    with pytest.raises(ProviderUnavailable):
        await view.traffic("aws")


def test_the_views_check_adds_the_tenancy_refusals() -> None:
    spec = ResilientAppSpec.model_validate(
        {**app_spec(), "traffic": {**app_spec()["traffic"], "provider": "aws"}}
    )
    raw = spec.to_wire()
    for site in raw["sites"]:
        site["provider"] = "aws"
    spec = ResilientAppSpec.model_validate(raw)
    providers = registry({"namespaces": ["shop"]}, {})
    assert providers.tenant("shop").check_references(spec) == []
    problems = providers.tenant("other").check_references(spec)
    assert [reason for reason, _ in problems] == ["ProviderNotPermitted"]
    assert problems[0][1].startswith("site use1, site usw2, traffic: CloudProvider aws")
