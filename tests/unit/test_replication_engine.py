"""The object replication engine against in-memory stores: what it copies, what it reads,
what it refuses, and how it resumes (the real stores are exercised in
tests/integration/test_replication_objects.py)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.annotations import TailAction
from controller.providers.integrity import check_digest, check_size
from controller.providers.protocols import (
    ChangeMessage,
    ObjectChange,
    ObjectInfo,
    OpenedObject,
    read_through,
)
from controller.replication.epochs import EpochHistory, EpochStart
from controller.replication.figures import Pending
from controller.replication.manifest import (
    Header,
    Manifest,
    ManifestStore,
    Row,
    decode_page,
    encode_page,
    manifest_key,
)
from controller.replication.objects import (
    ChangeListener,
    FlowSettings,
    Location,
    ObjectFlow,
)
from controller.replication.plan import (
    STAMP_EPOCH,
    STAMP_MD5,
    STAMP_SOURCE_ETAG,
    STAMP_SOURCE_SITE,
    Conflict,
    Entry,
    Unreplicated,
)

APP = "shop/web"


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass
class Stored:
    data: bytes
    metadata: dict[str, str]
    mtime: float
    etag: str
    simple: bool


@dataclass
class MemoryStore:
    """An ObjectStore in memory. Objects above ``large`` bytes get a multipart-style ETag
    (not their MD5), like S3 multipart uploads and Swift SLOs."""

    region: str = "r"
    large: int = 1 << 30
    chunk: int = 4
    now: float = 100.0
    objects: dict[str, Stored] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    break_puts: int = 0
    """The next puts that fail half-way through the body."""
    fail_deletes: int = 0
    """The next deletes that fail."""
    corrupt_gets: set[str] = field(default_factory=set)
    replacing: dict[str, bool] = field(default_factory=dict)
    """Each put's ``replacing`` hint, by key (the last one)."""
    before_put: Callable[[str], Awaitable[None]] | None = None
    """Awaited with the key at the start of every put (to slow it, or hang it)."""
    unreleased: dict[str, int] = field(default_factory=dict)
    """Opened objects whose response was not released yet, by key."""

    def write(
        self,
        key: str,
        data: bytes,
        metadata: dict[str, str] | None = None,
        mtime: float | None = None,
    ) -> None:
        simple = len(data) <= self.large
        etag = md5(data) if simple else md5(md5(data).encode()) + "-2"
        self.objects[key] = Stored(
            data, dict(metadata or {}), self.now if mtime is None else mtime, etag, simple
        )

    def count(self, op: str) -> int:
        return sum(1 for o, _ in self.calls if o == op)

    def listings(self) -> int:
        """Listings of the objects (not of Lifeboat's manifest pages)."""
        return sum(1 for o, k in self.calls if o == "list" and ".lifeboat/" not in k)

    def info(self, key: str, *, headed: bool) -> ObjectInfo:
        s = self.objects[key]
        md5_ = md5(s.data) if s.simple else None
        return ObjectInfo(
            key,
            len(s.data),
            s.etag,
            s.mtime,
            dict(s.metadata) if headed else {},
            md5_ if headed else None,
        )

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        self.calls.append(("list", prefix))
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield self.info(key, headed=False)
                await asyncio.sleep(0)

    async def head(self, key: str) -> ObjectInfo | None:
        self.calls.append(("head", key))
        return self.info(key, headed=True) if key in self.objects else None

    async def get(self, key: str) -> AsyncIterator[bytes]:
        async for chunk in read_through(await self.open(key), key):
            yield chunk

    async def open(self, key: str) -> OpenedObject | None:
        self.calls.append(("get", key))
        if key not in self.objects:
            return None
        data = self.objects[key].data
        if key in self.corrupt_gets:
            data = bytes([data[0] ^ 1]) + data[1:]
        self.unreleased[key] = self.unreleased.get(key, 0) + 1

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(data), self.chunk):
                yield data[i : i + self.chunk]
                await asyncio.sleep(0)

        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.unreleased[key] -= 1
                if not self.unreleased[key]:
                    del self.unreleased[key]

        return OpenedObject(self.info(key, headed=True), chunks(), release)

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        size: int,
        metadata: Mapping[str, str],
        *,
        md5_hex: str | None = None,
        replacing: bool = True,
    ) -> ObjectInfo:
        self.calls.append(("put", key))
        self.replacing[key] = replacing
        if self.before_put is not None:
            await self.before_put(key)
        body = b""
        async for chunk in chunks:
            body += chunk
            check_size(len(body), size, complete=False)
            if self.break_puts and len(body) > size // 2:
                self.break_puts -= 1
                raise ConnectionResetError("connection reset by peer")
        check_size(len(body), size, complete=True)
        check_digest(md5(body), md5_hex)
        self.write(key, body, dict(metadata))
        return self.info(key, headed=True)

    async def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        if self.fail_deletes:
            self.fail_deletes -= 1
            raise ConnectionResetError("connection reset by peer")
        self.objects.pop(key, None)


