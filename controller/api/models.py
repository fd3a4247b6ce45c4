"""Resource models of ``lifeboat.dev/v1alpha1``: the single source of truth.

The CRDs under ``manifests/crds`` are generated from these models (``make manifests``),
and a test fails when the committed CRDs differ from what the models generate. Field
descriptions become ``kubectl explain`` text and the CRD reference.

Cross-field rules live in :mod:`controller.api.rules` form: CEL for the API server and the
same predicate for Python, sharing one message.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from controller.api.rules import Rule, enforce, schema_extra, unique

GROUP = "lifeboat.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
CLOUD_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
DNS_NAME = (
    r"^(\*\.)?([A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?\.?$"
)
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = f"^({_OCTET}[.]){{3}}{_OCTET}$"
IPV6 = "^[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}$"
_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
HTTP_URL = (
    rf"^https?://({_LABEL}(\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(:[0-9]{{1,5}})?([/?#][^\s]*)?$"
)

SiteName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME)]
CloudName = Annotated[str, Field(min_length=1, max_length=63, pattern=CLOUD_NAME)]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


def list_map(*keys: str) -> dict[str, Any]:
    """Schema of a list merged by ``keys`` (server-side apply, strategic merges)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class Model(BaseModel):
    """Base: camelCase on the wire, immutable in Python, unknown fields ignored.

    The API server prunes unknown fields, so ignoring them here only matters for documents
    parsed offline; immutability lets the decision core share models safely.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _enforce_rules(self) -> Model:
        enforce(type(self).rules, self)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict as the API server stores it (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_merge_patch(self) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) that makes the stored object equal to this one.

        Unset fields of objects become ``null`` (which deletes them); lists are replaced
        whole, so their items carry no nulls.
        """
        return _patch_value(self.model_dump(mode="json", by_alias=True))  # type: ignore[no-any-return]


def _patch_value(value: Any, in_list: bool = False) -> Any:
    if isinstance(value, dict):
        return {
            k: _patch_value(v, in_list) for k, v in value.items() if not (in_list and v is None)
        }
    if isinstance(value, list):
        return [_patch_value(v, in_list=True) for v in value]
    return value


def _with_rules(*rules: Rule) -> tuple[tuple[Rule, ...], ConfigDict]:
    """Rules for a model plus the ``model_config`` that publishes them as CEL."""
    return rules, ConfigDict(json_schema_extra=schema_extra(rules))


