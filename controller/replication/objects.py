"""The object replication engine: one flow per dataset and destination.

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
import collections
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
from controller.providers.protocols import ObjectChangeFeed, ObjectInfo, ObjectStore, OpenedObject
from controller.replication.epochs import EpochHistory
from controller.replication.figures import FlowFigures, Pending
from controller.replication.limits import BandwidthLimit
from controller.replication.manifest import (
    PAGE_ROWS,
    Header,
    ManifestError,
    ManifestStore,
    PageRef,
    Row,
    UnreplicatedObject,
)
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
    relative,
)

log = logging.getLogger(__name__)

MAX_DIRTY = 10_000
"""Keys with change notices waiting to be settled, at most (about 200 bytes each); past
that a scan replaces the notices."""

UNREPLICATED_SHOWN = 10
"""Keys of unreplicated objects shown in the figures (the status); all are in the manifest."""

SEGMENT_KEYS = 1000
"""Keys a pass judges ahead of the first one whose copy or delete is not done: the rows a
pass holds at once, whatever the size of the bucket."""
MAX_OVERLAY = MAX_DIRTY
"""Rows changed between passes held before a save is forced."""
REPORT_BATCH = 1000
"""Conflicts or unreplicated objects reported at once, at most (one report per pass
below that)."""
RESOLVE_BATCH = 500
"""Unreplicated objects read from the manifest at once when merging or discarding them."""

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
    page_rows: int = PAGE_ROWS
    """Rows per page of the destination's manifest."""
    segment_keys: int = SEGMENT_KEYS


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


@dataclass
class _Pass:
    """A pass under way: the manifest it started from, and what it made of it so far."""

    old: Header
    carry: list[tuple[str, Row | None]]
    """Rows changed between passes and not saved when it began, in key order."""
    pages: list[PageRef] = field(default_factory=list)
    """The new manifest's pages written so far."""
    buffer: list[tuple[str, Row]] = field(default_factory=list)
    """Rows of keys done, not in a page yet (fewer than a page, between two releases)."""
    cursor: str | None = None
    """The last key listed."""
    low: str | None = None
    """The last key handed on to ``buffer``."""
    shown: list[str] = field(default_factory=list)
    """The first unreplicated keys found."""
    stale: list[str] = field(default_factory=list)
    """The keys pending when the pass began (tracked ones), in key order: those the pass
    does not find at either end are no longer pending once it is past them."""
    stale_at: int = 0
    judged: set[str] = field(default_factory=set)
    """The keys of ``stale`` the pass found (and judged again)."""


async def _nothing() -> AsyncIterator[tuple[str, Row]]:
    return
    yield


async def _overlaid(
    rows: AsyncIterator[tuple[str, Row]], changes: Sequence[tuple[str, Row | None]]
) -> AsyncIterator[tuple[str, Row]]:
    """``rows`` (in key order) with ``changes`` (in key order; None: no row) applied."""
    i = 0
    async for key, row in rows:
        while i < len(changes) and changes[i][0] < key:
            change = changes[i][1]
            if change is not None and not change.blank:
                yield changes[i][0], change
            i += 1
        if i < len(changes) and changes[i][0] == key:
            change = changes[i][1]
            i += 1
            if change is not None and not change.blank:
                yield key, change
            continue
        yield key, row
    for key, change in changes[i:]:
        if change is not None and not change.blank:
            yield key, change


def _ignore(key: str, row: Row) -> None:
    pass


