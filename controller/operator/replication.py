"""Object replication of one app, kept in step with the app by its worker.

:class:`ObjectReplication` is a *replication source* of the :class:`~controller.operator.app.
AppWorker` (see :class:`~controller.operator.app.ReplicationSource`): every round the worker
tells it the spec, the active site and the epoch, and reads its figures back into the
status, the metrics, the ``Replicating`` / ``RPOBreached`` conditions and the decision
core's failback gate.

For every object dataset it runs one flow per destination — from the dataset's location
at the active site to each other location — plus, when the source location names an SQS
``eventQueue``, a listener for the bucket's change notices
(:mod:`controller.replication.objects`). When the active site or the epoch changes, every
flow of the old epoch is stopped before the flows of the new one start (their direction
reversed), and a flow checks that its epoch is still current before a copy starts and
again once the body has been read, right before the store commits the object, so an
older-epoch copy cannot become visible at the new active site — except for the one commit
request already under way when the epoch changes (an SDK call cannot be recalled), which
the epoch stamps then mark as older so the next pass of the new epoch settles it. A flow
holds (sends nothing) while the API plane of its source's or destination's region is
Impaired.

Connections: a flow's stores belong to one revision of its CloudProviders' connections
(:meth:`~controller.operator.providers.ProviderRegistry.revision`). Every sync asks for the
current revisions; when one changed — its credentials Secret rotated, its spec edited
(endpoints, a CA bundle) — the dataset's flows stop and start again on the new connection.
When a CloudProvider is deleted or its credentials are withdrawn
(:data:`~controller.operator.providers.WITHDRAWN`), the flows through it stop and stay
stopped: a ``ReplicationStopped`` Warning, ``stopped`` in the status entries and the
``Replicating`` condition say so, until the CloudProvider can be used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeAlias

from controller import metrics
from controller.api.annotations import UnreplicatedRequest
from controller.api.conditions import rfc3339
from controller.api.events import EventReason
from controller.api.models import (
    ObjectDataset,
    ObjectLocation,
    ReplicationStatus,
    ResilientAppSpec,
    Site,
    UnreplicatedRequestStatus,
)
from controller.core.apiplane import ApiPlaneState
from controller.operator.kube import EventType, Kube, ObjectRef
from controller.operator.providers import WITHDRAWN
from controller.providers.backend import Capability
from controller.providers.errors import CapabilityUnsupported, ProviderUnavailable
from controller.providers.protocols import ObjectChangeFeed, ObjectStore
from controller.replication.figures import FlowFigures
from controller.replication.objects import (
    ChangeListener,
    FlowSettings,
    Location,
    ObjectFlow,
    run_dataset,
)
from controller.replication.plan import Conflict, Unreplicated

log = logging.getLogger(__name__)


class ObjectStores(Protocol):
    """What object replication needs of the provider registry."""

    async def object_store(self, provider: str, region: str, bucket: str) -> ObjectStore: ...

    async def change_feed(self, provider: str, region: str, queue: str) -> ObjectChangeFeed: ...

    async def revision(self, provider: str) -> int:
        """The revision of the provider's connection now (ProviderUnavailable if none)."""
        ...

    def region_state(self, provider: str, region: str) -> ApiPlaneState: ...

    def refused(self, provider: str) -> str | None:
        """Why the app may not use ``provider`` now (its tenancy), or None."""
        ...

    def explain(self, name: str, error: BaseException) -> str: ...

    def cached_redactor(self, name: str) -> Callable[[str], str]: ...


@dataclass(frozen=True)
class ReplicationOptions:
    """Tuning that the spec does not carry (tests shorten it)."""

    retry_seconds: float = 10.0
    """After a failed pass, or a dataset whose stores could not be built."""
    checkpoint_seconds: float = 10.0
    poll_min_seconds: float = 0.5
    poll_max_seconds: float = 4.0
    stop_timeout_seconds: float = 10.0


Stamp: TypeAlias = tuple[str, int | str]
"""What a CloudProvider's connection is as a dataset's flows see it: ``("connected",
revision)``, ``("withdrawn", why)``, or ``("unavailable", "")`` (not usable yet, for a
passing reason)."""


