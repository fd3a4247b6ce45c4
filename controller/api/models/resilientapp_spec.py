"""The ResilientApp kind's spec: its sites (zones, endpoints, DNS values, capacity), health
checks, failover policy and traffic; the replicated data is in
:mod:`controller.api.models.replication`."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from controller.api.models.common import (
    DNS_NAME,
    HTTP_URL,
    IPV4,
    IPV6,
    CloudName,
    Model,
    ObjectName,
    SecretKeyRef,
    SiteName,
    with_rules,
)
from controller.api.models.replication import ReplicationSpec
from controller.api.rules import Rule, unique

STATUS_RANGE = r"^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$"
StatusRange = Annotated[str, Field(min_length=3, max_length=7, pattern=STATUS_RANGE)]
HOST_HEADER = r"^([A-Za-z0-9_]([-A-Za-z0-9_.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$"
TCP_URL = r"^tcp://([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$"
PROBE_URL = f"({HTTP_URL})|({TCP_URL})"
DEFAULT_STATUS = ("200-299",)
MAX_BODY_BYTES = 1024 * 1024


class ConfigMapKeyRef(Model):
    """A key of a ConfigMap in the app's own namespace."""

    name: ObjectName = Field(description="ConfigMap name.")
    key: str = Field(
        default="ca.crt", min_length=1, max_length=253, description="Key in the ConfigMap."
    )


class BodyMatch(Model):
    """What the start of an answer's body must hold (exactly one of contains, regex)."""

    contains: str | None = Field(
        default=None, min_length=1, max_length=1024, description="Text the body must contain."
    )
    regex: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Regular expression (Python syntax) the body must match somewhere "
        "(re.search). A pattern that does not compile is refused when Lifeboat reads the "
        "spec (ConfigurationValid False, InvalidSpec).",
    )

    rules, model_config = with_rules(
        Rule(
            cel="has(self.contains) != has(self.regex)",
            message="a body match needs exactly one of contains, regex",
            check=lambda b: (b.contains is None) != (b.regex is None),
        ),
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        # Not a CEL rule: CEL's regular expressions are RE2's, the probe's are Python's.
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"body.regex is not a valid regular expression: {error}") from None
        return pattern

    def matches(self, text: str) -> bool:
        if self.contains is not None:
            return self.contains in text
        return re.search(self.regex or "", text) is not None


class HttpProbe(Model):
    """What an HTTP(S) probe asks for and what answer counts as healthy."""

    expected_status: tuple[StatusRange, ...] = Field(
        default=DEFAULT_STATUS,
        min_length=1,
        max_length=16,
        description="Status codes that count as healthy: codes (`204`) or ranges "
        "(`200-399`). Default `200-299`: since this field exists, a redirect (3xx) no "
        "longer counts as healthy unless listed (redirects are never followed).",
    )
    host: str | None = Field(
        default=None,
        max_length=259,
        pattern=HOST_HEADER,
        description="Host header to send (name[:port]) instead of the URL's; for HTTPS also "
        "the TLS server name (SNI) and the name the certificate must carry, unless "
        "tls.serverName says otherwise. Lets a probe reach one zone's address while "
        "asking for the app's virtual host.",
    )
    body: BodyMatch | None = Field(
        default=None,
        description="The body must contain a text or match a regular expression; only its "
        "first maxBodyBytes are read.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        le=MAX_BODY_BYTES,
        description="How much of the body is read (and matched) at most.",
    )

    rules, model_config = with_rules(
        Rule(
            cel="self.expectedStatus.all(s, s.size() == 3 || s.substring(0, 3) <= s.substring(4))",
            message="a status range must run from low to high (e.g. 200-299)",
            check=lambda h: all(len(s) == 3 or s[:3] <= s[4:] for s in h.expected_status),
            field_path=".expectedStatus",
        ),
    )

    @property
    def statuses(self) -> frozenset[int]:
        """Every status code that counts as healthy (one set shared by every endpoint that
        expects the same: each probe target keeps it, and ``200-399`` is a 200-code set)."""
        return status_codes(self.expected_status)

    def accepts(self, status: int) -> bool:
        return status in self.statuses


