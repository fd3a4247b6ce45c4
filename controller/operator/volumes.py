"""Volume replication at work: the replication of each app, and the restore of a failover.

:class:`VolumeReplication` is a replication source of an app's
:class:`~controller.operator.app.AppWorker`: the worker keeps it in step with the spec, the
active site and the epoch (and hands it the decision core's state), and reads its figures
into the status, the conditions and the failback gate. In the background it makes passes:
it lists what the active site's region and every other site's region hold of each volume
dataset (snapshots tagged with the app, dataset and site), asks the pure planner
(:func:`controller.replication.volumes.plan`) what is due, and does it — snapshots at the
source, copies made by the destinations' regions (EBS CopySnapshot; Cinder backup records
exported and imported), prunes everywhere. Nothing is remembered between passes but the
figures and the states of restored volumes: the tags are the state, so a restarted
operator just lists again.

Direction and fencing: the active site is the source under the current epoch; a pass
stops calling as soon as the active site or epoch changes, and a demoted site is never
snapshotted again. After a failover the replication only reports until the failover's
volume restore is on record, then snapshots the restored volumes — each once its
provider has made it — and copies them back to the old site (the direction reverses under
the new epoch).

Regions are judged before they are called: one whose API plane is Impaired is not listed
(its last listing still counts for the figures, so the RPO keeps growing) and gets no
call; every call goes through the provider's region gates anyway.

Connections: every pass takes its regions from the provider registry afresh, so a rotated
credentials Secret or an edited CloudProvider is used from the next pass on. A site whose
CloudProvider is deleted or whose credentials are withdrawn
(:data:`~controller.operator.providers.WITHDRAWN`) gets no call: replication to it (or,
for the active site, the whole dataset) stops, with a ``ReplicationStopped`` Warning and
``stopped`` in the status entries, until the CloudProvider can be used again.

:class:`VolumeRestorer` carries out the core's ``RestoreVolumes`` action for the
AppWorker: for every protected volume it picks the newest completed copy in the new
site's region and makes a volume from it, spread over the site's serving zones. The
volumes are tagged with app, dataset, volume and ``site/epoch``, so a restore that is
repeated (an operator restarted mid-way) finds what it made instead of making it again.
Nothing is asked of the failed site's region (static stability).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from controller import metrics
from controller.api.conditions import rfc3339
from controller.api.events import EventReason
from controller.api.models import (
    ReplicationStatus,
    ResilientAppSpec,
    VolumeDataset,
)
from controller.api.names import (
    RESILIENT_APP,
    TAG_APP,
    TAG_COPY_OF,
    TAG_DATASET,
    TAG_RESTORED_FOR,
    TAG_TAKEN,
    TAG_VOLUME,
)
from controller.core import model as m
from controller.core.apiplane import ApiPlaneState
from controller.core.decide import desired_restore
from controller.operator.kube import Kube, ObjectRef
from controller.operator.providers import WITHDRAWN
from controller.providers.backend import Capability
from controller.providers.errors import CapabilityUnsupported, ProviderUnavailable
from controller.providers.protocols import VolumeSnapshots
from controller.replication import volumes as rv

log = logging.getLogger(__name__)

MIN_TICK_SECONDS = 1.0
MAX_TICK_SECONDS = 60.0
READY_RECHECK_SECONDS = 60.0
"""How often restored volumes are looked up once all of them are ready."""
IDLE_SECONDS = 5.0
"""Between passes while there is nothing to go by yet (no spec or state), or after a
pass that failed unexpectedly."""


class VolumeProviders(Protocol):
    """What volume replication needs of the provider registry."""

    async def volume_snapshots(self, provider: str, region: str) -> VolumeSnapshots: ...

    async def api_plane(self, provider: str, region: str) -> ApiPlaneState: ...

    async def revision(self, provider: str) -> int:
        """The revision of the provider's connection now (ProviderUnavailable if none)."""
        ...

    def explain(self, name: str, error: BaseException) -> str: ...