# --------------------------------------------------------------------------- CloudProvider


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

    rules, model_config = _with_rules(
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

    rules, model_config = _with_rules(
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


class CloudProviderSpec(Model):
    """One cloud account or project and how to reach it."""

    type: Literal["aws", "openstack"] = Field(
        description="Cloud type. aws: AWS or an EC2/Route 53-compatible endpoint. "
        "openstack: an OpenStack cloud (Keystone v3).",
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

    rules, model_config = _with_rules(
        Rule(
            cel="self.regions.all(r, self.regions.exists_one(q, q == r))",
            message="regions must be unique",
            check=lambda s: unique(s.regions),
        ),
        Rule(
            cel="self.type == 'openstack' || !has(self.openstack)",
            message="openstack settings are only for type openstack",
            check=lambda s: s.type == "openstack" or s.openstack is None,
        ),
    )


class Condition(Model):
    """Shaped like metav1.Condition."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was set for."
    )
    last_transition_time: Timestamp = Field(description="When status last changed.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase machine-readable reason.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")


Conditions = Annotated[
    tuple[Condition, ...],
    Field(
        default=(),
        max_length=16,
        description="Kubernetes-style conditions.",
        json_schema_extra=list_map("type"),
    ),
]


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

    observed_generation: int | None = Field(default=None, description="Last generation seen.")
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


# --------------------------------------------------------------------------- ResilientApp


class ZoneEndpoint(Model):
    """An HTTP endpoint of the app inside one zone, probed for data-plane health."""

    zone: CloudName = Field(description="Zone this endpoint runs in; one of the site's zones.")
    url: str = Field(
        max_length=2048,
        pattern=HTTP_URL,
        description="URL probed with HTTP GET; any 2xx or 3xx answer counts as healthy.",
    )


DnsValue = Annotated[str, Field(max_length=253)]


class ZoneTarget(Model):
    """DNS values that belong to one zone (e.g. a load balancer's address in that zone):
    taking the zone out of traffic removes them from the site's record."""

    zone: CloudName = Field(description="One of the site's zones.")
    values: tuple[DnsValue, ...] = Field(
        min_length=1, max_length=8, description="The zone's DNS values."
    )


class SecretKeyRef(Model):
    """A key of a Secret in the controller's namespace."""

    name: ObjectName = Field(description="Secret name.")
    key: str = Field(default="kubeconfig", max_length=253, description="Key in the Secret.")


class AutoScalingGroupRef(Model):
    """An AWS Auto Scaling group running the site."""

    name: str = Field(min_length=1, max_length=255, description="Group name.")
    subnets: tuple[Annotated[str, Field(max_length=64)], ...] = Field(
        default=(),
        max_length=64,
        description="Every subnet the group may use (evacuation removes a zone's subnets and "
        "restoring puts them back); default: the group's subnets when first seen.",
    )
    target_group_arn: str | None = Field(
        default=None, max_length=2048, description="ELBv2 target group, for instance health."
    )


class OpenStackServersTemplate(Model):
    """Nova servers built from a template, one set per availability zone."""

    name_prefix: SiteName = Field(description="Server names start with this.")
    flavor: str = Field(min_length=1, max_length=255, description="Flavor name or ID.")
    image: str = Field(min_length=1, max_length=255, description="Image name or ID.")
    networks: tuple[Annotated[str, Field(max_length=255)], ...] = Field(
        default=(), max_length=8, description="Networks (names or IDs) to attach."
    )
    server_group: str | None = Field(
        default=None, max_length=255, description="Server group (name or ID)."
    )


class KubernetesDeployments(Model):
    """Deployments per zone in a Kubernetes cluster (this one, or a member cluster)."""

    namespace: ObjectName = Field(description="Namespace of the Deployments.")
    selector: dict[Annotated[str, Field(max_length=317)], Annotated[str, Field(max_length=63)]] = (
        Field(min_length=1, max_length=16, description="Labels selecting the site's Deployments.")
    )
    zone_label: str = Field(
        default="topology.kubernetes.io/zone",
        max_length=317,
        description="Label that names each Deployment's zone.",
    )
    kubeconfig_secret_ref: SecretKeyRef | None = Field(
        default=None, description="A member cluster's kubeconfig; default: this cluster."
    )


class CapacitySpec(Model):
    """How many instances the site runs per zone, and through what."""

    per_zone: int = Field(ge=0, le=10000, description="Instances per zone while active.")
    standby_per_zone: int | None = Field(
        default=None,
        ge=0,
        le=10000,
        description="Instances per zone while standby (warm capacity); default perZone "
        "(hot standby). A failover target is scaled to perZone after traffic has moved.",
    )
    auto_scaling_group: AutoScalingGroupRef | None = Field(
        default=None, description="AWS: an Auto Scaling group."
    )
    openstack_servers: OpenStackServersTemplate | None = Field(
        default=None, description="OpenStack: Nova servers from a template."
    )
    kubernetes_deployments: KubernetesDeployments | None = Field(
        default=None, description="Kubernetes: Deployments per zone."
    )

    rules, model_config = _with_rules(
        Rule(
            cel="[has(self.autoScalingGroup), has(self.openstackServers), "
            "has(self.kubernetesDeployments)].filter(x, x).size() == 1",
            message="capacity needs exactly one of autoScalingGroup, openstackServers, "
            "kubernetesDeployments",
            check=lambda c: (
                sum(
                    x is not None
                    for x in (c.auto_scaling_group, c.openstack_servers, c.kubernetes_deployments)
                )
                == 1
            ),
        ),
    )

    def standby(self) -> int:
        return self.per_zone if self.standby_per_zone is None else self.standby_per_zone


class Site(Model):
    """One placement of the app: a provider region and its zones."""

    name: SiteName = Field(description="Unique site name (a DNS label).")
    provider: ObjectName = Field(description="Name of the CloudProvider hosting this site.")
    region: CloudName = Field(description="Region of the provider.")
    role: Literal["primary", "standby"] = Field(
        default="standby",
        description="primary takes traffic and writes at first; standby is warm capacity "
        "kept ready. Exactly one site is primary.",
    )
    priority: int = Field(
        default=100,
        ge=0,
        le=1000,
        description="Failover preference among standbys: lower is tried first, then spec order.",
    )
    zones: tuple[CloudName, ...] = Field(
        max_length=16, description="Availability zones of the site (at least one)."
    )
    endpoints: tuple[ZoneEndpoint, ...] = Field(
        default=(),
        max_length=64,
        description="Zonal endpoints probed for data-plane health. A zone is healthy when "
        "any of its endpoints answers.",
    )
    traffic_health_check_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=HTTP_URL,
        description="Public URL the DNS service checks itself (traffic.routing Failover).",
    )
    traffic_targets: tuple[DnsValue, ...] = Field(
        default=(),
        max_length=16,
        description="Values of this site's DNS record that belong to no zone in particular: "
        "IP addresses for A/AAAA records, one host name for CNAME.",
    )
    zone_targets: tuple[ZoneTarget, ...] = Field(
        default=(),
        max_length=16,
        description="Values of this site's DNS record per zone; a zone out of traffic has "
        "its values left out of the record.",
    )
    capacity: CapacitySpec | None = Field(
        default=None,
        description="Capacity per zone: moved out of an evacuated zone, raised on a "
        "failover target. Without it Lifeboat moves traffic only.",
    )

    def values(self, zones_in_traffic: frozenset[str] | set[str] | None = None) -> tuple[str, ...]:
        """The site's DNS values with only ``zones_in_traffic`` (default: every zone)."""
        keep = [
            value
            for target in self.zone_targets
            if zones_in_traffic is None or target.zone in zones_in_traffic
            for value in target.values
        ]
        return tuple(dict.fromkeys([*self.traffic_targets, *keep]))

    rules, model_config = _with_rules(
        Rule(
            cel="self.trafficTargets.size() > 0 || self.zoneTargets.size() > 0",
            message="a site needs trafficTargets or zoneTargets",
            check=lambda s: bool(s.traffic_targets or s.zone_targets),
        ),
        Rule(
            cel="self.zoneTargets.all(t, t.zone in self.zones)",
            message="every zone target must name one of the site's zones",
            check=lambda s: all(t.zone in s.zones for t in s.zone_targets),
            field_path=".zoneTargets",
        ),
        Rule(
            cel="self.zoneTargets.all(t, self.zoneTargets.exists_one(u, u.zone == t.zone))",
            message="a zone may have only one zone target",
            check=lambda s: unique([t.zone for t in s.zone_targets]),
            field_path=".zoneTargets",
        ),
        Rule(
            cel="self.zones.size() > 0",
            message="a site must list at least one zone",
            check=lambda s: len(s.zones) > 0,
            field_path=".zones",
        ),
        Rule(
            cel="self.zones.all(z, self.zones.exists_one(y, y == z))",
            message="zone names must be unique within a site",
            check=lambda s: unique(s.zones),
            field_path=".zones",
        ),
        Rule(
            cel="self.endpoints.all(e, e.zone in self.zones)",
            message="every endpoint must name one of the site's zones",
            check=lambda s: all(e.zone in s.zones for e in s.endpoints),
            field_path=".endpoints",
        ),
    )


class HealthPolicy(Model):
    """How zones are probed and when a zone counts as down or healthy again."""

    interval_seconds: int = Field(
        default=10, ge=1, le=3600, description="Time between probe rounds."
    )
    timeout_seconds: float = Field(
        default=2.0, ge=0.1, le=60, description="Timeout of one probe request."
    )
    failure_threshold: int = Field(
        default=3,
        ge=2,
        le=100,
        description="Consecutive failed rounds before a zone is Down (at least 2: a single "
        "failed probe never acts).",
    )
    success_threshold: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Consecutive good rounds before a Down zone is Healthy again.",
    )

    latency_threshold_seconds: float | None = Field(
        default=None,
        gt=0,
        le=60,
        description="An answer slower than this counts as a failed probe (gray failure).",
    )

    rules, model_config = _with_rules(
        Rule(
            cel="self.timeoutSeconds <= double(self.intervalSeconds)",
            message="health.timeoutSeconds must not exceed health.intervalSeconds",
            check=lambda h: h.timeout_seconds <= h.interval_seconds,
        ),
        Rule(
            cel="!has(self.latencyThresholdSeconds) || "
            "self.latencyThresholdSeconds < self.timeoutSeconds",
            message="health.latencyThresholdSeconds must be below health.timeoutSeconds",
            check=lambda h: (
                h.latency_threshold_seconds is None
                or h.latency_threshold_seconds < h.timeout_seconds
            ),
        ),
    )


class ZonalEvacuation(Model):
    """Taking one failed zone out of traffic inside its region."""

    enabled: bool = Field(default=True, description="Evacuate lone failed zones.")
    restore_after_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="How long an evacuated zone must stay Healthy before it takes traffic "
        "and capacity again.",
    )


class CascadePolicy(Model):
    """When a failure has spread beyond one zone, and the app must leave the region."""

    zones_down: int = Field(
        default=2,
        ge=2,
        le=16,
        description="Zones Down at once in the active site that make a multi-zone failure.",
    )
    api_plane: Literal["Degraded", "Impaired"] = Field(
        default="Impaired",
        description="API-plane state of the active site's region at which a zone failure "
        "counts as a cascade (replacement capacity could not be launched there).",
    )


class FailbackPolicy(Model):
    """Returning to the declared primary after it recovers."""

    mode: Literal["Manual", "Automatic"] = Field(
        default="Manual",
        description="Manual: only on request (lifeboat failback). Automatic: once the "
        "primary has been healthy for stableSeconds and replication has caught up.",
    )
    stable_seconds: int = Field(
        default=900, ge=0, le=604800, description="How long the primary must stay healthy."
    )


class FailoverPolicy(Model):
    """When and how Lifeboat acts."""

    mode: Literal["Automatic", "Manual", "Observe"] = Field(
        default="Automatic",
        description="Automatic: act on decisions. Manual: decide and recommend; act once a "
        "user approves (lifeboat approve). Observe: shadow mode, decide and record what "
        "would be done, never act.",
    )
    zonal_evacuation: ZonalEvacuation = Field(
        default=ZonalEvacuation(), description="Lone zone failures."
    )
    cascade: CascadePolicy = Field(default=CascadePolicy(), description="Cascades.")
    min_dwell_seconds: int = Field(
        default=600,
        ge=0,
        le=86400,
        description="Minimum time between two failovers (anti-flapping).",
    )
    max_failovers_per_hour: int = Field(
        default=3, ge=1, le=100, description="Failover budget over any hour."
    )
    min_healthy_target_zones: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Healthy zones a site needs to be a failover target.",
    )
    failback: FailbackPolicy = Field(default=FailbackPolicy(), description="Failback.")


