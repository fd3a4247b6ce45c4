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
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from controller import __version__
from controller.api.models import ResilientAppSpec
from controller.core.apiplane import ApiPlaneHealth, ApiPlaneState
from controller.core.health import ZoneKey, ZoneState
from controller.core.model import (
    Action,
    AppState,
    Decision,
    NoteKind,
    Phase,
    RegionKey,
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
APP_EPOCH = Gauge(
    "lifeboat_app_epoch", "Fencing epoch of the app.", ["namespace", "app"], registry=REGISTRY
)
ACTIVE_SITE = Gauge(
    "lifeboat_app_active_site",
    "1 for the site that takes the app's traffic, 0 for the others.",
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
    "Rounds that ended in an unexpected error, by resource kind.",
    ["kind"],
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
    "Rounds completed (apps: probe-decide-act rounds; providers: checks), by resource kind.",
    ["kind"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "lifeboat_leader",
    "1 while this instance acts (holds the leader Lease, or runs without leader election), "
    "0 while it waits as a standby.",
    registry=REGISTRY,
)

for _kind in ("ResilientApp", "CloudProvider"):
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


def set_app_phase(namespace: str, app: str, phase: str) -> None:
    """Export the app's phase (every phase series exists, exactly one is 1)."""
    for candidate in APP_PHASES:
        APP_PHASE.labels(namespace, app, candidate).set(1 if candidate == phase else 0)


def decision_outcome(decision: Decision) -> tuple[str, str]:
    """The rule that decided and what came of it, as ``lifeboat_decisions_total`` counts them.

    The rule is the trace's, without the ``-held`` suffix (a held failover counts under the
    rule that called for it, with the outcome ``held``). Outcomes: ``failover`` (or
    failback) started, zonal ``evacuation``, evacuated zones' ``restore``, ``held``,
    ``refused`` (a user request), ``recommended`` (waiting for approval, or Observe mode),
    ``none``.
    """
    rule = decision.trace.rule
    held = rule.endswith("-held")
    rule = rule.removesuffix("-held")
    kinds = {note.kind for note in decision.notes}
    if kinds & {NoteKind.FAILOVER, NoteKind.FAILBACK}:
        return rule, "failover"
    if NoteKind.EVACUATION in kinds:
        return rule, "evacuation"
    if NoteKind.ZONE_RESTORED in kinds:
        return rule, "restore"
    if held:
        return rule, "held"
    if rule == "request-refused":
        return rule, "refused"
    quiet = {Situation.STEADY, Situation.NOISY, Situation.API_PLANE_ONLY}
    if decision.state.recommendation is not None and rule not in quiet:
        return rule, "recommended"
    return rule, "none"


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


def qualified_standbys(
    state: AppState, spec: ResilientAppSpec, api_planes: Mapping[RegionKey, ApiPlaneState]
) -> int:
    """Sites other than the active one that a failover could go to now: at least
    ``failover.minHealthyTargetZones`` Healthy zones and an API plane not Impaired (the
    decision core's own test for a target, without user preferences)."""
    wanted = spec.failover.min_healthy_target_zones
    fit = 0
    for site in spec.sites:
        if site.name == state.active_site:
            continue
        if api_planes.get((site.provider, site.region)) is ApiPlaneState.IMPAIRED:
            continue
        healthy = sum(1 for z in site.zones if state.zone(ZoneKey(site.name, z)).healthy)
        fit += healthy >= wanted
    return fit


def forget_provider(provider: str) -> None:
    """Drop a deleted CloudProvider's series."""
    per_provider: tuple[Gauge | Counter | Histogram, ...] = (
        API_PLANE_STATE,
        API_PLANE_LATENCY_P99,
        API_PLANE_ERROR_SHARE,
        API_PLANE_THROTTLE_SHARE,
        RETRY_BUDGET,
        CALLS_REFUSED,
        PROVIDER_READY,
        CLOUD_CALLS,
        CLOUD_CALL_DURATION,
    )
    for metric in per_provider:
        children = metric._metrics  # prometheus-client keeps children keyed by label values
        for labels in [tuple(k) for k in children if k[0] == provider]:
            metric.remove(*labels)


def forget_zone(namespace: str, app: str, site: str, zone: str) -> None:
    """Drop a zone's series when it leaves the app's spec."""
    for state in ZoneState:
        _remove(ZONE_STATE, namespace, app, site, zone, state.value)
    _remove(ZONE_HEALTHY, namespace, app, site, zone)
    for labels in _series_of(PROBE_DURATION, namespace, app):
        if labels[2:4] == (site, zone):
            PROBE_DURATION.remove(*labels)


def forget_site(namespace: str, app: str, site: str) -> None:
    """Drop a site's series when it leaves the app's spec."""
    _remove(ACTIVE_SITE, namespace, app, site)
    for labels in _series_of(FAILOVERS, namespace, app):
        if site in labels[2:4]:
            FAILOVERS.remove(*labels)


def forget_replication(namespace: str, app: str, dataset: str, destination: str) -> None:
    """Drop the series of a replication flow that no longer exists (its dataset left the
    spec, or a failover made its destination the source). The dataset's RPO target goes
    with the dataset: ``forget_replication_target``."""
    for metric in (
        REPLICATION_PENDING_OBJECTS,
        REPLICATION_PENDING_BYTES,
        REPLICATION_RPO,
        REPLICATION_BYTES,
        REPLICATION_STREAMED_BYTES,
        REPLICATION_PROVIDER_COPIES,
        REPLICATION_OBJECTS,
        REPLICATION_DELETES,
        REPLICATION_ERRORS,
        REPLICATION_CONFLICTS,
        REPLICATION_LAST_SUCCESS,
    ):
        _remove(metric, namespace, app, dataset, destination)


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


def forget_app(namespace: str, app: str) -> None:
    """Drop an app's series when it is deleted (no stale series in dashboards)."""
    per_app: tuple[Gauge | Counter | Histogram, ...] = (
        ZONE_STATE,
        ZONE_HEALTHY,
        PROBE_DURATION,
        ACTIVE_SITE,
        FAILOVERS,
        APP_EPOCH,
        LAST_FAILOVER_DETECTION,
        LAST_FAILOVER_RTO,
        TRAFFIC_SHIFT_ERRORS,
        REPLICATION_PENDING_OBJECTS,
        REPLICATION_PENDING_BYTES,
        REPLICATION_RPO,
        REPLICATION_RPO_TARGET,
        REPLICATION_BYTES,
        REPLICATION_STREAMED_BYTES,
        REPLICATION_PROVIDER_COPIES,
        REPLICATION_OBJECTS,
        REPLICATION_DELETES,
        REPLICATION_ERRORS,
        REPLICATION_CONFLICTS,
        REPLICATION_LAST_SUCCESS,
        APP_PHASE,
        DECISIONS,
        LAST_FAILOVER_TIMESTAMP,
        ACTIONS_PENDING,
        ACTIONS_HELD,
        ACTION_FAILURES,
        HEALTHY_STANDBY_SITES,
        STANDBY_SITES,
        PROBE_INTERVAL,
        LAST_RECONCILE,
    )
    for metric in per_app:
        for labels in _series_of(metric, namespace, app):
            metric.remove(*labels)


def _series_of(
    metric: Gauge | Counter | Histogram, namespace: str, app: str
) -> list[tuple[str, ...]]:
    children = metric._metrics  # prometheus-client keeps children keyed by label values
    return [tuple(labels) for labels in children if tuple(labels[:2]) == (namespace, app)]