class Reporter:
    def __init__(self) -> None:
        self.copies: list[int] = []
        self.streamed_bytes = 0
        self.deletes = 0
        self.failures: list[str] = []
        self.conflicts: list[Conflict] = []
        self.tail: list[str] = []

    def copied(self, size: int) -> None:
        self.copies.append(size)

    def streamed(self, size: int) -> None:
        self.streamed_bytes += size

    def deleted(self) -> None:
        self.deletes += 1

    def failed(self, message: str) -> None:
        self.failures.append(message)

    def conflicted(self, conflicts: Sequence[Conflict]) -> None:
        self.conflicts.extend(conflicts)

    def unreplicated(self, found: Sequence[Unreplicated]) -> None:
        self.tail.extend(u.key for u in found)


def flow(
    source: MemoryStore,
    target: MemoryStore,
    *,
    epoch: int = 1,
    since: float | None = None,
    source_site: str = "use1",
    target_site: str = "usw2",
    reporter: Reporter | None = None,
    current: bool = True,
    held: str | None = None,
    propagate_deletes: bool = False,
) -> ObjectFlow:
    return ObjectFlow(
        FlowSettings(
            app=APP,
            dataset="photos",
            epoch=epoch,
            epoch_since=since,
            checkpoint_interval=0,
            propagate_deletes=propagate_deletes,
        ),
        Location(source_site, source),
        Location(target_site, target),
        reporter=reporter,
        current=lambda: current,
        held=lambda: held,
        clock=lambda: 200.0,
    )


async def stored(store: MemoryStore, prefix: str = "") -> tuple[dict[str, Row], Header]:
    """The manifest saved in ``store``: its rows, read page by page, and its index."""
    manifests = ManifestStore(store, prefix, APP, "photos")
    header = await manifests.load()
    assert header is not None
    return {key: row async for key, row in manifests.rows(header)}, header


def user_keys(store: MemoryStore) -> list[str]:
    return sorted(k for k in store.objects if not k.startswith(".lifeboat/"))


async def test_a_pass_copies_stamped_verified_objects_and_the_next_reads_no_metadata() -> None:
    east, west = MemoryStore(), MemoryStore(large=20)
    for n in range(5):
        east.write(f"img/{n}", f"picture {n}".encode() * (n + 1), {"owner": "ann", "bad_key": "x"})
    reporter = Reporter()
    f = flow(east, west, reporter=reporter)
    assert await f.scan()

    assert user_keys(west) == user_keys(east)
    for key in user_keys(east):
        copy = west.objects[key]
        assert copy.data == east.objects[key].data
        assert copy.metadata["owner"] == "ann" and "bad_key" not in copy.metadata  # portable only
        assert copy.metadata[STAMP_EPOCH] == "1"
        assert copy.metadata[STAMP_SOURCE_ETAG] == east.objects[key].etag
        assert copy.metadata[STAMP_SOURCE_SITE] == "use1"
        assert copy.metadata[STAMP_MD5] == md5(east.objects[key].data)
    status = f.figures.status(200.0)
    assert (status.pending_objects, status.copied_objects, status.errors) == (0, 5, 0)
    assert status.rpo_seconds == 0.0 and status.last_sync_time is not None  # listed at t=200
    assert reporter.copies == [len(east.objects[k].data) for k in user_keys(east)]
    assert manifest_key("", APP, "photos") in west.objects  # the checkpoint
    # One request per copy at the source: the GET that streams it also describes it.
    reads = [(op, k) for op, k in east.calls if not k.startswith(".lifeboat/")]
    assert sorted(reads) == [("get", k) for k in user_keys(east)] + [("list", "")]
    assert east.unreleased == {}

    east.calls.clear()
    west.calls.clear()
    assert await f.scan()
    # Large copies got other ETags than their sources, yet nothing is read again: the
    # listings, and the destination's manifest (its index once per flow, its pages
    # streamed); nothing is written.
    assert [(op, k) for op, k in east.calls + west.calls if not k.startswith(".lifeboat/")] == [
        ("list", ""),
        ("list", ""),
    ]
    assert {op for op, _ in west.calls} == {"list", "get"}