def _interval(dataset: VolumeDataset, override: float | None) -> float:
    return float(override) if override is not None else float(dataset.interval_seconds)


def tick_seconds(interval: float) -> float:
    """How often a dataset with this snapshot interval is looked at."""
    return min(MAX_TICK_SECONDS, max(MIN_TICK_SECONDS, interval / 6))


def _restored_pairs(
    restores: Mapping[str, m.AppliedRestore], site: str, dataset: str
) -> list[tuple[str, str]]:
    record = restores.get(site)
    if record is None:
        return []
    return [(v.volume, v.volume_id) for v in record.volumes if v.dataset == dataset]


def _taken(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- restores


class CopyPending(RuntimeError):
    """Some volume has no completed copy at the site yet, but one is being made."""


@dataclass(frozen=True)
class RestoreOutcome:
    volumes: tuple[m.RestoredVolume, ...]
    """Every volume of the restore (made now or found made before)."""
    missing: tuple[str, ...]
    """``dataset/volume`` without any copy at the site."""
    made: int
    """Volumes made by this call."""


class NoVolumeRestorer:
    """An operator that restores no volumes: every restore is unsupported."""

    async def restore(
        self,
        app: str,
        action: m.RestoreVolumes,
        spec: ResilientAppSpec,
        restores: Mapping[str, m.AppliedRestore],
    ) -> RestoreOutcome:
        raise CapabilityUnsupported(
            Capability.VOLUME_SNAPSHOTS,
            f"site {action.site}: this operator restores no volumes",
        )


@dataclass
class VolumeRestorer:
    """Carries out ``RestoreVolumes`` (see the module docstring)."""

    providers: VolumeProviders

    async def restore(
        self,
        app: str,
        action: m.RestoreVolumes,
        spec: ResilientAppSpec,
        restores: Mapping[str, m.AppliedRestore],
    ) -> RestoreOutcome:
        site = spec.site(action.site)
        if site is None or spec.replication is None:
            return RestoreOutcome((), (), 0)
        snapshots = await self.providers.volume_snapshots(site.provider, site.region)
        volumes: list[m.RestoredVolume] = []
        missing: list[str] = []
        waiting: list[str] = []
        made = 0
        wanted = {d.name: d for d in spec.replication.volumes}
        for name in action.datasets:
            dataset = wanted.get(name)
            if dataset is None:
                continue
            pairs = _restored_pairs(restores, action.from_site, name)
            keys = [v.key for v in rv.source_volumes(dataset, action.from_site, pairs)]
            listing = await snapshots.list(rv.listing_tags(app, name, site.name))
            picks = rv.pick_for_restore(keys, listing, site.name)
            before = await snapshots.volumes(
                {
                    TAG_APP: app,
                    TAG_DATASET: name,
                    TAG_RESTORED_FOR: f"{site.name}/{action.epoch}",
                }
            )
            found = {v.tags.get(TAG_VOLUME, ""): v for v in before}
            zones = rv.spread([p.volume for p in picks], action.zones)
            for pick in picks:
                if (earlier := found.get(pick.volume)) is not None:
                    volumes.append(
                        m.RestoredVolume(
                            name,
                            pick.volume,
                            earlier.id,
                            earlier.zone,
                            earlier.tags.get(TAG_COPY_OF, earlier.snapshot_id),
                            _taken(earlier.tags.get(TAG_TAKEN)),
                        )
                    )
                    continue
                if pick.copy is None:
                    (waiting if pick.waiting else missing).append(f"{name}/{pick.volume}")
                    continue
                tags = {
                    **rv.restore_tags(app, name, pick.volume, site.name, action.epoch),
                    TAG_COPY_OF: pick.copy.id,
                    TAG_TAKEN: f"{pick.copy.taken:.3f}",
                }
                zone = zones[pick.volume]
                key = f"{app}/{name}/{pick.volume}/{site.name}/{action.epoch}"
                volume_id = await snapshots.restore(pick.copy.id, zone, tags, key=key)
                made += 1
                volumes.append(
                    m.RestoredVolume(
                        name, pick.volume, volume_id, zone, pick.copy.id, pick.copy.taken
                    )
                )
        if waiting:
            raise CopyPending(
                f"no completed copy of {', '.join(waiting)} at {site.name} yet, one is being "
                "made; the restore resumes once it is"
            )
        return RestoreOutcome(tuple(volumes), tuple(missing), made)


def restore_message(action: m.RestoreVolumes, outcome: RestoreOutcome, now: float) -> str:
    """The Event text of a completed restore."""
    if not outcome.volumes and not outcome.missing:
        return f"no volume to restore at {action.site} (epoch {action.epoch})"
    times = [v.snapshot_time for v in outcome.volumes if v.snapshot_time is not None]
    made = ", ".join(f"{v.volume_id} in {v.zone}" for v in outcome.volumes[:8])
    more = f" and {len(outcome.volumes) - 8} more" if len(outcome.volumes) > 8 else ""
    text = (
        f"{len(outcome.volumes)} volume(s) of {', '.join(action.datasets)} restored at "
        f"{action.site} from the newest copies, epoch {action.epoch}: {made}{more}"
    )
    if times:
        text += f"; data as of {rfc3339(min(times))} ({now - min(times):.0f}s before now)"
    if outcome.missing:
        text += f"; no copy of {', '.join(outcome.missing[:8])} at {action.site}"
    return text


# --------------------------------------------------------------------------- replication


@dataclass
class _Flow:
    """What the replicator remembers of one dataset towards one destination."""

    figures: rv.Figures | None = None
    source: str = ""
    epoch: int = 0
    copied: int = 0
    errors: int = 0
    last_error: str = ""
    synced_at: float | None = None
    waiting: str = ""
    """Why nothing is measured right now (a restore in progress), or ""."""
    stopped: str = ""
    """Why replication to the destination is stopped (a CloudProvider withdrawn), or ""."""

    def status(self, dataset: str, destination: str, now: float) -> ReplicationStatus:
        figures = self.figures
        rpo = None
        if figures is not None and not self.waiting:
            rpo = figures.rpo_seconds
            if figures.newest_copy_time is not None:
                rpo = max(0.0, now - figures.newest_copy_time)
        newest = figures.newest_copy_time if figures is not None else None
        return ReplicationStatus(
            dataset=dataset,
            destination=destination,
            kind="Volumes",
            source=self.source,
            epoch=self.epoch,
            pending_objects=figures.pending if figures is not None else 0,
            rpo_seconds=round(rpo, 1) if rpo is not None else None,
            last_sync_time=rfc3339(self.synced_at) if self.synced_at is not None else None,
            newest_copy_time=rfc3339(newest) if newest is not None else None,
            copied_objects=self.copied,
            errors=self.errors,
            last_error=(self.stopped or self.waiting or self.last_error)[:1024],
            stopped=bool(self.stopped),
        )


class VolumeReplication:
    """The volume datasets of one app: a replication source of its AppWorker (see
    :class:`~controller.operator.app.ReplicationSource`) that also follows the decision
    core's state, for the volumes a failover restored and the restores still due."""

    def __init__(
        self,
        ref: ObjectRef,
        providers: VolumeProviders,
        kube: Kube,
        *,
        clock: Callable[[], float] = time.time,
        interval_override: float | None = None,
        background: bool = True,
    ) -> None:
        self.ref = ref
        self.background = background
        """Make passes in a task of its own (tests call :meth:`pass_once` instead)."""
        self.providers = providers
        self.kube = kube
        self.clock = clock
        self.interval_override = interval_override
        """Sandbox and tests only: every dataset's snapshot interval, in seconds (the API
        refuses intervals under a minute)."""
        self._spec: ResilientAppSpec | None = None
        self._state: m.AppState | None = None
        self._current: tuple[str, int] | None = None
        self._flows: dict[tuple[str, str], _Flow] = {}
        self._listings: dict[tuple[str, str], rv.Listing] = {}
        self._targets: set[str] = set()
        self._warned: set[tuple[str, str]] = set()
        """(reason, site) of the failures reported by an Event and not yet over."""
        self._volume_states: dict[str, str] = {}
        """Restored volume ID -> its state when last looked (see :meth:`volume_states`)."""
        self._looked: dict[str, float] = {}
        """Dataset -> when its restored volumes were last looked up."""
        self._seen: set[str] = set()
        """Restored volumes found at least once (a volume not found before is not gone)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def app(self) -> str:
        return rv.app_key(self.ref.namespace, self.ref.name)

    @property
    def _labels(self) -> tuple[str, str]:
        return (self.ref.namespace or "", self.ref.name)

    # ------------------------------------------------------------------ keeping in step

    def follow(self, state: m.AppState) -> None:
        """The decision core's state as of now (restored volumes, restores due)."""
        self._state = state

    async def sync(
        self, spec: ResilientAppSpec, active_site: str, epoch: int, epoch_since: float | None
    ) -> None:
        """Replicate the spec's volume datasets from ``active_site`` under ``epoch``; a new
        active site or epoch is taken up at once (the pass in progress stops calling)."""
        self._spec = spec
        moved = self._current is not None and self._current != (active_site, epoch)
        self._current = (active_site, epoch)
        if moved:  # what was seen of the restored volumes was of the site that was active
            self._volume_states.clear()
            self._looked.clear()
            self._warned = {w for w in self._warned if w[0] != EventReason.RESTORED_VOLUME_FAILED}
        wanted: set[tuple[str, str]] = set()
        for dataset in spec.replication.volumes if spec.replication else ():
            sites = [loc.site for loc in dataset.locations]
            if active_site in sites:
                wanted.update((dataset.name, s) for s in sites if s != active_site)
        for gone in set(self._flows) - wanted:
            self._drop(*gone)
        for key in sorted(wanted):
            flow = self._flows.get(key)
            if flow is None or (flow.source, flow.epoch) != (active_site, epoch):
                # a new direction starts unmeasured; the counters go on
                self._flows[key] = _Flow(
                    source=active_site,
                    epoch=epoch,
                    copied=flow.copied if flow else 0,
                    errors=flow.errors if flow else 0,
                )
        if not wanted:
            self._forget_targets()
            return
        if self.background and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._loop(), name=f"volumes {self.app}")
        if moved:
            self._wake.set()

    async def close(self) -> None:
        """Stop (the app's worker is stopping); its series go."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for key in list(self._flows):
            self._drop(*key)
        self._forget_targets()

    def volume_states(self) -> Mapping[str, str]:
        """The state of every volume a failover restored at the active site, by volume ID,
        as of the latest pass that looked: the provider's word (``creating``,
        ``available``, ``in-use``, ``error``, ...) or ``not-found``."""
        return dict(self._volume_states)

    def figures(self) -> list[ReplicationStatus]:
        """``status.replication`` entries of the volume datasets, as of now."""
        now = self.clock()
        return [
            flow.status(dataset, destination, now)
            for (dataset, destination), flow in sorted(self._flows.items())
        ]

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        while True:
            self._wake.clear()  # a sync during the pass wakes the next one at once
            try:
                pause = await self.pass_once()
            except Exception:
                metrics.RECONCILE_ERRORS.labels(kind=RESILIENT_APP.kind).inc()
                log.exception("%s: volume replication pass failed", self.app)
                pause = IDLE_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def pass_once(self) -> float:
        """One look at every volume dataset; the seconds until the next."""
        spec, state = self._spec, self._state
        if spec is None or state is None or spec.replication is None:
            return IDLE_SECONDS
        datasets = spec.replication.volumes
        restoring = desired_restore(state, spec)
        for dataset in datasets:
            sites = [loc.site for loc in dataset.locations]
            if state.active_site in sites:
                destinations = [s for s in sites if s != state.active_site]
                await self._replicate(spec, state, dataset, destinations, restoring)
        names = {d.name for d in datasets}
        for name in self._targets - names:
            _remove(metrics.REPLICATION_RPO_TARGET, *self._labels, name)
        self._targets = names
        for name in names:
            metrics.REPLICATION_RPO_TARGET.labels(*self._labels, name).set(
                float(spec.replication.rpo_target_seconds)
            )
        self._export()
        return min(
            (tick_seconds(_interval(d, self.interval_override)) for d in datasets),
            default=IDLE_SECONDS,
        )

    def _moved_on(self, scope: rv.Scope) -> bool:
        """Whether the active site or epoch changed since ``scope`` was planned (fencing:
        nothing more is done for it)."""
        return self._current != (scope.source, scope.epoch)

    async def _replicate(
        self,
        spec: ResilientAppSpec,
        state: m.AppState,
        dataset: VolumeDataset,
        destinations: Sequence[str],
        restoring: m.RestoreVolumes | None,
    ) -> None:
        source, epoch = state.active_site, state.epoch
        scope = rv.Scope(self.app, dataset.name, source, epoch)
        if self._moved_on(scope):
            return
        going = await self._unless_withdrawn(spec, scope, destinations)
        if destinations and not going:
            return
        destinations = going
        pairs = _restored_pairs(state.restores, source, dataset.name)
        volumes = rv.source_volumes(dataset, source, pairs)
        unready = ""
        # While a restore is due, nothing is snapshotted, and the volumes of the site's
        # previous restore (an earlier epoch) may be long gone.
        if pairs and restoring is None:
            volumes, unready = await self._readiness(spec, scope, volumes, state.restores[source])
        problems: dict[str, str] = {}
        for site in (source, *destinations):
            problem = await self._list(spec, dataset.name, site)
            if problem:
                problems[site] = problem
        listings = {
            site: self._listings.get((dataset.name, site), rv.Listing(fresh=False))
            for site in (source, *destinations)
        }
        waiting = ""
        if restoring is not None:
            waiting = (
                f"waiting for the volume restore at {restoring.site} (epoch "
                f"{restoring.epoch}) before replicating from it"
            )
        plan = rv.plan(
            scope,
            volumes,
            destinations,
            listings,
            self.clock(),
            interval=_interval(dataset, self.interval_override),
            retain=dataset.retain,
            act=restoring is None,
        )
        failures = await self._carry_out(spec, scope, plan, problems)
        now = self.clock()
        for figures in plan.figures:
            flow = self._flows.get((dataset.name, figures.destination))
            if flow is None or self._moved_on(scope):
                continue
            flow.source, flow.epoch, flow.figures, flow.waiting = source, epoch, figures, waiting
            trouble = failures.get(figures.destination, "") or unready
            if trouble:
                flow.last_error = trouble
            elif not waiting:
                flow.last_error = ""
            caught_up = figures.pending == 0 and figures.copying == 0
            if not trouble and not waiting and caught_up and figures.rpo_seconds is not None:
                flow.synced_at = now
                metrics.REPLICATION_LAST_SUCCESS.labels(
                    *self._labels, dataset.name, figures.destination
                ).set(now)

    async def _unless_withdrawn(
        self, spec: ResilientAppSpec, scope: rv.Scope, destinations: Sequence[str]
    ) -> list[str]:
        """The destinations replication goes on to: none when the CloudProvider of the
        source is withdrawn, else those whose own is not. The flows stopped so are marked
        and reported (a Warning on the first pass that finds one so); the others, and those
        that can be used again, are marked running."""
        withdrawn: dict[str, str] = {}
        for name in (scope.source, *destinations):
            site = spec.site(name)
            if site is None:
                continue
            try:
                await self.providers.revision(site.provider)
            except ProviderUnavailable as error:
                if error.reason in WITHDRAWN:
                    withdrawn[name] = str(error)
            except Exception as error:  # not known to be withdrawn: the pass goes on
                log.warning("%s: CloudProvider %s not checked: %r", self.app, site.provider, error)
        going: list[str] = []
        for destination in destinations:
            why = withdrawn.get(scope.source) or withdrawn.get(destination, "")
            flow = self._flows.get((scope.dataset, destination))
            if flow is not None:
                flow.stopped = f"replication stopped: {why}" if why else ""
            warning = (EventReason.REPLICATION_STOPPED, f"{scope.dataset}/{destination}")
            if not why:
                self._warned.discard(warning)
                going.append(destination)
                continue
            await self._warn(
                warning[0],
                warning[1],
                f"volume replication of dataset {scope.dataset} from {scope.source} to "
                f"{destination} stopped: {why}; it starts again once the CloudProvider can "
                "be used",
            )
        return going

    async def _readiness(
        self,
        spec: ResilientAppSpec,
        scope: rv.Scope,
        volumes: tuple[rv.SourceVolume, ...],
        restore: m.AppliedRestore,
    ) -> tuple[tuple[rv.SourceVolume, ...], str]:
        """Which of the volumes a failover restored at the source can be snapshotted (a
        restored volume is being made for a while, and may fail), and why the others
        cannot, or "". They are looked up by ID (their tags may not survive the restore:
        Cinder restores a backup's own metadata) every pass until all are ready, then every
        :data:`READY_RECHECK_SECONDS`. When their region cannot be asked, the states last
        seen hold; a volume never seen counts as ready (a snapshot of it that fails is
        retried)."""
        ids = [v.volume_id for v in volumes]
        known = self._volume_states
        settled = all(rv.volume_ready(known.get(i, "not-found")) for i in ids)
        looked = self._looked.get(scope.dataset)
        fresh = settled and looked is not None and self.clock() - looked < READY_RECHECK_SECONDS
        problem = "" if fresh else await self._look_up(spec, scope, ids, restore)
        if self._moved_on(scope):
            return volumes, ""
        ready: list[rv.SourceVolume] = []
        waiting: list[str] = []
        failed: list[str] = []
        for volume in volumes:
            state = known.get(volume.volume_id)
            ok = state is None or rv.volume_ready(state)
            ready.append(replace(volume, ready=ok))
            if state is not None and rv.volume_failed(state):
                failed.append(f"{volume.volume_id} ({volume.key}) is {state}: {rv.failure(state)}")
            elif not ok:
                waiting.append(f"{volume.volume_id} ({volume.key}) is {state}")
        why = [problem] if problem else []
        if failed:
            more = f" and {len(failed) - 4} more" if len(failed) > 4 else ""
            why.append(f"restored volume {'; '.join(failed[:4])}{more}, at {scope.source}")
        if waiting:
            more = f" and {len(waiting) - 8} more" if len(waiting) > 8 else ""
            why.append(
                f"restored volume {', '.join(waiting[:8])}{more} at {scope.source}: "
                "snapshotted once made"
            )
        return tuple(ready), "; ".join(why)

    async def _look_up(
        self,
        spec: ResilientAppSpec,
        scope: rv.Scope,
        ids: Sequence[str],
        restore: m.AppliedRestore,
    ) -> str:
        """Refresh the states of the restored volumes ``ids`` at the source, and report
        those that failed or are gone; a problem that kept it from looking, or ""."""
        site = spec.site(scope.source)
        if site is None:
            return ""
        where = f"restored volumes at {scope.source} not looked at"
        if await self.providers.api_plane(site.provider, site.region) is ApiPlaneState.IMPAIRED:
            return f"{where}: region {site.region} API plane Impaired"
        try:
            region = await self.providers.volume_snapshots(site.provider, site.region)
            found = await region.volumes_by_id(ids)
        except Exception as error:
            return f"{where}: {self._explain(site.provider, error)}"
        if self._moved_on(scope):
            return ""  # a failover came meanwhile: these states are of the past
        self._looked[scope.dataset] = self.clock()
        states = {v.id: v.state[:32] for v in found}
        for volume_id in ids:
            state = states.get(volume_id, "not-found")
            self._volume_states[volume_id] = state
            if volume_id in states:
                self._seen.add(volume_id)
            # Not found before it was ever seen: EBS lists a new volume a little later.
            if not rv.volume_failed(state) or (
                state == "not-found" and volume_id not in self._seen
            ):
                self._warned.discard((EventReason.RESTORED_VOLUME_FAILED, volume_id))
                continue
            await self._warn(
                EventReason.RESTORED_VOLUME_FAILED,
                volume_id,
                f"volume {volume_id}, restored at {scope.source} for {scope.dataset} (epoch "
                f"{restore.epoch}), is {state}: {rv.failure(state)}; it is not snapshotted, "
                "so what is written to it is not replicated",
            )
        return ""

    async def _list(self, spec: ResilientAppSpec, dataset: str, site_name: str) -> str:
        """Refresh what ``site_name``'s region holds of the dataset; a problem, or ""."""
        key = (dataset, site_name)
        previous = self._listings.get(key)
        stale = rv.Listing(previous.snapshots if previous else (), fresh=False)
        site = spec.site(site_name)
        if site is None:
            self._listings[key] = stale
            return f"site {site_name} is not declared"
        state = await self.providers.api_plane(site.provider, site.region)
        if state is ApiPlaneState.IMPAIRED:
            self._listings[key] = stale
            return f"region {site.region} of {site_name}: API plane Impaired, not called"
        try:
            snapshots = await self.providers.volume_snapshots(site.provider, site.region)
            found = await snapshots.list(rv.listing_tags(self.app, dataset, site_name))
        except Exception as error:
            self._listings[key] = stale
            return f"listing {site_name} ({site.region}): {self._explain(site.provider, error)}"
        self._listings[key] = rv.Listing(tuple(found))
        return ""

    async def _carry_out(
        self,
        spec: ResilientAppSpec,
        scope: rv.Scope,
        plan: rv.Plan,
        problems: Mapping[str, str],
    ) -> dict[str, str]:
        """Do what the plan says, one call after the other, as long as the scope is
        current; the latest failure per destination."""
        dataset = scope.dataset
        destinations = [f.destination for f in plan.figures]
        failures: dict[str, str] = {}

        async def failed(reason: str, where: str, sites: Sequence[str], message: str) -> None:
            for destination in sites:
                failures[destination] = message
                if (flow := self._flows.get((dataset, destination))) is not None:
                    flow.errors += 1
                metrics.REPLICATION_ERRORS.labels(*self._labels, dataset, destination).inc()
            await self._warn(reason, where, message)

        for site, problem in problems.items():
            for destination in destinations if site == scope.source else [site]:
                failures[destination] = problem  # nothing was attempted: not an error
        for take in plan.takes:
            if self._moved_on(scope):
                return failures
            try:
                region = await self._region(spec, scope.source)
                made = await region.create(take.volume.volume_id, scope.snapshot_tags(take.volume))
                self._warned.discard((EventReason.VOLUME_SNAPSHOT_FAILED, scope.source))
                log.info(
                    "%s: snapshot %s of %s (%s) at %s, epoch %d",
                    self.app,
                    made.id,
                    take.volume.volume_id,
                    dataset,
                    scope.source,
                    scope.epoch,
                )
            except Exception as error:
                where = f"snapshot of {take.volume.volume_id} at {scope.source}"
                text = f"{where}: {self._explain_site(spec, scope.source, error)}"
                await failed(EventReason.VOLUME_SNAPSHOT_FAILED, scope.source, destinations, text)
        for copy in plan.copies:
            if self._moved_on(scope):
                return failures
            try:
                region = await self._region(spec, copy.destination)
                made = await region.copy_from(
                    copy.source.snapshot, scope.copy_tags(copy.source, copy.destination)
                )
                self._warned.discard((EventReason.VOLUME_COPY_FAILED, copy.destination))
                if (flow := self._flows.get((dataset, copy.destination))) is not None:
                    flow.copied += 1
                metrics.REPLICATION_OBJECTS.labels(*self._labels, dataset, copy.destination).inc()
                log.info(
                    "%s: copy %s of snapshot %s (%s) to %s",
                    self.app,
                    made.id,
                    copy.source.id,
                    dataset,
                    copy.destination,
                )
            except Exception as error:
                where = f"copy of {copy.source.id} to {copy.destination}"
                text = f"{where}: {self._explain_site(spec, copy.destination, error)}"
                await failed(
                    EventReason.VOLUME_COPY_FAILED, copy.destination, [copy.destination], text
                )
        for prune in plan.prunes:
            if self._moved_on(scope):
                return failures
            try:
                region = await self._region(spec, prune.site)
                await region.delete(prune.holding.id)
                self._warned.discard((EventReason.VOLUME_PRUNE_FAILED, prune.site))
                log.info(
                    "%s: pruned %s %s at %s (%s)",
                    self.app,
                    prune.holding.kind,
                    prune.holding.id,
                    prune.site,
                    prune.reason,
                )
            except Exception as error:
                where = f"pruning {prune.holding.id} at {prune.site}"
                text = f"{where}: {self._explain_site(spec, prune.site, error)}"
                sites = destinations if prune.site == scope.source else [prune.site]
                await failed(EventReason.VOLUME_PRUNE_FAILED, prune.site, sites, text)
        return failures

    async def _region(self, spec: ResilientAppSpec, site_name: str) -> VolumeSnapshots:
        site = spec.site(site_name)
        assert site is not None  # only declared sites are planned for
        return await self.providers.volume_snapshots(site.provider, site.region)

    def _explain_site(self, spec: ResilientAppSpec, site_name: str, error: BaseException) -> str:
        site = spec.site(site_name)
        return self._explain(site.provider if site else "", error)

    def _explain(self, provider: str, error: BaseException) -> str:
        if isinstance(error, ProviderUnavailable):
            return str(error)
        return self.providers.explain(provider, error)

    async def _warn(self, reason: str, site: str, message: str) -> None:
        """A warning Event for the first failure of its kind at a site (until one succeeds
        again there); later ones are logged, counted and shown in the status."""
        log.warning("%s: %s", self.app, message)
        if (reason, site) in self._warned:
            return
        self._warned.add((reason, site))
        try:
            await self.kube.event(self.ref, "Warning", reason, message)
        except Exception as error:  # an Event is not worth failing a pass for
            log.warning("%s: event %s not posted: %s", self.app, reason, error)

    # ------------------------------------------------------------------ metrics

    def _export(self) -> None:
        now = self.clock()
        for (dataset, destination), flow in self._flows.items():
            entry = flow.status(dataset, destination, now)
            labels = (*self._labels, dataset, destination)
            metrics.REPLICATION_PENDING_OBJECTS.labels(*labels).set(entry.pending_objects)
            copying = flow.figures.copying if flow.figures is not None else 0
            metrics.REPLICATION_PROVIDER_COPIES.labels(*labels).set(copying)
            if entry.rpo_seconds is not None:
                metrics.REPLICATION_RPO.labels(*labels).set(entry.rpo_seconds)
            else:
                metrics.forget_replication_rpo(*labels)

    def _drop(self, dataset: str, destination: str) -> None:
        self._flows.pop((dataset, destination), None)
        labels = (*self._labels, dataset, destination)
        for metric in (
            metrics.REPLICATION_PENDING_OBJECTS,
            metrics.REPLICATION_PROVIDER_COPIES,
            metrics.REPLICATION_RPO,
            metrics.REPLICATION_OBJECTS,
            metrics.REPLICATION_ERRORS,
            metrics.REPLICATION_LAST_SUCCESS,
        ):
            _remove(metric, *labels)

    def _forget_targets(self) -> None:
        for name in self._targets:
            _remove(metrics.REPLICATION_RPO_TARGET, *self._labels, name)
        self._targets.clear()


def _remove(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never exported
        metric.remove(*labels)
