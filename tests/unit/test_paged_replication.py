"""Paged manifests and streamed passes (issue #17 item 8): a pass that holds one segment
of keys and a page or two of each manifest at once must end exactly where the
whole-memory engine it replaced ends (tests/reference: that engine, verbatim), over random
buckets, epochs, failovers and page sizes down to one row; a crash between the writes of
a save must lose nothing; a manifest of an earlier release must still be read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.api.annotations import TailAction
from controller.replication import objects
from controller.replication.figures import Pending
from controller.replication.manifest import (
    Manifest,
    ManifestStore,
    Row,
    Totals,
    manifest_key,
    pages_prefix,
)
from controller.replication.objects import FlowSettings, Location, ObjectFlow
from controller.replication.plan import STAMP_EPOCH, Entry
from tests.reference import whole_manifest, whole_objects
from tests.unit.test_replication_engine import APP, MemoryStore, Reporter, user_keys

KEYS = ["a", "a/b", "ab", "b", "k0", "k1", "k10", "z", "é", "\uff01", "😀"]
"""Keys whose order differs between UTF-8 (S3, Swift, Python) and UTF-16 (U+FF01 sorts
before U+1F600 in UTF-8, after it in UTF-16)."""
CONTENTS = [b"x", b"yy", b"zzz", b"larger than twenty bytes, a multipart ETag"]


class RefReporter:
    """The reporter of the reference engine (same protocol, its own types)."""

    def __init__(self) -> None:
        self.conflicts: list[str] = []
        self.tail: list[str] = []

    def copied(self, size: int) -> None:
        pass

    def streamed(self, size: int) -> None:
        pass

    def deleted(self) -> None:
        pass

    def failed(self, message: str) -> None:
        pass

    def conflicted(self, conflicts: Any) -> None:
        self.conflicts.extend(c.key for c in conflicts)

    def unreplicated(self, found: Any) -> None:
        self.tail.extend(u.key for u in found)


@dataclass
class World:
    """Two sites' buckets, and what was reported of them."""

    use1: MemoryStore = field(default_factory=lambda: MemoryStore(large=20, now=500.0))
    usw2: MemoryStore = field(default_factory=lambda: MemoryStore(large=20, now=500.0))

    def sites(self, source: str) -> tuple[MemoryStore, MemoryStore]:
        return (self.use1, self.usw2) if source == "use1" else (self.usw2, self.use1)

    def set_now(self, now: float) -> None:
        self.use1.now = self.usw2.now = now


@dataclass(frozen=True)
class Pass:
    """One pass: its epoch and direction, what the app did before it, and what follows."""

    epoch: int
    source: str
    writes: tuple[tuple[str, str, int, float], ...]
    """(site, key, content, mtime) written by the app before the pass."""
    deletes: tuple[tuple[str, str], ...]
    restart: bool
    notices: tuple[tuple[str, int], ...] = ()
    """Written at the source after the pass, noticed and settled: (key, content)."""
    resolve: TailAction | None = None


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Pass], bool, int, int]:
    passes = []
    for n in range(draw(st.integers(2, 4))):
        epoch = 1 if n == 0 else draw(st.sampled_from([1, 2])) if n == 1 else 2
        source = "use1" if epoch == 1 else "usw2"
        writes = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["use1", "usw2"]),
                    st.sampled_from(KEYS),
                    st.integers(0, len(CONTENTS) - 1),
                    st.sampled_from([400.0, 900.0, 1200.0, 1500.0]),
                ),
                max_size=10 if n == 0 else 5,
            )
        )
        deletes = draw(
            st.lists(
                st.tuples(st.sampled_from(["use1", "usw2"]), st.sampled_from(KEYS)), max_size=3
            )
        )
        notices = draw(
            st.lists(
                st.tuples(st.sampled_from(KEYS), st.integers(0, len(CONTENTS) - 1)), max_size=2
            )
        )
        resolve = draw(st.sampled_from([None, None, TailAction.MERGE, TailAction.DISCARD]))
        passes.append(
            Pass(
                epoch,
                source,
                tuple(writes),
                tuple(deletes),
                draw(st.booleans()),
                tuple(notices),
                resolve if epoch == 2 else None,
            )
        )
    return passes, draw(st.booleans()), draw(st.integers(1, 4)), draw(st.integers(1, 5))


