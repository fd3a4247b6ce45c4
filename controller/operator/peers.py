"""This peer's link to the other Lifeboat peers: publish its own view, hear the others'.

In multi-peer mode (``lifeboat run --peer-name``) every peer probes every zone of every app.
:class:`Peers` implements :class:`~controller.operator.context.PeerLink` for the app
workers:

* **Publish.** A worker hands over its view of an app each round (:meth:`Peers.publish`:
  the app's spec digest and its zones' states). Every ``heartbeatSeconds`` one PATCH writes
  the status of ``LifeboatPeers/lifeboat`` in this peer's **own** cluster: its name, a
  sequence that rises with every heartbeat, and per app the spec digest and zone states. The
  apps list travels only when it changed (a merge patch leaves it in place otherwise), so a
  steady heartbeat's request is a hundred bytes.
* **Hear.** Every ``heartbeatSeconds`` one GET per other peer reads the status of that
  peer's ``LifeboatPeers/lifeboat`` through its client (its kubeconfig Secret). A peer is
  *heard* while its sequence rose within the last three heartbeats, judged on this peer's
  own monotonic clock (never by comparing another host's timestamps): a peer whose operator
  stopped, or whose cluster cannot be reached, is not heard within three heartbeats.
* **Hand over.** :meth:`Peers.vantage` gives a worker every other peer's view of an app
  (heard or not; a peer not heard contributes no zones); :meth:`Peers.drift` names the heard
  peers that read a different spec of the app.

Bounds (ADR 0009):

* **Calls.** Per heartbeat: one PATCH in the own cluster, one GET per other peer, each
  with a deadline (:func:`request_seconds`), each target on its own loop so that a hung
  peer delays nobody else, and never two calls in flight to one cluster. A conflict (the
  object changed under the write: its spec was edited) costs one GET and one more PATCH.
* **Size.** The published apps list stays under :data:`MAX_PUBLISHED_BYTES` (JSON) and
  :data:`MAX_PUBLISHED_APPS`; apps beyond it (the last by name) are left out, reported by
  the ``Complete`` condition (False, ``TooLarge``) and ``lifeboat_peer_apps_left_out``.
  Readers do not count an app left out as spec drift.
* **Threads.** The ``kubernetes`` client blocks: calls run on the link's own small thread
  pool, so a hung peer cannot starve the operator's other API calls.

An unreachable peer, an unusable answer or a failed write is one log line when it starts
and one when it ends, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from controller import metrics
from controller.api.conditions import ConditionType, get_condition, rfc3339, set_condition
from controller.api.digest import canonical_json
from controller.api.models import Condition, LifeboatPeersSpec, LifeboatPeersStatus
from controller.api.models.peers import PEERS_OBJECT
from controller.api.names import GROUP, LIFEBOAT_PEERS, VERSION
from controller.core.health import ZoneKey, ZoneState
from controller.core.vantage import PeerView, Vantage
from controller.operator.kube import NotFound
from controller.operator.peer_setup import PeerClusters
from controller.providers.kubernetes.client import unreachable

log = logging.getLogger(__name__)

HEARD_HEARTBEATS = 3
"""A peer is heard while its sequence rose within this many of the reader's heartbeats."""
ABSENT_HEARTBEATS = 3
"""A heard peer whose publication has lacked an app for this many of its heartbeats (its
sequence rose this much since) reads a spec set without the app: spec drift. Shorter
absences are a peer starting up, whose workers have not published yet."""
MAX_PUBLISHED_BYTES = 512 * 1024
"""Bound of the published apps list (its compact JSON). The API server stores the whole
object in etcd (default request limit 1.5 MiB) and handles it whole on every write: half a
megabyte keeps it well under the limit (about 1,180 apps of two sites and six zones; see
docs/peers.md, costs per peer)."""
MAX_PUBLISHED_APPS = 5000
"""The CRD's bound on ``status.apps``."""
MAX_PUBLISHED_ZONES = 256
"""The CRD's bound on one app's zones."""
MIN_REQUEST_SECONDS = 1.0
MAX_REQUEST_SECONDS = 5.0


def request_seconds(heartbeat: float) -> float:
    """The deadline of every call: one heartbeat, at least 1 s (a loaded API server answers
    within that), at most 5 s (a long heartbeat must not leave a hung call for a minute)."""
    return min(max(heartbeat, MIN_REQUEST_SECONDS), MAX_REQUEST_SECONDS)


