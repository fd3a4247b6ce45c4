"""The CloudProvider kind: one cloud account or project (spec) and what Lifeboat sees of
it (status: credentials, each region's API plane)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from controller.api.models.common import (
    DNS_LABEL,
    DNS_NAME,
    HTTP_URL,
    MAX_EPOCH,
    CloudName,
    Conditions,
    LabelSelector,
    Model,
    ObjectName,
    SecretKeyRef,
    SiteName,
    Timestamp,
    list_map,
    with_rules,
)
from controller.api.rules import Rule, unique


class SecretReference(Model):
    """A Secret in the controller's own namespace (the namespace Lifeboat runs in)."""

    name: ObjectName = Field(description="Name of the Secret holding the credentials.")


class Credentials(Model):
    """Where the provider's credentials come from."""

    source: Literal["Secret", "Environment"] = Field(
        default="Secret",
        description=(
            "Secret: keys of the Secret named by secretRef (AWS: aws_access_key_id, "
            "aws_secret_access_key, optional aws_session_token). Environment: the SDK's "
            "standard chain in the controller's pod (AWS: web identity / IRSA, instance role)."
        ),
    )
    secret_ref: SecretReference | None = Field(
        default=None,
        description="The Secret to read when source is Secret. It must live in the "
        "controller's namespace.",
    )

    rules, model_config = with_rules(
        Rule(
            cel="self.source != 'Secret' || has(self.secretRef)",
            message="credentials.secretRef is required when credentials.source is Secret",
            check=lambda c: c.source != "Secret" or c.secret_ref is not None,
        ),
    )


class EndpointOverride(Model):
    """Send one service's (or one region's) calls to a different endpoint URL."""

    service: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9-]+$",
        description="Service: for AWS the SDK's name (ec2, route53, sts, s3, ...), for "
        "OpenStack the catalog's service type (identity, compute, dns, volumev3, "
        "object-store). Empty: every service.",
    )
    region: CloudName | None = Field(default=None, description="Region; empty: every region.")
    url: str = Field(max_length=2048, pattern=HTTP_URL, description="Endpoint URL to use.")


class TLSSettings(Model):
    """TLS verification of the provider's endpoints."""

    insecure_skip_verify: bool = Field(
        default=False,
        description="Disable certificate verification. Only for private test clouds.",
    )
    ca_bundle: str | None = Field(
        default=None,
        max_length=65536,
        description="PEM bundle of extra CA certificates to trust.",
    )


class ApiPlaneLevels(Model):
    """Figures of a region's API calls over the window that mark a level."""

    error_share: float = Field(
        ge=0, le=1, description="Share of calls failing with 5xx, timeouts, resets or capacity."
    )
    throttle_share: float = Field(ge=0, le=1, description="Share of calls throttled.")
    latency_p99_seconds: float = Field(gt=0, le=600, description="99th percentile latency.")


class RetryBudget(Model):
    """Retries a region may get (a token bucket; each retry takes a token)."""

    tokens: int = Field(default=10, ge=0, le=1000, description="Bucket size.")
    refill_per_minute: float = Field(default=30, ge=0, le=6000, description="Tokens per minute.")


class ApiPlanePolicy(Model):
    """How each region's API plane (the cloud's control plane) is judged.

    Every call Lifeboat makes counts, plus a cheap probe per region every
    probeIntervalSeconds. At Degraded the retry budget shrinks to a quarter; at Impaired
    only probes are sent to the region.
    """

    probe_interval_seconds: int = Field(default=15, ge=1, le=3600, description="Probe period.")
    window_seconds: int = Field(default=120, ge=10, le=3600, description="Sliding window.")
    min_calls: int = Field(
        default=4, ge=1, le=1000, description="Calls needed in the window for a verdict."
    )
    degraded: ApiPlaneLevels = Field(
        default=ApiPlaneLevels(error_share=0.05, throttle_share=0.05, latency_p99_seconds=2.0),
        description="Any figure at or above these: Degraded.",
    )
    impaired: ApiPlaneLevels = Field(
        default=ApiPlaneLevels(error_share=0.3, throttle_share=0.3, latency_p99_seconds=10.0),
        description="Any figure at or above these: Impaired.",
    )
    retry_budget: RetryBudget = Field(default=RetryBudget(), description="Retry budget.")

    rules, model_config = with_rules(
        Rule(
            cel="self.degraded.errorShare <= self.impaired.errorShare && "
            "self.degraded.throttleShare <= self.impaired.throttleShare && "
            "self.degraded.latencyP99Seconds <= self.impaired.latencyP99Seconds",
            message="apiPlane.degraded levels must not exceed apiPlane.impaired levels",
            check=lambda p: (
                p.degraded.error_share <= p.impaired.error_share
                and p.degraded.throttle_share <= p.impaired.throttle_share
                and p.degraded.latency_p99_seconds <= p.impaired.latency_p99_seconds
            ),
        ),
        Rule(
            cel="self.probeIntervalSeconds < self.windowSeconds",
            message="apiPlane.probeIntervalSeconds must be shorter than apiPlane.windowSeconds",
            check=lambda p: p.probe_interval_seconds < p.window_seconds,
        ),
    )