def _target(source: str) -> str:
    return "usw2" if source == "use1" else "use1"


def _paged(
    world: World, p: Pass, propagate: bool, page_rows: int, segment: int, reporter: Reporter
) -> ObjectFlow:
    source, target = world.sites(p.source)
    return ObjectFlow(
        FlowSettings(
            app=APP,
            dataset="photos",
            epoch=p.epoch,
            epoch_since=1000.0 if p.epoch == 2 else None,
            propagate_deletes=propagate,
            checkpoint_interval=0,
            page_rows=page_rows,
            segment_keys=segment,
            max_concurrency=3,
        ),
        Location(p.source, source),
        Location(_target(p.source), target),
        reporter=reporter,
        clock=lambda: 2000.0,
        monotonic=lambda: 0.0,  # every checkpoint is due: what is saved does not depend on timing
    )


def _whole(world: World, p: Pass, propagate: bool, reporter: RefReporter) -> Any:
    source, target = world.sites(p.source)
    return whole_objects.ObjectFlow(
        whole_objects.FlowSettings(
            app=APP,
            dataset="photos",
            epoch=p.epoch,
            epoch_since=1000.0 if p.epoch == 2 else None,
            propagate_deletes=propagate,
            checkpoint_interval=0,
            max_concurrency=3,
        ),
        whole_objects.Location(p.source, source),
        whole_objects.Location(_target(p.source), target),
        reporter=reporter,
        clock=lambda: 2000.0,
        monotonic=lambda: 0.0,  # every checkpoint is due: what is saved does not depend on timing
    )


def _apply(world: World, p: Pass) -> None:
    for site, key, content, mtime in p.writes:
        world.sites(site)[0].write(key, CONTENTS[content], mtime=mtime)
    for site, key in p.deletes:
        world.sites(site)[0].objects.pop(key, None)


def _objects(store: MemoryStore) -> dict[str, tuple[bytes, dict[str, str], str]]:
    return {
        k: (store.objects[k].data, store.objects[k].metadata, store.objects[k].etag)
        for k in user_keys(store)
    }


async def paged_rows(store: MemoryStore) -> dict[str, tuple[Any, ...]]:
    manifests = ManifestStore(store, "", APP, "photos")
    header = await manifests.load()
    if header is None:
        return {}
    return {key: (row.entry, row.conflict, row.tail) async for key, row in manifests.rows(header)}


def whole_rows(store: MemoryStore) -> dict[str, tuple[Any, ...]]:
    stored = store.objects.get(manifest_key("", APP, "photos"))
    if stored is None:
        return {}
    m = whole_manifest.Manifest.decode(stored.data)
    keys = set(m.entries) | set(m.conflicts) | set(m.unreplicated)
    return {k: (m.entries.get(k), m.conflicts.get(k), m.unreplicated.get(k)) for k in keys}


def _figures(f: Any) -> tuple[Any, ...]:
    figures = f.figures
    pending = figures.pending
    keys = pending.keys if isinstance(pending, Pending) else pending
    t = figures.totals
    return (
        dict(keys),
        (t.copied_objects, t.copied_bytes, t.deletes, t.errors, t.conflicts),
        figures.listed_at,
        figures.synced_at,
    )


def _tail_figures(f: Any) -> tuple[int, int, tuple[str, ...]]:
    """The unreplicated objects' figures. The reference's are read from its manifest: its
    figures went stale when a pass found an object no longer unreplicated (fixed since)."""
    if isinstance(f, ObjectFlow):
        figures = f.figures
        return figures.unreplicated_objects, figures.unreplicated_bytes, figures.unreplicated_keys
    tail = f.manifest.unreplicated if f.manifest is not None else {}
    shown = tuple(sorted(tail)[: objects.UNREPLICATED_SHOWN])
    return len(tail), sum(size for _, size, _ in tail.values()), shown


