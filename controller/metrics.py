"""Every Prometheus metric Lifeboat exports, declared in one place.

Names, units and labels are a public contract (dashboards and alert rules depend on them):
add, never rename. Labels carry names of apps, sites, zones, providers and regions only:
never credentials or anything read from a Secret.

Metrics live in their own registry so that several operators in one process (tests) and
the default process collectors do not collide.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from controller import __version__
from controller.api.names import CLOUD_PROVIDER, FAILOVER_DRILL, RESILIENT_APP
from controller.core.apiplane import ApiPlaneHealth, ApiPlaneState
from controller.core.health import ZoneState
from controller.core.model import (
    Action,
    Decision,
    Phase,
    Situation,
)

REGISTRY = CollectorRegistry(auto_describe=True)

BUILD_INFO = Info("lifeboat_build", "Lifeboat build information.", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})

ZONE_STATE = Gauge(
    "lifeboat_zone_state",
    "1 for the zone's current data-plane state, 0 for the others.",
    ["namespace", "app", "site", "zone", "state"],
    registry=REGISTRY,
)
ZONE_HEALTHY = Gauge(
    "lifeboat_zone_healthy",
    "1 when the zone is Healthy, else 0.",
    ["namespace", "app", "site", "zone"],
    registry=REGISTRY,
)
PROBE_DURATION = Histogram(
    "lifeboat_probe_duration_seconds",
    "Latency of data-plane probes, by outcome.",
    ["namespace", "app", "site", "zone", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
PROBES_INCONCLUSIVE = Counter(
    "lifeboat_probes_inconclusive_total",
    "Probes judged by the clock (no answer in time, or a late one) while the operator's own "
    "event loop ran a quarter of the timeout late or more: left out of their round as no "
    "evidence. Rising: the operator is overloaded.",
    registry=REGISTRY,
)
PROBE_ROUND_LAG = Histogram(
    "lifeboat_probe_round_lag_seconds",
    "How late probe rounds start against their schedule (every app's rounds on a grid of "
    "its health.intervalSeconds); a growing tail means the operator cannot keep up.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
SITE_INFO = Gauge(
    "lifeboat_site_info",
    "1 for each site of the app, with the CloudProvider and region it runs in (join it to "
    "put provider and region on a site's or a zone's series).",
    ["namespace", "app", "site", "provider", "region"],
    registry=REGISTRY,
)
APP_CONFIGURATION_VALID = Gauge(
    "lifeboat_app_configuration_valid",
    "1 while the app's configuration is accepted, 0 while Lifeboat reports it invalid: its "
    "spec refused (phase Invalid) or a reference it cannot resolve (condition "
    "ConfigurationValid False: a CloudProvider or region missing, not permitted, ...).",
    ["namespace", "app"],
    registry=REGISTRY,
)
APP_EPOCH = Gauge(
    "lifeboat_app_epoch", "Fencing epoch of the app.", ["namespace", "app"], registry=REGISTRY
)
ACTIVE_SITE = Gauge(
    "lifeboat_app_active_site",
    "1 for the site that takes the app's traffic, 0 for the others.",
    ["namespace", "app", "site"],
    registry=REGISTRY,
)
DNS_WEIGHT = Gauge(
    "lifeboat_dns_weight",
    "The site's weight in the app's DNS record as this operator last set it (a traffic "
    "shift carried out: 100 for the site that takes the traffic, 0 for the others); absent "
    "until this operator has set the app's DNS.",
    ["namespace", "app", "site"],
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "lifeboat_failovers_total",
    "Failovers decided, by origin and destination site.",
    ["namespace", "app", "from_site", "to_site"],
    registry=REGISTRY,
)
LAST_FAILOVER_DETECTION = Gauge(
    "lifeboat_last_failover_detection_seconds",
    "Time from outage start to the failover decision, for the latest failover.",
    ["namespace", "app"],
    registry=REGISTRY,
)
LAST_FAILOVER_RTO = Gauge(
    "lifeboat_last_failover_rto_seconds",
    "Time from outage start to traffic moved (measured RTO), for the latest failover.",
    ["namespace", "app"],
    registry=REGISTRY,
)
TRAFFIC_SHIFT_ERRORS = Counter(
    "lifeboat_traffic_shift_errors_total",
    "Traffic shifts that failed and will be retried.",
    ["namespace", "app"],
    registry=REGISTRY,
)
CLOUD_CALLS = Counter(
    "lifeboat_cloud_api_calls_total",
    "Calls to cloud APIs, by outcome (ok, throttled, server_error, timeout, ...).",
    ["provider", "region", "service", "outcome"],
    registry=REGISTRY,
)
CLOUD_CALL_DURATION = Histogram(
    "lifeboat_cloud_api_call_duration_seconds",
    "Latency of calls to cloud APIs.",
    ["provider", "region", "service"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "lifeboat_reconcile_errors_total",
    "Rounds (and CloudProvider handler runs) that ended in an unexpected error, by resource kind.",
    ["kind"],
    registry=REGISTRY,
)
EVENTS_SUPPRESSED = Counter(
    "lifeboat_events_suppressed_total",
    "Events not posted because their object had posted too many of that reason lately "
    "(more than a burst of 25, then one per 5 minutes, as client-go's spam filter).",
    ["reason"],
    registry=REGISTRY,
)
API_PLANE_STATE = Gauge(
    "lifeboat_api_plane_state",
    "1 for the region's current API-plane state (Unknown, Healthy, Degraded, Impaired).",
    ["provider", "region", "state"],
    registry=REGISTRY,
)
API_PLANE_LATENCY_P99 = Gauge(
    "lifeboat_api_plane_latency_p99_seconds",
    "p99 latency of the region's API calls over the judgement window.",
    ["provider", "region"],
    registry=REGISTRY,
)
API_PLANE_ERROR_SHARE = Gauge(
    "lifeboat_api_plane_error_ratio",
    "Share of the region's API calls that failed (5xx, timeouts, resets, capacity).",
    ["provider", "region"],
    registry=REGISTRY,
)
API_PLANE_THROTTLE_SHARE = Gauge(
    "lifeboat_api_plane_throttle_ratio",
    "Share of the region's API calls that were throttled.",
    ["provider", "region"],
    registry=REGISTRY,
)
RETRY_BUDGET = Gauge(
    "lifeboat_retry_budget_tokens",
    "Retries the region's budget still allows.",
    ["provider", "region"],
    registry=REGISTRY,
)
CALLS_REFUSED = Gauge(
    "lifeboat_cloud_api_calls_refused",
    "Calls not sent because the region's API plane is impaired (since start).",
    ["provider", "region"],
    registry=REGISTRY,
)
PROVIDER_READY = Gauge(
    "lifeboat_provider_ready",
    "1 when the CloudProvider's credentials were verified, else 0.",
    ["provider"],
    registry=REGISTRY,
)
PROVIDER_CONFIGURATION_VALID = Gauge(
    "lifeboat_provider_configuration_valid",
    "1 while the CloudProvider's spec is accepted, 0 while Lifeboat reports it invalid (its "
    "Ready condition: reason InvalidProvider).",
    ["provider"],
    registry=REGISTRY,
)

# ----------------------------------------------------------------------- replication
# One series per app, dataset (object or volume) and destination site. Data flows from the
# active site to every other site; ``destination`` is the receiving site.
_REPLICATION_LABELS = ["namespace", "app", "dataset", "destination"]
REPLICATION_PENDING_OBJECTS = Gauge(
    "lifeboat_replication_pending_objects",
    "Objects (or volume snapshots) changed at the source and not yet at the destination.",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_PENDING_BYTES = Gauge(
    "lifeboat_replication_pending_bytes",
    "Bytes changed at the source and not yet at the destination.",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_PENDING_ESTIMATED = Gauge(
    "lifeboat_replication_pending_estimated",
    "1 while more changes are pending than a flow tracks one by one (10,000): the pending "
    "figures and the RPO are upper bounds until a pass lists both ends to the end.",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_UNREPLICATED_OBJECTS = Gauge(
    "lifeboat_replication_unreplicated_objects",
    "Objects of an older epoch at the destination that never reached the active site (after "
    "a failover: the old primary's writes the new one did not get); kept until merged or "
    "discarded.",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_UNREPLICATED_BYTES = Gauge(
    "lifeboat_replication_unreplicated_bytes",
    "Bytes of the objects of an older epoch at the destination that never reached the active site.",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_RPO = Gauge(
    "lifeboat_replication_rpo_seconds",
    "Current RPO: age of the oldest change not yet at the destination (objects), or age "
    "of the newest copy available at the destination (volumes); 0 when caught up.",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_RPO_TARGET = Gauge(
    "lifeboat_replication_rpo_target_seconds",
    "The app's declared RPO target for the dataset.",
    ["namespace", "app", "dataset"],
    registry=REGISTRY,
)
REPLICATION_BYTES = Counter(
    "lifeboat_replication_bytes_total",
    "Bytes copied to the destination (rate() gives throughput).",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_STREAMED_BYTES = Counter(
    "lifeboat_replication_streamed_bytes_total",
    "Bytes sent towards the destination as they stream, copies in progress and failed "
    "ones included (shows a long copy progressing before it completes).",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_PROVIDER_COPIES = Gauge(
    "lifeboat_replication_provider_copies",
    "Copies the cloud itself is still making to the destination (EBS snapshot copies, "
    "Cinder backups); object copies, which Lifeboat streams, show as "
    "lifeboat_replication_streamed_bytes_total instead.",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_OBJECTS = Counter(
    "lifeboat_replication_objects_total",
    "Objects (or snapshots) copied to the destination.",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_DELETES = Counter(
    "lifeboat_replication_deletes_total",
    "Deletes propagated to the destination (delete policy Propagate).",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_ERRORS = Counter(
    "lifeboat_replication_errors_total",
    "Copies that failed (and will be retried).",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_CONFLICTS = Counter(
    "lifeboat_replication_conflicts_total",
    "Copies refused because the destination holds a newer-epoch object.",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)
REPLICATION_LAST_SUCCESS = Gauge(
    "lifeboat_replication_last_success_timestamp_seconds",
    "Unix time of the last replication pass that completed without error.",
    _REPLICATION_LABELS,
    registry=REGISTRY,
)

# ------------------------------------------------------------- decisions and controller
APP_PHASES = (*(p.value for p in Phase), "Invalid")
APP_PHASE = Gauge(
    "lifeboat_app_phase",
    "1 for the app's current phase (Pending, Healthy, Degraded, Frozen, FailingOver, Down, "
    "Invalid), 0 for the others.",
    ["namespace", "app", "phase"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "lifeboat_decisions_total",
    "Decision rounds, by the rule that decided (steady, lone-zone-failure, cascade, ...) and "
    "what came of it (failover, evacuation, restore, recommended, held, refused, none).",
    ["namespace", "app", "rule", "outcome"],
    registry=REGISTRY,
)
DNS_DIVERGENCES = Counter(
    "lifeboat_dns_divergences_total",
    "Times DNS, read back, did not hold what the app's status recorded (a lost status, a "
    "change behind Lifeboat's back, a newer epoch written by another instance); each is "
    "healed toward the higher epoch.",
    ["namespace", "app"],
    registry=REGISTRY,
)
DNS_CONFLICT = Gauge(
    "lifeboat_dns_conflict",
    "1 while the app's DNS name is held by another owner (Lifeboat changes nothing there).",
    ["namespace", "app"],
    registry=REGISTRY,
)
LAST_FAILOVER_TIMESTAMP = Gauge(
    "lifeboat_last_failover_timestamp_seconds",
    "Unix time the latest failover (or failback) was decided; 0 if there was none.",
    ["namespace", "app"],
    registry=REGISTRY,
)
ACTIONS_PENDING = Gauge(
    "lifeboat_actions_pending",
    "Actions due (DNS, capacity, volume restores) and not yet carried out, the running "
    "one included.",
    ["namespace", "app"],
    registry=REGISTRY,
)
ACTIONS_HELD = Gauge(
    "lifeboat_actions_held",
    "Actions withheld because their region's API plane is Impaired (static stability).",
    ["namespace", "app"],
    registry=REGISTRY,
)
ACTION_FAILURES = Counter(
    "lifeboat_action_failures_total",
    "Actions that failed (and will be retried), by kind (ShiftTraffic, SetCapacity, ...).",
    ["namespace", "app", "kind"],
    registry=REGISTRY,
)
HEALTHY_STANDBY_SITES = Gauge(
    "lifeboat_app_healthy_standby_sites",
    "Sites other than the active one that qualify as failover targets now (enough Healthy "
    "zones, API plane not Impaired).",
    ["namespace", "app"],
    registry=REGISTRY,
)
STANDBY_SITES = Gauge(
    "lifeboat_app_standby_sites",
    "Sites other than the active one declared in the app's spec.",
    ["namespace", "app"],
    registry=REGISTRY,
)
STANDBY_READY = Gauge(
    "lifeboat_standby_ready",
    "Per site that does not take the traffic: 1 when it could take it now (zones qualify, "
    "capacity Ready as its driver reports it, no failed scale-up, quota headroom), 0 when "
    "not; absent while its capacity has not been read.",
    ["namespace", "app", "site"],
    registry=REGISTRY,
)
STANDBY_READY_INSTANCES = Gauge(
    "lifeboat_standby_ready_instances",
    "Instances a standby site's capacity driver reports Ready (InService, ACTIVE, ready replicas).",
    ["namespace", "app", "site"],
    registry=REGISTRY,
)
STANDBY_WANTED_INSTANCES = Gauge(
    "lifeboat_standby_wanted_instances",
    "Instances a standby site is asked to run (standbyPerZone x zones).",
    ["namespace", "app", "site"],
    registry=REGISTRY,
)
STANDBY_FAILOVER_INSTANCES = Gauge(
    "lifeboat_standby_failover_instances",
    "Instances a standby site runs once it takes the traffic (perZone x zones).",
    ["namespace", "app", "site"],
    registry=REGISTRY,
)
STANDBY_HEADROOM = Gauge(
    "lifeboat_standby_headroom_instances",
    "Instances more a standby site's cloud quota allows; absent where the cloud does not say.",
    ["namespace", "app", "site"],
    registry=REGISTRY,
)
STANDBY_MAX_SIZE = Gauge(
    "lifeboat_standby_max_size_instances",
    "A standby site's own capacity bound (an Auto Scaling group's MaxSize, which Lifeboat "
    "raises when a change needs more); absent where the capacity has none.",
    ["namespace", "app", "site"],
    registry=REGISTRY,
)
CAPACITY_READY_SECONDS = Gauge(
    "lifeboat_capacity_ready_seconds",
    "For the capacity last set for a site: seconds from when it was asked for (the "
    "failover's decision, when a failover asked for it) to its driver reporting it Ready.",
    ["namespace", "app", "site"],
    registry=REGISTRY,
)
CAPACITY_NOT_READY = Gauge(
    "lifeboat_capacity_not_ready",
    "1 while the capacity last set for a site is not Ready within "
    "readiness.capacityTimeoutSeconds, else 0.",
    ["namespace", "app", "site"],
    registry=REGISTRY,
)
PROBE_INTERVAL = Gauge(
    "lifeboat_app_probe_interval_seconds",
    "The app's health.intervalSeconds: the period of its probe-decide-act rounds.",
    ["namespace", "app"],
    registry=REGISTRY,
)
LAST_RECONCILE = Gauge(
    "lifeboat_last_reconcile_timestamp_seconds",
    "Unix time the app's latest probe-decide-act round completed.",
    ["namespace", "app"],
    registry=REGISTRY,
)
RECONCILE_ROUNDS = Counter(
    "lifeboat_reconcile_rounds_total",
    "Rounds completed (apps: probe-decide-act rounds; providers: checks; drills: ticks), by "
    "resource kind.",
    ["kind"],
    registry=REGISTRY,
)
# ---------------------------------------------------------------- peers (several vantages)
VANTAGE_DISAGREEMENT = Gauge(
    "lifeboat_vantage_disagreement",
    "With peers: how many heard peers see the zone Down while the others do not (a "
    "minority: the zone is not Down for decisions); 0 when they agree.",
    ["namespace", "app", "site", "zone"],
    registry=REGISTRY,
)
VANTAGE_PEERS_HEARD = Gauge(
    "lifeboat_vantage_peers_heard",
    "With peers: peers whose views of the app entered its last decision, this one included.",
    ["namespace", "app"],
    registry=REGISTRY,
)
VANTAGE_QUORUM = Gauge(
    "lifeboat_vantage_quorum",
    "With peers: 1 while a majority of all peers is heard (zone evidence may move the app), "
    "else 0.",
    ["namespace", "app"],
    registry=REGISTRY,
)
PEER_SPEC_DRIFT = Gauge(
    "lifeboat_peer_spec_drift",
    "With peers: how many heard peers read a different spec of the app than this one.",
    ["namespace", "app"],
    registry=REGISTRY,
)

LEADER = Gauge(
    "lifeboat_leader",
    "1 while this instance acts (holds the leader Lease, or runs without leader election), "
    "0 while it waits as a standby.",
    registry=REGISTRY,
)
LEADERSHIP_LOSSES = Counter(
    "lifeboat_leadership_losses_total",
    "Times this instance lost the leader Lease while acting (not renewed in time, or taken "
    "by another instance) and stopped acting.",
    registry=REGISTRY,
)
PEER_LEASE_HELD = Gauge(
    "lifeboat_peer_lease_held",
    "Multi-peer mode: 1 while this peer holds the lifeboat Lease of that peer cluster (as it "
    "counts it: renewed within the renew deadline), else 0. A peer leads while it holds "
    "lifeboat_peer_leases_needed of them.",
    ["cluster"],
    registry=REGISTRY,
)
PEER_LEASES_NEEDED = Gauge(
    "lifeboat_peer_leases_needed",
    "Multi-peer mode: how many peer clusters' Leases a peer must hold to lead (a majority "
    "of the peers).",
    registry=REGISTRY,
)
ACTIONS_NO_MAJORITY = Gauge(
    "lifeboat_actions_no_majority",
    "Multi-peer mode: 1 while the app's next action (a failover, an evacuation, a capacity "
    "step) waits because its decision could not be recorded in a majority of the peer "
    "clusters (NoMajority), else 0.",
    ["namespace", "app"],
    registry=REGISTRY,
)
PEER_HEARD = Gauge(
    "lifeboat_peer_heard",
    "Multi-peer mode: 1 while this peer hears the other peer (its published sequence rose "
    "within the last three heartbeats, on this peer's clock), else 0.",
    ["peer"],
    registry=REGISTRY,
)
PEER_REQUESTS = Counter(
    "lifeboat_peer_requests_total",
    "Multi-peer mode: requests of the peer heartbeat, by the peer whose cluster they went "
    "to (this peer's own: its publication) and verb (get, patch).",
    ["peer", "verb"],
    registry=REGISTRY,
)
PEER_PUBLISHED_BYTES = Gauge(
    "lifeboat_peer_published_bytes",
    "Multi-peer mode: size of the apps list this peer publishes (JSON bytes).",
    registry=REGISTRY,
)
PEER_APPS_LEFT_OUT = Gauge(
    "lifeboat_peer_apps_left_out",
    "Multi-peer mode: apps left out of this peer's publication to keep it within its size "
    "bound (the other peers see no view of them from this peer).",
    registry=REGISTRY,
)

_DRILL_LABELS = ["namespace", "app", "drill", "kind"]
DRILL_RESULTS = ("Succeeded", "Failed", "Aborted")
DRILL_RUNS = Counter(
    "lifeboat_drill_runs",
    "Per FailoverDrill: runs ended, by result (Succeeded, Failed: refused at preflight or "
    "a step failed, Aborted: an abort condition tripped and the app was moved back).",
    [*_DRILL_LABELS, "result"],
    registry=REGISTRY,
)
DRILL_LAST_SUCCESS = Gauge(
    "lifeboat_drill_last_success_timestamp_seconds",
    "Per FailoverDrill: end of its last successful run (Unix time); a drill that never "
    "succeeded counts from its creation.",
    _DRILL_LABELS,
    registry=REGISTRY,
)
DRILL_RUNNING = Gauge(
    "lifeboat_drill_running",
    "Per FailoverDrill: 1 while a run is under way, else 0.",
    _DRILL_LABELS,
    registry=REGISTRY,
)
DRILL_LAST_RTO = Gauge(
    "lifeboat_drill_last_rto_seconds",
    "Per FailoverDrill: measured RTO of its last run's switch (request to traffic moved).",
    _DRILL_LABELS,
    registry=REGISTRY,
)

for _kind in (RESILIENT_APP.kind, CLOUD_PROVIDER.kind, FAILOVER_DRILL.kind):
    RECONCILE_ERRORS.labels(kind=_kind)
    RECONCILE_ROUNDS.labels(kind=_kind)
LEADER.set(0)

# Decisions whose counters alert rules watch with increase(): created at 0 with the app so
# that a one-off decision (a cascade failed over at once) is not lost as a first sample.
_WATCHED_DECISIONS = tuple(
    (rule, outcome)
    for rule in (Situation.SITE_DOWN, Situation.MULTI_ZONE, Situation.CASCADE)
    for outcome in ("failover", "held", "recommended")
)
ACTION_KINDS = tuple(kind.kind for kind in typing.get_args(Action))


def set_zone_state(namespace: str, app: str, site: str, zone: str, state: ZoneState) -> None:
    """Export one zone's state (every state series exists, exactly one is 1)."""
    for candidate in ZoneState:
        ZONE_STATE.labels(namespace, app, site, zone, candidate.value).set(
            1 if candidate is state else 0
        )
    ZONE_HEALTHY.labels(namespace, app, site, zone).set(1 if state is ZoneState.HEALTHY else 0)


