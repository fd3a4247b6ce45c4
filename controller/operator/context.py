"""What a per-app worker and its collaborators share: the collaborators' Protocols, the
shared context, and the per-app logger."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, MutableMapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any, Protocol, runtime_checkable

from controller.api.annotations import UnreplicatedRequest
from controller.api.models import (
    ReplicationStatus,
    ResilientAppSpec,
    Site,
    UnreplicatedRequestStatus,
)
from controller.core import model as m
from controller.core.apiplane import ApiPlaneHealth, ApiPlaneState
from controller.core.health import ProbeResult, ZoneKey, ZoneState
from controller.core.vantage import Vantage
from controller.operator.capacity import NoCapacity
from controller.operator.kube import Kube, ObjectRef
from controller.operator.peer_status import OwnClusterStatus, StatusStore
from controller.operator.probes import RoundSchedule
from controller.operator.volumes import NoVolumeRestorer, RestoreOutcome
from controller.providers.protocols import CapacityDriver, TrafficManager


class Prober(Protocol):
    """Probes an app's endpoints (one prober serves every worker)."""

    async def probe_app(
        self, spec: ResilientAppSpec, namespace: str = "", app: Hashable = None
    ) -> tuple[ProbeResult, ...]:
        """One round; ``namespace``: where CA bundles are read; ``app``: what the prober
        keeps the app's compiled endpoints under."""
        ...

    def problems(self, namespace: str) -> list[str]:
        """Why some endpoints of ``namespace`` cannot be probed as configured."""
        ...

    def forget(self, app: Hashable) -> None:
        """The app's worker is stopping."""
        ...


class Providers(Protocol):
    """What a worker needs from the provider registry."""

    async def traffic(self, name: str, region: str | None = None) -> TrafficManager: ...

    def check_references(self, spec: ResilientAppSpec) -> list[tuple[str, str]]: ...

    def cached_redactor(self, name: str) -> Callable[[str], str]: ...

    def explain(self, name: str, error: BaseException) -> str: ...

    async def api_plane(self, provider: str, region: str) -> ApiPlaneState: ...

    async def api_plane_health(self, provider: str, region: str) -> ApiPlaneHealth: ...

    async def traffic_plane(self, provider: str, region: str | None) -> ApiPlaneState: ...


class Capacities(Protocol):
    async def for_site(self, app: str, site: Site) -> CapacityDriver:
        """The site's capacity driver (ProviderUnavailable when there is none to be had)."""
        ...


class VolumeRestores(Protocol):
    """Carries out the volume restores failovers call for."""

    async def restore(
        self,
        app: str,
        action: m.RestoreVolumes,
        spec: ResilientAppSpec,
        restores: Mapping[str, m.AppliedRestore],
    ) -> RestoreOutcome: ...


class ReplicationSource(Protocol):
    """One replication engine of an app (objects, volumes, ...), run beside its worker.

    Every round the worker calls :meth:`sync` with the spec, the active site and the epoch
    (before deciding, and again right after a decision that changed them, so that a
    failover reverses replication before traffic moves), and reads :meth:`figures`: one
    ``status.replication`` entry per dataset and destination. The worker merges the entries
    of every source into the status (a list the API server replaces whole, so they are
    written by the worker alone), derives the ``Replicating`` and ``RPOBreached``
    conditions from them, and feeds each destination's worst RPO to the decision core,
    whose automatic failback waits for replication to the declared primary to catch up.
    A source reports every destination it is responsible for from its first ``sync`` on
    (RPO unknown until measured), so that an unmeasured destination holds failback back.
    """

    async def sync(
        self, spec: ResilientAppSpec, active_site: str, epoch: int, epoch_since: float | None
    ) -> None:
        """Replicate what ``spec`` declares from ``active_site`` under ``epoch``
        (``epoch_since``: when that epoch began, if known)."""
        ...

    def figures(self) -> Sequence[ReplicationStatus]: ...

    async def close(self) -> None:
        """Stop (the app's worker is stopping)."""
        ...


@runtime_checkable
class FollowsAppState(Protocol):
    """A replication source that also reads the decision core's state (volume replication:
    the volumes a failover restored are its source; it waits while a restore is due). The
    worker hands it the state right before every :meth:`ReplicationSource.sync`."""

    def follow(self, state: m.AppState) -> None: ...


@runtime_checkable
class ObservesRestoredVolumes(Protocol):
    """A replication source that looks at the volumes a failover restored; the worker puts
    their states into ``status.volumeRestores``."""

    def volume_states(self) -> Mapping[str, str]:
        """Restored volume ID -> its state when last looked."""
        ...


@runtime_checkable
class ResolvesUnreplicated(Protocol):
    """A replication source that can merge or discard the unreplicated objects of an older
    epoch (``lifeboat replication unreplicated --merge|--discard``)."""

    def resolve(self, request: UnreplicatedRequest, answered: str | None) -> None:
        """Start carrying out ``request`` unless it is ``answered`` already (its ID)."""
        ...

    def resolution(self) -> UnreplicatedRequestStatus | None: ...