async def _run(passes: list[Pass], propagate: bool, page_rows: int, segment: int) -> None:
    paged, whole = World(), World()
    reporter, ref_reporter = Reporter(), RefReporter()
    flows: dict[tuple[int, str], Any] = {}
    for n, p in enumerate(passes):
        for world in (paged, whole):
            world.set_now(500.0 + 600.0 * n)
            _apply(world, p)
        key = (p.epoch, p.source)
        if p.restart or key not in flows:
            flows[key] = (
                _paged(paged, p, propagate, page_rows, segment, reporter),
                _whole(whole, p, propagate, ref_reporter),
            )
        new, old = flows[key]
        assert await new.scan() == await old.scan()
        for k, content in p.notices:
            for world, f in ((paged, new), (whole, old)):
                world.sites(p.source)[0].write(k, CONTENTS[content], mtime=1900.0)
                f.notify(k, 1900.0)
                await f.settle_noticed()
        if p.resolve is not None:
            a, b = await new.resolve(p.resolve), await old.resolve(p.resolve)
            assert (a.objects, a.bytes, a.skipped, a.failed) == (
                b.objects,
                b.bytes,
                b.skipped,
                b.failed,
            )
        target = _target(p.source)
        assert _objects(paged.use1) == _objects(whole.use1), f"pass {n}"
        assert _objects(paged.usw2) == _objects(whole.usw2), f"pass {n}"
        assert await paged_rows(paged.sites(target)[0]) == whole_rows(whole.sites(target)[0])
        assert _figures(new) == _figures(old), f"pass {n}"
        assert _tail_figures(new) == _tail_figures(old), f"pass {n}"
        assert [u.key for u in await new.unreplicated()] == [u.key for u in old.unreplicated()]
        # Reported once each (in the order the copies ended, which may differ).
        assert sorted(c.key for c in reporter.conflicts) == sorted(ref_reporter.conflicts)
        assert sorted(reporter.tail) == sorted(ref_reporter.tail)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_a_paged_streamed_pass_ends_where_the_whole_memory_engine_does(
    scenario: tuple[list[Pass], bool, int, int],
) -> None:
    passes, propagate, page_rows, segment = scenario
    asyncio.run(_run(passes, propagate, page_rows, segment))


# --------------------------------------------------------------------------- crashes


class Crash(BaseException):
    """The process dies here (nothing in the flow catches it)."""


def _crashing(store: MemoryStore, at: int, kind: str) -> None:
    """Kill the flow at the ``at``-th write of a page (``kind`` "page") or of the index."""
    seen = {"n": 0}

    async def before_put(key: str) -> None:
        is_page = ".pages/" in key
        is_index = key == manifest_key("", APP, "photos")
        if (kind == "page" and is_page) or (kind == "index" and is_index):
            seen["n"] += 1
            if seen["n"] == at:
                raise Crash(key)

    store.before_put = before_put


def _world(
    crash: tuple[int, str] | None, *, seeded: bool = True, large: int = 1 << 30
) -> tuple[MemoryStore, MemoryStore]:
    """20 objects at the source; some of them already at the destination (``seeded``),
    and four the source no longer has. Objects above ``large`` bytes written at the
    destination get multipart-style ETags (not their MD5s)."""
    east, west = MemoryStore(), MemoryStore(large=large)
    for n in range(20):
        east.write(f"k{n:02}", f"object {n}".encode())
    for n in range(0, 20 if seeded else 0, 3):
        west.write(f"k{n:02}", f"object {n}".encode())  # already there: recorded
    for n in range(4):
        west.write(f"old{n}", b"deleted at the source")
    if crash is not None:
        _crashing(west, *crash)
    return east, west


def _crash_flow(
    east: MemoryStore, west: MemoryStore, now: float = 200.0, concurrency: int = 2
) -> ObjectFlow:
    return ObjectFlow(
        FlowSettings(
            app=APP,
            dataset="photos",
            epoch=1,
            checkpoint_interval=0,
            page_rows=3,
            segment_keys=4,
            max_concurrency=concurrency,
        ),
        Location("use1", east),
        Location("usw2", west),
        clock=lambda: now,
        monotonic=lambda: 0.0,  # every checkpoint is due
    )