def set_api_plane(
    provider: str, region: str, health: ApiPlaneHealth, retry_tokens: float, refused: int
) -> None:
    """Export one region's API-plane verdict, its figures and its retry budget."""
    for state in ApiPlaneState:
        API_PLANE_STATE.labels(provider, region, state.value).set(1 if state is health.state else 0)
    API_PLANE_ERROR_SHARE.labels(provider, region).set(health.figures.error_share)
    API_PLANE_THROTTLE_SHARE.labels(provider, region).set(health.figures.throttle_share)
    API_PLANE_LATENCY_P99.labels(provider, region).set(health.figures.p99 or 0.0)
    RETRY_BUDGET.labels(provider, region).set(retry_tokens)
    CALLS_REFUSED.labels(provider, region).set(refused)


def set_site_info(namespace: str, app: str, site: str, provider: str, region: str) -> None:
    """Export where a site runs (a site moved to another provider or region loses its old
    series)."""
    for labels in _series_of(SITE_INFO, namespace, app):
        if labels[2] == site and labels[3:] != (provider, region):
            _remove(SITE_INFO, *labels)
    SITE_INFO.labels(namespace, app, site, provider, region).set(1)


def set_dns_weights(namespace: str, app: str, weights: Iterable[tuple[str, int]]) -> None:
    """Export the weights, by site, of a traffic shift just carried out."""
    for site, weight in weights:
        DNS_WEIGHT.labels(namespace, app, site).set(weight)