class TrafficPolicy(Model):
    """The DNS record that sends users to the active site."""

    provider: ObjectName = Field(description="CloudProvider whose DNS service hosts the record.")
    hosted_zone_id: str | None = Field(
        default=None, max_length=64, description="Hosted zone ID; or give hostedZoneName."
    )
    hosted_zone_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_NAME, description="Hosted zone name."
    )
    record_name: str = Field(
        max_length=253, pattern=DNS_NAME, description="Fully qualified record name."
    )
    record_type: Literal["A", "AAAA", "CNAME"] = Field(default="A", description="Record type.")
    ttl: int = Field(default=60, ge=0, le=86400, description="Record TTL in seconds.")
    routing: Literal["Weighted", "Failover"] = Field(
        default="Weighted",
        description="Weighted: one record set per site, weight 100 for the active site "
        "and 0 for the others, changed in one atomic change. Failover (Route 53): the "
        "active site is the primary record and the best standby the secondary, each with "
        "a DNS health check on its trafficHealthCheckUrl, so DNS itself fails over even "
        "when Lifeboat or a control plane is down. OpenStack Designate has no weights: "
        "the record holds the active site's values.",
    )
    region: CloudName | None = Field(
        default=None,
        description="Region of the DNS service, for regional ones (Designate); default: "
        "the provider's first region. Route 53 is global.",
    )

    rules, model_config = _with_rules(
        Rule(
            cel="has(self.hostedZoneId) || has(self.hostedZoneName)",
            message="traffic needs hostedZoneId or hostedZoneName",
            check=lambda t: t.hosted_zone_id is not None or t.hosted_zone_name is not None,
        ),
    )