async def test_puts_say_whether_they_replace_what_the_destination_showed() -> None:
    east, west = MemoryStore(), MemoryStore()
    east.write("new", b"first")
    east.write("changed", b"second")
    west.write("changed", b"old")
    f = flow(east, west)
    assert await f.scan()
    assert (west.replacing["new"], west.replacing["changed"]) == (False, True)

    east.write("noticed", b"third", mtime=150.0)
    west.write("noticed", b"stale")
    east.write("noticed-new", b"fourth", mtime=150.0)
    f.notify("noticed", 150.0)
    f.notify("noticed-new", 150.0)
    await f.settle_noticed()
    assert (west.replacing["noticed"], west.replacing["noticed-new"]) == (True, False)


async def test_a_restarted_flow_resumes_from_the_checkpoint_and_else_from_the_stamps() -> None:
    east, west = MemoryStore(), MemoryStore(large=5)
    for n in range(4):
        east.write(f"k{n}", b"0123456789" * (n + 1))
    assert await flow(east, west).scan()

    east.calls.clear()
    west.calls.clear()
    assert await flow(east, west).scan()  # a new operator: reads the manifest, copies nothing
    assert west.count("put") == 0 and west.count("head") == 0 and east.count("head") == 0

    del west.objects[manifest_key("", APP, "photos")]  # checkpoint lost
    east.calls.clear()
    west.calls.clear()
    assert await flow(east, west).scan()
    copies = [k for op, k in west.calls if op == "put" and not k.startswith(".lifeboat/")]
    assert copies == []  # the stamps said they are in place
    assert manifest_key("", APP, "photos") in west.objects  # and the checkpoint is back
    assert west.count("head") == 4  # one HEAD per copy whose ETag differs, once
    # Each of those copies opened its source, then found it need not read it: released.
    opened = [k for op, k in east.calls if op == "get" and not k.startswith(".lifeboat/")]
    assert sorted(opened) == [f"k{n}" for n in range(4)] and east.unreleased == {}


async def test_an_interrupted_copy_leaves_nothing_visible_and_the_next_pass_completes() -> None:
    east, west = MemoryStore(), MemoryStore()
    east.write("a", b"a" * 100)
    east.write("b", b"b" * 100)
    west.break_puts = 1
    reporter = Reporter()
    f = flow(east, west, reporter=reporter)
    assert not await f.scan()
    assert user_keys(west) == ["b"]  # "a" broke half-way: not there at all
    status = f.figures.status(200.0)
    assert (status.pending_objects, status.errors) == (1, 1)
    assert "a: ConnectionResetError" in status.last_error
    assert status.rpo_seconds == 100.0  # the change made at t=100 still waits
    assert len(reporter.failures) == 1
    # Sent on: all of "b" and the 13 chunks of "a" before its put broke; completed: "b".
    assert (reporter.copies, reporter.streamed_bytes) == ([100], 100 + 13 * 4)

    assert await f.scan()
    assert west.objects["a"].data == b"a" * 100
    assert (reporter.copies, reporter.streamed_bytes) == ([100, 100], 252)
    assert f.figures.status(200.0).pending_objects == 0
    assert f.figures.last_error == ""


async def test_a_corrupt_read_is_never_stored() -> None:
    east, west = MemoryStore(), MemoryStore()
    east.write("a", b"precious bytes")
    east.corrupt_gets.add("a")
    f = flow(east, west)
    assert not await f.scan()
    assert "a" not in west.objects
    assert "MD5" in f.figures.last_error


async def test_deletes_follow_the_policy() -> None:
    east, west = MemoryStore(), MemoryStore()
    east.write("gone", b"x")
    east.write("kept", b"y")
    assert await flow(east, west).scan()
    del east.objects["gone"]
    west.write("theirs", b"written at the destination long ago", mtime=1.0)

    assert await flow(east, west).scan()  # Keep (default)
    assert user_keys(west) == ["gone", "kept", "theirs"]

    reporter = Reporter()
    f = flow(east, west, propagate_deletes=True, reporter=reporter)
    assert await f.scan()
    # Our copy goes; what the app wrote there itself during this epoch is not ours to
    # delete: kept, and reported.
    assert user_keys(west) == ["kept", "theirs"]
    assert reporter.deletes == 1 and f.figures.totals.deletes == 1
    assert [c.key for c in reporter.conflicts] == ["theirs"]