def set_app_phase(namespace: str, app: str, phase: str) -> None:
    """Export the app's phase (every phase series exists, exactly one is 1)."""
    for candidate in APP_PHASES:
        APP_PHASE.labels(namespace, app, candidate).set(1 if candidate == phase else 0)


def decision_outcome(decision: Decision) -> tuple[str, str]:
    """The rule that decided and what came of it, as ``lifeboat_decisions_total`` counts them
    (a held failover counts under the rule that called for it, with the outcome ``held``)."""
    return decision.trace.rule.rule.value, decision.outcome.value


def record_decision(namespace: str, app: str, decision: Decision) -> None:
    """Count one decision round."""
    DECISIONS.labels(namespace, app, *decision_outcome(decision)).inc()


def start_app(namespace: str, app: str, sites: Iterable[str]) -> None:
    """Create the app's event series at 0 before anything happens to it (idempotent).

    ``increase()`` in alert rules only sees a counter rise between two samples: a series
    born at 1 would hide the first failover. Every ordered pair of ``sites`` gets its
    failover counter; the phase starts as Pending, with no failover on record.
    """
    names = list(sites)
    for from_site in names:
        for to_site in names:
            if from_site != to_site:
                FAILOVERS.labels(namespace, app, from_site, to_site)
    for rule, outcome in _WATCHED_DECISIONS:
        DECISIONS.labels(namespace, app, rule.value, outcome)
    for kind in ACTION_KINDS:
        ACTION_FAILURES.labels(namespace, app, kind)
    TRAFFIC_SHIFT_ERRORS.labels(namespace, app)
    if not _series_of(APP_PHASE, namespace, app):
        set_app_phase(namespace, app, Phase.PENDING.value)
    for gauge in (LAST_FAILOVER_TIMESTAMP, ACTIONS_PENDING, ACTIONS_HELD):
        gauge.labels(namespace, app)