# --------------------------------------------------------------------------- replication


class ObjectLocation(Model):
    """Where a dataset's objects live at one site: an S3 bucket or a Swift container in the
    site's provider and region."""

    site: SiteName = Field(description="One of the app's sites.")
    bucket: str = Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="S3 bucket or Swift container name.",
    )
    prefix: str = Field(
        default="", max_length=1024, description="Only keys under this prefix are replicated."
    )
    event_queue: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^(https?://\S+|[A-Za-z0-9_-]{1,80}(\.fifo)?)$",  # .fifo: refused below, in words
        description="S3 only: a standard SQS queue (name or URL, in the bucket's region) that "
        "the bucket's event notifications (ObjectCreated, ObjectRemoved) are sent to. While "
        "this site is the source, Lifeboat reads it to replicate changes within seconds; the "
        "periodic scan remains the backstop.",
    )

    rules, model_config = _with_rules(
        Rule(
            cel="!has(self.eventQueue) || !self.eventQueue.endsWith('.fifo')",
            message="eventQueue must be a standard queue: S3 sends no event notifications "
            "to FIFO queues",
            check=lambda loc: not (loc.event_queue or "").endswith(".fifo"),
            field_path=".eventQueue",
        ),
    )


class ObjectDataset(Model):
    """Objects replicated from the active site to every other site."""

    name: SiteName = Field(description="Dataset name, unique within the app.")
    locations: tuple[ObjectLocation, ...] = Field(
        min_length=2, max_length=16, description="One bucket or container per site."
    )
    delete_policy: Literal["Keep", "Propagate"] = Field(
        default="Keep",
        description="Keep: objects deleted at the source stay at the other sites. "
        "Propagate: they are deleted there too.",
    )
    max_concurrency: int = Field(
        default=8, ge=1, le=256, description="Objects copied at once, per destination."
    )
    bandwidth_limit_bytes_per_second: int | None = Field(
        default=None, ge=1024, description="Upper bound on copy throughput, per destination."
    )
    scan_interval_seconds: int = Field(
        default=60,
        ge=5,
        le=86400,
        description="Period of the reconciling scan (the backstop to change events). "
        "Without an eventQueue, changes are found by the scan alone: keep it well below "
        "the RPO target.",
    )

    rules, model_config = _with_rules(
        Rule(
            cel="self.locations.all(l, self.locations.exists_one(m, m.site == l.site))",
            message="a dataset may have only one location per site",
            check=lambda d: unique([loc.site for loc in d.locations]),
            field_path=".locations",
        ),
    )