async def test_a_change_still_pending_keeps_its_age_when_the_key_is_rewritten() -> None:
    east, west = MemoryStore(), MemoryStore()
    east.write("k", bytes(100), mtime=100.0)
    west.break_puts = 1000  # every attempt breaks
    f = flow(east, west)
    assert not await f.scan()
    east.write("k", bytes(200), mtime=150.0)  # rewritten before any copy of it landed
    assert not await f.scan()
    assert f.figures.status(200.0).rpo_seconds == 100.0  # the change of t=100 is missing
    west.break_puts = 0
    assert await f.scan()
    assert f.figures.status(200.0).rpo_seconds == 0.0


async def test_a_delete_carried_from_an_earlier_flow_keeps_its_age() -> None:
    east, west = MemoryStore(), MemoryStore()
    east.write("gone", b"x")
    assert await flow(east, west).scan()
    del east.objects["gone"]
    west.fail_deletes = 1
    f = flow(east, west, propagate_deletes=True)
    f.figures.pending = Pending.of({"gone": (120.0, 0)})  # what the flow it replaces knew
    assert not await f.scan()  # the delete fails
    assert f.figures.pending["gone"][0] == 120.0
    assert f.figures.status(200.0).rpo_seconds == 80.0
    assert await f.scan()
    assert user_keys(west) == [] and f.figures.status(200.0).rpo_seconds == 0.0


async def test_propagated_deletes_spare_what_the_app_wrote_there_during_this_epoch() -> None:
    east, west = MemoryStore(), MemoryStore(now=1500.0)
    west.write("split-brain", b"written at the standby after the failover")
    reporter = Reporter()
    f = flow(east, west, epoch=2, since=1000.0, propagate_deletes=True, reporter=reporter)
    assert await f.scan()
    assert "split-brain" in west.objects
    assert [c.key for c in reporter.conflicts] == ["split-brain"]


async def test_an_older_epoch_never_overwrites_a_newer_object_and_it_is_reported_once() -> None:
    # Epoch 1: use1 -> usw2. Then a failover to usw2 (epoch 2, at t=1000).
    use1, usw2 = MemoryStore(now=500.0), MemoryStore(now=500.0)
    use1.write("doc", b"v1")
    use1.write("tail", b"v1")
    assert await flow(use1, usw2, epoch=1).scan()
    use1.write("tail", b"v1 changed before the failover, never replicated", mtime=900.0)
    use1.write("doc", b"v2 written at the old primary after the failover", mtime=1200.0)

    reporter = Reporter()
    back = flow(
        usw2, use1, epoch=2, since=1000.0, source_site="usw2", target_site="use1", reporter=reporter
    )
    assert await back.scan()
    assert use1.objects["doc"].data == b"v2 written at the old primary after the failover"
    assert use1.objects["tail"].data == b"v1"  # the new primary's version wins over epoch 1
    assert [c.key for c in reporter.conflicts] == ["doc"]
    status = back.figures.status(2000.0)
    assert (status.conflicts, status.pending_objects) == (1, 0)

    assert await back.scan()
    assert len(reporter.conflicts) == 1  # the same conflict is counted once
    rows, header = await stored(use1)
    assert rows["doc"].conflict is not None
    assert [(s.epoch, s.since, s.site) for s in header.history] == [
        (1, 0.0, "use1"),
        (2, 1000.0, "usw2"),
    ]


def failed_over() -> tuple[MemoryStore, MemoryStore, Reporter, ObjectFlow]:
    """Epoch 1: use1 -> usw2 (Propagate). The old primary takes writes that never reach
    usw2; a failover to usw2 (epoch 2, t=1000); the app deletes an object at usw2."""
    use1, usw2 = MemoryStore(now=500.0), MemoryStore(now=500.0)
    use1.write("synced", b"at both")
    use1.write("deleted-later", b"at both, then deleted at the new primary")
    reporter = Reporter()
    return use1, usw2, reporter, flow(use1, usw2, epoch=1, propagate_deletes=True)


