"""Replication checkpoints: one manifest per app, dataset and site, kept in that site's
bucket or container under ``<prefix>.lifeboat/replication/<namespace>/<app>/``.

Why there: the manifest describes the objects of that very bucket (their ETags, the epoch
that wrote them, the source version each copy was made from), so it lives and dies with
them, survives any operator restart, is read where it is needed (the destination's while
copying into it; the source's, read-only, once that site has become the source after a
failover), and its size grows with the bucket instead of with a Kubernetes object (a
ConfigMap stops at 1 MiB; the app's status must stay small). ``.lifeboat/`` is excluded
from replication.

**Pages.** A manifest is stored in pages so that it is never held whole in memory: each
page is an object holding the rows of one range of keys (at most :data:`PAGE_ROWS`; a
row is what is known of one object: its :class:`~controller.replication.plan.Entry`, a
conflict standing on it, or its being unreplicated), and a small index object at
``<dataset>.json`` lists the pages in key order (each page's first and last key, and its
counts) with the epoch history and the totals. A page is named by the MD5 of its content
(``<dataset>.pages/<md5>.json``) and never changes: a save writes the pages that changed,
then the index (atomically, like any object: a torn index is never visible), then deletes
the pages the index no longer names. A crash between page writes leaves the previous index
and all of its pages intact; the pages written before the crash are orphans, deleted by a
later pass once they are an hour old (:meth:`ManifestStore.collect`). Readers stream pages
in key order (a pass merges them with the two listings) or look one key up (one page read,
a few pages cached).

**Version 1**, the manifest of earlier releases, is one object at the same key holding
every row. It is still read (whole, once), and replaced by an index and pages at the next
save: an upgrade loses nothing.

Only the flow copying *into* a site writes that site's manifest, at most every few seconds
while it works and at the end of every pass. A manifest (or a page) lost or unreadable
costs HEADs, not correctness: every copy also carries its stamps (see
:mod:`controller.replication.plan`), from which the next pass learns again what is already
in place.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controller.providers.protocols import ObjectStore
from controller.replication.epochs import EpochHistory
from controller.replication.plan import RESERVED, Entry

log = logging.getLogger(__name__)

FORMAT = "lifeboat.dev/replication-manifest"
VERSION_WHOLE = 1
"""One object holding every row (earlier releases): read, never written."""
VERSION = 2
"""An index object and pages."""
VERSION_PAGE = "page"

PAGE_ROWS = 1000
"""Rows per page, at most (a page is about 150 bytes per row stored, 1 KiB per row read)."""
PAGE_CACHE = 4
"""Pages kept decoded per manifest for looking keys up."""
ORPHAN_AGE = 3600.0
"""Seconds after which a page no index names is deleted (a save interrupted by a crash)."""


def manifest_key(prefix: str, app: str, dataset: str) -> str:
    """Where a dataset's manifest (its index) lives in a location (``app`` is
    ``namespace/name``)."""
    return f"{prefix}{RESERVED}replication/{app}/{dataset}.json"


def pages_prefix(prefix: str, app: str, dataset: str) -> str:
    """Where the pages of a dataset's manifest live in a location."""
    return f"{prefix}{RESERVED}replication/{app}/{dataset}.pages/"


class ManifestError(ValueError):
    """The stored manifest cannot be read (not ours, or damaged)."""


@dataclass(frozen=True)
class UnreplicatedObject:
    """An object of an older epoch at a destination that never reached the source."""

    key: str
    etag: str
    size: int
    epoch: int


@dataclass
class Totals:
    """What was done to the site over its lifetime as a destination."""

    copied_objects: int = 0
    copied_bytes: int = 0
    deletes: int = 0
    errors: int = 0
    conflicts: int = 0


@dataclass
class Row:
    """What the manifest says of one key of the site."""

    entry: Entry | None = None
    conflict: tuple[str, str] | None = None
    """A copy refused by the epoch rule: (source ETag, destination ETag) when refused."""
    tail: tuple[str, int, int] | None = None
    """An object of an older epoch that never reached the source (see
    :class:`~controller.replication.plan.Unreplicated`): (ETag, size, epoch)."""

    @property
    def blank(self) -> bool:
        return self.entry is None and self.conflict is None and self.tail is None

    def copy(self) -> Row:
        return replace(self)


Rows = Sequence[tuple[str, Row]]