def drill_seen(
    namespace: str, app: str, drill: str, kind: str, *, running: bool, success: float
) -> None:
    """A FailoverDrill's series as its status stands (every tick, idempotent): runs at 0
    for every result (so ``increase()`` sees the first failure), running, and the time of
    its last success (or of its creation) -- from the status, so that a restarted operator
    exports the same."""
    for result in DRILL_RESULTS:
        DRILL_RUNS.labels(namespace, app, drill, kind, result)
    DRILL_RUNNING.labels(namespace, app, drill, kind).set(1 if running else 0)
    DRILL_LAST_SUCCESS.labels(namespace, app, drill, kind).set(success)


def drill_finished(
    namespace: str, app: str, drill: str, kind: str, result: str, rto: float | None
) -> None:
    """A run ended."""
    DRILL_RUNS.labels(namespace, app, drill, kind, result).inc()
    if rto is not None:
        DRILL_LAST_RTO.labels(namespace, app, drill, kind).set(rto)


def forget_drill(namespace: str, drill: str) -> None:
    """Drop a deleted FailoverDrill's series."""
    forget(namespace=namespace, drill=drill)


def forget(**scope: str) -> None:
    """Drop every series, of every metric, whose labels hold all of ``scope``'s values
    (``forget(namespace="shop", app="web")``: everything of that app). Metrics without one
    of the scope's label names are left alone."""
    for metric in _ALL:
        names = tuple(metric._labelnames)  # prometheus-client keeps its label names here
        if not scope or not set(scope) <= set(names):
            continue
        where = [(names.index(name), value) for name, value in scope.items()]
        for labels in [k for k in _children(metric) if all(k[i] == v for i, v in where)]:
            metric.remove(*labels)