async def test_after_a_failover_propagate_keeps_the_old_primarys_unreplicated_tail() -> None:
    use1, usw2, reporter, forward = failed_over()
    assert await forward.scan()
    use1.write("tail/a", b"never replicated", mtime=900.0)
    use1.write("tail/b", b"never replicated either", mtime=950.0)
    del usw2.objects["deleted-later"]  # by the app, at the new primary, under epoch 2

    def back() -> ObjectFlow:
        return flow(
            usw2,
            use1,
            epoch=2,
            since=1000.0,
            source_site="usw2",
            target_site="use1",
            reporter=reporter,
            propagate_deletes=True,
        )

    first = back()
    assert await first.scan()
    assert user_keys(use1) == ["synced", "tail/a", "tail/b"]  # the delete propagated
    assert reporter.tail == ["tail/a", "tail/b"]
    assert [(u.key, u.size, u.epoch) for u in (await first.unreplicated())] == [
        ("tail/a", 16, 1),
        ("tail/b", 23, 1),
    ]
    status = first.figures.status(2000.0)
    assert (status.unreplicated_objects, status.unreplicated_bytes) == (2, 39)
    assert status.unreplicated_keys == ("tail/a", "tail/b")
    assert status.pending_objects == 0  # not changes of the source: no RPO
    assert await first.scan()
    assert reporter.tail == ["tail/a", "tail/b"]  # reported once
    heads = use1.count("head")

    restarted = back()  # from the manifest: no HEAD, same figures, not reported again
    assert await restarted.scan()
    assert use1.count("head") == heads
    assert [u.key for u in (await restarted.unreplicated())] == ["tail/a", "tail/b"]
    assert reporter.tail == ["tail/a", "tail/b"]

    # Merge: copied to the new primary, stamped, never over what the app wrote there since.
    usw2.write("tail/b", b"written anew at the new primary", mtime=1500.0)
    outcome = await restarted.resolve(TailAction.MERGE)
    assert (outcome.objects, outcome.bytes, outcome.skipped, outcome.failed) == (1, 16, 1, 0)
    assert usw2.objects["tail/a"].data == b"never replicated"
    assert usw2.objects["tail/a"].metadata[STAMP_EPOCH] == "1"
    assert usw2.objects["tail/a"].metadata[STAMP_SOURCE_SITE] == "use1"
    assert usw2.objects["tail/b"].data == b"written anew at the new primary"
    assert (await restarted.unreplicated()) == []
    assert restarted.figures.status(2000.0).unreplicated_objects == 0
    before = (len(use1.calls), len(usw2.calls))
    assert await restarted.scan()  # in step: tail/a is not copied back
    assert (await restarted.unreplicated()) == []
    assert use1.objects["tail/b"].data == b"written anew at the new primary"  # epoch 2 wins
    puts = [k for op, k in use1.calls[before[0] :] + usw2.calls[before[1] :] if op == "put"]
    assert [k for k in puts if ".pages/" not in k] == ["tail/b", manifest_key("", APP, "photos")]
    # Deleted at the new primary after the merge: that delete propagates.
    del usw2.objects["tail/a"]
    assert await restarted.scan()
    assert "tail/a" not in use1.objects


async def test_discarding_the_unreplicated_tail_deletes_it_at_the_old_primary_only() -> None:
    use1, usw2, _, forward = failed_over()
    assert await forward.scan()
    use1.write("tail/a", b"never replicated", mtime=900.0)
    use1.write("tail/b", b"never replicated either", mtime=950.0)
    back = flow(usw2, use1, epoch=2, since=1000.0, source_site="usw2", target_site="use1")
    assert await back.scan()  # Keep: reported all the same
    assert [u.key for u in (await back.unreplicated())] == ["tail/a", "tail/b"]
    use1.write("tail/b", b"changed since it was reported", mtime=990.0)
    outcome = await back.resolve(TailAction.DISCARD)
    assert (outcome.objects, outcome.skipped) == (1, 1)  # a changed object is left alone
    assert "tail/a" not in use1.objects and "tail/b" in use1.objects
    assert "tail/a" not in usw2.objects
    assert await back.scan()  # the next pass judges tail/b afresh
    assert [u.key for u in (await back.unreplicated())] == ["tail/b"]
    stale = flow(usw2, use1, epoch=2, since=1000.0, current=False)
    stopped = await stale.resolve(TailAction.DISCARD)
    assert stopped.stopped and "tail/b" in use1.objects  # not current: nothing done


async def test_a_flow_whose_epoch_is_no_longer_current_writes_nothing() -> None:
    east, west = MemoryStore(), MemoryStore()
    east.write("a", b"data")
    f = flow(east, west, current=False)
    assert not await f.scan()
    assert west.count("put") == 0 and west.count("delete") == 0