@functools.lru_cache(maxsize=256)
def status_codes(expected: tuple[str, ...]) -> frozenset[int]:
    """The status codes ``expected`` ranges hold (``200``, ``200-299``), built once per
    distinct list of ranges."""
    codes: set[int] = set()
    for item in expected:
        low, _, high = item.partition("-")
        codes.update(range(int(low), int(high or low) + 1))
    return frozenset(codes)


class TlsProbe(Model):
    """How an HTTPS probe checks the endpoint's certificate."""

    ca_bundle: ConfigMapKeyRef | None = Field(
        default=None,
        description="CA certificates (PEM) the endpoint's certificate must chain to, from a "
        "ConfigMap in the app's namespace (CA certificates are public: the operator reads "
        "ConfigMaps, never application Secrets; trust-manager and `kube-root-ca.crt` "
        "publish bundles this way). Default: the system's trust store. Its content is "
        "never logged nor reported.",
    )
    server_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_NAME,
        description="TLS server name (SNI) to send and the name the certificate must carry; "
        "default: http.host without its port, else the URL's host.",
    )


class ZoneEndpoint(Model):
    """An endpoint of the app inside one zone, probed for data-plane health."""

    zone: CloudName = Field(description="Zone this endpoint runs in; one of the site's zones.")
    url: str = Field(
        max_length=2048,
        pattern=PROBE_URL,
        description="What is probed: `http://` or `https://` URLs with an HTTP GET (by "
        "default only a 2xx answer is healthy, see http.expectedStatus; 3xx used to count "
        "and no longer does), `tcp://host:port` with a TCP connect. Every probe opens a new "
        "connection.",
    )
    http: HttpProbe | None = Field(
        default=None,
        description="HTTP(S) probe settings for this endpoint; default: health.http (the "
        "whole object replaces health.http, fields are not merged).",
    )
    tls: TlsProbe | None = Field(
        default=None,
        description="HTTPS certificate checks for this endpoint; default: health.tls (the "
        "whole object replaces it).",
    )

    rules, model_config = with_rules(
        Rule(
            cel="!self.url.startsWith('tcp://') || (!has(self.http) && !has(self.tls))",
            message="a tcp:// endpoint takes no http or tls settings",
            check=lambda e: not e.tcp or (e.http is None and e.tls is None),
        ),
        Rule(
            cel="!has(self.tls) || self.url.startsWith('https://')",
            message="tls settings need an https:// endpoint",
            check=lambda e: e.tls is None or e.url.startswith("https://"),
        ),
    )

    @property
    def tcp(self) -> bool:
        return self.url.startswith("tcp://")

    def settings(self, health: HealthPolicy) -> tuple[HttpProbe | None, TlsProbe | None]:
        """The HTTP and TLS settings that apply (``None`` where they do not: TCP
        endpoints, TLS on plain HTTP), the endpoint's own before the app's defaults."""
        if self.tcp:
            return None, None
        http = self.http or health.http or HttpProbe()
        tls = (self.tls or health.tls or TlsProbe()) if self.url.startswith("https://") else None
        return http, tls


DnsValue = Annotated[str, Field(max_length=253)]


class ZoneTarget(Model):
    """DNS values that belong to one zone (e.g. a load balancer's address in that zone):
    taking the zone out of traffic removes them from the site's record."""

    zone: CloudName = Field(description="One of the site's zones.")
    values: tuple[DnsValue, ...] = Field(
        min_length=1, max_length=8, description="The zone's DNS values."
    )