def forget_provider(provider: str) -> None:
    """Drop a deleted CloudProvider's series."""
    forget(provider=provider)


def forget_zone(namespace: str, app: str, site: str, zone: str) -> None:
    """Drop a zone's series when it leaves the app's spec."""
    forget(namespace=namespace, app=app, site=site, zone=zone)


def forget_site(namespace: str, app: str, site: str) -> None:
    """Drop a site's series when it leaves the app's spec (failovers from or to it too)."""
    forget(namespace=namespace, app=app, site=site)
    forget(namespace=namespace, app=app, from_site=site)
    forget(namespace=namespace, app=app, to_site=site)


def forget_replication(namespace: str, app: str, dataset: str, destination: str) -> None:
    """Drop the series of a replication flow that no longer exists (its dataset left the
    spec, or a failover made its destination the source). The dataset's RPO target goes
    with the dataset: ``forget_replication_target``."""
    forget(namespace=namespace, app=app, dataset=dataset, destination=destination)


def forget_replication_rpo(namespace: str, app: str, dataset: str, destination: str) -> None:
    """Drop a flow's RPO series while its RPO is unknown (an absent series, not a stale
    one: the last value may have been "caught up")."""
    _remove(REPLICATION_RPO, namespace, app, dataset, destination)


def forget_replication_target(namespace: str, app: str, dataset: str) -> None:
    """Drop a dataset's RPO target series when the dataset leaves the spec."""
    _remove(REPLICATION_RPO_TARGET, namespace, app, dataset)


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never exported
        metric.remove(*labels)