class VolumeLocation(Model):
    """A volume dataset at one site."""

    site: SiteName = Field(description="One of the app's sites.")
    volume_ids: tuple[Annotated[str, Field(max_length=255)], ...] = Field(
        default=(),
        max_length=64,
        description="Volumes holding the data at this site while it is active (at the "
        "primary: the volumes to protect; elsewhere: filled in by restores).",
    )


class VolumeDataset(Model):
    """Block volumes protected by snapshots copied to the other sites' regions."""

    name: SiteName = Field(description="Dataset name, unique within the app.")
    locations: tuple[VolumeLocation, ...] = Field(
        min_length=2, max_length=16, description="One entry per site."
    )
    interval_seconds: int = Field(
        default=3600, ge=60, le=604800, description="Time between snapshots."
    )
    retain: int = Field(
        default=7, ge=1, le=1000, description="Snapshots (and copies) kept per volume and site."
    )

    rules, model_config = _with_rules(
        Rule(
            cel="self.locations.all(l, self.locations.exists_one(m, m.site == l.site))",
            message="a dataset may have only one location per site",
            check=lambda d: unique([loc.site for loc in d.locations]),
            field_path=".locations",
        ),
    )


class ReplicationSpec(Model):
    """Data Lifeboat replicates between the app's sites."""

    rpo_target_seconds: int = Field(
        default=300,
        ge=1,
        le=604800,
        description="Data the app may lose, in seconds of changes; RPOBreached above it.",
    )
    objects: tuple[ObjectDataset, ...] = Field(
        default=(), max_length=32, description="Object datasets (S3, Swift)."
    )
    volumes: tuple[VolumeDataset, ...] = Field(
        default=(), max_length=32, description="Volume datasets (EBS, Cinder)."
    )

    rules, model_config = _with_rules(
        Rule(
            cel="(self.objects.map(d, d.name) + self.volumes.map(d, d.name))"
            ".all(n, (self.objects.map(d, d.name) + self.volumes.map(d, d.name))"
            ".exists_one(m, m == n))",
            message="dataset names must be unique",
            check=lambda r: unique([d.name for d in (*r.objects, *r.volumes)]),
        ),
    )