class Conflict(RuntimeError):
    """A write carried a resourceVersion that is no longer the object's (409)."""


class PeersObject(Protocol):
    """``LifeboatPeers/lifeboat`` in one cluster (:class:`ClusterPeersObject`; tests fake it).

    Both calls raise :class:`~controller.operator.kube.NotFound` when the object does not
    exist; ``patch_status`` raises :class:`Conflict` when its resourceVersion precondition
    fails; anything else (unreachable, timed out, refused) raises as the client does.
    """

    async def get(self, seconds: float) -> Mapping[str, Any]:
        """The whole object."""
        ...

    async def patch_status(self, body: Mapping[str, Any], seconds: float) -> Mapping[str, Any]:
        """Merge-patch the status subresource; the object as written."""
        ...


@dataclass
class ClusterPeersObject:
    """:class:`PeersObject` over the ``kubernetes`` client, on ``executor``'s threads.

    Every call carries its deadline to the client (the socket gives up) and is awaited with
    a little more (the caller never waits longer, even if the thread lingers)."""

    api: kubernetes.client.ApiClient
    executor: Executor | None = None

    def __post_init__(self) -> None:
        self._custom = kubernetes.client.CustomObjectsApi(self.api)

    async def get(self, seconds: float) -> Mapping[str, Any]:
        return await self._call(
            seconds,
            self._custom.get_cluster_custom_object,
            GROUP,
            VERSION,
            LIFEBOAT_PEERS.plural,
            PEERS_OBJECT,
        )

    async def patch_status(self, body: Mapping[str, Any], seconds: float) -> Mapping[str, Any]:
        return await self._call(
            seconds,
            self._custom.patch_cluster_custom_object_status,
            GROUP,
            VERSION,
            LIFEBOAT_PEERS.plural,
            PEERS_OBJECT,
            dict(body),
        )

    async def _call(
        self, seconds: float, function: Callable[..., Any], *args: Any
    ) -> Mapping[str, Any]:
        call = functools.partial(function, *args, _request_timeout=seconds)
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(loop.run_in_executor(self.executor, call), seconds + 1)
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"{LIFEBOAT_PEERS.kind}/{PEERS_OBJECT} not found") from None
            if error.status == 409:
                raise Conflict(f"{LIFEBOAT_PEERS.kind}/{PEERS_OBJECT} changed") from None
            raise
        return found if isinstance(found, dict) else {}


async def _bounded(call: Awaitable[Mapping[str, Any]], seconds: float) -> Mapping[str, Any]:
    """``call``, given up a second after its deadline whatever the link does."""
    return await asyncio.wait_for(call, seconds + 1)


def brief(error: BaseException) -> str:
    """One line for a failed call: no traceback, no response body."""
    reason = unreachable(error)
    if reason is not None:
        return reason
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, NotFound | Conflict):
        return str(error)
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__


# ---------------------------------------------------------------------- hearing one peer


@dataclass
class Hearing:
    """Whether one other peer is heard: its sequence rose recently on the reader's clock.

    ``at`` and ``now`` are readings of the reader's monotonic clock. The first sequence seen
    is only a baseline (a publication left behind by a peer that stopped an hour ago looks
    exactly like a fresh one); so is a sequence lower than the last one seen (the peer
    started over without its old status). Only a rise counts.
    """

    sequence: int | None = None
    rose_at: float | None = None

    def observe(self, sequence: int, at: float) -> bool:
        """Record the sequence of a publication read at ``at``; whether it rose."""
        rose = self.sequence is not None and sequence > self.sequence
        if rose:
            self.rose_at = at
        self.sequence = sequence
        return rose

    def heard(self, now: float, heartbeat: float) -> bool:
        """Whether the sequence rose within the last :data:`HEARD_HEARTBEATS` heartbeats."""
        return self.rose_at is not None and now - self.rose_at <= HEARD_HEARTBEATS * heartbeat


class LeaseHolding(Protocol):
    """This peer's hold on the peer clusters' Leases (the quorum elector)."""

    @property
    def leading(self) -> bool: ...

    def held(self) -> tuple[str, ...]:
        """The peer clusters whose ``lifeboat`` Lease this peer holds now."""
        ...


@dataclass(frozen=True)
class Published:
    """One app as another peer published it."""

    digest: str
    zones: Mapping[ZoneKey, ZoneState]