async def test_a_held_flow_sends_nothing_and_its_rpo_grows() -> None:
    east, west = MemoryStore(), MemoryStore()
    east.write("a", b"data")
    f = flow(east, west)
    assert await f.scan()
    east.calls.clear()
    west.calls.clear()
    held = flow(east, west, held="us-west-2 API plane Impaired")
    held.figures = f.figures
    assert not await held.scan()
    assert east.calls == [] and west.calls == []
    assert f.figures.blind and f.figures.last_error.startswith("paused: us-west-2")
    assert f.figures.rpo(260.0) == 60.0  # nothing known since the listing at t=200


async def test_change_notices_settle_keys_between_scans() -> None:
    east, west = MemoryStore(), MemoryStore()
    f = flow(east, west, propagate_deletes=True)
    assert await f.scan()
    east.write("new", b"fresh", mtime=150.0)
    f.notify("new", 150.0)
    assert f.figures.status(200.0).rpo_seconds == 50.0  # pending since it was made
    await f.settle_noticed()
    assert f.figures.status(200.0).pending_objects == 0
    assert west.objects["new"].data == b"fresh"
    assert west.listings() == 1  # no scan: two HEADs and the copy
    del east.objects["new"]
    f.notify("new", 190.0)
    await f.settle_noticed()
    assert "new" not in west.objects


@dataclass
class CountingStore(MemoryStore):
    """Counts the puts in progress and remembers the most at once. The first ``limit``
    puts wait for one another (at most 5 s): if the flow lets that many run at once, the
    peak reaches ``limit`` however the tasks are scheduled."""

    limit: int = 1
    active: int = 0
    peak: int = 0
    _all_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        size: int,
        metadata: Mapping[str, str],
        *,
        md5_hex: str | None = None,
        replacing: bool = True,
    ) -> ObjectInfo:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.active >= self.limit:
                self._all_in.set()
            await asyncio.wait_for(self._all_in.wait(), 5.0)
            return await super().put(
                key, chunks, size, metadata, md5_hex=md5_hex, replacing=replacing
            )
        finally:
            self.active -= 1


@pytest.mark.parametrize("limit", [1, 3, 8])
async def test_max_concurrency_bounds_the_copies_in_flight(limit: int) -> None:
    east, west = MemoryStore(), CountingStore(limit=limit)
    for n in range(20):
        east.write(f"k{n:02}", b"x" * 64)
    f = ObjectFlow(
        FlowSettings(app=APP, dataset="photos", epoch=1, max_concurrency=limit),
        Location("use1", east),
        Location("usw2", west),
    )
    assert await f.scan()
    assert user_keys(west) == [f"k{n:02}" for n in range(20)]
    assert west.peak == limit  # reached, never passed


async def test_bandwidth_limit_paces_copies() -> None:
    east, west = MemoryStore(chunk=1000), MemoryStore()
    for n in range(4):
        east.write(f"k{n}", bytes(100_000))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    f = ObjectFlow(
        FlowSettings(app=APP, dataset="photos", epoch=1, bandwidth=100_000, max_concurrency=1),
        Location("use1", east),
        Location("usw2", west),
        sleep=sleep,
        monotonic=lambda: sum(waits),  # time passes only while waiting
    )
    assert await f.scan()
    # 400 kB at 100 kB/s with a 100 kB burst: 3 s of waiting, in many small waits.
    assert sum(waits) == pytest.approx(3.0, abs=0.02)
    assert len(waits) > 100


async def test_prefixes_map_keys_and_reserved_keys_stay_home() -> None:
    east, west = MemoryStore(), MemoryStore()
    east.write("app/a", b"1")
    east.write("app/.lifeboat/replication/x/y/z.json", b"{}")
    east.write("elsewhere", b"2")
    f = ObjectFlow(
        FlowSettings(app=APP, dataset="photos", epoch=1),
        Location("use1", east, "app/"),
        Location("usw2", west, "mirror/"),
    )
    assert await f.scan()
    assert [k for k in user_keys(west) if ".pages/" not in k] == [
        "mirror/.lifeboat/replication/shop/web/photos.json",
        "mirror/a",
    ]


@dataclass
class FakeFeed:
    region: str = "r"
    waiting: list[ChangeMessage] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)

    async def receive(self, max_messages: int = 10) -> list[ChangeMessage]:
        got, self.waiting = self.waiting[:max_messages], self.waiting[max_messages:]
        return got

    async def ack(self, receipts: Sequence[str]) -> None:
        self.acked.extend(receipts)