class ResilientAppSpec(Model):
    """An application spread over sites, and how Lifeboat keeps it available."""

    sites: tuple[Site, ...] = Field(min_length=1, max_length=16, description="Where the app runs.")
    health: HealthPolicy = Field(default=HealthPolicy(), description="Data-plane health checks.")
    failover: FailoverPolicy = Field(default=FailoverPolicy(), description="Failover behaviour.")
    traffic: TrafficPolicy = Field(description="How traffic reaches the active site.")
    replication: ReplicationSpec | None = Field(
        default=None, description="Data replicated between the sites."
    )

    rules, model_config = _with_rules(
        Rule(
            cel="!has(self.replication) || "
            "self.replication.objects.all(d, d.locations.all(l, "
            "self.sites.exists(s, s.name == l.site))) && "
            "self.replication.volumes.all(d, d.locations.all(l, "
            "self.sites.exists(s, s.name == l.site)))",
            message="every replication location must name one of the app's sites",
            check=lambda a: (
                a.replication is None
                or all(
                    a.site(loc.site) is not None
                    for d in (*a.replication.objects, *a.replication.volumes)
                    for loc in d.locations
                )
            ),
            field_path=".replication",
        ),
        Rule(
            cel="self.sites.filter(s, s.role == 'primary').size() == 1",
            message="exactly one site must have role primary",
            check=lambda a: sum(1 for s in a.sites if s.role == "primary") == 1,
            field_path=".sites",
        ),
        Rule(
            cel="self.sites.all(s, self.sites.exists_one(t, t.name == s.name))",
            message="site names must be unique",
            check=lambda a: unique([s.name for s in a.sites]),
            field_path=".sites",
        ),
        Rule(
            cel="self.traffic.recordType != 'A' || self.sites.all(s, "
            f"s.trafficTargets.all(t, t.matches('{IPV4}')) && "
            f"s.zoneTargets.all(z, z.values.all(t, t.matches('{IPV4}'))))",
            message="an A record takes IPv4 addresses as traffic targets",
            check=lambda a: (
                a.traffic.record_type != "A"
                or all(re.match(IPV4, t) for s in a.sites for t in s.values())
            ),
            field_path=".sites",
        ),
        Rule(
            cel="self.traffic.recordType != 'AAAA' || self.sites.all(s, "
            f"s.trafficTargets.all(t, t.matches('{IPV6}')) && "
            f"s.zoneTargets.all(z, z.values.all(t, t.matches('{IPV6}'))))",
            message="an AAAA record takes IPv6 addresses as traffic targets",
            check=lambda a: (
                a.traffic.record_type != "AAAA"
                or all(re.match(IPV6, t) for s in a.sites for t in s.values())
            ),
            field_path=".sites",
        ),
        Rule(
            cel="self.traffic.recordType != 'CNAME' || "
            "self.sites.all(s, s.trafficTargets.size() == 1 && s.zoneTargets.size() == 0)",
            message="a CNAME record takes exactly one traffic target per site and no zoneTargets",
            check=lambda a: (
                a.traffic.record_type != "CNAME"
                or all(len(s.traffic_targets) == 1 and not s.zone_targets for s in a.sites)
            ),
            field_path=".sites",
        ),
    )

    def site(self, name: str) -> Site | None:
        """The site called ``name``, if declared."""
        return next((s for s in self.sites if s.name == name), None)

    @property
    def primary(self) -> Site:
        """The declared primary site (the rules guarantee exactly one)."""
        return next(s for s in self.sites if s.role == "primary")


ZoneState = Literal["Unknown", "Healthy", "Suspect", "Down", "Recovering"]
SiteState = Literal["Unknown", "Healthy", "Degraded", "Down"]
AppPhase = Literal["Pending", "Healthy", "Degraded", "Frozen", "FailingOver", "Down", "Invalid"]


class ZoneStatus(Model):
    """Data-plane health of one zone."""

    site: str = Field(max_length=63, description="Site of the zone.")
    zone: str = Field(max_length=63, description="Zone name.")
    state: ZoneState = Field(description="Unknown, Healthy, Suspect, Down or Recovering.")
    consecutive_failures: int = Field(default=0, ge=0, description="Failed rounds in a row.")
    consecutive_successes: int = Field(default=0, ge=0, description="Good rounds in a row.")
    since: Timestamp | None = Field(default=None, description="When the zone entered its state.")
    failing_since: Timestamp | None = Field(
        default=None, description="First failed probe of the current failure streak."
    )
    last_ok_time: Timestamp | None = Field(
        default=None, description="Last probe the zone answered."
    )
    last_probe_time: Timestamp | None = Field(default=None, description="Last probe round.")
    latency_ms: float | None = Field(default=None, ge=0, description="Last probe latency.")
    message: str = Field(default="", max_length=1024, description="Last probe outcome.")
    in_traffic: bool = Field(
        default=True, description="False while the zone is evacuated (out of traffic)."
    )


class ZoneCount(Model):
    zone: str = Field(max_length=63, description="Zone.")
    count: int = Field(ge=0, description="Instances.")


class CapacityStatus(Model):
    """Capacity as Lifeboat last set it."""

    applied_time: Timestamp = Field(description="When it was set.")
    fingerprint: str = Field(max_length=64, description="Digest of what was set.")
    zones: tuple[ZoneCount, ...] = Field(default=(), max_length=16, description="Per zone.")


class SiteStatus(Model):
    """Summary of one site."""

    name: str = Field(max_length=63, description="Site name.")
    active: bool = Field(description="Whether this site takes traffic.")
    state: SiteState = Field(description="Unknown, Healthy, Degraded or Down.")
    healthy_zones: int = Field(ge=0, description="Zones in state Healthy.")
    total_zones: int = Field(ge=0, description="Zones declared.")
    api_plane: str = Field(
        default="Unknown", max_length=16, description="API-plane verdict of its region."
    )
    healthy_since: Timestamp | None = Field(
        default=None, description="Since when every probed zone has been Healthy."
    )
    capacity: CapacityStatus | None = Field(default=None, description="Capacity as set.")


class PendingAction(Model):
    """An action the decision calls for that has not been carried out yet."""

    id: str = Field(max_length=256, description="Stable identity of the action.")
    kind: str = Field(max_length=32, description="ShiftTraffic, SetCapacity or RestoreVolumes.")
    target: str = Field(max_length=512, description="What it changes.")
    state: Literal["Pending", "Running", "Held"] = Field(description="Where it stands.")
    reason: str = Field(default="", max_length=1024, description="Why it is held.")


