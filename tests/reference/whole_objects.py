"""The whole-memory object replication engine before paging (main at 72bcb7f), kept
verbatim as the reference of tests/unit/test_paged_replication.py (a paged, streamed
pass must end where this one does). Changed: its figures are the dictionary-based ones
of that time (:class:`FlowFigures` below), and the change listener is left out.

The object replication engine: one flow per dataset and destination.

An :class:`ObjectFlow` keeps one destination (an S3 bucket or Swift container at another
site) in step with the dataset's source (the active site's), under one epoch. It only
knows :class:`~controller.providers.protocols.ObjectStore` (and, for change notices,
:class:`~controller.providers.protocols.ObjectChangeFeed`); the operator builds those from
the app's spec and starts, restarts and stops flows as the active site and epoch change
(:mod:`controller.operator.replication`).

How a flow works:

* **Scan** (every ``scan_interval``, and at once after a start): both ends are listed in
  key order and paired (:func:`~controller.replication.plan.pair_listings`); each key is
  planned (:func:`~controller.replication.plan.plan_key`) from the listings and the two
  sites' manifests (:mod:`controller.replication.manifest`). Objects copied before, and not
  changed since, need no HEAD: listing ETags are compared with the manifest's.
* **Change notices** (:class:`ChangeListener`, S3 event notifications through SQS) mark
  keys dirty; the flow settles each one between scans (a GET of the source, a HEAD of the
  destination, then what it needs), so a change usually reaches the destination within
  seconds. Notices are an accelerator: the scan remains the source of truth, so a lost
  notice costs at most one scan interval.
* **Copies** stream from the source's ``open`` into the destination's ``put`` (multipart /
  SLO above the stores' thresholds: never a whole large object in memory), at most
  ``max_concurrency`` at once and paced by the optional bandwidth limit. The GET's answer
  describes the source object as a HEAD would, so each copy is planned again from it and
  needs no HEAD of the source. The content is verified on the way: each part by the store,
  and the whole stream against the source's MD5 when one is known (the source's ETag of a
  simple object, or the ``lifeboat-md5`` stamp of a copy), before the object becomes
  visible. An interrupted copy leaves nothing visible (the stores abort multipart uploads
  and remove SLO segments); the next pass copies again.
* Every copy is **stamped** (``lifeboat-epoch``, ``lifeboat-source-etag``, ...) so the next
  pass — of this operator or a restarted one — recognises it without a manifest.
* The **epoch rule**: an older-epoch version never overwrites a newer-epoch object
  (:class:`~controller.replication.plan.Conflict`: refused, counted, reported), and nothing is
  sent once the flow's epoch is no longer current (``current()``, checked before every
  write).
* **Static stability**: while ``held()`` names a reason (the source's or destination's
  region has an Impaired API plane), the flow sends nothing at all and its RPO grows.
* **Checkpoints**: the destination's manifest is saved at most every
  ``checkpoint_interval`` seconds while the flow works (and no sooner than
  ``CHECKPOINT_SPACING`` times the last save took, so that saving a large manifest
  stays a small share of the work) and at the end of every pass, so a restarted
  operator resumes where it stopped instead of starting over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from controller.api.annotations import TailAction
from controller.providers.calls import RegionImpaired
from controller.providers.protocols import ObjectInfo, ObjectStore, OpenedObject
from controller.replication.epochs import EpochHistory
from controller.replication.limits import BandwidthLimit
from controller.replication.plan import (
    STAMP_EPOCH,
    STAMP_MD5,
    STAMP_MTIME,
    STAMP_PREFIX,
    STAMP_SOURCE_ETAG,
    STAMP_SOURCE_SITE,
    Conflict,
    Copy,
    Delete,
    Entry,
    Policy,
    Record,
    Side,
    Step,
    Unreplicated,
    ordered,
    origin,
    pair_listings,
    plan_key,
)
from tests.reference.whole_manifest import (
    Manifest,
    ManifestError,
    Totals,
    UnreplicatedObject,
    load_manifest,
    manifest_key,
    save_manifest,
)

log = logging.getLogger(__name__)


@dataclass
class FlowFigures:
    """The flow's figures as they were: every pending key in a dictionary."""

    dataset: str
    destination: str
    source: str
    epoch: int
    pending: dict[str, tuple[float, int]] = field(default_factory=dict)
    listed_at: float | None = None
    synced_at: float | None = None
    blind: bool = True
    passed_at: float | None = None
    watched_at: float | None = None
    totals: Totals = field(default_factory=Totals)
    throughput: float = 0.0
    last_error: str = ""
    unreplicated_objects: int = 0
    unreplicated_bytes: int = 0
    unreplicated_keys: tuple[str, ...] = ()