@dataclass
class _Other:
    """Another peer as this one hears it."""

    name: str
    link: PeersObject
    hearing: Hearing = field(default_factory=Hearing)
    apps: dict[str, Published] = field(default_factory=dict)
    complete: bool = True
    """Its publication lists every app it serves (nothing left out for size)."""
    raw_apps: list[Any] | None = None
    """Its apps list as last parsed (as read: parsed again only when it differs)."""
    missing: dict[str, int] = field(default_factory=dict)
    """App this peer publishes -> the other's sequence when first seen without it."""
    leading: bool = False
    """Its last publication says it leads."""
    problem: str | None = None
    heard: bool | None = None
    """As last reported (log lines and the metric change on transitions only)."""


@dataclass(frozen=True)
class _View:
    """This peer's own view of one app, as published."""

    entry: dict[str, Any]
    size: int


def _entry(app: str, digest: str, zones: Mapping[ZoneKey, ZoneState]) -> dict[str, Any]:
    listed = sorted(zones.items())[:MAX_PUBLISHED_ZONES]
    return {
        "app": app,
        "specDigest": digest,
        "zones": [{"site": k.site, "zone": k.zone, "state": str(s)} for k, s in listed],
    }


def _zone_state(text: str) -> ZoneState:
    try:
        return ZoneState(text)
    except ValueError:
        return ZoneState.UNKNOWN


def _membership(spec: LifeboatPeersSpec) -> tuple[tuple[str, str | None, str | None], ...]:
    """What the peers' clients are built from (names and kubeconfig Secrets)."""
    return tuple(
        (
            p.name,
            p.kubeconfig_secret_ref.name if p.kubeconfig_secret_ref else None,
            p.kubeconfig_secret_ref.key if p.kubeconfig_secret_ref else None,
        )
        for p in spec.peers
    )


# ---------------------------------------------------------------------- the link