@pytest.mark.parametrize(
    "crash", [(n, "page") for n in range(1, 16)] + [(n, "index") for n in (1, 2, 4, 7)]
)
async def test_a_crash_between_the_writes_of_a_save_resumes_where_the_last_index_was(
    crash: tuple[int, str],
) -> None:
    east, west = _world(crash)
    with pytest.raises((Crash, BaseExceptionGroup)):
        await _crash_flow(east, west).scan()
    west.before_put = None
    # The index saved last names only pages that are there: every row can be read.
    manifests = ManifestStore(west, "", APP, "photos")
    header = await manifests.load()
    if header is not None:
        for ref in header.pages:
            assert (await manifests.page(ref))[0][0] == ref.first
    copied_before = {k for k in user_keys(west) if STAMP_EPOCH in west.objects[k].metadata}
    west.calls.clear()
    restarted = _crash_flow(east, west)
    assert await restarted.scan()
    copied_after = {k for op, k in west.calls if op == "put" and not k.startswith(".")}
    # Nothing is copied twice: what the crash kept from the manifest, the stamps tell.
    assert not copied_before & copied_after
    assert user_keys(west) == [*user_keys(east), "old0", "old1", "old2", "old3"]

    # It ends where a pass that never crashed ends (the reference engine, one go).
    e2, w2 = _world(None)
    whole = whole_objects.ObjectFlow(
        whole_objects.FlowSettings(app=APP, dataset="photos", epoch=1, checkpoint_interval=0),
        whole_objects.Location("use1", e2),
        whole_objects.Location("usw2", w2),
        clock=lambda: 200.0,
    )
    assert await whole.scan()
    assert _objects(west) == _objects(w2)

    def known(rows: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        """What a row says but the epoch and MD5 of a copy whose record the crash lost
        (the listing's ETag matched: they are read from its stamps when needed)."""
        return {k: (e.etag, e.size, e.source_etag, e.held, *rest) for k, (e, *rest) in rows.items()}

    assert known(await paged_rows(west)) == known(whole_rows(w2))

    # Pages a crash left behind, named by no index, go once they are an hour old.
    folder = pages_prefix("", APP, "photos")
    header = await manifests.load()
    assert header is not None
    named = {f"{folder}{p.name}.json" for p in header.pages}
    assert await _crash_flow(east, west, now=200.0 + 3601).scan()
    assert {k for k in west.objects if k.startswith(folder)} == named


@pytest.mark.parametrize("crash_at", [3, 8, 14])
async def test_a_crash_mid_pass_keeps_what_the_pass_recorded_before_it(crash_at: int) -> None:
    """A checkpoint mid-pass saves the pages written, the rows under way and the old
    manifest above the last key listed: the restarted pass reads no metadata again."""
    # Copies get other ETags than their sources: only the manifest says they match.
    east, west = _world(None, seeded=False, large=4)
    assert await _crash_flow(east, west).scan()  # a manifest of every key
    for n in range(20):
        east.write(f"k{n:02}", f"object {n}, changed".encode())
    _crashing(west, crash_at, "page")
    with pytest.raises((Crash, BaseExceptionGroup)):
        await _crash_flow(east, west, concurrency=1).scan()  # one copy, then its checkpoint
    west.before_put = None
    changed = {k for k in user_keys(west) if west.objects[k].data.endswith(b"changed")}
    assert changed and len(changed) < 20  # the crash came mid-pass
    index = manifest_key("", APP, "photos")
    last_save = max(i for i, (op, k) in enumerate(west.calls) if (op, k) == ("put", index))
    unrecorded = {k for op, k in west.calls[last_save:] if op == "put" and k in changed}
    assert len(unrecorded) <= 1  # at most the copy whose checkpoint the crash cut short
    west.calls.clear()
    assert await _crash_flow(east, west).scan()
    # Every copy made before the last index saved was recorded: only those made since are
    # read again (HEAD), and none is copied again.
    assert west.count("head") == len(unrecorded)
    puts = {k for op, k in west.calls if op == "put" and not k.startswith(".")}
    assert not puts & changed and len(puts | changed) == 20


# --------------------------------------------------------------------------- upgrades


async def test_a_manifest_of_an_earlier_release_is_read_and_replaced_by_pages() -> None:
    """The whole-memory engine's manifest (version 1) is the state a restarted, upgraded
    operator finds: nothing in it is lost, nothing is read or copied again."""
    use1, usw2 = MemoryStore(now=500.0), MemoryStore(now=500.0)
    for n in range(7):
        use1.write(f"k{n}", f"object {n}".encode())
    use1.write("doc", b"v1")
    old = whole_objects.ObjectFlow(
        whole_objects.FlowSettings(app=APP, dataset="photos", epoch=1, checkpoint_interval=0),
        whole_objects.Location("use1", use1),
        whole_objects.Location("usw2", usw2),
        clock=lambda: 600.0,
    )
    assert await old.scan()
    # A failover to usw2 (epoch 2 at t=1000): the old primary holds a tail and a conflict.
    use1.write("tail", b"never replicated", mtime=900.0)
    use1.write("doc", b"v2 at the old primary after the failover", mtime=1200.0)
    back = whole_objects.ObjectFlow(
        whole_objects.FlowSettings(
            app=APP, dataset="photos", epoch=2, epoch_since=1000.0, checkpoint_interval=0
        ),
        whole_objects.Location("usw2", usw2),
        whole_objects.Location("use1", use1),
        clock=lambda: 1300.0,
    )
    assert await back.scan()
    before = whole_rows(use1)
    assert before["tail"][2] is not None and before["doc"][1] is not None
    version1 = use1.objects[manifest_key("", APP, "photos")].data
    assert Manifest.decode(version1).totals == Totals(conflicts=1)

    reporter = Reporter()
    upgraded = ObjectFlow(
        FlowSettings(
            app=APP,
            dataset="photos",
            epoch=2,
            epoch_since=1000.0,
            checkpoint_interval=0,
            page_rows=3,
        ),
        Location("usw2", usw2),
        Location("use1", use1),
        reporter=reporter,
        clock=lambda: 1400.0,
    )
    use1.calls.clear()
    usw2.calls.clear()
    assert await upgraded.scan()
    assert use1.count("head") == usw2.count("head") == 0
    assert [k for op, k in use1.calls if op == "put" and not k.startswith(".")] == []
    assert reporter.conflicts == [] and reporter.tail == []  # known: not reported again
    assert [u.key for u in await upgraded.unreplicated()] == ["tail"]
    status = upgraded.figures.status(1400.0)
    assert (status.unreplicated_objects, status.unreplicated_keys, status.conflicts) == (
        1,
        ("tail",),
        1,
    )
    assert await paged_rows(use1) == before  # every row, now in pages
    index = use1.objects[manifest_key("", APP, "photos")].data
    assert b'"version":2' in index and len(index) < len(version1)


# --------------------------------------------------------------------------- bounds


async def test_pending_changes_past_the_bound_are_counted_and_said_to_be_estimated() -> None:
    east, west = MemoryStore(), MemoryStore()
    for n in range(10):
        east.write(f"k{n}", bytes(10 + n), mtime=100.0 + n)
    west.break_puts = 1000  # every copy fails: all ten stay pending
    f = _crash_flow(east, west)
    f.figures.pending = Pending(limit=4)
    assert not await f.scan()
    pending = f.figures.pending
    assert len(pending.keys) == 4 and len(pending) == 10 and pending.estimated
    status = f.figures.status(200.0)
    assert (status.pending_objects, status.pending_bytes) == (10, sum(range(10, 20)))
    assert status.pending_estimated and status.rpo_seconds == 100.0  # the oldest, k0
    # The next pass counts afresh (what was untracked is not counted twice).
    assert not await f.scan()
    assert len(f.figures.pending) == 10
    west.break_puts = 0
    assert await f.scan()
    status = f.figures.status(200.0)
    assert (status.pending_objects, status.pending_estimated, status.rpo_seconds) == (
        0,
        False,
        0.0,
    )


async def test_a_pass_holds_one_segment_and_a_page_at_a_time() -> None:
    east, west = MemoryStore(), MemoryStore()
    for n in range(400):
        east.write(f"k{n:04}", b"x")
    seen = {"rows": 0, "buffer": 0}
    f = ObjectFlow(
        FlowSettings(app=APP, dataset="photos", epoch=1, page_rows=16, segment_keys=25),
        Location("use1", east),
        Location("usw2", west),
    )

    async def watch(key: str) -> None:
        seen["rows"] = max(seen["rows"], len(f._rows))
        if f._pass is not None:
            seen["buffer"] = max(seen["buffer"], len(f._pass.buffer))

    west.before_put = watch
    assert await f.scan()
    assert user_keys(west) == user_keys(east)
    assert seen["rows"] <= 25 and seen["buffer"] < 16 + 25  # a segment, and less than a page
    rows, header = await paged_rows(west), await ManifestStore(west, "", APP, "photos").load()
    assert header is not None and len(rows) == 400
    assert len(header.pages) == 25 and all(p.rows == 16 for p in header.pages)


@given(st.lists(st.text(st.characters(exclude_categories=["Cs"]), min_size=1), min_size=2))
def test_keys_order_alike_as_python_strings_and_as_utf8_bytes(keys: list[str]) -> None:
    """S3 lists keys in UTF-8 byte order, Swift in the byte order of its UTF-8 names; the
    engine pairs them, and the manifest's pages, by Python's string order. Those agree for
    every string a store can hold (no lone surrogates): code point order is UTF-8 byte
    order. (A store listing in another order, UTF-16's, is refused: ListingOrderError.)"""
    assert sorted(keys) == sorted(keys, key=lambda k: k.encode())


def test_a_row_is_copied_not_shared() -> None:
    row = Row(Entry("e", 1), None, ("e", 1, 1))
    copy = row.copy()
    copy.tail = None
    assert row.tail == ("e", 1, 1)


async def test_a_slow_copy_holds_back_no_more_than_the_window_behind_it() -> None:
    """While one copy hangs, the other workers go on with the keys after it, up to
    ``segment_keys`` keys judged from the first one not done: no more, whatever the
    bucket (its row and those after it wait to go to a page), and no fewer."""
    east, west = MemoryStore(), MemoryStore()
    for n in range(200):
        east.write(f"k{n:03}", b"x")
    hang = asyncio.Event()

    async def slow(key: str) -> None:
        if key == "k025":
            await hang.wait()

    west.before_put = slow
    f = ObjectFlow(
        FlowSettings(app=APP, dataset="photos", epoch=1, segment_keys=50, max_concurrency=4),
        Location("use1", east),
        Location("usw2", west),
    )
    scan = asyncio.create_task(f.scan())
    for _ in range(2000):
        await asyncio.sleep(0)
    # k000..k024 done and handed on; k025 hangs; k026..k074 done: 50 keys from k025 on.
    assert user_keys(west) == [f"k{n:03}" for n in range(75) if n != 25]
    assert len(f._rows) == 50
    hang.set()
    assert await scan
    assert user_keys(west) == user_keys(east)


async def test_pages_written_while_copies_save_checkpoints_are_all_named_and_kept() -> None:
    """The pass writes pages while its workers save checkpoints, every write taking a few
    turns of the event loop: the index saved last names only pages that are there, and
    says what the whole-memory engine's manifest says."""
    east, west = _world(None)

    async def slow(key: str) -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    west.before_put = slow
    f = _crash_flow(east, west, concurrency=4)
    assert await f.scan()
    manifests = ManifestStore(west, "", APP, "photos")
    header = await manifests.load()
    assert header is not None
    for ref in header.pages:
        assert (await manifests.page(ref))[0][0] == ref.first  # there, readable
    e2, w2 = _world(None)
    whole = whole_objects.ObjectFlow(
        whole_objects.FlowSettings(app=APP, dataset="photos", epoch=1, checkpoint_interval=0),
        whole_objects.Location("use1", e2),
        whole_objects.Location("usw2", w2),
        clock=lambda: 200.0,
    )
    assert await whole.scan()
    assert await paged_rows(west) == whole_rows(w2)