class OpenStackSettings(Model):
    """How to use an OpenStack cloud's credentials."""

    cloud: str = Field(
        default="lifeboat",
        max_length=63,
        description="Entry of clouds.yaml to use, when the Secret holds a clouds.yaml.",
    )
    interface: Literal["public", "internal", "admin"] = Field(
        default="public", description="Catalog endpoint interface."
    )


class Rfc2136Settings(Model):
    """A DNS server taking dynamic updates (RFC 2136) signed with a TSIG key (RFC 8945):
    BIND 9, Knot, PowerDNS, Windows DNS, Infoblox; the on-premises, VMware and CloudStack
    sites' DNS. The key's secret is the credentials Secret's ``tsig_secret`` (base64, as
    tsig-keygen prints it)."""

    server: str = Field(
        max_length=253,
        pattern=r"^([0-9.]+|[0-9a-fA-F:]+|[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?)$",
        description="The primary server's address or host name (updates go to it).",
    )
    port: int = Field(default=53, ge=1, le=65535, description="Its DNS port (TCP and UDP).")
    zones: tuple[Annotated[str, Field(max_length=253, pattern=DNS_NAME)], ...] = Field(
        min_length=1,
        max_length=64,
        description="Zones the key may update; an app's traffic must name one of them "
        "(hostedZoneName). The first is the one the API-plane probe reads.",
    )
    tsig_key_name: str = Field(
        max_length=253,
        pattern=DNS_NAME,
        description="Name of the TSIG key, as the server knows it.",
    )
    tsig_algorithm: Literal[
        "hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1"
    ] = Field(default="hmac-sha256", description="TSIG algorithm.")
    timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Deadline of one query or update."
    )


class ExternalDnsSettings(Model):
    """Where DNSEndpoint objects go for external-dns (``--source=crd``) to publish through
    whichever DNS provider it is configured with. The cluster is Lifeboat's own (its
    ServiceAccount must be granted dnsendpoints in ``namespace``) for credentials.source
    Environment, or the one of the kubeconfig in the credentials Secret's ``kubeconfig``
    key."""

    namespace: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] = Field(
        description="Namespace of the DNSEndpoint objects (the one external-dns watches)."
    )
    labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict,
        max_length=16,
        description="Labels for the DNSEndpoint objects, e.g. what external-dns's "
        "--label-filter selects.",
    )
    sync_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="How long a change waits for external-dns to take it in "
        "(status.observedGeneration) before it is reported not yet in sync.",
    )


EVERY_NAMESPACE = "*"
"""The grant of every namespace (``tenancy.namespaces: ["*"]``), written on purpose."""

NamespaceGrant = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")
]
_GRANTS: dict[str, Any] = {"x-kubernetes-list-type": "set"}


def _alone(field: str, grants: Callable[[Tenancy], tuple[str, ...]]) -> Rule:
    """The rule that the wildcard of ``field`` (camelCase) is its only entry."""
    return Rule(
        cel=f"!('*' in self.{field}) || self.{field}.size() == 1",
        message=f"tenancy.{field}: '*' (every namespace) must be the only entry",
        check=lambda t: EVERY_NAMESPACE not in grants(t) or len(grants(t)) == 1,
        field_path=f".{field}",
    )