def encode_rows(rows: Iterable[tuple[str, Row]]) -> dict[str, Any]:
    """The rows as a document's ``objects``, ``conflicts`` and ``unreplicated`` (sorted)."""
    objects: dict[str, list[Any]] = {}
    conflicts: dict[str, list[Any]] = {}
    unreplicated: dict[str, list[Any]] = {}
    for key, row in sorted(rows, key=lambda item: item[0]):
        e = row.entry
        if e is not None:
            objects[key] = [e.etag, e.size, e.epoch, e.source_etag, e.md5, e.held]
        if row.conflict is not None:
            conflicts[key] = list(row.conflict)
        if row.tail is not None:
            unreplicated[key] = list(row.tail)
    return {"conflicts": conflicts, "unreplicated": unreplicated, "objects": objects}


def decode_rows(document: Mapping[str, Any]) -> list[tuple[str, Row]]:
    """The rows of a document (a page, or a version-1 manifest), in key order."""
    rows: dict[str, Row] = {}
    try:
        for key, v in dict(document.get("objects") or {}).items():
            rows.setdefault(str(key), Row()).entry = Entry(
                str(v[0]),
                int(v[1]),
                None if v[2] is None else int(v[2]),
                None if v[3] is None else str(v[3]),
                None if v[4] is None else str(v[4]),
                None if len(v) < 6 or v[5] is None else int(v[5]),
            )
        for key, v in dict(document.get("conflicts") or {}).items():
            rows.setdefault(str(key), Row()).conflict = (str(v[0]), str(v[1]))
        for key, v in dict(document.get("unreplicated") or {}).items():
            rows.setdefault(str(key), Row()).tail = (str(v[0]), int(v[1]), int(v[2]))
    except (TypeError, ValueError, IndexError) as error:
        raise ManifestError(f"malformed manifest: {error}") from None
    return sorted(rows.items(), key=lambda item: item[0])


def _document(data: bytes) -> Mapping[str, Any]:
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ManifestError(f"not JSON: {error}") from None
    if not isinstance(document, Mapping) or document.get("format") != FORMAT:
        raise ManifestError("not a Lifeboat replication manifest")
    return document


def _totals(raw: object) -> Totals:
    raw_totals = dict(raw) if isinstance(raw, Mapping) else {}
    try:
        return Totals(**{k: int(raw_totals[k]) for k in vars(Totals()) if k in raw_totals})
    except (TypeError, ValueError) as error:
        raise ManifestError(f"malformed totals: {error}") from None


@dataclass
class Manifest:
    """A version-1 manifest: every row in one object. Read when found (the manifest of
    an earlier release) and replaced by pages at the next save; kept here to read it,
    and to write one in tests of that upgrade."""

    site: str
    entries: dict[str, Entry] = field(default_factory=dict)
    history: EpochHistory = field(default_factory=EpochHistory)
    conflicts: dict[str, tuple[str, str]] = field(default_factory=dict)
    unreplicated: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    totals: Totals = field(default_factory=Totals)
    saved_at: float | None = None

    def rows(self) -> list[tuple[str, Row]]:
        rows: dict[str, Row] = {}
        for key, entry in self.entries.items():
            rows.setdefault(key, Row()).entry = entry
        for key, pair in self.conflicts.items():
            rows.setdefault(key, Row()).conflict = pair
        for key, tail in self.unreplicated.items():
            rows.setdefault(key, Row()).tail = tail
        return sorted(rows.items(), key=lambda item: item[0])

    def encode(self, now: float) -> bytes:
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION_WHOLE,
            "site": self.site,
            "savedAt": now,
            "epochs": self.history.to_wire(),
            "totals": vars(self.totals),
            **encode_rows(self.rows()),
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> Manifest:
        document = _document(data)
        if document.get("version") != VERSION_WHOLE:
            raise ManifestError(f"manifest version {document.get('version')} not understood")
        manifest = Manifest(site=str(document.get("site", "")))
        for key, row in decode_rows(document):
            if row.entry is not None:
                manifest.entries[key] = row.entry
            if row.conflict is not None:
                manifest.conflicts[key] = row.conflict
            if row.tail is not None:
                manifest.unreplicated[key] = row.tail
        manifest.history = EpochHistory.from_wire(document.get("epochs"))
        manifest.totals = _totals(document.get("totals"))
        saved = document.get("savedAt")
        manifest.saved_at = float(saved) if isinstance(saved, int | float) else None
        return manifest