class Peers:
    """This peer's :class:`~controller.operator.context.PeerLink` (module docstring).

    ``own`` reaches ``LifeboatPeers/lifeboat`` in this peer's cluster, ``others`` every
    other peer's (one per peer the spec lists besides ``me``). ``clock`` is monotonic
    (hearing), ``wall`` gives ``publishedAt`` (informative only).

    A change of ``heartbeatSeconds`` or ``allowSolo`` in the own cluster's object applies at
    the next heartbeat; a change of the peers themselves (names, kubeconfig Secrets) sets
    :attr:`membership_changed`, and the runtime builds the peers anew (the clients, and the
    majority the leadership counts, follow from the list).
    """

    def __init__(
        self,
        me: str,
        spec: LifeboatPeersSpec,
        own: PeersObject,
        others: Mapping[str, PeersObject],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        names = [peer.name for peer in spec.peers]
        if me not in names:
            raise ValueError(f"peer {me} is not listed in {LIFEBOAT_PEERS.kind}/{PEERS_OBJECT}")
        missing = [name for name in names if name != me and name not in others]
        if missing:
            raise ValueError(f"no link to peer(s) {', '.join(missing)}")
        self.me = me
        self.spec = spec
        self.membership_changed = asyncio.Event()
        self._own = own
        self._others = {name: _Other(name, others[name]) for name in names if name != me}
        self._clock = clock
        self._wall = wall
        self._views: dict[str, _View] = {}
        self._sequence = 0
        """The sequence last written (or read back from the own object)."""
        self._attempted = 0
        """The highest sequence this instance tried to write."""
        self._version: str | None = None
        """resourceVersion of the own object after our last write (None: read it first)."""
        self._uid: str | None = None
        self._generation: int | None = None
        self._written_apps: list[dict[str, Any]] | None = None
        self._conditions: tuple[Condition, ...] = ()
        self._written_conditions: tuple[Condition, ...] | None = None
        self._withdrawn = False
        """The session is ending: heartbeats go on, views are no longer published."""
        self._problem: str | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._leadership: LeaseHolding | None = None

    @classmethod
    def connect(
        cls,
        clusters: PeerClusters,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> Peers:
        """The link over the peer clusters' clients (:mod:`.peer_setup`), its calls on a
        thread pool of its own: two threads per cluster (never two calls are in flight
        to one cluster; a call given up may hold its thread a moment longer)."""
        executor = ThreadPoolExecutor(
            max_workers=2 * len(clusters.clusters), thread_name_prefix="lifeboat-peers"
        )
        link = cls(
            clusters.me,
            clusters.spec,
            ClusterPeersObject(clusters.own.api, executor),
            {c.name: ClusterPeersObject(c.api, executor) for c in clusters.others},
            clock=clock,
            wall=wall,
        )
        link._executor = executor
        return link

    def close(self) -> None:
        """Let the link's threads go (the clients belong to the caller)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ PeerLink

    @property
    def heartbeat(self) -> float:
        return self.spec.heartbeat_seconds

    def withdraw(self) -> None:
        """The session ends (a new peer list is being set up, or the process stops): keep
        the heartbeat — the other peers go on hearing this one and whom it sees leading —
        but publish no app's view any more, and say so (``Complete`` False, ``SettingUpAnew``,
        so the other peers read no spec drift into it). Its workers, shutting down, stop
        probing: views frozen meanwhile would be stale evidence in the others' votes; a
        heard peer with no view counts as seeing every zone Unknown."""
        self._withdrawn = True
        self._views.clear()

    def publish(self, app: str, spec_digest: str, zones: Mapping[ZoneKey, ZoneState]) -> None:
        if self._withdrawn:
            return
        entry = _entry(app, spec_digest, zones)
        known = self._views.get(app)
        if known is None or known.entry != entry:
            self._views[app] = _View(entry, len(canonical_json(entry)) + 1)

    def vantage(self, app: str) -> Vantage:
        now = self._clock()
        views = []
        for other in self._others.values():
            heard = other.hearing.heard(now, self.heartbeat)
            published = other.apps.get(app) if heard else None
            views.append(PeerView(other.name, heard, published.zones if published else {}))
        return Vantage(
            tuple(views), total=len(self.spec.peers), allow_solo=self.spec.allow_solo, peer=self.me
        )

    def drift(self, app: str, spec_digest: str) -> tuple[str, ...]:
        now = self._clock()
        drifting = []
        for other in self._others.values():
            if not other.hearing.heard(now, self.heartbeat):
                continue
            published = other.apps.get(app)
            if published is not None:
                if published.digest != spec_digest:
                    drifting.append(other.name)
                continue
            since = other.missing.get(app)
            sequence = other.hearing.sequence or 0
            if other.complete and since is not None and sequence - since >= ABSENT_HEARTBEATS:
                drifting.append(other.name)
        return tuple(drifting)

    def forget(self, app: str) -> None:
        self._views.pop(app, None)
        for other in self._others.values():
            other.missing.pop(app, None)

    def follow(self, leadership: LeaseHolding) -> None:
        """Publish, with every heartbeat, whether this peer leads and which Leases it holds."""
        self._leadership = leadership

    def leader(self) -> str | None:
        """The peer this one sees leading: itself while it leads, else a heard peer whose
        own publication says it leads (None: none that this peer knows of)."""
        if self._leadership is not None and self._leadership.leading:
            return self.me
        now = self._clock()
        leading = sorted(
            o.name
            for o in self._others.values()
            if o.leading and o.hearing.heard(now, self.heartbeat)
        )
        return leading[0] if leading else None

    def heard(self) -> tuple[str, ...]:
        """The other peers heard now."""
        now = self._clock()
        return tuple(o.name for o in self._others.values() if o.hearing.heard(now, self.heartbeat))

    # ------------------------------------------------------------------ the heartbeat

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish and read every heartbeat until ``stopping`` is set: one loop for the own
        cluster, one per other peer, each on the heartbeat's grid."""
        loops = [self._every_heartbeat(stopping, self.publish_once)]
        loops += [
            self._every_heartbeat(stopping, functools.partial(self.read_once, name))
            for name in self._others
        ]
        await asyncio.gather(*loops)

    async def _every_heartbeat(
        self, stopping: asyncio.Event, step: Callable[[], Awaitable[object]]
    ) -> None:
        due = self._clock()
        while not stopping.is_set():
            await step()
            # The next slot of the grid; a step that overran skips the slots it missed
            # rather than calling twice in a row.
            due += self.heartbeat
            now = self._clock()
            if due < now:
                due += (now - due) // self.heartbeat * self.heartbeat + self.heartbeat
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), due - now)

    async def publish_once(self) -> bool:
        """Write this peer's publication in its own cluster; whether it was written."""
        timeout = request_seconds(self.heartbeat)
        try:
            for _ in range(2):  # a conflict: read the object again, write once more
                if self._version is None:
                    metrics.PEER_REQUESTS.labels(peer=self.me, verb="get").inc()
                    self._adopt(await _bounded(self._own.get(timeout), timeout))
                metrics.PEER_REQUESTS.labels(peer=self.me, verb="patch").inc()
                body = self._body()
                self._attempted = max(self._attempted, body["status"]["sequence"])
                try:
                    written = await _bounded(self._own.patch_status(body, timeout), timeout)
                except Conflict:
                    self._version = None
                    continue
                self._written(written, body["status"])
                self._recovered_own()
                return True
            raise Conflict(f"{LIFEBOAT_PEERS.kind}/{PEERS_OBJECT} kept changing under the write")
        except Exception as error:
            self._version = None  # it may have been written after all: read before writing
            self._own_problem(f"cannot publish in {self.me}'s own cluster: {brief(error)}")
            return False

    async def read_once(self, name: str) -> None:
        """Read one other peer's publication and judge whether it is heard."""
        other = self._others[name]
        at = self._clock()  # before the call: a slow answer is judged as of its request
        metrics.PEER_REQUESTS.labels(peer=name, verb="get").inc()
        try:
            seconds = request_seconds(self.heartbeat)
            found = await _bounded(other.link.get(seconds), seconds)
        except Exception as error:
            self._other_problem(other, f"cannot read its publication: {brief(error)}")
        else:
            self._take(other, found, at)
        self._report(other)

    # ------------------------------------------------------------------ publishing

    def _apps(self) -> tuple[list[dict[str, Any]], int, int]:
        """The apps to publish (by name, within the bounds), their size, and how many
        were left out."""
        apps: list[dict[str, Any]] = []
        size = 0
        for app in sorted(self._views):
            view = self._views[app]
            if len(apps) >= MAX_PUBLISHED_APPS or size + view.size > MAX_PUBLISHED_BYTES:
                break
            apps.append(view.entry)
            size += view.size
        return apps, size, len(self._views) - len(apps)

    def _body(self) -> dict[str, Any]:
        apps, size, left_out = self._apps()
        metrics.PEER_PUBLISHED_BYTES.set(size)
        metrics.PEER_APPS_LEFT_OUT.set(left_out)
        wall = self._wall()
        if self._withdrawn:
            complete = set_condition(
                self._conditions,
                ConditionType.COMPLETE,
                "False",
                "SettingUpAnew",
                "this peer's session is ending (a new peer list, or a shutdown): it publishes "
                "no app until its next session",
                generation=None,
                now=wall,
            )
        elif left_out:
            complete = set_condition(
                self._conditions,
                ConditionType.COMPLETE,
                "False",
                "TooLarge",
                f"{left_out} of {len(self._views)} apps left out to keep the publication "
                f"under {MAX_PUBLISHED_BYTES // 1024} KiB and {MAX_PUBLISHED_APPS} apps",
                generation=None,
                now=wall,
            )
        else:
            complete = set_condition(
                self._conditions,
                ConditionType.COMPLETE,
                "True",
                "AllApps",
                f"every app this peer serves ({len(apps)})",
                generation=None,
                now=wall,
            )
        self._conditions = complete
        status: dict[str, Any] = {
            "peer": self.me,
            "sequence": self._sequence + 1,
            "publishedAt": rfc3339(wall),
            "leader": self.leader(),
        }
        if self._leadership is not None:
            status["leading"] = self._leadership.leading
            status["leasesHeld"] = list(self._leadership.held())
        if apps != self._written_apps:
            status["apps"] = apps
        if complete != self._written_conditions:
            status["conditions"] = [c.to_wire() for c in complete]
        return {"metadata": {"resourceVersion": self._version}, "status": status}

    def _adopt(self, found: Mapping[str, Any]) -> None:
        """Start from the own object as read: its resourceVersion, and a sequence above the
        stored one (a restarted peer goes on rising)."""
        meta = found.get("metadata") or {}
        status = found.get("status") or {}
        stored = status.get("sequence")
        if isinstance(stored, int) and stored > self._sequence:
            if stored > self._attempted > 0 and status.get("peer") == self.me:
                log.warning(
                    "peers: another instance publishes as peer %s (sequence %d, ours %d): "
                    "run one operator per peer name",
                    self.me,
                    stored,
                    self._sequence,
                )
            self._sequence = stored
        self._version = str(meta.get("resourceVersion") or "") or None
        if meta.get("uid") != self._uid:
            self._uid = meta.get("uid")
            self._written_apps = None  # a new object: write everything
            self._written_conditions = None
        self._follow_spec(found)

    def _written(self, written: Mapping[str, Any], sent: Mapping[str, Any]) -> None:
        meta = written.get("metadata") or {}
        self._sequence += 1
        self._version = str(meta.get("resourceVersion") or "") or None
        if "apps" in sent:
            self._written_apps = sent["apps"]
        if "conditions" in sent:
            self._written_conditions = self._conditions
        self._follow_spec(written)

    def _follow_spec(self, found: Mapping[str, Any]) -> None:
        """Apply a changed spec of the own object (heartbeat, allowSolo) or flag a changed
        membership."""
        generation = (found.get("metadata") or {}).get("generation")
        if generation == self._generation:
            return
        self._generation = generation
        try:
            spec = LifeboatPeersSpec.model_validate(found.get("spec") or {})
        except ValidationError as error:
            log.warning(
                "peers: %s/%s has an invalid spec (%s); keeping the previous one",
                LIFEBOAT_PEERS.kind,
                PEERS_OBJECT,
                error.errors()[0]["msg"],
            )
            return
        if spec == self.spec:
            return
        if _membership(spec) != _membership(self.spec):
            if not self.membership_changed.is_set():
                log.info("peers: the peer list changed; setting the peers up anew")
            self.membership_changed.set()
            return
        log.info(
            "peers: heartbeat %gs, allowSolo %s (was %gs, %s)",
            spec.heartbeat_seconds,
            spec.allow_solo,
            self.spec.heartbeat_seconds,
            self.spec.allow_solo,
        )
        self.spec = spec

    def _own_problem(self, problem: str) -> None:
        if problem != self._problem:
            log.warning("peers: %s", problem)
        self._problem = problem

    def _recovered_own(self) -> None:
        if self._problem is not None:
            log.info("peers: publishing in %s's own cluster again", self.me)
        self._problem = None

    # ------------------------------------------------------------------ reading

    def _take(self, other: _Other, found: Mapping[str, Any], at: float) -> None:
        raw = dict(found.get("status") or {})
        raw_apps = raw.pop("apps", None) or []
        try:
            status = LifeboatPeersStatus.model_validate(raw)
            # The apps list is parsed only when it changed: most heartbeats raise the
            # sequence alone, and parsing a thousand apps every heartbeat costs.
            changed = raw_apps != other.raw_apps
            apps = LifeboatPeersStatus.model_validate({"apps": raw_apps}).apps if changed else ()
        except ValidationError as error:
            self._other_problem(other, f"its publication is invalid ({error.errors()[0]['msg']})")
            return
        if status.peer is None:
            self._other_problem(other, "it has not published yet")
            return
        if status.peer != other.name:
            # Its kubeconfig reaches another peer's cluster (perhaps this one's): hearing
            # that peer twice would count one vantage as two.
            self._other_problem(
                other,
                f"its cluster publishes as peer {status.peer}: its kubeconfig Secret "
                "reaches the wrong cluster",
            )
            return
        other.problem = None
        other.leading = status.leading
        before = other.hearing.sequence
        other.hearing.observe(status.sequence, at)
        if status.sequence == before:
            return
        if changed:
            other.apps = {
                entry.app: Published(
                    entry.spec_digest,
                    {ZoneKey(z.site, z.zone): _zone_state(z.state) for z in entry.zones},
                )
                for entry in apps
            }
            other.raw_apps = raw_apps
        condition = get_condition(status.conditions, ConditionType.COMPLETE)
        other.complete = condition is None or condition.status != "False"
        for app in self._views:
            if app in other.apps:
                other.missing.pop(app, None)
            else:
                other.missing.setdefault(app, status.sequence)
        for app in [a for a in other.missing if a not in self._views]:
            del other.missing[app]

    def _other_problem(self, other: _Other, problem: str) -> None:
        if problem != other.problem:
            log.warning("peers: peer %s: %s", other.name, problem)
        other.problem = problem

    def _report(self, other: _Other) -> None:
        heard = other.hearing.heard(self._clock(), self.heartbeat)
        metrics.PEER_HEARD.labels(peer=other.name).set(1 if heard else 0)
        if heard == other.heard:
            return
        if heard:
            log.info("peers: peer %s heard (sequence %s)", other.name, other.hearing.sequence)
        elif other.heard is not None:
            log.warning(
                "peers: peer %s not heard: its sequence (%s) has not risen for %d heartbeats%s",
                other.name,
                other.hearing.sequence,
                HEARD_HEARTBEATS,
                f" ({other.problem})" if other.problem else "",
            )
        other.heard = heard