def remove_series(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    """Drop one series (nothing if it was never exported): a figure no longer known."""
    _remove(metric, *labels)


def forget_app(namespace: str, app: str) -> None:
    """Drop an app's series when it is deleted (no stale series in dashboards)."""
    forget(namespace=namespace, app=app)


def _series_of(
    metric: Gauge | Counter | Histogram, namespace: str, app: str
) -> list[tuple[str, ...]]:
    return [labels for labels in _children(metric) if labels[:2] == (namespace, app)]


def _children(metric: Gauge | Counter | Histogram) -> list[tuple[str, ...]]:
    """The label values of every series of ``metric``, read under the metric's lock.
    prometheus-client keeps them as a dict's keys and changes that dict under the same lock
    (``labels``, ``remove``, a scrape's copy); the forgetting runs in kopf's handler
    threads while the workers add series on the event loop, and iterating the dict
    unlocked fails with "dictionary changed size during iteration" (seen with 1,000
    apps)."""
    with metric._lock:
        return [tuple(labels) for labels in metric._metrics]


# Every labelled metric of this module, found by type rather than listed by hand: a new
# metric is forgotten with its scope without anyone remembering to add it somewhere.
_ALL: tuple[Gauge | Counter | Histogram, ...] = tuple(
    value
    for value in tuple(globals().values())
    if isinstance(value, Gauge | Counter | Histogram) and value._labelnames
)