class _Reader:
    """A manifest's rows in key order, taken as a merge with the listings reaches them."""

    def __init__(self, rows: AsyncIterator[tuple[str, Row]]) -> None:
        self._rows = rows
        self._next: tuple[str, Row] | None = None
        self._done = False

    async def _peek(self) -> tuple[str, Row] | None:
        if self._next is None and not self._done:
            self._next = await anext(self._rows, None)
            self._done = self._next is None
        return self._next

    async def take(self, key: str, passed: Callable[[str, Row], None]) -> Row | None:
        """The row of ``key``; rows of keys before it are handed to ``passed``."""
        while (item := await self._peek()) is not None and item[0] < key:
            self._next = None
            passed(*item)
        if item is not None and item[0] == key:
            self._next = None
            return item[1]
        return None

    async def rest(self, passed: Callable[[str, Row], None]) -> None:
        while (item := await self._peek()) is not None:
            self._next = None
            passed(*item)


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
        self._manifests = ManifestStore(
            target.store,
            target.prefix,
            settings.app,
            settings.dataset,
            page_rows=settings.page_rows,
        )
        self._source_manifests = ManifestStore(
            source.store, source.prefix, settings.app, settings.dataset
        )
        self._header: Header | None = None
        """The destination's manifest as saved (or to be saved, with ``_overlay``); None
        until read."""
        self._source_header: Header | None = None
        self._overlay: dict[str, Row | None] = {}
        """Rows changed between passes and not saved yet (None: the row is gone)."""
        self._rows: dict[str, Row] = {}
        """The rows of the keys being worked on: those a pass judged and has not handed on
        to its pages yet, a batch of notices or of unreplicated objects."""
        self._source_rows: dict[str, Entry] = {}
        """What the source's manifest says of those keys."""
        self._pass: _Pass | None = None
        self._keep: frozenset[str] = frozenset()
        """Pages a walk under way still reads: not deleted by the saves meanwhile."""
        self._new_conflicts: list[Conflict] = []
        self._collected = False
        """Whether orphaned pages of the destination's manifest were looked for."""
        self._new_tail: list[Unreplicated] = []
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
        if self._header is not None:  # pending until settled (scans count it otherwise)
            self.figures.pending.setdefault(key, since, 0)
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
                elif self._dirty and self._header is not None and self._held() is None:
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
        except RegionImpaired as error:
            self._hold(str(error))
            return False
        except Exception as error:
            self.figures.blind = True
            self._failed("listing", error)
            return False
        assert self._header is not None
        self.figures.pending.begin_pass()
        earlier = self.figures.pending.copy()
        self._errors = 0
        self._stop = None
        self._window = (self._monotonic(), 0)
        walk = _Pass(self._header, sorted(self._overlay.items(), key=lambda item: item[0]))
        walk.stale = sorted(earlier.keys)
        self._pass = walk
        self._keep = frozenset(p.name for p in walk.old.pages)
        listed = False
        try:
            listed = await self._walk(walk, earlier, started)
        except RegionImpaired as error:
            self._hold(str(error))
        except Exception as error:
            self.figures.blind = True
            self._failed("listing", error)
        if listed:
            self._finish(walk, started, started_mono)
        await self._end_pass(walk, complete=listed)
        self._measure()
        if not listed or self._stop is not None:
            return False
        if self._errors == 0:
            self.figures.last_error = ""
            self.figures.passed_at = self._clock()
            pending = self.figures.pending
            if not pending or (not pending.estimated and all(k in self._dirty for k in pending)):
                self.figures.synced_at = started
        return self._errors == 0

    async def _walk(self, walk: _Pass, earlier: Pending, started: float) -> bool:
        """List both ends in key order, merged with both manifests, and carry out what each
        key needs, with ``max_concurrency`` workers, never more than ``segment_keys`` keys
        ahead of the first one not done; the rows of the keys done go on to the new
        manifest's pages in key order. Whether the listings were read to the end (and
        nothing stopped the pass)."""
        assert self._header is not None
        source_rows = (
            self._source_manifests.rows(self._source_header)
            if self._source_header is not None
            else _nothing()
        )
        sources = _Reader(source_rows)
        targets = _Reader(_overlaid(self._manifests.rows(walk.old), walk.carry))
        pairs = pair_listings(
            ordered(self.source.store.list(self.source.prefix), self.source.prefix),
            ordered(self.target.store.list(self.target.prefix), self.target.prefix),
        )
        queue: asyncio.Queue[Copy | Delete | None] = asyncio.Queue()
        order: collections.deque[str] = collections.deque()
        """The keys judged and not handed on yet (those of ``_rows``), in key order."""
        busy: set[str] = set()
        """Keys whose copy or delete is queued or under way."""
        progress = asyncio.Event()
        window = max(1, self.settings.segment_keys)

        async def worker() -> None:
            while (step := await queue.get()) is not None:
                try:
                    if self._stop is None:
                        await self._carry_out(step)
                finally:
                    busy.discard(step.key)
                    progress.set()

        workers = max(1, self.settings.max_concurrency)
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
            try:
                async for key, s, d in pairs:
                    # Rows of keys at neither end any more leave the manifest.
                    row = await targets.take(key, self._uncount)
                    was = await sources.take(key, _ignore)
                    source_entry = was.entry if was is not None else None
                    if source_entry is not None:
                        self._source_rows[key] = source_entry
                    row = row.copy() if row is not None else Row()
                    self._rows[key] = row
                    order.append(key)
                    if key in earlier:
                        walk.judged.add(key)
                    walk.cursor = key
                    if d is None and not row.blank:  # not at the destination: nothing stays
                        self._uncount(key, row)
                        row = self._rows[key] = Row()
                    step = self._judge(key, s, d, source_entry, row, earlier, started)
                    if isinstance(step, Copy | Delete):
                        busy.add(key)
                        queue.put_nowait(step)
                    elif isinstance(step, Conflict):
                        self._conflicts([step])
                    elif isinstance(step, Unreplicated):
                        self._tail([step])
                    await self._release(walk, order, busy)
                    # At most ``window`` keys judged ahead of the first one not done.
                    while len(order) >= window and self._stop is None:
                        progress.clear()
                        await progress.wait()
                        await self._release(walk, order, busy)
                    if self._stop is not None:
                        break
            finally:
                for _ in range(workers):
                    queue.put_nowait(None)
        if self._stop is not None:
            return False
        await self._release(walk, order, busy)
        assert not order
        await targets.rest(self._uncount)
        return True

    async def _release(self, walk: _Pass, order: collections.deque[str], busy: set[str]) -> None:
        """Hand the rows of the keys judged and done, up to the first one not done, on to
        the manifest's next pages (in key order)."""
        if not order or order[0] in busy:
            return
        while order and order[0] not in busy:
            key = order.popleft()
            row = self._rows.pop(key)
            self._source_rows.pop(key, None)
            walk.low = key
            if not row.blank:
                walk.buffer.append((key, row))
                if row.tail is not None and len(walk.shown) < UNREPLICATED_SHOWN:
                    walk.shown.append(key)
        self._unpend(walk, walk.low)
        rows = self._manifests.page_rows
        if len(walk.buffer) >= rows:
            # Under the save lock: a save in between would not know of the page (and
            # delete it as one no index names).
            async with self._save_lock:
                while len(walk.buffer) >= rows:
                    ref = await self._manifests.write_page(walk.buffer[:rows])
                    walk.pages.append(ref)  # out of the buffer at once: saved once
                    del walk.buffer[:rows]
        if len(self._new_conflicts) + len(self._new_tail) >= REPORT_BATCH:
            self._flush_reports()

    def _unpend(self, walk: _Pass, upto: str | None) -> None:
        """Keys pending when the pass began that it is past (all of them: ``upto`` None)
        without finding them at either end: no longer pending."""
        stale = walk.stale
        while walk.stale_at < len(stale) and (upto is None or stale[walk.stale_at] <= upto):
            key = stale[walk.stale_at]
            walk.stale_at += 1
            if key not in walk.judged:
                self.figures.pending.pop(key)

    def _judge(
        self,
        key: str,
        s: ObjectInfo | None,
        d: ObjectInfo | None,
        source_entry: Entry | None,
        row: Row,
        earlier: Pending,
        started: float,
    ) -> Step | None:
        """Plan one listed key; record what needs no transfer in its row."""
        step = plan_key(key, Side(s, source_entry), Side(d, row.entry), self._policy)
        if isinstance(step, Record):
            self._remember(key, step.entry)
        # An unreplicated object stays recorded until the key is found settled another way
        # (an unresolved delete may still turn out unreplicated once its metadata is read).
        if not (isinstance(step, Unreplicated) or (isinstance(step, Delete) and not step.resolved)):
            self._set_tail(key, row, None)
        # A conflict stands until the key is found settled another way.
        settled = (
            step is None
            or isinstance(step, Record)
            or (isinstance(step, Copy | Delete) and step.resolved)
        )
        if settled and row.conflict is not None:
            row.conflict = None
            self._changed = True
        # A key pending before keeps the age of its oldest change not copied yet: it was
        # rewritten since, or deleted, or is carried from a flow this one replaces.
        before = earlier.since(key)
        pending = self.figures.pending
        pending.pop(key)
        if isinstance(step, Copy):
            since = step.since if before is None else min(step.since, before)
            pending.add(key, since, step.source.size)
        elif isinstance(step, Delete):
            pending.add(key, started if before is None else min(started, before), 0)
        return step

    def _finish(self, walk: _Pass, started: float, started_mono: float) -> None:
        """The listings were read to the end: the figures that only a whole pass knows."""
        self.figures.listed_at = started
        self.figures.blind = False
        pending = self.figures.pending
        self._unpend(walk, None)
        pending.end_listing()
        # Notices older than this listing are covered by it.
        self._dirty = {k: v for k, v in self._dirty.items() if v[1] >= started_mono}
        for key, (since, _) in self._dirty.items():
            pending.setdefault(key, since, 0)
        self.figures.unreplicated_keys = tuple(walk.shown)

    async def _end_pass(self, walk: _Pass, *, complete: bool) -> None:
        """Make the pass's manifest the flow's: saved now (when it may be), else kept to
        be saved later."""
        self._flush_reports()
        if complete:
            if walk.buffer:
                walk.pages.append(await self._manifests.write_page(walk.buffer))
                walk.buffer = []
            # Pages other than those the index saved last names (at the start, or by a
            # checkpoint of this pass) make a change to save.
            named = frozenset(p.name for p in walk.pages)
            if named != self._manifests.published or walk.old.legacy is not None:
                self._changed = True
            self._header = self._new_header(walk.pages)
            self._overlay = {}
        else:
            try:
                pages, changes = await self._pass_view(walk)
                self._header = self._new_header(pages)
                self._overlay = dict(changes)
            except Exception as error:  # the manifest it began from still holds
                log.warning("%r: the pass's records are lost: %s", self, self._explain(error))
                self._header = walk.old
                self._overlay = dict(walk.carry)
        self._pass = None
        self._rows = {}
        self._source_rows = {}
        self._keep = frozenset()
        await self._checkpoint(force=True)
        if complete and not self._collected:
            self._collected = True  # once per flow: orphans are left by crashes only
            try:
                await self._manifests.collect(self._clock())
            except RegionImpaired:
                raise
            except Exception as error:
                log.warning("%r: old manifest pages not collected: %s", self, self._explain(error))

    def _new_header(self, pages: Sequence[PageRef]) -> Header:
        assert self._header is not None
        return Header(
            self.target.site,
            self._header.history,
            self._header.totals,
            tuple(pages),
            None,
            self._header.saved_at,
        )

    async def _pass_view(self, walk: _Pass) -> tuple[list[PageRef], list[tuple[str, Row | None]]]:
        """The manifest as the pass has it so far: the pages it wrote, then rows not in a
        page yet (those whose copy is under way as they are now), then what the
        manifest it started from says above the last key it reached."""
        pages = list(walk.pages)
        changes: dict[str, Row | None] = {key: row.copy() for key, row in walk.buffer}
        changes.update((key, row.copy()) for key, row in self._rows.items())
        cursor = walk.cursor
        if walk.old.legacy is not None:
            for key, row in walk.old.legacy.items():
                if cursor is None or key > cursor:
                    changes[key] = row
        else:
            for ref in walk.old.pages:
                if cursor is None or ref.first > cursor:
                    pages.append(ref)
                elif ref.last > cursor:
                    for key, row in await self._manifests.page_rows_of(ref):
                        if key > cursor:
                            changes[key] = row
        for key, change in walk.carry:
            if cursor is None or key > cursor:
                changes[key] = change
        return pages, sorted(changes.items(), key=lambda item: item[0])

    async def _load(self) -> None:
        """Read both sites' manifests' indexes (once per flow)."""
        if self._header is not None:
            return
        target = await self._read_manifest(self._manifests)
        source = await self._read_manifest(self._source_manifests)
        history = EpochHistory.merge(
            target.history if target else (), source.history if source else ()
        ).with_current(self.settings.epoch, self.source.site, self.settings.epoch_since)
        header = target or Header(site=self.target.site)
        if header.history != history:
            header.history = history
            self._changed = True
        if header.legacy is not None:
            self._changed = True  # written again as pages at the next save
        self._policy = Policy(self.settings.epoch, history, self.settings.propagate_deletes)
        self._source_header = source
        self.figures.totals = header.totals
        self._header = header
        count, size = header.tail()
        self.figures.unreplicated_objects = count
        self.figures.unreplicated_bytes = size
        self.figures.unreplicated_keys = tuple(
            [u.key for u in await self.unreplicated(UNREPLICATED_SHOWN)]
        )

    async def _read_manifest(self, manifests: ManifestStore) -> Header | None:
        try:
            return await manifests.load()
        except ManifestError as error:
            log.warning("%r: ignoring the manifest at %s (%s)", self, manifests.key, error)
            return None

    async def _view(self, *, tails_only: bool = False) -> AsyncIterator[tuple[str, Row]]:
        """The manifest's rows in key order, with the changes not saved yet (between
        passes); ``tails_only``: only pages with unreplicated objects are read."""
        header = self._header
        if header is None:
            return
        overlay = sorted(self._overlay.items(), key=lambda item: item[0])
        if tails_only and header.legacy is None:
            header = replace(header, pages=tuple(p for p in header.pages if p.tail))
        async for item in _overlaid(self._manifests.rows(header, cached=True), overlay):
            yield item

    async def _open_rows(self, keys: Sequence[str]) -> None:
        """Read the rows of ``keys`` (both manifests) to work on them between passes."""
        assert self._header is not None
        for key in sorted(keys):
            if key in self._rows:
                continue
            if key in self._overlay:
                row = self._overlay[key]
            else:
                row = await self._manifests.lookup(self._header, key)
            self._rows[key] = row.copy() if row is not None else Row()
            if self._source_header is not None:
                was = await self._source_manifests.lookup(self._source_header, key)
                if was is not None and was.entry is not None:
                    self._source_rows[key] = was.entry

    def _close_rows(self) -> None:
        """Keep the rows worked on between passes as changes to save."""
        for key, row in self._rows.items():
            self._overlay[key] = None if row.blank else row
        self._rows = {}
        self._source_rows = {}

    # ------------------------------------------------------------------ the unreplicated tail

    async def unreplicated(self, limit: int | None = None) -> list[UnreplicatedObject]:
        """The objects of an older epoch at the destination that never reached the source,
        in key order (as of the last pass), the first ``limit`` of them (all: read page by
        page from the manifest)."""
        found: list[UnreplicatedObject] = []
        async for key, row in self._view(tails_only=True):
            if row.tail is not None:
                found.append(UnreplicatedObject(key, *row.tail))
                if limit is not None and len(found) >= limit:
                    break
        return found

    async def resolve(self, action: TailAction) -> TailOutcome:
        """Merge (copy to the source, the active site) or discard (delete here) every
        unreplicated object of an older epoch the last pass found at the destination.

        Each is read again first: one that changed since, or that the source has by now, is
        skipped (the next pass judges it afresh). A merged object is stamped like any copy
        (its epoch, and this site as its origin) and never overwrites an object at the
        source; the flow's epoch is checked before each write, as for copies. Runs between
        passes, never beside one; reads the manifest's unreplicated objects a batch at a
        time.
        """
        outcome = TailOutcome()
        async with self._busy:
            if self._header is None:
                await self._load()
            assert self._header is not None
            self._keep = frozenset(p.name for p in self._header.pages)
            batch: list[tuple[str, tuple[str, int, int]]] = []
            try:
                async for key, row in self._view(tails_only=True):
                    if row.tail is not None:
                        batch.append((key, row.tail))
                    if len(batch) >= RESOLVE_BATCH:
                        if not await self._resolve_batch(action, batch, outcome):
                            break
                        batch = []
                else:
                    await self._resolve_batch(action, batch, outcome)
            finally:
                self._close_rows()
                self._keep = frozenset()
            await self._checkpoint(force=True)
        log.info("%r: %s of the unreplicated objects: %s", self, action, outcome)
        return outcome

    async def _resolve_batch(
        self,
        action: TailAction,
        batch: Sequence[tuple[str, tuple[str, int, int]]],
        outcome: TailOutcome,
    ) -> bool:
        """Merge or discard one batch; whether to go on."""
        await self._open_rows([key for key, _ in batch])
        going = True
        for key, (etag, size, epoch) in batch:
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
                going = False
                break
            except RegionImpaired as error:
                outcome.stopped = str(error)
                going = False
                break
            except Exception as error:
                outcome.failed += 1
                outcome.last_error = f"{key}: {self._explain(error)}"
                log.warning("%r: %s of %s failed: %s", self, action, key, outcome.last_error)
        self._close_rows()
        if len(self._overlay) >= MAX_OVERLAY:
            await self._checkpoint(force=True)
        return going

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
        if self._header is None:
            return
        batch = self._dirty
        self._dirty = {}
        for key, (since, _) in batch.items():
            self.figures.pending.setdefault(key, since, 0)
        try:
            await self._open_rows(list(batch))
        except Exception as error:  # the manifests cannot be read now: the notices wait
            self._rows, self._source_rows = {}, {}
            for key, value in batch.items():
                self._dirty.setdefault(key, value)
            if isinstance(error, RegionImpaired):
                self._hold(str(error))
            else:
                self._failed("manifest", error)
            return
        self._errors = 0
        self._window = (self._monotonic(), 0)
        try:
            await self._work([(key, since) for key, (since, _) in batch.items()])
        finally:
            self._close_rows()
        self._flush_reports()
        await self._checkpoint(force=len(self._overlay) >= MAX_OVERLAY)
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
                await self._carry_out(item)

        workers = max(1, min(self.settings.max_concurrency, len(items)))
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())

    async def _carry_out(self, item: Copy | Delete | tuple[str, float]) -> None:
        """One copy, delete or noticed key; a failure is counted, one that ends the work
        (the epoch moved on, a region became Impaired) sets ``_stop``."""
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
                Side(source, self._source_rows.get(key), True),
                Side(_relative(target, key) if target else None, self._entry(key), True),
                self._policy,
            )
            if isinstance(step, Copy):
                self.figures.pending.add(key, min(since, step.since), step.source.size)
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
            self.figures.pending.pop(key)
            return
        try:
            head = _relative(opened.info, key)
            source = Side(head, self._source_rows.get(key), headed=True)
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
        self.figures.pending.pop(key)
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
        self.figures.pending.pop(key)
        row = self._rows.get(key)
        if row is not None and row.conflict is not None:
            row.conflict = None
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
        final = plan_key(key, Side(None, self._source_rows.get(key)), target, self._policy)
        if isinstance(final, Delete):
            await self._remove(key)
        else:
            self._settled(key, final)

    async def _remove(self, key: str) -> None:
        if await self.source.store.head(self.source.key(key)) is not None:
            self.figures.pending.pop(key)  # back at the source: the next pass copies
            return
        self._check()
        await self.target.store.delete(self.target.key(key))
        self._forget(key)
        self.figures.totals.deletes += 1
        self._reporter.deleted()

    # ------------------------------------------------------------------ bookkeeping

    def _entry(self, key: str) -> Entry | None:
        row = self._rows.get(key)
        return row.entry if row is not None else None

    def _remember(self, key: str, entry: Entry) -> None:
        row = self._rows[key]
        if row.entry != entry:
            row.entry = entry
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
        """The destination's object at ``key`` is gone."""
        self.figures.pending.pop(key)
        row = self._rows.get(key)
        if row is not None and row.entry is not None:
            row.entry = None
            self._changed = True
        self._untail(key)

    def _untail(self, key: str) -> None:
        row = self._rows.get(key)
        if row is not None:
            self._set_tail(key, row, None)

    def _set_tail(self, key: str, row: Row, tail: tuple[str, int, int] | None) -> None:
        """Record ``key`` as unreplicated (``tail``) or not (None), keeping the figures."""
        if row.tail == tail:
            return
        figures = self.figures
        if row.tail is not None:
            self._uncount(key, row)
        if tail is not None:
            figures.unreplicated_objects += 1
            figures.unreplicated_bytes += tail[1]
            shown = figures.unreplicated_keys
            if self._pass is None and key not in shown:
                figures.unreplicated_keys = tuple(sorted((*shown, key))[:UNREPLICATED_SHOWN])
        row.tail = tail
        self._changed = True

    def _uncount(self, key: str, row: Row) -> None:
        """``row`` leaves the manifest (or its tail does): out of the figures."""
        self._changed = True
        if row.tail is None:
            return
        figures = self.figures
        figures.unreplicated_objects = max(0, figures.unreplicated_objects - 1)
        figures.unreplicated_bytes = max(0, figures.unreplicated_bytes - row.tail[1])
        if key in figures.unreplicated_keys:
            figures.unreplicated_keys = tuple(k for k in figures.unreplicated_keys if k != key)

    def _tail(self, found: Sequence[Unreplicated]) -> None:
        """Record unreplicated objects; report the ones not known before."""
        for item in found:
            row = self._rows.get(item.key)
            if row is None:
                continue
            record = (item.target.etag, item.target.size, item.epoch)
            if row.tail != record:
                if (row.tail or ("",))[0] != item.target.etag:
                    self._new_tail.append(item)
                self._set_tail(item.key, row, record)
            self.figures.pending.pop(item.key)
        if len(self._new_tail) >= REPORT_BATCH or (self._pass is None and self._new_tail):
            self._flush_reports()

    def _conflicts(self, found: Sequence[Conflict]) -> None:
        """Record conflicts; count and report the ones not known before."""
        new = 0
        for conflict in found:
            row = self._rows.get(conflict.key)
            if row is None:
                continue
            pair = (conflict.source_etag, conflict.target_etag)
            if row.conflict != pair:
                row.conflict = pair
                self._new_conflicts.append(conflict)
                log.warning("%r: conflict on %s: %s", self, conflict.key, conflict.reason)
                new += 1
            self.figures.pending.pop(conflict.key)
        if new:
            self._changed = True
            self.figures.totals.conflicts += new
        if len(self._new_conflicts) >= REPORT_BATCH or (self._pass is None and self._new_conflicts):
            self._flush_reports()

    def _flush_reports(self) -> None:
        """Report the conflicts and unreplicated objects found since the last report (one
        report per pass, or per :data:`REPORT_BATCH` of them)."""
        conflicts, self._new_conflicts = self._new_conflicts, []
        if conflicts:
            self._reporter.conflicted(conflicts)
        new, self._new_tail = self._new_tail, []
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
        if self._header is None or not self._changed or not self._due(force):
            return
        if self._held() is not None or not self._current():
            return
        async with self._save_lock:
            # Another worker's save may have ended while this one waited for the lock.
            if not self._unsaved() or not self._due(force):
                return
            self._changed = False
            began = self._monotonic()
            try:
                await self._save()
            except Exception as error:
                self._changed = True
                log.warning("%r: checkpoint not saved: %s", self, self._explain(error))
            self._saved = self._monotonic()
            took = self._saved - began
            self._spacing = max(self.settings.checkpoint_interval, CHECKPOINT_SPACING * took)

    async def _save(self) -> None:
        """Write the manifest as the flow has it now: the pages that changed, then the
        index (see :mod:`controller.replication.manifest`)."""
        header = self._header
        assert header is not None
        working = {key: row.copy() for key, row in self._rows.items()}
        if self._pass is not None:
            pages, changes = await self._pass_view(self._pass)
        else:
            merged: dict[str, Row | None] = {}
            if header.legacy is not None:
                merged.update(header.legacy)
            merged.update(self._overlay)
            merged.update(working)
            changes = sorted(merged.items(), key=lambda item: item[0])
            pages = [] if header.legacy is not None else list(header.pages)
        written = await self._manifests.patch(pages, changes)
        saved = self._new_header(written)
        await self._manifests.publish(saved, self._clock(), keep=self._keep)
        if self._pass is None:
            self._header = saved
            self._overlay = {}