@dataclass(frozen=True)
class PageRef:
    """One page as the index names it: its object, its key range and its counts."""

    name: str
    first: str
    last: str
    rows: int
    conflicts: int = 0
    tail: int = 0
    """Unreplicated objects in the page."""
    tail_bytes: int = 0

    def wire(self) -> list[object]:
        return [
            self.name,
            self.first,
            self.last,
            self.rows,
            self.conflicts,
            self.tail,
            self.tail_bytes,
        ]

    @staticmethod
    def from_wire(raw: object) -> PageRef:
        if not isinstance(raw, list) or len(raw) != 7:
            raise ManifestError(f"malformed page reference: {raw!r}")
        name, first, last, *counts = raw
        if not all(isinstance(v, str) for v in (name, first, last)) or not all(
            isinstance(v, int) for v in counts
        ):
            raise ManifestError(f"malformed page reference: {raw!r}")
        return PageRef(str(name), str(first), str(last), *(int(v) for v in counts))


def page_ref(name: str, rows: Rows) -> PageRef:
    tails = [row.tail for _, row in rows if row.tail is not None]
    return PageRef(
        name,
        rows[0][0],
        rows[-1][0],
        len(rows),
        sum(1 for _, row in rows if row.conflict is not None),
        len(tails),
        sum(size for _, size, _ in tails),
    )


def encode_page(rows: Rows) -> bytes:
    document = {"format": FORMAT, "version": VERSION_PAGE, **encode_rows(rows)}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def decode_page(data: bytes) -> list[tuple[str, Row]]:
    document = _document(data)
    if document.get("version") != VERSION_PAGE:
        raise ManifestError("not a manifest page")
    return decode_rows(document)


@dataclass
class Header:
    """A manifest as its index says: everything but the rows, which are in ``pages``
    (or, for a version-1 manifest, in ``legacy``, read whole)."""

    site: str
    history: EpochHistory = field(default_factory=EpochHistory)
    totals: Totals = field(default_factory=Totals)
    pages: tuple[PageRef, ...] = ()
    legacy: dict[str, Row] | None = None
    """A version-1 manifest's rows, in key order."""
    saved_at: float | None = None

    @property
    def objects(self) -> int:
        """Rows in the manifest."""
        if self.legacy is not None:
            return len(self.legacy)
        return sum(p.rows for p in self.pages)

    def tail(self) -> tuple[int, int]:
        """Unreplicated objects and their bytes."""
        if self.legacy is not None:
            tails = [row.tail for row in self.legacy.values() if row.tail is not None]
            return len(tails), sum(size for _, size, _ in tails)
        return sum(p.tail for p in self.pages), sum(p.tail_bytes for p in self.pages)

    def encode(self, now: float) -> bytes:
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "site": self.site,
            "savedAt": now,
            "epochs": self.history.to_wire(),
            "totals": vars(self.totals),
            "pages": [p.wire() for p in self.pages],
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> Header:
        document = _document(data)
        version = document.get("version")
        if version == VERSION_WHOLE:
            whole = Manifest.decode(data)
            return Header(
                whole.site, whole.history, whole.totals, (), dict(whole.rows()), whole.saved_at
            )
        if version != VERSION:
            raise ManifestError(f"manifest version {version} not understood")
        raw_pages = document.get("pages") or []
        if not isinstance(raw_pages, list):
            raise ManifestError("malformed page list")
        pages = tuple(PageRef.from_wire(raw) for raw in raw_pages)
        for before, after in itertools.pairwise(pages):
            if not before.last < after.first:
                raise ManifestError("pages out of order")
        saved = document.get("savedAt")
        return Header(
            site=str(document.get("site", "")),
            history=EpochHistory.from_wire(document.get("epochs")),
            totals=_totals(document.get("totals")),
            pages=pages,
            saved_at=float(saved) if isinstance(saved, int | float) else None,
        )


def chunked(rows: Rows, size: int) -> list[Rows]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