async def test_the_listener_hands_notices_of_its_bucket_and_prefix_to_every_flow() -> None:
    east = MemoryStore()
    targets = [MemoryStore(), MemoryStore()]
    flows = [
        ObjectFlow(
            FlowSettings(app=APP, dataset="photos", epoch=1),
            Location("use1", east, "app/"),
            Location(site, target),
        )
        for site, target in zip(("usw2", "euc1"), targets, strict=True)
    ]
    for f in flows:
        assert await f.scan()  # nothing yet; the manifests are loaded
    east.write("app/a", b"new")
    east.write("app/b", b"also new, but its notice names another bucket")
    feed = FakeFeed(
        waiting=[
            ChangeMessage(
                "r1",
                (
                    ObjectChange("bucket", "app/a", False, 10.0),
                    ObjectChange("bucket", "app/.lifeboat/replication/x.json", False, 11.0),
                    ObjectChange("other", "app/b", False, 12.0),
                    ObjectChange("bucket", "outside", True, 13.0),
                ),
            ),
            ChangeMessage("r2", ()),  # a test event
        ]
    )
    listener = ChangeListener(feed, "bucket", "app/", flows)
    assert await listener.poll() == 2
    assert feed.acked == ["r1", "r2"]
    for f, target in zip(flows, targets, strict=True):
        assert f.figures.pending == {"a": (10.0, 0)}  # noticed: pending, counted in the RPO
        assert f.figures.watched_at is not None
        await f.settle_noticed()
        assert user_keys(target) == ["a"]
        assert f.figures.pending == {}
    assert await listener.poll() == 0


def notice(n: int, made: float, key: str = "app/k") -> ChangeMessage:
    return ChangeMessage(f"r{n}", (ObjectChange("bucket", f"{key}{n}", False, made),))


async def test_a_listener_behind_a_backlog_claims_nothing_until_it_drains_the_queue() -> None:
    now = {"t": 1000.0}
    f = flow(MemoryStore(), MemoryStore())
    assert await f.scan()  # the manifests are loaded: notices count as pending
    feed = FakeFeed(waiting=[notice(n, 900.0) for n in range(25)])
    listener = ChangeListener(
        feed, "bucket", "app/", [f], clock=lambda: now["t"], max_batches=2, delay_floor=5.0
    )
    assert await listener.poll() == 20  # two full batches: more may wait
    claimed = f.figures.watched_at
    assert claimed is None
    assert len(f.figures.pending) == 20 and len(feed.acked) == 20
    now["t"] = 1001.0
    assert await listener.poll() == 5  # a batch short of full: the queue was drained
    assert f.figures.watched_at == 1001.0 - 5.0  # less the delivery allowance
    assert len(f.figures.pending) == 25


async def test_a_notice_proven_late_widens_the_allowance_for_a_while() -> None:
    now = {"t": 1000.0}
    f = flow(MemoryStore(), MemoryStore())
    feed = FakeFeed()
    listener = ChangeListener(
        feed,
        "bucket",
        "app/",
        [f],
        clock=lambda: now["t"],
        delay_floor=5.0,
        lateness_memory=600.0,
    )
    assert await listener.poll() == 0
    assert f.figures.watched_at == 995.0
    # Made at 970, before the drain at 1000, yet only read at 1010: 30 s late at least.
    now["t"] = 1010.0
    feed.waiting = [notice(1, 970.0), notice(2, 1008.0)]
    assert await listener.poll() == 2
    assert listener.allowance(1010.0) == 30.0
    assert f.figures.watched_at == 1010.0 - 30.0
    # A later, smaller delay does not hide the larger one; a larger one replaces it.
    now["t"] = 1020.0
    feed.waiting = [notice(3, 1000.0)]
    assert await listener.poll() == 1
    assert listener.allowance(1020.0) == 30.0
    now["t"] = 1030.0
    feed.waiting = [notice(4, 960.0)]
    await listener.poll()
    assert listener.allowance(1030.0) == 60.0
    # Forgotten after lateness_memory: back to the floor.
    now["t"] = 1030.0 + 601.0
    await listener.poll()
    assert listener.allowance(now["t"]) == 5.0
    assert f.figures.watched_at == now["t"] - 5.0


async def test_notices_after_a_pause_in_polling_prove_no_delay() -> None:
    """Changes made after the last drain were not missed by it, however long ago it was."""
    now = {"t": 1000.0}
    f = flow(MemoryStore(), MemoryStore())
    feed = FakeFeed()
    listener = ChangeListener(feed, "bucket", "app/", [f], clock=lambda: now["t"])
    await listener.poll()
    now["t"] = 5000.0  # held, or the queue unreachable, for an hour
    feed.waiting = [notice(n, 1000.0 + n) for n in range(1, 8)]
    assert await listener.poll() == 7
    assert listener.allowance(5000.0) == listener.delay_floor