MAX_DIRTY = 10_000
"""Keys with change notices waiting to be settled, at most (about 200 bytes each); past
that a scan replaces the notices."""

UNREPLICATED_SHOWN = 10
"""Keys of unreplicated objects shown in the figures (the status); all are in the manifest."""

CHECKPOINT_SPACING = 20.0
"""While a flow works, checkpoints are at least this many times the last save's duration
apart: at most about 5 % of the time goes to saving the manifest, whatever its size."""

# Metadata carried from source to destination: what both S3 and Swift keep as it is.
_PORTABLE_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_PORTABLE_VALUE = re.compile(r"^[\x20-\x7e]{0,256}$")


@dataclass(frozen=True)
class Location:
    """A dataset's bucket or container at one site, and the prefix replicated."""

    site: str
    store: ObjectStore
    prefix: str = ""

    def key(self, relative_key: str) -> str:
        return self.prefix + relative_key


@dataclass(frozen=True)
class FlowSettings:
    app: str
    """``namespace/name`` of the app (the manifests' path)."""
    dataset: str
    epoch: int
    epoch_since: float | None = None
    """When the epoch began (the failover's decision time); None when not known."""
    propagate_deletes: bool = False
    max_concurrency: int = 8
    bandwidth: int | None = None
    """Bytes per second, for all of the flow's copies together."""
    scan_interval: float = 300.0
    retry_interval: float = 10.0
    """Seconds until the next scan after one that failed."""
    checkpoint_interval: float = 10.0


class FlowReporter(Protocol):
    """Told as things happen (metrics, Events)."""

    def copied(self, size: int) -> None: ...

    def streamed(self, size: int) -> None:
        """``size`` more bytes of a copy were sent on (before it is known to complete)."""
        ...

    def deleted(self) -> None: ...

    def failed(self, message: str) -> None: ...

    def conflicted(self, conflicts: Sequence[Conflict]) -> None: ...

    def unreplicated(self, found: Sequence[Unreplicated]) -> None:
        """Objects of an older epoch found at the destination that never reached the
        source (only those not known before)."""
        ...


class _Quiet:
    def copied(self, size: int) -> None:
        pass

    def streamed(self, size: int) -> None:
        pass

    def deleted(self) -> None:
        pass

    def failed(self, message: str) -> None:
        pass

    def conflicted(self, conflicts: Sequence[Conflict]) -> None:
        pass

    def unreplicated(self, found: Sequence[Unreplicated]) -> None:
        pass


@dataclass
class TailOutcome:
    """What a merge or discard of unreplicated objects did."""

    objects: int = 0
    bytes: int = 0
    skipped: int = 0
    failed: int = 0
    last_error: str = ""
    stopped: str = ""
    """Why it stopped before the end (the epoch moved on, a region became Impaired)."""


class _Stop(Exception):
    """The pass must stop: the epoch moved on, or a region became Impaired."""


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _portable(metadata: Mapping[str, str]) -> dict[str, str]:
    """The app's own metadata that every store keeps as it is (Lifeboat's stamps aside)."""
    return {
        k: v
        for k, v in metadata.items()
        if not k.startswith(STAMP_PREFIX) and _PORTABLE_KEY.match(k) and _PORTABLE_VALUE.match(v)
    }


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """Close an async generator however its consumer ends (a body read half-way)."""
    try:
        yield stream
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


def _relative(info: ObjectInfo, key: str) -> ObjectInfo:
    return ObjectInfo(key, info.size, info.etag, info.last_modified, info.metadata, info.md5)