class RecommendationStatus(Model):
    """A decision waiting for approval (Manual) or recorded only (Observe)."""

    id: str = Field(max_length=256, description="Approve it with this ID.")
    response: str = Field(max_length=32, description="What would be done.")
    summary: str = Field(max_length=1024, description="Why.")
    target: str | None = Field(default=None, max_length=63, description="Site concerned.")
    zones: tuple[Annotated[str, Field(max_length=63)], ...] = Field(
        default=(), max_length=16, description="Zones concerned."
    )
    time: Timestamp = Field(description="When it was decided.")


class RequestStatus(Model):
    """The last user request (failover, failback) and how it was answered."""

    id: str = Field(max_length=256, description="Request ID.")
    op: str = Field(max_length=32, description="failover or failback.")
    accepted: bool = Field(description="Whether it was carried out.")
    reason: str = Field(max_length=1024, description="Why (or why not).")
    time: Timestamp = Field(description="When it was answered.")


class FailoverRecord(Model):
    """What happened at a failover."""

    epoch: int = Field(ge=1, description="Epoch the failover raised the app to.")
    from_site: str = Field(max_length=63, description="Site traffic moved away from.")
    to_site: str = Field(max_length=63, description="Site traffic moved to.")
    reason: str = Field(max_length=1024, description="Why.")
    outage_start_time: Timestamp | None = Field(
        default=None, description="First failed probe of the outage that caused it."
    )
    decided_time: Timestamp = Field(description="When the failover was decided.")
    completed_time: Timestamp | None = Field(
        default=None, description="When traffic was confirmed moved (the DNS change in sync)."
    )
    detection_seconds: float | None = Field(
        default=None, ge=0, description="From outage start to decision."
    )
    rto_seconds: float | None = Field(
        default=None, ge=0, description="From outage start to traffic moved (measured RTO)."
    )
    manual: bool = Field(default=False, description="Requested by a user.")


class TrafficStatus(Model):
    """What the DNS record says, as last applied by Lifeboat."""

    active_site: str | None = Field(default=None, max_length=63, description="Weighted 100.")
    epoch: int = Field(default=0, ge=0, description="Epoch last applied to DNS.")
    applied_time: Timestamp | None = Field(default=None, description="When it was applied.")
    change_id: str | None = Field(default=None, max_length=256, description="DNS change ID.")
    hosted_zone_id: str | None = Field(default=None, max_length=64, description="Hosted zone ID.")
    hosted_zone_name: str | None = Field(
        default=None, max_length=253, description="Hosted zone name."
    )
    record_name: str | None = Field(default=None, max_length=253, description="Record name.")
    record_type: str | None = Field(default=None, max_length=8, description="Record type.")
    ttl: int | None = Field(default=None, ge=0, description="Record TTL.")
    fingerprint: str | None = Field(
        default=None, max_length=64, description="Digest of the DNS state applied."
    )


class Fact(Model):
    """One observation or threshold a decision rested on."""

    name: str = Field(max_length=128, description="What.")
    value: str = Field(max_length=1024, description="Its value.")


class DecisionRecord(Model):
    """The latest decision and its explanation (the trace)."""

    time: Timestamp = Field(description="When the decision was first taken.")
    rule: str = Field(max_length=64, description="Rule that decided, e.g. site-down or cascade.")
    summary: str = Field(max_length=1024, description="The decision in one sentence.")
    facts: tuple[Fact, ...] = Field(
        default=(), max_length=64, description="Observations and thresholds behind it."
    )


class ReplicationStatus(Model):
    """Replication of one dataset from the active site to one other site."""

    dataset: str = Field(max_length=63, description="Dataset name.")
    destination: str = Field(max_length=63, description="Receiving site.")
    kind: Literal["Objects", "Volumes"] = Field(description="Object or volume dataset.")
    source: str = Field(max_length=63, description="Sending site (the active site).")
    epoch: int = Field(default=0, ge=0, description="Epoch the data is replicated under.")
    pending_objects: int = Field(
        default=0, ge=0, description="Objects (or snapshots) not yet at the destination."
    )
    pending_bytes: int = Field(default=0, ge=0, description="Bytes not yet at the destination.")
    rpo_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Current RPO: age of the oldest change not yet replicated (objects), or "
        "of the newest copy at the destination (volumes). Empty until first measured.",
    )
    oldest_pending_time: Timestamp | None = Field(
        default=None, description="When the oldest unreplicated change was made."
    )
    last_sync_time: Timestamp | None = Field(
        default=None, description="When the destination was last known caught up."
    )
    newest_copy_time: Timestamp | None = Field(
        default=None, description="Volumes: when the newest copy at the destination was taken."
    )
    copied_objects: int = Field(default=0, ge=0, description="Objects copied so far.")
    copied_bytes: int = Field(default=0, ge=0, description="Bytes copied so far.")
    throughput_bytes_per_second: float = Field(
        default=0, ge=0, description="Copy throughput over the last pass."
    )
    errors: int = Field(default=0, ge=0, description="Copies that failed so far.")
    conflicts: int = Field(
        default=0, ge=0, description="Copies refused: the destination held a newer epoch."
    )
    last_error: str = Field(default="", max_length=1024, description="Latest error, if any.")