class _Identity(NamedTuple):
    """What a dataset's running flows were started from: any change restarts them."""

    active: str
    epoch: int
    dataset: ObjectDataset
    sites: tuple[tuple[str, str, str], ...]
    """(name, provider, region) of each site the dataset has a location at."""
    connections: tuple[tuple[str, Stamp], ...] = ()
    """The connection of each of those sites' CloudProviders (by name)."""

    def withdrawn(self) -> str:
        """Why a CloudProvider of the dataset is withdrawn (its flows stop), or ""."""
        return next((str(why) for _, (kind, why) in self.connections if kind == "withdrawn"), "")

    def end(self, site: str) -> tuple[object, ...] | None:
        """Bucket, prefix, provider and region of the dataset's location at ``site``."""
        location = next((loc for loc in self.dataset.locations if loc.site == site), None)
        where = next((s for s in self.sites if s[0] == site), None)
        return None if location is None else (location.bucket, location.prefix, where)


@dataclass
class _Dataset:
    """The running replication of one dataset under one epoch."""

    name: str
    identity: _Identity
    destinations: tuple[str, ...]
    flows: list[ObjectFlow] = field(default_factory=list)
    listener: ChangeListener | None = None
    task: asyncio.Task[None] | None = None
    error: str = ""
    """Why the dataset does not run (its stores could not be built)."""
    stopped: bool = False
    """It does not run because a CloudProvider of it is withdrawn: not retried until that
    changes (``error`` says why)."""
    failed_at: float = 0.0
    source: str = ""
    epoch: int = 0
    known: dict[str, FlowFigures] = field(default_factory=dict)
    """What the dataset's earlier flows (same source and epoch, same ends) knew, by
    destination: a restarted dataset's RPO keeps growing from there instead of turning
    unknown (and an RPO breach does not clear itself by a restart)."""

    def carry(self) -> None:
        """Start from what earlier flows knew (``known``), before the flows run: each new
        flow's RPO grows from the last time its predecessor looked, until its own first
        listing."""
        known = self.known
        for flow in self.flows:
            earlier = known.get(flow.target.site)
            if earlier is not None:
                flow.figures.listed_at = earlier.listed_at
                flow.figures.pending = earlier.pending.copy()


def _known(running: _Dataset, identity: _Identity) -> dict[str, FlowFigures]:
    """What ``running`` knew, by destination, that still holds for a dataset restarted
    as ``identity``: the same source and epoch, and unchanged ends (bucket, prefix,
    provider and region of the source and of that destination)."""
    if (identity.active, identity.epoch) != (running.identity.active, running.identity.epoch):
        return {}

    def same(site: str) -> bool:
        was = running.identity.end(site)
        return was is not None and was == identity.end(site)

    if not same(running.source):
        return {}
    earlier = {flow.target.site: flow.figures for flow in running.flows} or running.known
    return {
        site: FlowFigures(
            figures.dataset,
            site,
            figures.source,
            figures.epoch,
            pending=figures.pending.copy(),
            listed_at=looked,
            totals=dataclasses.replace(figures.totals),
        )
        for site, figures in earlier.items()
        if same(site) and (looked := figures.looked_at()) is not None
    }


class _Reporter:
    """Counts a flow's work in the metrics and reports conflicts as Events."""

    def __init__(self, owner: ObjectReplication, labels: tuple[str, str, str, str]) -> None:
        self.owner = owner
        self.labels = labels

    def copied(self, size: int) -> None:
        metrics.REPLICATION_BYTES.labels(*self.labels).inc(size)
        metrics.REPLICATION_OBJECTS.labels(*self.labels).inc()

    def streamed(self, size: int) -> None:
        metrics.REPLICATION_STREAMED_BYTES.labels(*self.labels).inc(size)

    def deleted(self) -> None:
        metrics.REPLICATION_DELETES.labels(*self.labels).inc()

    def failed(self, message: str) -> None:
        metrics.REPLICATION_ERRORS.labels(*self.labels).inc()

    def conflicted(self, conflicts: Sequence[Conflict]) -> None:
        metrics.REPLICATION_CONFLICTS.labels(*self.labels).inc(len(conflicts))
        shown = "; ".join(f"{c.key}: {c.reason}" for c in conflicts[:3])
        more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        dataset, destination = self.labels[2], self.labels[3]
        self.owner.announce(
            "Warning",
            EventReason.REPLICATION_CONFLICT,
            f"dataset {dataset} -> {destination}: {len(conflicts)} object(s) not copied, "
            f"the destination holds a newer epoch: {shown}{more}",
        )

    def unreplicated(self, found: Sequence[Unreplicated]) -> None:
        shown = ", ".join(u.key for u in found[:5])
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        dataset, destination = self.labels[2], self.labels[3]
        self.owner.announce(
            "Warning",
            EventReason.UNREPLICATED_OBJECTS,
            f"dataset {dataset}: {len(found)} object(s) of an older epoch at {destination} never "
            f"reached the active site; kept until merged or discarded "
            f"(lifeboat replication unreplicated): {shown}{more}",
        )