class ObjectFlow:
    """One dataset's source to one destination, under one epoch; see the module docstring."""

    def __init__(
        self,
        settings: FlowSettings,
        source: Location,
        target: Location,
        *,
        held: Callable[[], str | None] = lambda: None,
        current: Callable[[], bool] = lambda: True,
        reporter: FlowReporter | None = None,
        explain: Callable[[BaseException], str] = _describe,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.source = source
        self.target = target
        self._held = held
        self._current = current
        self._reporter: FlowReporter = reporter or _Quiet()
        self._explain = explain
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.figures = FlowFigures(settings.dataset, target.site, source.site, settings.epoch)
        self.manifest: Manifest | None = None
        self._source_entries: dict[str, Entry] = {}
        self._policy = Policy(settings.epoch, EpochHistory(), settings.propagate_deletes)
        self._limit = (
            BandwidthLimit(settings.bandwidth, clock=monotonic, sleep=sleep)
            if settings.bandwidth
            else None
        )
        self._dirty: dict[str, tuple[float, float]] = {}
        """Keys with change notices: key -> (when changed, monotonic time noticed)."""
        self._wake = asyncio.Event()
        self._overflow = False
        """Notices were dropped (more than MAX_DIRTY waiting): until a listing starts, the
        notices do not vouch for the RPO."""
        self._rescan = False
        """A scan is due at once (notices were dropped)."""
        self._missing_since: dict[str, float] = {}
        self._changed = False
        self._saved = monotonic()
        self._spacing = settings.checkpoint_interval
        """Seconds from one checkpoint to the next while the flow works."""
        self._save_lock = asyncio.Lock()
        self._busy = asyncio.Lock()
        """Held by a pass, a settling of notices, or a merge or discard: one at a time."""
        self._window = (monotonic(), 0)
        self._stop: str | None = None
        self._errors = 0

    def __repr__(self) -> str:
        return (
            f"ObjectFlow({self.settings.app}/{self.settings.dataset}: "
            f"{self.source.site} -> {self.target.site}, epoch {self.settings.epoch})"
        )

    @property
    def policy(self) -> Policy:
        return self._policy

    # ------------------------------------------------------------------ driving

    def notify(self, key: str, when: float) -> None:
        """A change notice for ``key`` (relative to the prefix), made at ``when``.

        At most :data:`MAX_DIRTY` keys wait to be settled: past that, notices are dropped
        and a scan is started at once instead (it finds every change); until its listing,
        the notices no longer count towards the RPO, which grows from the last listing."""
        known = self._dirty.get(key)
        if known is None and len(self._dirty) >= MAX_DIRTY:
            if not self._overflow:
                log.warning(
                    "%r: more than %d changes noticed and not settled: scanning instead",
                    self,
                    MAX_DIRTY,
                )
            self._overflow = self._rescan = True
            self.figures.watched_at = None
            self._wake.set()
            return
        since = when if known is None else min(known[0], when)
        self._dirty[key] = (since, self._monotonic())
        if self.manifest is not None:  # pending until settled (scans count it otherwise)
            self.figures.pending.setdefault(key, (since, 0))
        self._wake.set()

    def watched(self, at: float) -> None:
        """Every change made at the source before ``at`` has been noticed."""
        if not self._overflow:  # some were dropped: only the next listing vouches
            self.figures.watched_at = at

    async def run(self) -> None:
        """Scan every ``scan_interval``; settle noticed keys in between; until cancelled."""
        due = self._monotonic()
        while True:
            try:
                now = self._monotonic()
                if now >= due or self._rescan:
                    self._rescan = False
                    ok = await self.scan()
                    pause = self.settings.scan_interval
                    due = self._monotonic() + (
                        pause if ok else min(pause, self.settings.retry_interval)
                    )
                elif self._dirty and self.manifest is not None and self._held() is None:
                    await self.settle_noticed()
                else:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=due - now)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug, not a cloud failure: never let it end the flow
                log.exception("%r: replication pass crashed", self)
                await self._sleep(self.settings.retry_interval)
                due = self._monotonic()

    # ------------------------------------------------------------------ scanning

    async def scan(self) -> bool:
        """One reconciling pass; whether it ended with nothing left to do or retry."""
        async with self._busy:
            return await self._scan()

    async def _scan(self) -> bool:
        reason = self._held()
        if reason is not None:
            self._hold(reason)
            return False
        started, started_mono = self._clock(), self._monotonic()
        self._overflow = False  # this listing finds whatever the dropped notices said
        try:
            await self._load()
            steps = await self._plan()
        except RegionImpaired as error:
            self._hold(str(error))
            return False
        except Exception as error:
            self.figures.blind = True
            self._failed("listing", error)
            return False
        self.figures.listed_at = started
        self.figures.blind = False
        # A key pending before keeps the age of its oldest change not copied yet: it was
        # rewritten since, or deleted, or is carried from a flow this one replaces.
        earlier = self.figures.pending
        pending: dict[str, tuple[float, int]] = {}
        for step in steps:
            before = earlier[step.key][0] if step.key in earlier else None
            if isinstance(step, Copy):
                since = step.since if before is None else min(step.since, before)
                pending[step.key] = (since, step.source.size)
            elif isinstance(step, Delete):
                first = started if before is None else min(started, before)
                since = self._missing_since.setdefault(step.key, first)
                pending[step.key] = (since, 0)
        self._missing_since = {k: v for k, v in self._missing_since.items() if k in pending}
        # Notices older than this listing are covered by it.
        self._dirty = {k: v for k, v in self._dirty.items() if v[1] >= started_mono}
        for key, (since, _) in self._dirty.items():
            pending.setdefault(key, (since, 0))
        self.figures.pending = pending
        self._conflicts([s for s in steps if isinstance(s, Conflict)])
        self._tail([s for s in steps if isinstance(s, Unreplicated)])
        self._errors = 0
        self._window = (self._monotonic(), 0)
        await self._work([s for s in steps if isinstance(s, Copy | Delete)])
        await self._checkpoint(force=True)
        self._measure()
        if self._stop is not None:
            return False
        if self._errors == 0:
            self.figures.last_error = ""
            self.figures.passed_at = self._clock()
            if not self.figures.pending or all(k in self._dirty for k in self.figures.pending):
                self.figures.synced_at = started
        return self._errors == 0

    async def _load(self) -> None:
        """Read both sites' manifests (once per flow)."""
        if self.manifest is not None:
            return
        key_at = manifest_key
        target = await self._read_manifest(
            self.target.store, key_at(self.target.prefix, self.settings.app, self.settings.dataset)
        )
        source = await self._read_manifest(
            self.source.store, key_at(self.source.prefix, self.settings.app, self.settings.dataset)
        )
        history = EpochHistory.merge(
            target.history if target else (), source.history if source else ()
        ).with_current(self.settings.epoch, self.source.site, self.settings.epoch_since)
        manifest = target or Manifest(site=self.target.site)
        if manifest.history != history:
            manifest.history = history
            self._changed = True
        self._policy = Policy(self.settings.epoch, history, self.settings.propagate_deletes)
        self._source_entries = source.entries if source else {}
        self.figures.totals = manifest.totals
        self.manifest = manifest
        self._count_tail()

    async def _read_manifest(self, store: ObjectStore, key: str) -> Manifest | None:
        try:
            return await load_manifest(store, key)
        except ManifestError as error:
            log.warning("%r: ignoring the manifest at %s (%s)", self, key, error)
            return None

    async def _plan(self) -> list[Step]:
        manifest = self.manifest
        assert manifest is not None
        steps: list[Step] = []
        present: set[str] = set()
        tail: set[str] = set()
        """Keys found unreplicated, or that may be once their metadata is read."""
        pairs = pair_listings(
            ordered(self.source.store.list(self.source.prefix), self.source.prefix),
            ordered(self.target.store.list(self.target.prefix), self.target.prefix),
        )
        async for key, s, d in pairs:
            if d is not None:
                present.add(key)
            step = plan_key(
                key,
                Side(s, self._source_entries.get(key)),
                Side(d, manifest.entries.get(key)),
                self._policy,
            )
            if isinstance(step, Record):
                self._remember(step.key, step.entry)
            elif step is not None:
                steps.append(step)
            if isinstance(step, Unreplicated) or (isinstance(step, Delete) and not step.resolved):
                tail.add(key)
            # A conflict stands until the key is found settled another way.
            settled = (
                step is None
                or isinstance(step, Record)
                or (isinstance(step, Copy | Delete) and step.resolved)
            )
            if settled and key in manifest.conflicts:
                del manifest.conflicts[key]
                self._changed = True
        for gone in [k for k in manifest.entries if k not in present]:
            del manifest.entries[gone]
            self._changed = True
        for gone in [k for k in manifest.conflicts if k not in present]:
            del manifest.conflicts[gone]
            self._changed = True
        for gone in [k for k in manifest.unreplicated if k not in tail]:
            del manifest.unreplicated[gone]
            self._changed = True
        return steps

    # ------------------------------------------------------------------ the unreplicated tail

    async def resolve(self, action: TailAction) -> TailOutcome:
        """Merge (copy to the source, the active site) or discard (delete here) every
        unreplicated object of an older epoch the last pass found at the destination.

        Each is read again first: one that changed since, or that the source has by now, is
        skipped (the next pass judges it afresh). A merged object is stamped like any copy
        (its epoch, and this site as its origin) and never overwrites an object at the
        source; the flow's epoch is checked before each write, as for copies. Runs between
        passes, never beside one.
        """
        outcome = TailOutcome()
        async with self._busy:
            if self.manifest is None:
                await self._load()
            assert self.manifest is not None
            for key in sorted(self.manifest.unreplicated):
                etag, size, epoch = self.manifest.unreplicated[key]
                try:
                    self._check()
                    found = await self.target.store.head(self.target.key(key))
                    there = await self.source.store.head(self.source.key(key))
                    if found is None or found.etag != etag or there is not None:
                        outcome.skipped += 1
                        self._untail(key)
                        continue
                    if action is TailAction.DISCARD:
                        await self.target.store.delete(self.target.key(key))
                        self._forget(key)
                    else:
                        await self._merge(key, epoch)
                    outcome.objects += 1
                    outcome.bytes += size
                except _Stop as stop:
                    outcome.stopped = str(stop)
                    break
                except RegionImpaired as error:
                    outcome.stopped = str(error)
                    break
                except Exception as error:
                    outcome.failed += 1
                    outcome.last_error = f"{key}: {self._explain(error)}"
                    log.warning("%r: %s of %s failed: %s", self, action, key, outcome.last_error)
            await self._checkpoint(force=True)
        log.info("%r: %s of the unreplicated objects: %s", self, action, outcome)
        return outcome

    async def _merge(self, key: str, epoch: int) -> None:
        """Copy the destination's object at ``key`` to the source, where there is none."""
        opened = await self.target.store.open(self.target.key(key))
        if opened is None:
            self._untail(key)
            return
        try:
            head = opened.info
            metadata = head.metadata
            expected = head.md5 or metadata.get(STAMP_MD5) or None
            stamps = {
                STAMP_EPOCH: metadata.get(STAMP_EPOCH) or str(epoch),
                STAMP_SOURCE_ETAG: head.etag,
                STAMP_SOURCE_SITE: self.target.site,
                STAMP_MTIME: metadata.get(STAMP_MTIME) or f"{head.last_modified:.3f}",
            }
            if expected:
                stamps[STAMP_MD5] = expected.lower()

            async def body() -> AsyncIterator[bytes]:
                async with _closing(opened.chunks) as stream:
                    async for chunk in stream:
                        if self._limit is not None:
                            await self._limit.acquire(len(chunk))
                        yield chunk
                self._check()  # before the store commits the object

            self._check()
            async with _closing(body()) as chunks:
                await self.source.store.put(
                    self.source.key(key),
                    chunks,
                    head.size,
                    {**_portable(metadata), **stamps},
                    md5_hex=expected.lower() if expected else None,
                    replacing=False,
                )
        finally:
            await opened.aclose()
        # The source now holds this very version: the destination's entry says so.
        self._learn(key, head)
        known = self._entry(key)
        if known is not None:
            self._remember(key, replace(known, held=self.settings.epoch))
        self._untail(key)

    # ------------------------------------------------------------------ notices

    async def settle_noticed(self) -> None:
        """Settle every key with a change notice (a GET and a HEAD each, then what it needs)."""
        async with self._busy:
            await self._settle_noticed()

    async def _settle_noticed(self) -> None:
        if self.manifest is None:
            return
        batch = self._dirty
        self._dirty = {}
        for key, (since, _) in batch.items():
            self.figures.pending.setdefault(key, (since, 0))
        self._errors = 0
        self._window = (self._monotonic(), 0)
        await self._work([(key, since) for key, (since, _) in batch.items()])
        await self._checkpoint()
        self._measure()

    # ------------------------------------------------------------------ carrying out

    async def _work(self, items: Sequence[Copy | Delete | tuple[str, float]]) -> None:
        """Carry out ``items`` with at most ``max_concurrency`` at once."""
        self._stop = None
        queue: Iterator[Copy | Delete | tuple[str, float]] = iter(items)

        async def worker() -> None:
            for item in queue:
                if self._stop is not None:
                    return
                key = item[0] if isinstance(item, tuple) else item.key
                try:
                    self._check()
                    if isinstance(item, tuple):
                        await self._settle(*item)
                    elif isinstance(item, Copy):
                        await self._copy(item)
                    else:
                        await self._delete(item)
                except _Stop as stop:
                    self._stop = str(stop)
                    return
                except RegionImpaired as error:
                    self._stop = str(error)
                    self._hold(str(error))
                    return
                except Exception as error:
                    self._failed(key, error)
                await self._checkpoint()

        workers = max(1, min(self.settings.max_concurrency, len(items)))
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())

    def _check(self) -> None:
        if not self._current():
            raise _Stop(f"epoch {self.settings.epoch} is no longer current")
        reason = self._held()
        if reason is not None:
            self._hold(reason)
            raise _Stop(reason)

    async def _settle(self, key: str, since: float) -> None:
        # The source is opened rather than HEADed: its GET's answer describes the object,
        # and its body is what a copy streams (one request fewer per copy).
        opened = await self.source.store.open(self.source.key(key))
        try:
            source = _relative(opened.info, key) if opened is not None else None
            target = await self.target.store.head(self.target.key(key))
            self._learn(key, target)
            step = plan_key(
                key,
                Side(source, self._source_entries.get(key), True),
                Side(_relative(target, key) if target else None, self._entry(key), True),
                self._policy,
            )
            if isinstance(step, Copy):
                self.figures.pending[key] = (min(since, step.since), step.source.size)
                assert opened is not None
                await self._transfer(key, opened, step.source_epoch, replacing=target is not None)
            elif isinstance(step, Delete):
                assert target is not None
                await self._remove(key)
            else:
                self._settled(key, step)
        finally:
            if opened is not None:
                await opened.aclose()

    async def _copy(self, step: Copy) -> None:
        key = step.key
        opened = await self.source.store.open(self.source.key(key))
        if opened is None:  # deleted since the listing: the next pass sees to it
            self.figures.pending.pop(key, None)
            return
        try:
            head = _relative(opened.info, key)
            source = Side(head, self._source_entries.get(key), headed=True)
            target = Side(step.target, self._entry(key))
            if step.target is not None and origin(target, self._policy.history)[1] is None:
                found = await self.target.store.head(self.target.key(key))
                target = Side(_relative(found, key) if found else None, self._entry(key), True)
                self._learn(key, found)
            final = plan_key(key, source, target, self._policy)
            if isinstance(final, Copy):
                replacing = final.target is not None
                await self._transfer(key, opened, final.source_epoch, replacing=replacing)
            else:
                self._settled(key, final)
        finally:
            await opened.aclose()

    def _settled(self, key: str, step: Step | None) -> None:
        """Record a step that moves nothing (in sync, or refused)."""
        self.figures.pending.pop(key, None)
        if isinstance(step, Record):
            self._remember(key, step.entry)
        elif isinstance(step, Conflict):
            self._conflicts([step])
        elif isinstance(step, Unreplicated):
            self._tail([step])

    async def _transfer(
        self, key: str, opened: OpenedObject, epoch: int | None, *, replacing: bool
    ) -> None:
        """Stream the opened source object to the destination, stamped and verified;
        ``replacing``: the destination's listing or HEAD showed an object at ``key``."""
        head = opened.info
        metadata = head.metadata
        expected = head.md5 or metadata.get(STAMP_MD5) or None
        stamps = {
            STAMP_EPOCH: str(epoch if epoch is not None else self.settings.epoch),
            STAMP_SOURCE_ETAG: head.etag,
            STAMP_SOURCE_SITE: self.source.site,
            STAMP_MTIME: metadata.get(STAMP_MTIME) or f"{head.last_modified:.3f}",
        }
        if expected:
            stamps[STAMP_MD5] = expected.lower()
        digest = hashlib.md5(usedforsecurity=False)

        async def body() -> AsyncIterator[bytes]:
            async with _closing(opened.chunks) as stream:
                async for chunk in stream:
                    if self._limit is not None:
                        await self._limit.acquire(len(chunk))
                    digest.update(chunk)
                    self._reporter.streamed(len(chunk))
                    yield chunk
            # The body is complete: the store commits (PUT, last part and completion, SLO
            # manifest) only after this returns, so a flow whose epoch ended while it
            # streamed fails here and the object never becomes visible.
            self._check()

        self._check()  # before the first byte leaves for the destination
        async with _closing(body()) as chunks:
            info = await self.target.store.put(
                self.target.key(key),
                chunks,
                head.size,
                {**_portable(metadata), **stamps},
                md5_hex=expected.lower() if expected else None,
                replacing=replacing,
            )
        entry = Entry(
            info.etag,
            info.size,
            int(stamps[STAMP_EPOCH]),
            head.etag,
            (expected or digest.hexdigest()).lower(),
            self.settings.epoch,
        )
        self._remember(key, entry)
        self._untail(key)
        totals = self.figures.totals
        totals.copied_objects += 1
        totals.copied_bytes += head.size
        start, copied = self._window
        self._window = (start, copied + head.size)
        self.figures.pending.pop(key, None)
        if self.manifest is not None and self.manifest.conflicts.pop(key, None) is not None:
            self._changed = True
        self._reporter.copied(head.size)

    async def _delete(self, step: Delete) -> None:
        key = step.key
        target = Side(step.target, self._entry(key))
        if not step.resolved:
            found = await self.target.store.head(self.target.key(key))
            if found is None:
                self._forget(key)
                return
            target = Side(_relative(found, key), self._entry(key), headed=True)
            self._learn(key, found)
        final = plan_key(key, Side(None, self._source_entries.get(key)), target, self._policy)
        if isinstance(final, Delete):
            await self._remove(key)
        else:
            self._settled(key, final)

    async def _remove(self, key: str) -> None:
        if await self.source.store.head(self.source.key(key)) is not None:
            self.figures.pending.pop(key, None)  # back at the source: the next pass copies
            return
        self._check()
        await self.target.store.delete(self.target.key(key))
        self._forget(key)
        self.figures.totals.deletes += 1
        self._reporter.deleted()

    # ------------------------------------------------------------------ bookkeeping

    def _entry(self, key: str) -> Entry | None:
        return self.manifest.entries.get(key) if self.manifest is not None else None

    def _remember(self, key: str, entry: Entry) -> None:
        if self.manifest is not None and self.manifest.entries.get(key) != entry:
            self.manifest.entries[key] = entry
            self._changed = True

    def _learn(self, key: str, found: ObjectInfo | None) -> None:
        """Remember what a destination object's metadata says of it, so that later passes
        need not read it again."""
        if found is None:
            return
        meta = found.metadata
        stamp = meta.get(STAMP_EPOCH)
        epoch = (
            int(stamp)
            if stamp and stamp.isdigit()
            else self._policy.history.epoch_at(found.last_modified)
        )
        md5 = found.md5 or meta.get(STAMP_MD5) or None
        known = self._entry(key)
        held = known.held if known is not None and known.matches(found) else None
        self._remember(
            key,
            Entry(
                found.etag,
                found.size,
                epoch,
                meta.get(STAMP_SOURCE_ETAG),
                md5.lower() if md5 else None,
                held,
            ),
        )

    def _forget(self, key: str) -> None:
        self.figures.pending.pop(key, None)
        self._missing_since.pop(key, None)
        if self.manifest is not None and self.manifest.entries.pop(key, None) is not None:
            self._changed = True
        self._untail(key)

    def _untail(self, key: str) -> None:
        if self.manifest is not None and self.manifest.unreplicated.pop(key, None) is not None:
            self._changed = True
            self._count_tail()

    def _tail(self, found: Sequence[Unreplicated]) -> None:
        """Record unreplicated objects; report the ones not known before."""
        if self.manifest is None or not found:
            return
        new = []
        for item in found:
            record = (item.target.etag, item.target.size, item.epoch)
            if self.manifest.unreplicated.get(item.key) != record:
                if self.manifest.unreplicated.get(item.key, ("",))[0] != item.target.etag:
                    new.append(item)
                self.manifest.unreplicated[item.key] = record
                self._changed = True
            self.figures.pending.pop(item.key, None)
        self._count_tail()
        if new:
            log.warning(
                "%r: %d object(s) of an older epoch never reached %s, kept: %s%s",
                self,
                len(new),
                self.source.site,
                ", ".join(u.key for u in new[:5]),
                " ..." if len(new) > 5 else "",
            )
            self._reporter.unreplicated(new)

    def _count_tail(self) -> None:
        tail = self.manifest.unreplicated if self.manifest is not None else {}
        self.figures.unreplicated_objects = len(tail)
        self.figures.unreplicated_bytes = sum(size for _, size, _ in tail.values())
        self.figures.unreplicated_keys = tuple(sorted(tail)[:UNREPLICATED_SHOWN])

    def unreplicated(self) -> list[UnreplicatedObject]:
        """The objects of an older epoch at the destination that never reached the source,
        in key order (as of the last pass)."""
        tail = self.manifest.unreplicated if self.manifest is not None else {}
        return [UnreplicatedObject(k, *tail[k]) for k in sorted(tail)]

    def _conflicts(self, found: Sequence[Conflict]) -> None:
        """Record conflicts; count and report the ones not known before."""
        if self.manifest is None or not found:
            return
        new = []
        for conflict in found:
            pair = (conflict.source_etag, conflict.target_etag)
            if self.manifest.conflicts.get(conflict.key) != pair:
                self.manifest.conflicts[conflict.key] = pair
                new.append(conflict)
            self.figures.pending.pop(conflict.key, None)
        if new:
            self._changed = True
            self.figures.totals.conflicts += len(new)
            for conflict in new:
                log.warning("%r: conflict on %s: %s", self, conflict.key, conflict.reason)
            self._reporter.conflicted(new)

    def _failed(self, key: str, error: BaseException) -> None:
        message = f"{key}: {self._explain(error)}"
        self._errors += 1
        self.figures.totals.errors += 1
        self.figures.last_error = message
        self._changed = True
        log.warning("%r: %s", self, message)
        self._reporter.failed(message)

    def _hold(self, reason: str) -> None:
        self.figures.blind = True
        self.figures.last_error = f"paused: {reason}"

    def _measure(self) -> None:
        """Throughput of the pass or batch just ended, if it copied anything."""
        start, copied = self._window
        elapsed = self._monotonic() - start
        if copied > 0 and elapsed > 0:
            self.figures.throughput = copied / elapsed

    def _unsaved(self) -> bool:
        return self._changed

    def _due(self, force: bool) -> bool:
        return force or self._monotonic() - self._saved >= self._spacing

    async def _checkpoint(self, *, force: bool = False) -> None:
        """Save the destination's manifest if it changed (at most every interval)."""
        if self.manifest is None or not self._changed or not self._due(force):
            return
        if self._held() is not None or not self._current():
            return
        async with self._save_lock:
            # Another worker's save may have ended while this one waited for the lock.
            if not self._unsaved() or not self._due(force):
                return
            self._changed = False
            key = manifest_key(self.target.prefix, self.settings.app, self.settings.dataset)
            began = self._monotonic()
            try:
                await save_manifest(self.target.store, key, self.manifest, self._clock())
            except Exception as error:
                self._changed = True
                log.warning("%r: checkpoint not saved: %s", self, self._explain(error))
            self._saved = self._monotonic()
            took = self._saved - began
            self._spacing = max(self.settings.checkpoint_interval, CHECKPOINT_SPACING * took)
