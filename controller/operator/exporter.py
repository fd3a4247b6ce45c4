"""One app's Prometheus series: probes, zone states, phase, actions, failovers."""

from __future__ import annotations

from controller import metrics
from controller.api.models import ResilientAppSpec
from controller.api.names import RESILIENT_APP
from controller.core import decide as core
from controller.core import model as m
from controller.core.health import ProbeResult, ZoneKey, ZoneState
from controller.operator.kube import ObjectRef

FULL_EXPORT_ROUNDS = 60
"""Every this many rounds an app's series are all set again, changed or not (series set
only on change must still heal if something outside removed them)."""


class AppExporter:
    """Exports one app's state and forgets the series of zones and sites it no longer has.

    Series that hold a state (zone states, sites, phase, the app's counters at 0) are set
    when what they say changes, not every round: with a hundred apps, setting every one of
    them each second was a fifth of the operator's CPU."""

    def __init__(self, ref: ObjectRef) -> None:
        self.labels = (ref.namespace or "", ref.name)
        self._exported: set[tuple[str, str]] = set()
        self._zones: dict[tuple[str, str], ZoneState] = {}
        self._sites: dict[str, tuple[str, str, bool]] = {}
        self._started: tuple[str, ...] | None = None
        self._phase: str | None = None
        self._rounds = 0
        self._full = True
        """Whether this round sets every series again (the first, then every
        ``FULL_EXPORT_ROUNDS``): decided in :meth:`state`, which each round calls first."""

    def round_started(self, lag: float) -> None:
        metrics.PROBE_ROUND_LAG.observe(max(lag, 0.0))

    def round_done(self, now: float) -> None:
        metrics.LAST_RECONCILE.labels(*self.labels).set(now)
        metrics.RECONCILE_ROUNDS.labels(kind=RESILIENT_APP.kind).inc()

    def round_failed(self) -> None:
        metrics.RECONCILE_ERRORS.labels(kind=RESILIENT_APP.kind).inc()

    def invalid(self) -> None:
        metrics.set_app_phase(*self.labels, "Invalid")
        self._phase = "Invalid"

    def configuration(self, valid: bool) -> None:
        metrics.APP_CONFIGURATION_VALID.labels(*self.labels).set(1 if valid else 0)

    def probes(self, probes: tuple[ProbeResult, ...]) -> None:
        for probe in probes:
            metrics.PROBE_DURATION.labels(
                *self.labels, probe.key.site, probe.key.zone, probe.outcome.value
            ).observe(probe.latency)

    def decided(self, decision: m.Decision) -> None:
        metrics.record_decision(*self.labels, decision)

    def failover_started(self, record: m.FailoverRecord) -> None:
        metrics.FAILOVERS.labels(*self.labels, record.from_site, record.to_site).inc()

    def state(self, spec: ResilientAppSpec, state: m.AppState) -> None:
        current = {(site.name, zone) for site in spec.sites for zone in site.zones}
        for gone_site, gone_zone in self._exported - current:
            metrics.forget_zone(*self.labels, gone_site, gone_zone)
        for gone in {s for s, _ in self._exported} - {s.name for s in spec.sites}:
            metrics.forget_site(*self.labels, gone)
        self._exported = current
        self._full = self._rounds % FULL_EXPORT_ROUNDS == 0
        self._rounds += 1
        if self._full:
            self._zones.clear()
            self._sites.clear()
        for left in set(self._zones) - current:
            del self._zones[left]
        for site in spec.sites:
            where = (site.provider, site.region, site.name == state.active_site)
            if self._sites.get(site.name) != where:
                metrics.set_site_info(*self.labels, site.name, site.provider, site.region)
                metrics.ACTIVE_SITE.labels(*self.labels, site.name).set(1 if where[2] else 0)
                self._sites[site.name] = where
            for zone in site.zones:
                health = state.zone(ZoneKey(site.name, zone))
                if self._zones.get((site.name, zone)) is not health.state:
                    metrics.set_zone_state(*self.labels, site.name, zone, health.state)
                    self._zones[site.name, zone] = health.state
        for left_site in set(self._sites) - {s.name for s in spec.sites}:
            del self._sites[left_site]
        metrics.APP_EPOCH.labels(*self.labels).set(state.epoch)

    def no_majority(self, held: bool) -> None:
        """Whether the app's next action waits for a majority of the peer clusters."""
        metrics.ACTIONS_NO_MAJORITY.labels(*self.labels).set(1 if held else 0)

    def decision(
        self, decision: m.Decision, spec: ResilientAppSpec, observations: m.Observations
    ) -> None:
        """Phase, outstanding actions, failover readiness and the latest failover."""
        labels, state = self.labels, decision.state
        sites = tuple(site.name for site in spec.sites)
        if self._started != sites or self._full:
            metrics.start_app(*labels, sites)
            self._started = sites
        if self._phase != decision.phase.value or self._full:
            metrics.set_app_phase(*labels, decision.phase.value)
            self._phase = decision.phase.value
        metrics.ACTIONS_PENDING.labels(*labels).set(len(decision.actions))
        metrics.ACTIONS_HELD.labels(*labels).set(len(decision.held))
        metrics.STANDBY_SITES.labels(*labels).set(len(spec.sites) - 1)
        metrics.HEALTHY_STANDBY_SITES.labels(*labels).set(
            core.qualified_standbys(
                core.judged_state(state, spec, observations.vantage), spec, observations.api_planes
            )
        )
        metrics.PROBE_INTERVAL.labels(*labels).set(spec.health.interval_seconds)
        self._readiness(decision, spec)
        record = state.last_failover
        metrics.LAST_FAILOVER_TIMESTAMP.labels(*labels).set(record.decided_at if record else 0)
        if record is not None and record.rto_seconds is not None:
            metrics.LAST_FAILOVER_RTO.labels(*labels).set(record.rto_seconds)
            metrics.LAST_FAILOVER_DETECTION.labels(*labels).set(record.detection_seconds or 0.0)

    def _readiness(self, decision: m.Decision, spec: ResilientAppSpec) -> None:
        """Standby readiness and capacity coming up, per site (a figure that is not known
        is an absent series, not a stale one)."""
        labels, state = self.labels, decision.state
        found = {r.site: r for r in decision.readiness}
        figures = (
            (metrics.STANDBY_READY, lambda r: None if r.ready is None else float(r.ready)),
            (metrics.STANDBY_READY_INSTANCES, lambda r: r.ready_instances),
            (metrics.STANDBY_WANTED_INSTANCES, lambda r: r.wanted),
            (metrics.STANDBY_FAILOVER_INSTANCES, lambda r: r.failover_needs),
            (metrics.STANDBY_HEADROOM, lambda r: r.headroom),
            (metrics.STANDBY_MAX_SIZE, lambda r: r.maximum),
        )
        for site in spec.sites:
            readiness = found.get(site.name)
            for gauge, figure in figures:
                value = figure(readiness) if readiness is not None else None
                if value is None:
                    metrics.remove_series(gauge, *labels, site.name)
                else:
                    gauge.labels(*labels, site.name).set(value)
            applied = state.capacity.get(site.name)
            if applied is None:
                continue
            metrics.CAPACITY_NOT_READY.labels(*labels, site.name).set(
                1 if applied.ready_at is None and applied.overdue else 0
            )
            if applied.ready_at is not None:
                asked = core.capacity_asked_at(state, site.name, applied.applied_at)
                metrics.CAPACITY_READY_SECONDS.labels(*labels, site.name).set(
                    max(0.0, applied.ready_at - asked)
                )