class Tenancy(Model):
    """Which namespaces' ResilientApps may use this CloudProvider (its DNS zones, capacity,
    buckets, volumes and member clusters), and where their capacity may act.

    A namespace is admitted when namespaces lists it or namespaceSelector matches its
    labels. Empty (the default), the CloudProvider admits no namespace: an install upgraded
    from a release without tenancy must grant its apps' namespaces, or every app is refused
    (ConfigurationValid False, reason ProviderNotPermitted) and nothing is done through the
    CloudProvider. namespaces: ["*"] admits every namespace: a conscious grant for
    single-tenant clusters.
    """

    namespaces: tuple[NamespaceGrant, ...] = Field(
        default=(),
        max_length=256,
        description='Namespaces admitted by name; ["*"] admits every namespace.',
        json_schema_extra=_GRANTS,
    )
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Namespaces admitted by their labels. It must say something: an empty "
        'selector is refused (write namespaces: ["*"] to admit every namespace).',
    )
    capacity_namespaces: tuple[NamespaceGrant, ...] = Field(
        default=(),
        max_length=256,
        description="Namespaces, besides the app's own, in which an admitted app's "
        "kubernetesDeployments may scale Deployments (in this cluster and in member "
        'clusters); ["*"]: any namespace. Default: none, an app scales only in its own '
        "namespace.",
        json_schema_extra=_GRANTS,
    )

    rules, model_config = with_rules(
        _alone("namespaces", lambda t: t.namespaces),
        _alone("capacityNamespaces", lambda t: t.capacity_namespaces),
        Rule(
            cel="!has(self.namespaceSelector) || "
            "(has(self.namespaceSelector.matchLabels) && "
            "self.namespaceSelector.matchLabels.size() > 0) || "
            "(has(self.namespaceSelector.matchExpressions) && "
            "self.namespaceSelector.matchExpressions.size() > 0)",
            message="tenancy.namespaceSelector selects nothing in particular (an empty "
            "selector would admit every namespace): give matchLabels or matchExpressions, "
            "or write namespaces: ['*'] to admit every namespace",
            check=lambda t: t.namespace_selector is None or not t.namespace_selector.empty,
            field_path=".namespaceSelector",
        ),
    )


class MemberCluster(Model):
    """A Kubernetes cluster other than Lifeboat's own whose Deployments the sites of this
    CloudProvider may scale (capacity.kubernetesDeployments.cluster names it)."""

    name: SiteName = Field(description="Name sites use for the cluster.")
    kubeconfig_secret_ref: SecretKeyRef = Field(
        description="The cluster's kubeconfig: a key of a Secret in the controller's "
        "namespace. Only a CloudProvider names such a Secret; apps name the cluster."
    )