ReplicationFactory = Callable[[ObjectRef], ReplicationSource]


class Leadership(Protocol):
    """Whether this instance may act now. In single-cluster mode the whole operator runs
    only while it holds its Lease, so it always leads (:class:`Sole`); with peers every peer
    runs the workers (probe, decide, publish) and only the one holding a majority of the
    peer clusters' Leases acts."""

    @property
    def leading(self) -> bool: ...

    @property
    def term(self) -> int:
        """Rises whenever this instance gains or loses leadership: a worker that sees it
        change drops what it held in memory and rebuilds from the world."""
        ...


@dataclass(frozen=True)
class Sole:
    """Single-cluster mode: leadership is the Lease the whole process runs under."""

    leading: bool = True
    term: int = 0


class PeerLink(Protocol):
    """This peer's link to the others: publishes its own view of each app's zones and
    hands the worker the others' (the peers' runtime implements it; :class:`NoPeers` in
    single-cluster mode)."""

    def publish(self, app: str, spec_digest: str, zones: Mapping[ZoneKey, ZoneState]) -> None:
        """This peer's current view of ``app`` (``namespace/name``): published with the
        next heartbeat."""
        ...

    def vantage(self, app: str) -> Vantage | None:
        """The other peers' latest views of ``app`` (None: single-cluster mode)."""
        ...

    def drift(self, app: str, spec_digest: str) -> tuple[str, ...]:
        """Heard peers that publish a different spec digest for ``app`` (spec drift)."""
        ...

    def forget(self, app: str) -> None:
        """The app's worker is stopping: stop publishing it."""
        ...


@dataclass(frozen=True)
class NoPeers:
    """Single-cluster mode: one vantage, nothing published."""

    def publish(self, app: str, spec_digest: str, zones: Mapping[ZoneKey, ZoneState]) -> None:
        return None

    def vantage(self, app: str) -> Vantage | None:
        return None

    def drift(self, app: str, spec_digest: str) -> tuple[str, ...]:
        return ()

    def forget(self, app: str) -> None:
        return None


START_WIDTH = 16
"""Apps that take their first round at once (:class:`StartGate`)."""


class StartGate:
    """At most ``width`` apps take their first round at once.

    An operator that starts, or takes the lead, with hundreds of apps would otherwise send
    every app's first status write, Events, DNS read-back and publication in one burst: a
    1,000-app start-up on 2 cores kept the API server too busy to renew the Lease in time,
    and each lost Lease started every app again. First rounds queue here (their wait
    delays the app's first decision, by a few seconds with a hundred apps); later rounds
    never do."""

    def __init__(self, width: int = START_WIDTH) -> None:
        if width < 1:
            raise ValueError(f"a start gate lets at least one app through, got {width}")
        self.width = width
        self._slots: asyncio.Semaphore | None = None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.width)
        async with self._slots:
            yield


@dataclass
class AppContext:
    """What every app worker shares."""

    kube: Kube
    providers: Providers
    prober: Prober
    capacity: Capacities = field(default_factory=NoCapacity)
    clock: Callable[[], float] = time.time
    replication: tuple[ReplicationFactory, ...] = ()
    """Replication engines to run beside each app (object replication, volumes, ...)."""
    restorer: VolumeRestores = field(default_factory=NoVolumeRestorer)
    """Carries out the volume restores failovers call for."""
    schedule: RoundSchedule = field(default_factory=RoundSchedule)
    """When each app's rounds start (spread over the interval, on a fixed grid)."""
    leadership: Leadership = field(default_factory=Sole)
    """Whether this instance acts now (always, unless it runs as one of several peers)."""
    peers: PeerLink = field(default_factory=NoPeers)
    """The other peers' views and this peer's publication (none in single-cluster mode)."""
    starting: StartGate = field(default_factory=StartGate)
    """How many apps take their first round at once (one gate for the whole operator)."""
    status_store: InitVar[StatusStore | None] = None
    """Where apps' status is kept with peers (a majority of the peer clusters:
    :class:`~controller.operator.peer_status.PeerStatusWriter`); None: the own cluster."""
    statuses: StatusStore = field(init=False)
    """Where apps' status is kept: ``status_store``, or the own cluster
    (:class:`~controller.operator.peer_status.OwnClusterStatus`)."""

    def __post_init__(self, status_store: StatusStore | None) -> None:
        self.statuses = status_store if status_store is not None else OwnClusterStatus(self.kube)


class AppLog(logging.LoggerAdapter[logging.Logger]):
    """A logger that prefixes every line with the app's ``namespace/name``."""

    def __init__(self, logger: logging.Logger, ref: ObjectRef) -> None:
        super().__init__(logger, {"app": f"{ref.namespace or ''}/{ref.name}"})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"{extra['app']}: {msg}", kwargs