@given(
    st.lists(
        st.tuples(st.floats(0.0, 100.0), st.floats(0.0, 200.0)),  # (made ago, read after)
        max_size=30,
    )
)
def test_the_allowance_is_the_largest_recent_proven_delay(
    notices: list[tuple[float, float]],
) -> None:
    async def run() -> None:
        now = {"t": 10_000.0}
        feed = FakeFeed()
        listener = ChangeListener(
            feed,
            "bucket",
            "app/",
            [],
            clock=lambda: now["t"],
            delay_floor=5.0,
            lateness_memory=300.0,
        )
        proven: list[tuple[float, float]] = []
        await listener.poll()
        for n, (ago, after) in enumerate(notices):
            drained = now["t"]
            now["t"] += after
            made = drained - ago
            feed.waiting = [notice(n, made)]
            await listener.poll()
            proven.append((now["t"], drained - made))
            recent = [late for at, late in proven if at >= now["t"] - 300.0 and late > 5.0]
            assert listener.allowance(now["t"]) == max(recent, default=5.0)

    asyncio.run(run())


def test_history_used_for_unstamped_objects_comes_from_both_manifests() -> None:
    # The flow's policy knows epochs from the source's and the destination's manifests.
    async def run() -> EpochHistory:
        use1, usw2 = MemoryStore(), MemoryStore()
        old = Manifest(site="usw2", history=EpochHistory((EpochStart(1, 0.0, "use1"),)))
        usw2.write(manifest_key("", APP, "photos"), old.encode(1.0))
        f = flow(usw2, use1, epoch=2, since=1000.0, source_site="usw2", target_site="use1")
        await f.scan()
        return f.policy.history

    history = asyncio.run(run())
    assert [(s.epoch, s.site) for s in history] == [(1, "use1"), (2, "usw2")]


async def test_an_epoch_that_ends_while_a_body_streams_commits_nothing() -> None:
    """The epoch is checked again once the body is read, right before the store commits."""
    epoch_current = {"value": True}

    class Source(MemoryStore):
        async def open(self, key: str) -> OpenedObject | None:
            opened = await super().open(key)
            assert opened is not None
            inner = opened.chunks

            async def chunks() -> AsyncIterator[bytes]:
                async for chunk in inner:
                    yield chunk
                    epoch_current["value"] = False  # a failover is decided mid-copy

            return OpenedObject(opened.info, chunks(), opened.release)

    east, west = Source(), MemoryStore()
    east.chunk = 2
    east.write("a", b"some data")
    f = ObjectFlow(
        FlowSettings(app=APP, dataset="photos", epoch=1, checkpoint_interval=0),
        Location("use1", east),
        Location("usw2", west),
        current=lambda: epoch_current["value"],
    )
    assert not await f.scan()
    assert "a" not in west.objects


async def test_checkpoints_space_out_when_saving_the_manifest_takes_long() -> None:
    clock = {"now": 0.0}
    manifest = manifest_key("", APP, "photos")

    async def timed(key: str) -> None:
        """Each copy takes a second, each checkpoint three."""
        clock["now"] += 3.0 if key == manifest else 1.0

    east, west = MemoryStore(), MemoryStore(before_put=timed)
    for n in range(40):
        east.write(f"k{n:02}", b"x")
    f = ObjectFlow(
        FlowSettings(app=APP, dataset="photos", epoch=1, checkpoint_interval=1.0),
        Location("use1", east),
        Location("usw2", west),
        monotonic=lambda: clock["now"],
    )
    assert await f.scan()
    saves = [key for op, key in west.calls if op == "put" and key == manifest]
    # Every second by the interval; but a 3 s save spaces the next 60 s out: one save while
    # the 40 copies go, and the pass's last.
    assert len(saves) == 2
    assert len(user_keys(west)) == 40
    rows, _ = await stored(west)
    assert {k for k, row in rows.items() if row.entry is not None} == set(user_keys(west))


def test_a_page_is_encoded_the_same_whatever_the_order_of_its_rows() -> None:
    rows = [("a", Row(Entry("e", 1, 1, "s", "m"))), ("b", Row(None, ("x", "y")))]
    assert encode_page(rows) == encode_page(rows[::-1])
    assert decode_page(encode_page(rows)) == rows