class CloudProviderSpec(Model):
    """One cloud account or project and how to reach it."""

    type: Literal["aws", "openstack", "rfc2136", "external-dns"] = Field(
        description="Cloud type. aws: AWS or an EC2/Route 53-compatible endpoint. "
        "openstack: an OpenStack cloud (Keystone v3). rfc2136: a DNS server taking dynamic "
        "updates signed with TSIG (DNS traffic only; its regions name gates, e.g. a data "
        "centre). external-dns: DNSEndpoint objects published by external-dns through any "
        "of its DNS providers (DNS traffic only).",
    )
    regions: tuple[CloudName, ...] = Field(
        min_length=1,
        max_length=32,
        description="Regions of this provider that apps may use.",
    )
    credentials: Credentials = Field(description="Where credentials come from.")
    endpoint_overrides: tuple[EndpointOverride, ...] = Field(
        default=(),
        max_length=64,
        description=(
            "Endpoint URLs to use instead of the public (or catalog) ones. The most "
            "specific entry wins: service and region, then service, then region."
        ),
    )
    tls: TLSSettings = Field(default=TLSSettings(), description="TLS verification.")
    api_plane: ApiPlanePolicy = Field(
        default=ApiPlanePolicy(), description="API-plane health judgement and retry budget."
    )
    openstack: OpenStackSettings | None = Field(
        default=None, description="OpenStack settings (type openstack only)."
    )
    rfc2136: Rfc2136Settings | None = Field(
        default=None, description="The DNS server and TSIG key (type rfc2136 only)."
    )
    external_dns: ExternalDnsSettings | None = Field(
        default=None,
        alias="externalDNS",
        description="Where the DNSEndpoint objects go (type external-dns only).",
    )
    tenancy: Tenancy = Field(
        default=Tenancy(),
        description="Which namespaces may use this CloudProvider. Default: none. "
        "Upgrading from a release without tenancy: grant your apps' namespaces here, or "
        "they are all refused.",
    )
    clusters: tuple[MemberCluster, ...] = Field(
        default=(),
        max_length=32,
        description="Member clusters (Kubernetes) whose Deployments sites of this provider "
        "may scale, each with its kubeconfig Secret.",
        json_schema_extra=list_map("name"),
    )

    def cluster(self, name: str) -> MemberCluster | None:
        """The member cluster called ``name``, if listed."""
        return next((c for c in self.clusters if c.name == name), None)

    rules, model_config = with_rules(
        Rule(
            cel="self.regions.all(r, self.regions.exists_one(q, q == r))",
            message="regions must be unique",
            check=lambda s: unique(s.regions),
        ),
        Rule(
            cel="self.clusters.all(c, self.clusters.exists_one(d, d.name == c.name))",
            message="cluster names must be unique",
            check=lambda s: unique([c.name for c in s.clusters]),
            field_path=".clusters",
        ),
        Rule(
            cel="self.type == 'openstack' || !has(self.openstack)",
            message="openstack settings are only for type openstack",
            check=lambda s: s.type == "openstack" or s.openstack is None,
        ),
        Rule(
            cel="(self.type == 'rfc2136') == has(self.rfc2136)",
            message="rfc2136 settings are required for type rfc2136, and only for it",
            check=lambda s: (s.type == "rfc2136") == (s.rfc2136 is not None),
        ),
        Rule(
            cel="(self.type == 'external-dns') == has(self.externalDNS)",
            message="externalDNS settings are required for type external-dns, and only for it",
            check=lambda s: (s.type == "external-dns") == (s.external_dns is not None),
        ),
        Rule(
            cel="self.type != 'rfc2136' || self.credentials.source == 'Secret'",
            message="type rfc2136 takes its TSIG secret from a Secret (credentials.source: "
            "Secret, key tsig_secret)",
            check=lambda s: s.type != "rfc2136" or s.credentials.source == "Secret",
        ),
    )


class ProviderZone(Model):
    """A zone as the provider reports it."""

    name: str = Field(max_length=63, description="Zone name.")
    state: str = Field(max_length=32, description="Provider's word, e.g. available, impaired.")


class RegionStatus(Model):
    """A region's API plane, as Lifeboat judges it from its calls."""

    name: str = Field(max_length=63, description="Region.")
    api_plane: Literal["Unknown", "Healthy", "Degraded", "Impaired"] = Field(
        description="Unknown, Healthy, Degraded or Impaired."
    )
    since: Timestamp | None = Field(default=None, description="When it entered that state.")
    reason: str = Field(default="", max_length=1024, description="Why.")
    calls: int = Field(default=0, ge=0, description="Calls in the window.")
    error_share: float = Field(default=0, ge=0, le=1, description="Share of errors.")
    throttle_share: float = Field(default=0, ge=0, le=1, description="Share throttled.")
    latency_p50_ms: float | None = Field(default=None, ge=0, description="Median latency.")
    latency_p99_ms: float | None = Field(default=None, ge=0, description="p99 latency.")
    retry_tokens: float = Field(default=0, ge=0, description="Retry budget left.")
    zones: tuple[ProviderZone, ...] = Field(
        default=(), max_length=32, description="Zones as the provider reports them."
    )
    last_probe_time: Timestamp | None = Field(default=None, description="Last probe.")


class ProviderStatus(Model):
    """Observed state of a CloudProvider."""

    observed_generation: int | None = Field(
        default=None, ge=0, le=MAX_EPOCH, description="Last generation seen."
    )
    account: str | None = Field(
        default=None, description="Account or project the credentials belong to."
    )
    last_checked_time: Timestamp | None = Field(
        default=None, description="When the credentials were last verified."
    )
    regions: tuple[RegionStatus, ...] = Field(
        default=(),
        max_length=32,
        description="Per-region API-plane health.",
        json_schema_extra=list_map("name"),
    )
    conditions: Conditions