class RestoredVolume(Model):
    """A volume made from the newest copy at a site when a failover made the site active."""

    dataset: str = Field(max_length=63, description="Volume dataset.")
    volume: str = Field(
        max_length=255,
        description="The protected volume it continues (the ID it was first protected "
        "under; snapshots of every successor carry it).",
    )
    volume_id: str = Field(max_length=255, description="The volume made at this site.")
    zone: str = Field(max_length=63, description="Zone it was made in.")
    snapshot_id: str = Field(max_length=255, description="Copy it was made from.")
    snapshot_time: Timestamp | None = Field(
        default=None, description="When the data in that copy was taken."
    )
    state: str | None = Field(
        default=None,
        max_length=32,
        description="The volume's state when Lifeboat last looked, while its site is "
        "active: the provider's word (creating, available, in-use, error, ...) or "
        "not-found. It is snapshotted, and so replicated, once it is made and has not "
        "failed.",
    )


class VolumeRestoreStatus(Model):
    """Volumes restored at one site by the failover that made it active (under its epoch);
    while the site is active they are the source that replication snapshots."""

    site: str = Field(max_length=63, description="Site the volumes were made at.")
    epoch: int = Field(ge=1, description="Epoch of the failover that restored them.")
    time: Timestamp = Field(description="When the restore was completed.")
    volumes: tuple[RestoredVolume, ...] = Field(
        default=(), max_length=2048, description="Volumes made, per dataset."
    )
    missing: tuple[Annotated[str, Field(max_length=320)], ...] = Field(
        default=(),
        max_length=2048,
        description="dataset/volume without any copy at the site: nothing to restore from.",
    )


class ResilientAppStatus(Model):
    """Observed state of a ResilientApp."""

    observed_generation: int | None = Field(default=None, description="Last generation seen.")
    phase: AppPhase | None = Field(default=None, description="Overall state of the app.")
    active_site: str | None = Field(
        default=None, max_length=63, description="Site that takes traffic."
    )
    epoch: int | None = Field(
        default=None, ge=1, description="Fencing epoch; rises at every failover."
    )
    healthy_zones: str | None = Field(
        default=None, max_length=16, description="Healthy zones over all zones, e.g. 5/6."
    )
    zones: tuple[ZoneStatus, ...] = Field(
        default=(),
        max_length=256,
        description="Per-zone data-plane health.",
        json_schema_extra=list_map("site", "zone"),
    )
    sites: tuple[SiteStatus, ...] = Field(
        default=(),
        max_length=16,
        description="Per-site summary.",
        json_schema_extra=list_map("name"),
    )
    traffic: TrafficStatus | None = Field(default=None, description="DNS as last applied.")
    last_failover: FailoverRecord | None = Field(default=None, description="Latest failover.")
    recent_failovers: tuple[Timestamp, ...] = Field(
        default=(), max_length=100, description="When failovers were decided in the last hour."
    )
    last_decision: DecisionRecord | None = Field(
        default=None, description="Latest decision and why it was taken."
    )
    actions: tuple[PendingAction, ...] = Field(
        default=(), max_length=32, description="Actions not carried out yet."
    )
    recommendation: RecommendationStatus | None = Field(
        default=None, description="Decision waiting for approval (Manual) or shadowed (Observe)."
    )
    last_request: RequestStatus | None = Field(default=None, description="Last user request.")
    pinned_site: str | None = Field(
        default=None, max_length=63, description="Site the app is pinned to (annotation)."
    )
    replication: tuple[ReplicationStatus, ...] = Field(
        default=(),
        max_length=512,
        description="Per dataset and destination: pending changes, RPO, throughput.",
        json_schema_extra=list_map("dataset", "destination"),
    )
    volume_restores: tuple[VolumeRestoreStatus, ...] = Field(
        default=(),
        max_length=16,
        description="Per site: the volumes the latest failover to it restored from copies.",
        json_schema_extra=list_map("site"),
    )
    conditions: Conditions
