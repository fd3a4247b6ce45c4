"""Tenancy: which namespaces may use a CloudProvider, and where an app's capacity may act.

A CloudProvider admits a namespace's ResilientApps when its ``spec.tenancy`` lists the
namespace (``namespaces``; ``["*"]`` is every namespace) or its ``namespaceSelector``
matches the namespace's labels; nothing else admits one, so an empty tenancy admits no
namespace. An admitted app's ``kubernetesDeployments`` scale inside the app's own
namespace, or in a namespace the CloudProvider grants in ``tenancy.capacityNamespaces``;
a member cluster is one the CloudProvider lists in ``spec.clusters`` (it names the
kubeconfig Secret: an app never does).

Pure: the namespace's labels and the CloudProviders are handed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from controller.api.events import EventReason
from controller.api.models import (
    EVERY_NAMESPACE,
    CloudProviderSpec,
    LabelSelector,
    LabelSelectorRequirement,
    ResilientAppSpec,
    Tenancy,
)


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy ``selector`` (Kubernetes' semantics: every matchLabels
    pair and every matchExpressions requirement)."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    return all(_holds(requirement, labels) for requirement in selector.match_expressions)


def _holds(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    value = labels.get(requirement.key)
    match requirement.operator:
        case "In":
            return value is not None and value in requirement.values
        case "NotIn":
            return value is None or value not in requirement.values
        case "Exists":
            return value is not None
        case "DoesNotExist":
            return value is None


def _granted(grants: Sequence[str], namespace: str) -> bool:
    return EVERY_NAMESPACE in grants or namespace in grants


def admits(tenancy: Tenancy, namespace: str, labels: Mapping[str, str] | None) -> bool:
    """Whether a CloudProvider with ``tenancy`` admits the apps of ``namespace``, whose
    labels are ``labels`` (None when unknown: only a grant by name admits it then)."""
    if _granted(tenancy.namespaces, namespace):
        return True
    selector = tenancy.namespace_selector
    if selector is None or selector.empty or labels is None:
        return False  # an empty selector is refused at admission: it never admits here
    return selects(selector, labels)


def scales_in(tenancy: Tenancy, app_namespace: str, namespace: str) -> bool:
    """Whether an app of ``app_namespace`` may scale Deployments in ``namespace`` through a
    CloudProvider with ``tenancy``."""
    return namespace == app_namespace or _granted(tenancy.capacity_namespaces, namespace)


def not_admitted(provider: str, tenancy: Tenancy, namespace: str) -> str:
    """Why CloudProvider ``provider`` refuses ``namespace``, and how to grant it."""
    empty = not tenancy.namespaces and tenancy.namespace_selector is None
    why = (
        "its spec.tenancy is empty, and a CloudProvider admits only the namespaces it "
        "grants (CloudProviders from before tenancy included)"
        if empty
        else "spec.tenancy neither lists it nor selects it by its labels"
    )
    return (
        f"CloudProvider {provider} does not admit namespace {namespace}: {why}; to grant it, "
        f"add {namespace} to the CloudProvider's spec.tenancy.namespaces, label the "
        "namespace to match spec.tenancy.namespaceSelector, or write namespaces: ['*'] "
        "to admit every namespace"
    )


def not_granted(provider: str, site: str, app_namespace: str, namespace: str) -> str:
    """Why a site's Deployments in ``namespace`` may not be scaled by an app of
    ``app_namespace``, and how to grant it."""
    return (
        f"site {site}: kubernetesDeployments in namespace {namespace}, not the app's own "
        f"({app_namespace}), and CloudProvider {provider} grants no capacity there; to grant "
        f"it, add {namespace} to the CloudProvider's spec.tenancy.capacityNamespaces"
    )


def no_cluster(provider: str, site: str, cluster: str) -> str:
    """Why a site's member cluster cannot be used."""
    return (
        f"site {site}: CloudProvider {provider} lists no member cluster {cluster} in spec.clusters"
    )


def refusals(
    spec: ResilientAppSpec,
    namespace: str,
    labels: Mapping[str, str] | None,
    provider: Callable[[str], CloudProviderSpec | None],
) -> list[tuple[str, str]]:
    """(reason, message) for every CloudProvider the app in ``namespace`` (with
    ``labels``) names that does not admit it, and every site whose Deployments are in a
    namespace or member cluster its CloudProvider does not grant. ``provider`` gives a
    CloudProvider's spec, None when it is missing or invalid (reported elsewhere)."""
    users: dict[str, list[str]] = {}
    for site in spec.sites:
        users.setdefault(site.provider, []).append(f"site {site.name}")
    users.setdefault(spec.traffic.provider, []).append("traffic")
    problems: list[tuple[str, str]] = []
    admitted: dict[str, CloudProviderSpec] = {}
    for name, used_by in users.items():
        found = provider(name)
        if found is None:
            continue
        if admits(found.tenancy, namespace, labels):
            admitted[name] = found
            continue
        message = f"{', '.join(used_by)}: {not_admitted(name, found.tenancy, namespace)}"
        problems.append((EventReason.PROVIDER_NOT_PERMITTED, message))
    for site in spec.sites:
        deployments = site.capacity.kubernetes_deployments if site.capacity else None
        found = admitted.get(site.provider)
        if deployments is None or found is None:
            continue
        target = deployments.namespace or namespace
        if not scales_in(found.tenancy, namespace, target):
            message = not_granted(site.provider, site.name, namespace, target)
            problems.append((EventReason.NAMESPACE_NOT_PERMITTED, message))
        if deployments.cluster is not None and found.cluster(deployments.cluster) is None:
            message = no_cluster(site.provider, site.name, deployments.cluster)
            problems.append((EventReason.CLUSTER_NOT_FOUND, message))
    return problems