class AutoScalingGroupRef(Model):
    """An AWS Auto Scaling group running the site."""

    name: str = Field(min_length=1, max_length=255, description="Group name.")
    subnets: tuple[Annotated[str, Field(max_length=64)], ...] = Field(
        default=(),
        max_length=64,
        description="Every subnet the group may use (evacuation removes a zone's subnets and "
        "restoring puts them back); default: the group's subnets when first seen.",
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
    """Deployments per zone in a Kubernetes cluster (this one, or a member cluster that the
    site's CloudProvider lists), in the app's own namespace unless that CloudProvider
    grants another."""

    namespace: ObjectName | None = Field(
        default=None,
        description="Namespace of the Deployments; default: the app's own. Another namespace "
        "must be granted by the site's CloudProvider (spec.tenancy.capacityNamespaces).",
    )
    selector: dict[Annotated[str, Field(max_length=317)], Annotated[str, Field(max_length=63)]] = (
        Field(min_length=1, max_length=16, description="Labels selecting the site's Deployments.")
    )
    zone_label: str = Field(
        default="topology.kubernetes.io/zone",
        max_length=317,
        description="Label that names each Deployment's zone.",
    )
    cluster: SiteName | None = Field(
        default=None,
        description="A member cluster listed in the site's CloudProvider (spec.clusters, "
        "which names its kubeconfig Secret); default: this cluster, the one Lifeboat runs in.",
    )
    kubeconfig_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="No longer accepted (refused): an app names no Secret. List the member "
        "cluster under its CloudProvider's spec.clusters and name it in cluster.",
    )

    rules, model_config = with_rules(
        Rule(
            cel="!has(self.kubeconfigSecretRef)",
            message="kubernetesDeployments.kubeconfigSecretRef is no longer accepted: list the "
            "member cluster (with its kubeconfig Secret) under the CloudProvider's "
            "spec.clusters and name it in kubernetesDeployments.cluster",
            check=lambda d: d.kubeconfig_secret_ref is None,
            field_path=".kubeconfigSecretRef",
        ),
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

    rules, model_config = with_rules(
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

    rules, model_config = with_rules(
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
    suspect_interval_seconds: float | None = Field(
        default=None,
        ge=0.1,
        le=3600,
        description="Time between probe rounds while a zone is Suspect or Recovering (the "
        "next rounds confirm or clear it sooner, like HAProxy's fastinter); a zone then goes "
        "Down about (failureThreshold - 1) x this after its first failed probe. Rounds never "
        "come sooner than timeoutSeconds. Default: intervalSeconds (no faster rounds).",
    )

    latency_threshold_seconds: float | None = Field(
        default=None,
        gt=0,
        le=60,
        description="An answer slower than this counts as a failed probe (gray failure).",
    )
    http: HttpProbe | None = Field(
        default=None,
        description="HTTP(S) probe settings of every http:// and https:// endpoint that has "
        "none of its own; default: GET, healthy on 200-299 (not 3xx).",
    )
    tls: TlsProbe | None = Field(
        default=None,
        description="Certificate checks of every https:// endpoint that has none of its own; "
        "default: the system's trust store, the URL's host (or http.host) as server name.",
    )

    rules, model_config = with_rules(
        Rule(
            cel="self.timeoutSeconds <= double(self.intervalSeconds)",
            message="health.timeoutSeconds must not exceed health.intervalSeconds",
            check=lambda h: h.timeout_seconds <= h.interval_seconds,
        ),
        Rule(
            cel="!has(self.suspectIntervalSeconds) || "
            "self.suspectIntervalSeconds <= double(self.intervalSeconds)",
            message="health.suspectIntervalSeconds must not exceed health.intervalSeconds",
            check=lambda h: (
                h.suspect_interval_seconds is None
                or h.suspect_interval_seconds <= h.interval_seconds
            ),
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


class ReadinessPolicy(Model):
    """How Lifeboat checks that capacity is there: standby readiness, and the capacity a
    failover or an evacuation asks for coming up."""

    interval_seconds: int = Field(
        default=60,
        ge=5,
        le=3600,
        description="How often every site's capacity is read from its driver (ready "
        "instances, recent failed scale-ups, limits) for standby readiness. A site whose "
        "capacity was just set is read every health interval (at least every 5 s) until it "
        "is Ready or capacityTimeoutSeconds has passed.",
    )
    capacity_timeout_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="How long capacity that was set may take to be Ready. After it the "
        "CapacityReady condition turns False (CapacityNotReady, with the figures). A site "
        "that no longer takes the traffic shrinks to standbyPerZone only once the active "
        "site's capacity is Ready, or this long after that capacity was set: then it shrinks "
        "anyway and says why (0: it does not wait for Ready). While the active site's "
        "capacity change is not carried out (held or failing), the old site keeps its "
        "capacity, with no bound.",
    )


class WriteFenceWebhook(Model):
    """A webhook that stops and resumes the app's writes at a site. Lifeboat POSTs
    ``{"action": "stop"|"resume", "site", "app", "epoch", "requestId"}`` as JSON; any 2xx
    answer means done (its body is recorded, up to 256 characters), anything else is
    retried every round until the drain timeout."""

    url: str = Field(
        max_length=2048,
        pattern=HTTP_URL,
        description="http(s) URL called with POST for every stop and resume.",
    )
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="How long one call may take."
    )


class NoWriteFence(Model):
    """No hook: whoever asks for the planned switchover stops the writes at the old site
    (and resumes them at the new one) themselves; Lifeboat still waits for replication to
    drain before it moves."""


class WriteFence(Model):
    """How writes at the old site are stopped before a planned switchover (exactly one)."""

    webhook: WriteFenceWebhook | None = Field(
        default=None, description="Call a webhook to stop and resume writes."
    )
    none: NoWriteFence | None = Field(
        default=None, description="No hook: the user stops and resumes writes."
    )

    rules, model_config = with_rules(
        Rule(
            cel="[has(self.webhook), has(self.none)].filter(x, x).size() == 1",
            message="failover.planned.writeFence needs exactly one of webhook or none",
            check=lambda f: (f.webhook is not None) + (f.none is not None) == 1,
        ),
    )


class PlannedPolicy(Model):
    """Planned switchovers (``lifeboat failover --planned``, ``failback --planned``):
    writes stopped at the old site, replication drained to the new one, then the move, for
    an RPO of 0."""

    write_fence: WriteFence = Field(
        default=WriteFence(none=NoWriteFence()),
        description="How writes are stopped at the old site (default: none, the user stops them).",
    )
    drain_timeout_seconds: int = Field(
        default=300,
        ge=5,
        le=86400,
        description="How long replication may take to drain once writes are stopped "
        "(counted from the request). Past it, writes resume at the old site and the request "
        "is refused: the app stays where it was.",
    )


class FailoverPolicy(Model):
    """When and how Lifeboat acts."""

    mode: Literal["Automatic", "Manual", "Observe"] = Field(
        default="Observe",
        description="Observe (the default): shadow mode, decide and record what would be "
        "done, never act. Automatic: act on decisions. Manual: decide and recommend; act "
        "once a user approves (lifeboat approve). Set Automatic once the recorded decisions "
        "look right.",
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
    readiness: ReadinessPolicy = Field(
        default=ReadinessPolicy(),
        description="Standby readiness checks and capacity verification.",
    )
    planned: PlannedPolicy = Field(
        default=PlannedPolicy(),
        description="Planned switchovers without loss (lifeboat failover --planned).",
    )


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

    rules, model_config = with_rules(
        Rule(
            cel="has(self.hostedZoneId) || has(self.hostedZoneName)",
            message="traffic needs hostedZoneId or hostedZoneName",
            check=lambda t: t.hosted_zone_id is not None or t.hosted_zone_name is not None,
        ),
    )


def _addresses(record_type: str, family: str, pattern: str) -> Rule:
    """The rule that an A (AAAA) record takes IPv4 (IPv6) addresses: ``pattern``."""
    return Rule(
        cel=f"self.traffic.recordType != '{record_type}' || self.sites.all(s, "
        f"s.trafficTargets.all(t, t.matches('{pattern}')) && "
        f"s.zoneTargets.all(z, z.values.all(t, t.matches('{pattern}'))))",
        message=f"an {record_type} record takes {family} addresses as traffic targets",
        check=lambda a: (
            a.traffic.record_type != record_type
            or all(re.match(pattern, t) for s in a.sites for t in s.values())
        ),
        field_path=".sites",
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

    rules, model_config = with_rules(
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
        _addresses("A", "IPv4", IPV4),
        _addresses("AAAA", "IPv6", IPV6),
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