NOTICE_BATCH = 10
"""Notices asked for per receive (SQS's most); an answer with fewer drained the queue."""
NOTICE_DELAY_FLOOR = 5.0
"""Seconds a change notice is taken to need, at least, to reach the queue. S3 delivers
most within seconds, some a minute or more later: longer delays are learnt (see
:class:`ChangeListener`)."""
NOTICE_LATENESS_MEMORY = 900.0
"""Seconds a proven late notice keeps widening the allowance."""


class ChangeListener:
    """Reads a source's change notices and marks the keys dirty in every flow of the
    dataset. Polls often while notices come, less while none do.

    It also tells the flows until when they know of every change (``watched``), which
    bounds their RPO: the start of the last receive that drained the queue (read fewer
    than a full batch), less an allowance for notices still on their way. A poll reads at
    most ``max_batches`` batches; while a backlog remains it claims nothing new, so a
    listener that falls behind sees its RPO grow instead of reading too low. The
    allowance is ``delay_floor`` seconds, or more once a notice proves longer: a change
    made before the previous drain but not read by it was that much late (in delivery,
    or missed by a short poll that asked only some of the queue's servers), and the
    allowance stays at least that for ``lateness_memory`` seconds. The notices' times are
    the store's, so its clock's skew counts too.
    """

    def __init__(
        self,
        feed: ObjectChangeFeed,
        bucket: str,
        prefix: str,
        flows: Sequence[ObjectFlow],
        *,
        held: Callable[[], str | None] = lambda: None,
        explain: Callable[[BaseException], str] = _describe,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        poll_min: float = 0.5,
        poll_max: float = 4.0,
        max_batches: int = 50,
        delay_floor: float = NOTICE_DELAY_FLOOR,
        lateness_memory: float = NOTICE_LATENESS_MEMORY,
    ) -> None:
        self.feed = feed
        self.bucket = bucket
        self.prefix = prefix
        self.flows = flows
        self._held = held
        self._explain = explain
        self._clock = clock
        self._sleep = sleep
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.max_batches = max(1, max_batches)
        self.delay_floor = delay_floor
        self.lateness_memory = lateness_memory
        self.last_error = ""
        self._drained_at: float | None = None
        """When the last receive that drained the queue was sent."""
        self._late: collections.deque[tuple[float, float]] = collections.deque()
        """Proven late notices: (when read, seconds late)."""

    def allowance(self, now: float) -> float:
        """Seconds a change may take to show in the queue, as far as is known at ``now``."""
        while self._late and self._late[0][0] < now - self.lateness_memory:
            self._late.popleft()
        return self._late[0][1] if self._late else self.delay_floor  # largest first

    def _learn(self, made: float, read: float) -> None:
        if self._drained_at is None or made >= self._drained_at:
            return  # made after the last drain: it says nothing of the delay
        late = self._drained_at - made
        if late > self.delay_floor:
            while self._late and self._late[-1][1] <= late:
                self._late.pop()  # smaller delays read earlier expire earlier: no use
            self._late.append((read, late))

    async def poll(self) -> int:
        """Read what is waiting, hand it to the flows, acknowledge it; the messages read."""
        read = 0
        for _ in range(self.max_batches):
            started = self._clock()
            messages = await self.feed.receive(NOTICE_BATCH)
            for message in messages:
                for change in message.changes:
                    if change.time is not None:
                        self._learn(change.time, started)
                    if change.bucket != self.bucket:
                        continue
                    key = relative(change.key, self.prefix)
                    if key is None:
                        continue
                    for flow in self.flows:
                        flow.notify(key, change.time or self._clock())
            if messages:
                await self.feed.ack([m.receipt for m in messages])
            read += len(messages)
            if len(messages) < NOTICE_BATCH:
                self._drained_at = started
                known = started - self.allowance(started)
                for flow in self.flows:
                    flow.watched(known)
                return read
        return read  # a backlog is still waiting: nothing more is known of it

    async def run(self) -> None:
        delay = self.poll_min
        while True:
            if self._held() is not None:
                await self._sleep(self.poll_max)
                continue
            try:
                got = await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.last_error = self._explain(error)
                log.warning("%s: change notices not read: %s", self.feed, self.last_error)
                await self._sleep(self.poll_max)
                continue
            self.last_error = ""
            delay = self.poll_min if got else min(self.poll_max, delay * 2)
            await self._sleep(delay)


async def run_dataset(flows: Sequence[ObjectFlow], listener: ChangeListener | None) -> None:
    """Run a dataset's flows (and its change listener) until cancelled."""
    async with asyncio.TaskGroup() as group:
        for flow in flows:
            group.create_task(flow.run(), name=repr(flow))
        if listener is not None:
            group.create_task(listener.run(), name=f"notices of {listener.bucket}")