class ManifestStore:
    """One site's manifest of one dataset in its store: the index, and its pages.

    Holds no rows beyond the pages it caches (:data:`PAGE_CACHE`) and the names of the
    pages the last index it read or wrote lists.
    """

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        app: str,
        dataset: str,
        *,
        page_rows: int = PAGE_ROWS,
        cache: int = PAGE_CACHE,
    ) -> None:
        self.store = store
        self.key = manifest_key(prefix, app, dataset)
        self.folder = pages_prefix(prefix, app, dataset)
        self.page_rows = max(1, page_rows)
        self._cache: collections.OrderedDict[str, list[tuple[str, Row]]] = collections.OrderedDict()
        self._cache_size = max(1, cache)
        self.published: frozenset[str] = frozenset()
        """Pages the index last read or written names."""
        self.written: set[str] = set()
        """Pages written since the index was last written, not (yet) named by it."""

    def _page_key(self, name: str) -> str:
        return f"{self.folder}{name}.json"

    async def _read(self, key: str) -> bytes | None:
        try:
            parts = [chunk async for chunk in self.store.get(key)]
        except KeyError:
            return None
        return b"".join(parts)

    async def load(self) -> Header | None:
        """The manifest's index (None when there is none yet).

        Raises :class:`ManifestError` for one that cannot be read, and whatever the store
        raises when it cannot be reached.
        """
        data = await self._read(self.key)
        if data is None:
            return None
        header = Header.decode(data)
        self.published = frozenset(p.name for p in header.pages)
        return header

    async def page(self, ref: PageRef) -> list[tuple[str, Row]]:
        """A page's rows (:class:`ManifestError` when it is gone or damaged)."""
        cached = self._cache.get(ref.name)
        if cached is not None:
            self._cache.move_to_end(ref.name)
            return cached
        data = await self._read(self._page_key(ref.name))
        if data is None:
            raise ManifestError(f"page {ref.name} is missing")
        if hashlib.md5(data, usedforsecurity=False).hexdigest() != ref.name:
            raise ManifestError(f"page {ref.name} is damaged")
        rows = decode_page(data)
        self._cache[ref.name] = rows
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return rows

    async def _page_or_nothing(self, ref: PageRef) -> list[tuple[str, Row]]:
        try:
            return await self.page(ref)
        except ManifestError as error:
            log.warning("%s: %s; its %d rows are not known", self.key, error, ref.rows)
            return []

    async def rows(
        self, header: Header, after: str | None = None, *, cached: bool = False
    ) -> AsyncIterator[tuple[str, Row]]:
        """Every row in key order (those above ``after`` when given). A page that cannot
        be read is skipped (logged): what it said is learnt again from the stamps.

        Streamed pages are not cached (``cached`` to keep them: a walk that returns to
        them soon)."""
        if header.legacy is not None:
            for key, row in list(header.legacy.items()):
                if after is None or key > after:
                    yield key, row
            return
        for ref in header.pages:
            if after is not None and ref.last <= after:
                continue
            if cached:
                rows = await self._page_or_nothing(ref)
            else:
                rows = self._cache.get(ref.name) or await self._stream(ref)
            for key, row in rows:
                if after is None or key > after:
                    yield key, row

    async def _stream(self, ref: PageRef) -> list[tuple[str, Row]]:
        data = await self._read(self._page_key(ref.name))
        try:
            if data is None:
                raise ManifestError(f"page {ref.name} is missing")
            if hashlib.md5(data, usedforsecurity=False).hexdigest() != ref.name:
                raise ManifestError(f"page {ref.name} is damaged")
            return decode_page(data)
        except ManifestError as error:
            log.warning("%s: %s; its %d rows are not known", self.key, error, ref.rows)
            return []

    async def lookup(self, header: Header, key: str) -> Row | None:
        """The row of ``key`` (one page read at most; None when the manifest has none)."""
        if header.legacy is not None:
            return header.legacy.get(key)
        i = bisect.bisect_left([p.last for p in header.pages], key)
        if i >= len(header.pages) or header.pages[i].first > key:
            return None
        for k, row in await self._page_or_nothing(header.pages[i]):
            if k == key:
                return row
        return None

    async def write_page(self, rows: Rows) -> PageRef:
        """Store ``rows`` (in key order, not empty) as a page; no write when a page of the
        very same content is known to be there."""
        data = encode_page(rows)
        name = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if name not in self.published and name not in self.written:
            body_data = data

            async def body() -> AsyncIterator[bytes]:
                yield body_data

            # A page's name is its content's MD5: none of that name is there to replace
            # (Swift would look for a large object's segments to clean up otherwise).
            await self.store.put(
                self._page_key(name), body(), len(data), {}, md5_hex=name, replacing=False
            )
            self.written.add(name)
        return page_ref(name, rows)

    async def write_pages(self, rows: Rows) -> list[PageRef]:
        return [await self.write_page(chunk) for chunk in chunked(rows, self.page_rows)]

    async def publish(
        self, header: Header, now: float, *, keep: frozenset[str] = frozenset()
    ) -> None:
        """Write the index (atomically), then delete the pages it no longer names (but
        those in ``keep``, which a walk under way still reads: deleted by a later save)."""
        data = header.encode(now)
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()

        async def body() -> AsyncIterator[bytes]:
            yield data

        await self.store.put(self.key, body(), len(data), {}, md5_hex=digest)
        header.saved_at = now
        named = frozenset(p.name for p in header.pages)
        known = self.published | self.written
        unused = known - named - keep
        self.published = named
        self.written = set((known & keep) - named)
        for name in sorted(unused):
            try:
                await self.store.delete(self._page_key(name))
            except Exception as error:  # an orphan: collected later
                log.warning("%s: page %s not deleted: %s", self.key, name, error)
            self._cache.pop(name, None)

    async def collect(self, now: float, age: float = ORPHAN_AGE) -> int:
        """Delete pages no index names that are older than ``age`` seconds (left by a save
        that a crash interrupted); the number deleted."""
        orphans = []
        async for info in self.store.list(self.folder):
            name = info.key[len(self.folder) :].removesuffix(".json")
            if name in self.published or name in self.written:
                continue
            if info.last_modified < now - age:
                orphans.append(info.key)
            if len(orphans) >= 1000:
                break
        for key in orphans:
            await self.store.delete(key)
        return len(orphans)

    async def patch(
        self, pages: Sequence[PageRef], changes: Sequence[tuple[str, Row | None]]
    ) -> list[PageRef]:
        """``pages`` with ``changes`` (in key order; None: the key has no row any more)
        applied: only the pages whose key range a change falls in are read and written
        again; changes past the last page make pages of their own."""
        if not changes:
            return list(pages)
        end = pages[-1].last if pages else None
        beyond = [(k, row) for k, row in changes if end is None or k > end]
        if beyond:
            rows = [(k, row) for k, row in beyond if row is not None and not row.blank]
            head = await self.patch(pages, changes[: len(changes) - len(beyond)])
            return head + await self.write_pages(rows)
        lasts = [p.last for p in pages]
        touched: dict[int, list[tuple[str, Row | None]]] = {}
        for key, row in changes:
            i = min(bisect.bisect_left(lasts, key), len(pages) - 1) if pages else 0
            touched.setdefault(i, []).append((key, row))
        result: list[PageRef] = []
        for i in range(max(len(pages), 1)):
            if i not in touched:
                if i < len(pages):
                    result.append(pages[i])
                continue
            merged: dict[str, Row] = {}
            if i < len(pages):
                merged.update(await self.page_rows_of(pages[i]))
            for key, row in touched[i]:
                if row is None or row.blank:
                    merged.pop(key, None)
                else:
                    merged[key] = row
            ordered = sorted(merged.items(), key=lambda item: item[0])
            result.extend(await self.write_pages(ordered))
        return result

    async def page_rows_of(self, ref: PageRef) -> list[tuple[str, Row]]:
        """A page's rows, read without keeping it (nothing when it cannot be read)."""
        cached = self._cache.get(ref.name)
        return cached if cached is not None else await self._stream(ref)

    async def above(self, header: Header, cursor: str | None) -> list[PageRef]:
        """The manifest's rows above ``cursor`` as pages: those wholly above it as they
        are, the one it falls in cut (written again). A version-1 manifest's are written
        as pages."""
        if header.legacy is not None:
            rows = [item for item in header.legacy.items() if cursor is None or item[0] > cursor]
            return await self.write_pages(rows)
        result: list[PageRef] = []
        for ref in header.pages:
            if cursor is None or ref.first > cursor:
                result.append(ref)
            elif ref.last > cursor:
                rows = [item for item in await self.page_rows_of(ref) if item[0] > cursor]
                if rows:
                    result.extend(await self.write_pages(rows))
        return result