class ObjectReplication:
    """The object datasets of one app; see the module docstring."""

    def __init__(
        self,
        ref: ObjectRef,
        kube: Kube,
        stores: ObjectStores,
        *,
        options: ReplicationOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ref = ref
        self.kube = kube
        self.stores = stores
        self.options = options or ReplicationOptions()
        self.clock = clock
        self._datasets: dict[str, _Dataset] = {}
        self._current: tuple[str, int] | None = None
        self._target = 0.0
        self._announcements: set[asyncio.Task[None]] = set()
        self._stamps: dict[str, Stamp] = {}
        self._resolution: UnreplicatedRequestStatus | None = None
        self._resolving: asyncio.Task[None] | None = None

    @property
    def _app(self) -> str:
        return f"{self.ref.namespace or ''}/{self.ref.name}"

    def _labels(self, dataset: str, destination: str) -> tuple[str, str, str, str]:
        return (self.ref.namespace or "", self.ref.name, dataset, destination)

    # ------------------------------------------------------------------ keeping in step

    async def sync(
        self, spec: ResilientAppSpec, active_site: str, epoch: int, epoch_since: float | None
    ) -> None:
        """Run exactly the flows the spec calls for, from ``active_site`` under ``epoch``."""
        self._current = (active_site, epoch)
        datasets = spec.replication.objects if spec.replication is not None else ()
        self._target = float(spec.replication.rpo_target_seconds) if spec.replication else 0.0
        wanted = {d.name: d for d in datasets}
        stamps = await self._connections(spec, datasets)
        gone = [self._datasets.pop(n) for n in list(self._datasets) if n not in wanted]
        stops = [self._stop(g, forget=set(g.destinations)) for g in gone]
        starts: list[tuple[ObjectDataset, _Identity]] = []
        for dataset in datasets:
            identity = self._identity(spec, dataset, active_site, epoch, stamps)
            running = self._datasets.get(dataset.name)
            if running is not None and running.identity == identity:
                retry = self.clock() - running.failed_at >= self.options.retry_seconds
                if running.task is not None or not running.error or running.stopped or not retry:
                    continue
            if running is not None:
                staying = {loc.site for loc in dataset.locations if loc.site != active_site}
                stops.append(self._stop(running, forget=set(running.destinations) - staying))
            starts.append((dataset, identity))
        known = {
            dataset.name: _known(running, identity)
            for dataset, identity in starts
            if (running := self._datasets.get(dataset.name)) is not None
        }
        # Every flow that ends (an old epoch's above all) has stopped before any new one
        # starts; they stop together, so a reversal waits for the slowest, not their sum.
        await asyncio.gather(*stops)
        for group in gone:
            metrics.forget_replication_target(self.ref.namespace or "", self.ref.name, group.name)
        for dataset, identity in starts:
            self._datasets[dataset.name] = await self._start(
                spec, dataset, active_site, epoch, epoch_since, identity, known.get(dataset.name)
            )

    @staticmethod
    def _identity(
        spec: ResilientAppSpec,
        dataset: ObjectDataset,
        active: str,
        epoch: int,
        stamps: dict[str, Stamp],
    ) -> _Identity:
        sites = tuple(
            (s.name, s.provider, s.region)
            for loc in dataset.locations
            if (s := spec.site(loc.site)) is not None
        )
        providers = sorted({provider for _, provider, _ in sites})
        connections = tuple((p, stamps[p]) for p in providers if p in stamps)
        return _Identity(active, epoch, dataset, sites, connections)

    async def _connections(
        self, spec: ResilientAppSpec, datasets: Sequence[ObjectDataset]
    ) -> dict[str, Stamp]:
        """The connection of every CloudProvider the datasets use, as of now (reconnected
        first if its spec or credentials changed). A provider that the app may not use
        now (tenancy) or that cannot be reached for a passing reason keeps the stamp it
        had: its flows hold (or fail and retry) without being restarted."""
        providers = {
            site.provider
            for dataset in datasets
            for location in dataset.locations
            if (site := spec.site(location.site)) is not None
        }
        stamps: dict[str, Stamp] = {}
        for provider in sorted(providers):
            try:
                stamps[provider] = ("connected", await self.stores.revision(provider))
            except ProviderUnavailable as error:
                if error.reason in WITHDRAWN:
                    stamps[provider] = ("withdrawn", str(error))
                else:
                    stamps[provider] = self._stamps.get(provider, ("unavailable", ""))
            except Exception as error:  # the Secret not read this time: as it was
                log.warning("%s: CloudProvider %s not checked: %r", self._app, provider, error)
                stamps[provider] = self._stamps.get(provider, ("unavailable", ""))
        self._stamps = stamps
        return stamps

    async def _start(
        self,
        spec: ResilientAppSpec,
        dataset: ObjectDataset,
        active: str,
        epoch: int,
        since: float | None,
        identity: _Identity,
        known: dict[str, FlowFigures] | None = None,
    ) -> _Dataset:
        """The dataset's flows and listener, started (``known``: see :func:`_known`)."""
        source_location = next((loc for loc in dataset.locations if loc.site == active), None)
        source_site = spec.site(active)
        if source_location is None or source_site is None:
            # The app does not keep this dataset where it runs now: nothing flows, and no
            # destination is behind (it would hold failback back for nothing).
            log.info("%s: dataset %s has no location at %s", self._app, dataset.name, active)
            return _Dataset(dataset.name, identity, (), source=active, epoch=epoch)
        destinations = tuple(loc.site for loc in dataset.locations if loc.site != active)
        group = _Dataset(dataset.name, identity, destinations, source=active, epoch=epoch)
        group.known = known or {}
        if withdrawn := identity.withdrawn():
            group.error, group.stopped, group.failed_at = withdrawn, True, self.clock()
            log.warning("%s: replication of %s stopped: %s", self._app, dataset.name, withdrawn)
            self.announce(
                "Warning",
                EventReason.REPLICATION_STOPPED,
                f"replication of dataset {dataset.name} to {', '.join(destinations)} stopped: "
                f"{withdrawn}; it starts again once the CloudProvider can be used",
            )
            return group
        try:
            source_store = await self.stores.object_store(
                source_site.provider, source_site.region, source_location.bucket
            )
            source = Location(active, source_store, source_location.prefix)
            for location in dataset.locations:
                if location.site == active:
                    continue
                site = spec.site(location.site)
                assert site is not None  # the spec's own rule
                store = await self.stores.object_store(site.provider, site.region, location.bucket)
                group.flows.append(
                    self._flow(
                        dataset,
                        source,
                        source_site,
                        Location(site.name, store, location.prefix),
                        site,
                        epoch,
                        since,
                    )
                )
            group.listener = await self._listener(
                dataset, source_location, source_site, group.flows
            )
        except (ProviderUnavailable, ValueError) as error:  # unusable provider or names
            group.flows, group.listener = [], None
            group.error = str(error)
            group.failed_at = self.clock()
            log.warning("%s: dataset %s not replicated: %s", self._app, dataset.name, error)
            return group
        metrics.REPLICATION_RPO_TARGET.labels(*self._labels(dataset.name, "")[:3]).set(self._target)
        for destination in destinations:
            labels = self._labels(dataset.name, destination)
            for counter in (
                metrics.REPLICATION_BYTES,
                metrics.REPLICATION_STREAMED_BYTES,
                metrics.REPLICATION_PROVIDER_COPIES,  # 0: Lifeboat streams objects itself
                metrics.REPLICATION_OBJECTS,
                metrics.REPLICATION_DELETES,
                metrics.REPLICATION_ERRORS,
                metrics.REPLICATION_CONFLICTS,
            ):
                counter.labels(*labels)
        group.carry()
        group.task = asyncio.create_task(
            run_dataset(group.flows, group.listener), name=f"replication {self._app}/{dataset.name}"
        )
        group.task.add_done_callback(self._ended(group))
        log.info(
            "%s: replicating dataset %s from %s to %s under epoch %d",
            self._app,
            dataset.name,
            active,
            ", ".join(destinations) or "nowhere",
            epoch,
        )
        return group

    def _flow(
        self,
        dataset: ObjectDataset,
        source: Location,
        source_site: Site,
        target: Location,
        target_site: Site,
        epoch: int,
        since: float | None,
    ) -> ObjectFlow:
        settings = FlowSettings(
            app=self._app,
            dataset=dataset.name,
            epoch=epoch,
            epoch_since=since,
            propagate_deletes=dataset.delete_policy == "Propagate",
            max_concurrency=dataset.max_concurrency,
            bandwidth=dataset.bandwidth_limit_bytes_per_second,
            scan_interval=float(dataset.scan_interval_seconds),
            retry_interval=min(self.options.retry_seconds, float(dataset.scan_interval_seconds)),
            checkpoint_interval=self.options.checkpoint_seconds,
        )
        flow_epoch = (source.site, epoch)

        def explain(error: BaseException) -> str:
            # Either end may have failed: both providers' secrets are kept out.
            text = self.stores.explain(target_site.provider, error)
            return self.stores.cached_redactor(source_site.provider)(text)

        return ObjectFlow(
            settings,
            source,
            target,
            held=self._held(source_site, target_site),
            current=lambda: self._current == flow_epoch,
            reporter=_Reporter(self, self._labels(dataset.name, target.site)),
            explain=explain,
            clock=self.clock,
        )

    async def _listener(
        self,
        dataset: ObjectDataset,
        location: ObjectLocation,
        site: Site,
        flows: Sequence[ObjectFlow],
    ) -> ChangeListener | None:
        if not location.event_queue or not flows:
            return None
        try:
            feed = await self.stores.change_feed(site.provider, site.region, location.event_queue)
        except CapabilityUnsupported as error:
            if error.capability is not Capability.CHANGE_FEED:
                raise
            # A configuration mistake (reported in ConfigurationValid): the scan still
            # finds every change, so the dataset is replicated all the same.
            log.warning("%s: dataset %s: %s; scan only", self._app, dataset.name, error)
            return None
        return ChangeListener(
            feed,
            location.bucket,
            location.prefix,
            flows,
            held=self._held(site),
            explain=lambda error: self.stores.explain(site.provider, error),
            clock=self.clock,
            poll_min=self.options.poll_min_seconds,
            poll_max=self.options.poll_max_seconds,
        )

    def _held(self, *sites: Site) -> Callable[[], str | None]:
        def held() -> str | None:
            for site in sites:
                if (refused := self.stores.refused(site.provider)) is not None:
                    return f"{refused}: nothing is copied from or to site {site.name}"
                if self.stores.region_state(site.provider, site.region) is ApiPlaneState.IMPAIRED:
                    return (
                        f"{site.provider} {site.region} API plane Impaired: nothing is copied "
                        "from or to it"
                    )
            return None

        return held

    def _ended(self, group: _Dataset) -> Callable[[asyncio.Task[None]], None]:
        def ended(task: asyncio.Task[None]) -> None:
            if task.cancelled():
                return
            error = task.exception()
            if error is not None:  # a bug: the next sync starts the dataset again
                log.error("%s: replication of %s ended: %r", self._app, group.name, error)
                group.task = None
                group.error = f"replication stopped: {type(error).__name__}"
                group.failed_at = self.clock()

        return ended

    async def _stop(self, group: _Dataset, *, forget: set[str]) -> None:
        """Stop a dataset's flows (and wait for them); drop the series of ``forget``."""
        if group.task is not None:
            group.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(group.task, self.options.stop_timeout_seconds)
            group.task = None
        for destination in sorted(forget):
            metrics.forget_replication(*self._labels(group.name, destination))

    # ------------------------------------------------------------------ the unreplicated tail

    def resolve(self, request: UnreplicatedRequest, answered: str | None) -> None:
        """Merge or discard the unreplicated objects of every dataset (or the one named),
        in the background, unless ``request`` was answered already (``answered``: the ID
        of the last request answered, from the status)."""
        if request.id == answered or (
            self._resolution is not None and self._resolution.id == request.id
        ):
            return
        unknown = request.dataset is not None and request.dataset not in self._datasets
        self._resolution = UnreplicatedRequestStatus(
            id=request.id,
            action=request.action.value,
            dataset=request.dataset,
            phase="Failed" if unknown else "Running",
            message=f"no object dataset {request.dataset!r} is replicated" if unknown else "",
            time=rfc3339(self.clock()),
        )
        if not unknown:
            self._resolving = asyncio.create_task(
                self._resolve(request), name=f"unreplicated {self._app} {request.id}"
            )

    async def _resolve(self, request: UnreplicatedRequest) -> None:
        flows = [
            flow
            for group in self._datasets.values()
            if request.dataset in (None, group.name)
            for flow in group.flows
        ]
        done = skipped = failed = size = 0
        notes: list[str] = []
        for flow in flows:
            try:
                outcome = await flow.resolve(request.action)
            except Exception as error:  # a bug: say so, never let it pass for a success
                log.exception("%s: %s of unreplicated objects crashed", self._app, request.action)
                failed += 1
                notes.append(f"{flow.settings.dataset} -> {flow.target.site}: {error!r}")
                continue
            done += outcome.objects
            skipped += outcome.skipped
            size += outcome.bytes
            failed += outcome.failed
            for text in (outcome.stopped, outcome.last_error):
                if text:
                    notes.append(f"{flow.settings.dataset} -> {flow.target.site}: {text}")
        verb = "merged into the active site" if request.action.value == "merge" else "discarded"
        message = f"{done} object(s) ({size} bytes) {verb}, {skipped} skipped, {failed} failed"
        if notes:
            message += "; " + "; ".join(notes[:3])
        ok = failed == 0 and not notes
        self._resolution = UnreplicatedRequestStatus(
            id=request.id,
            action=request.action.value,
            dataset=request.dataset,
            phase="Succeeded" if ok else "Failed",
            objects=done,
            bytes=size,
            skipped=skipped,
            failed=failed,
            message=message[:1024],
            time=rfc3339(self.clock()),
        )
        self.announce(
            "Normal" if ok else "Warning", EventReason.UNREPLICATED_RESOLVED, message[:1024]
        )

    def resolution(self) -> UnreplicatedRequestStatus | None:
        """The last merge or discard asked of this operator, and where it stands."""
        return self._resolution

    async def close(self) -> None:
        """Stop every flow (the app's worker is stopping)."""
        if self._resolving is not None:
            self._resolving.cancel()
        await asyncio.gather(*(self._stop(g, forget=set()) for g in self._datasets.values()))
        self._datasets.clear()
        for task in list(self._announcements):
            task.cancel()

    # ------------------------------------------------------------------ reporting

    def figures(self) -> list[ReplicationStatus]:
        """One entry per dataset and destination; the metrics are refreshed on the way."""
        now = self.clock()
        entries: list[ReplicationStatus] = []
        for group in self._datasets.values():
            flows = {flow.target.site: flow for flow in group.flows}
            for destination in group.destinations:
                flow = flows.get(destination)
                if flow is not None:
                    figures = flow.figures
                else:
                    earlier = group.known.get(destination)
                    figures = (
                        dataclasses.replace(earlier, pending=earlier.pending.copy())
                        if earlier is not None
                        else FlowFigures(group.name, destination, group.source, group.epoch)
                    )
                    figures.last_error = group.error
                if group.listener is not None and group.listener.last_error:
                    figures.last_error = figures.last_error or (
                        f"change notices: {group.listener.last_error}"
                    )
                entry = figures.status(now)
                if group.stopped:
                    entry = entry.model_copy(update={"stopped": True})
                entries.append(entry)
                self._export(entry, figures)
        return entries

    def _export(self, entry: ReplicationStatus, figures: FlowFigures) -> None:
        labels = self._labels(entry.dataset, entry.destination)
        metrics.REPLICATION_PENDING_OBJECTS.labels(*labels).set(entry.pending_objects)
        metrics.REPLICATION_PENDING_BYTES.labels(*labels).set(entry.pending_bytes)
        metrics.REPLICATION_PENDING_ESTIMATED.labels(*labels).set(int(entry.pending_estimated))
        metrics.REPLICATION_UNREPLICATED_OBJECTS.labels(*labels).set(entry.unreplicated_objects)
        metrics.REPLICATION_UNREPLICATED_BYTES.labels(*labels).set(entry.unreplicated_bytes)
        metrics.REPLICATION_RPO_TARGET.labels(*labels[:3]).set(self._target)
        rpo = figures.rpo(self.clock())
        if rpo is not None:
            metrics.REPLICATION_RPO.labels(*labels).set(rpo)
        else:  # unknown (not measured since the flow started): no stale figure
            metrics.forget_replication_rpo(*labels)
        if figures.passed_at is not None:
            metrics.REPLICATION_LAST_SUCCESS.labels(*labels).set(figures.passed_at)

    def announce(self, kind: EventType, reason: str, message: str) -> None:
        """Post an Event in the background (flows report from inside their passes)."""

        async def post() -> None:
            try:
                await self.kube.event(self.ref, kind, reason, message)
            except Exception as error:  # an Event is not worth failing for
                log.warning("%s: event %s not posted: %s", self._app, reason, error)

        task = asyncio.create_task(post())
        self._announcements.add(task)
        task.add_done_callback(self._announcements.discard)
