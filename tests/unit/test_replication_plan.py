"""Object replication, decided: epochs, per-key plans, listing pairing, manifests, figures
and the bandwidth bucket (all pure)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.models import ReplicationStatus
from controller.providers.protocols import ObjectInfo
from controller.replication.epochs import EpochHistory, EpochStart
from controller.replication.figures import (
    FlowFigures,
    Pending,
    describe_rpo,
    replication_conditions,
    replication_lag,
)
from controller.replication.limits import TokenBucket
from controller.replication.manifest import Manifest, ManifestError, Totals, manifest_key
from controller.replication.plan import (
    STAMP_EPOCH,
    STAMP_SOURCE_ETAG,
    Conflict,
    Copy,
    Delete,
    Entry,
    ListingOrderError,
    Policy,
    Record,
    Side,
    Unreplicated,
    held_at_source,
    ordered,
    origin,
    pair_listings,
    plan_key,
    relative,
)

# Epoch 1 began with use1 active; epoch 2 at t=1000 with usw2 (a failover).
HISTORY = EpochHistory((EpochStart(1, 0.0, "use1"), EpochStart(2, 1000.0, "usw2")))
KEEP = Policy(2, HISTORY)
PROPAGATE = Policy(2, HISTORY, propagate_deletes=True)


def obj(
    key: str = "k",
    etag: str = "e1",
    size: int = 10,
    mtime: float = 500.0,
    metadata: dict[str, str] | None = None,
    md5: str | None = None,
) -> ObjectInfo:
    return ObjectInfo(key, size, etag, mtime, metadata or {}, md5)


def stamped(epoch: int, source_etag: str, **kwargs: object) -> ObjectInfo:
    metadata = {STAMP_EPOCH: str(epoch), STAMP_SOURCE_ETAG: source_etag}
    return obj(metadata=metadata, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- epochs


def test_the_epoch_in_force_at_a_moment() -> None:
    assert HISTORY.epoch_at(10.0) == 1
    assert HISTORY.epoch_at(999.9) == 1
    assert HISTORY.epoch_at(1000.0) == 2
    assert HISTORY.epoch_at(5000.0) == 2
    later = EpochHistory((EpochStart(3, 100.0, "a"),))
    assert later.epoch_at(1.0) == 3  # older than anything known: the first epoch known
    assert EpochHistory().epoch_at(1.0) == 0


def test_histories_merge_keeping_the_earliest_start_and_the_current_epoch_is_added() -> None:
    a = [EpochStart(1, 0.0, "use1"), EpochStart(2, 1000.0, "usw2")]
    b = [EpochStart(2, 990.0, "usw2"), EpochStart(3, 2000.0, "use1")]
    merged = EpochHistory.merge(a, b)
    assert [(s.epoch, s.since) for s in merged] == [(1, 0.0), (2, 990.0), (3, 2000.0)]
    # The current epoch's start, when known, is recorded as given.
    current = merged.with_current(4, "usw2", 3000.0)
    assert current.epoch_at(3000.0) == 4
    # Unknown: taken as the latest start known, never earlier.
    unknown = merged.with_current(4, "usw2", None)
    assert [s.since for s in unknown if s.epoch == 4] == [2000.0]
    assert EpochHistory().with_current(1, "use1", None).epoch_at(0.0) == 1
    # An epoch already recorded keeps its start.
    assert [s.since for s in merged.with_current(2, "usw2", None) if s.epoch == 2] == [990.0]


def test_history_round_trips_and_skips_garbage() -> None:
    assert EpochHistory.from_wire(HISTORY.to_wire()) == HISTORY
    assert EpochHistory.from_wire([[1, 0, "a"], "x", [2, "t", "b"], [3]]).to_wire() == [
        [1, 0.0, "a"]
    ]
    assert EpochHistory.from_wire(None) == EpochHistory()


# --------------------------------------------------------------------------- per key


def test_missing_at_the_destination_is_copied_since_the_source_changed() -> None:
    step = plan_key("k", Side(obj(mtime=42.0)), Side(None), KEEP)
    assert isinstance(step, Copy)
    assert (step.since, step.target, step.resolved) == (42.0, None, True)
    assert step.source_epoch is None  # learnt from the source's HEAD when copying


@pytest.mark.parametrize(
    ("source", "target", "why"),
    [
        (Side(obj(etag="x")), Side(obj(etag="x")), "equal ETags"),
        (Side(obj(etag="x")), Side(obj(etag="y"), Entry("y", 10, 1, "x")), "our copy of x"),
        (Side(obj(etag="x"), Entry("x", 10, 1, "y")), Side(obj(etag="y")), "source copied from y"),
        (
            Side(obj(etag="x"), Entry("x", 10, 1, "o")),
            Side(obj(etag="y"), Entry("y", 10, 1, "o")),
            "both copies of o",
        ),
        (Side(obj(etag="x")), Side(stamped(1, "x", etag="y"), headed=True), "stamped copy of x"),
        (Side(obj(etag="x", md5="m")), Side(obj(etag="y"), Entry("y", 10, 1, None, "m")), "md5"),
    ],
)
def test_the_same_content_moves_nothing(source: Side, target: Side, why: str) -> None:
    step = plan_key("k", source, target, KEEP)
    # Nothing moves; the destination's entry records that the source held that version
    # under this epoch (once: recorded, the next plan has nothing to say).
    assert isinstance(step, Record), why
    assert step.entry.held == 2
    assert step.entry.etag == target.info.etag  # type: ignore[union-attr]
    if target.entry is not None and target.entry.matches(target.info):  # type: ignore[arg-type]
        assert step.entry == replace(target.entry, held=2)
    else:
        assert step.entry.source_etag == source.info.etag  # type: ignore[union-attr]
    assert plan_key("k", source, replace(target, entry=step.entry), KEEP) is None, why


def test_a_different_size_is_never_the_same_content() -> None:
    step = plan_key("k", Side(obj(etag="x", size=1)), Side(obj(etag="x", size=2)), KEEP)
    assert isinstance(step, Copy)


def test_a_changed_source_needs_the_destinations_epoch_before_copying() -> None:
    # The manifest's entry no longer matches what is listed: provenance unknown.
    step = plan_key("k", Side(obj(etag="new")), Side(obj(etag="old"), Entry("zzz", 10)), KEEP)
    assert isinstance(step, Copy) and not step.resolved
    # Known from the manifest: resolved at once.
    known = Side(obj(etag="old"), Entry("old", 10, 1, "older"))
    source = Side(stamped(2, "a", etag="new"), headed=True)
    step = plan_key("k", source, known, KEEP)
    assert isinstance(step, Copy) and step.resolved and step.source_epoch == 2


def test_an_older_epoch_never_overwrites_a_newer_one() -> None:
    # The new primary's source object is a copy from epoch 1; the destination (the old
    # primary) got a write after the failover at t=1000: epoch 2.
    source = Side(stamped(1, "orig", etag="s1", mtime=900.0), headed=True)
    stray = Side(obj(etag="d2", mtime=1500.0), headed=True)
    step = plan_key("k", source, stray, KEEP)
    assert isinstance(step, Conflict)
    assert (step.source_epoch, step.target_epoch) == (1, 2)
    assert "epoch 2" in step.reason
    # Written before the failover (epoch 1, the unreplicated tail): the source wins.
    tail = Side(obj(etag="d1", mtime=999.0), headed=True)
    step = plan_key("k", source, tail, KEEP)
    assert isinstance(step, Copy) and step.resolved


def test_deletes_follow_the_policy() -> None:
    # Held at the source under this epoch (found there by this flow), gone since: the app
    # deleted it there.
    seen = Side(obj(etag="y"), Entry("y", 10, 1, "x", held=2))
    assert plan_key("k", Side(None), seen, KEEP) is None
    assert isinstance(plan_key("k", Side(None), seen, PROPAGATE), Delete)
    # The source's manifest (written while it was a destination) lists that very version.
    listed = Side(None, Entry("x", 10, 1, "y"))
    step = plan_key("k", listed, Side(obj(etag="y", mtime=10.0)), PROPAGATE)
    assert isinstance(step, Delete) and step.resolved
    # A copy made under this epoch: its source version was written under this epoch.
    fresh_copy = Side(stamped(2, "x", etag="y", mtime=1200.0), headed=True)
    assert isinstance(plan_key("k", Side(None), fresh_copy, PROPAGATE), Delete)
    # Unknown provenance, written here during this epoch: read it first.
    unknown = plan_key("k", Side(None), Side(obj(etag="y", mtime=1200.0)), PROPAGATE)
    assert isinstance(unknown, Delete) and not unknown.resolved
    # Written by the app here during this epoch (split brain): kept.
    fresh = Side(obj(etag="y", mtime=1200.0), headed=True)
    refused = plan_key("k", Side(None), fresh, PROPAGATE)
    assert isinstance(refused, Conflict) and refused.source_etag == ""
    assert plan_key("k", Side(None), Side(None), PROPAGATE) is None


@pytest.mark.parametrize("policy", [KEEP, PROPAGATE], ids=["Keep", "Propagate"])
def test_the_old_primarys_unreplicated_tail_is_kept_and_reported(policy: Policy) -> None:
    """Written before the failover (epoch 1) and never at the new primary: never deleted,
    whatever the delete policy; no HEAD needed to know it is older than the epoch."""
    for target in (
        Side(obj(etag="y", mtime=10.0)),  # by its modification time
        Side(obj(etag="y", mtime=10.0), headed=True),  # read: no stamp
        Side(obj(etag="y"), Entry("y", 10, 1, None)),  # by its entry
        Side(obj(etag="y"), Entry("y", 10, 1, "x", held=1)),  # a copy held under epoch 1
        Side(stamped(1, "x", etag="y", mtime=1200.0), headed=True),  # another site's copy
    ):
        step = plan_key("k", Side(None), target, policy)
        assert isinstance(step, Unreplicated), target
        assert (step.key, step.epoch, step.target) == ("k", 1, target.info)
    # Another version than the one the source's manifest lists: a rewrite never sent.
    rewritten = plan_key("k", Side(None, Entry("x", 10, 1)), Side(obj(etag="y")), policy)
    assert isinstance(rewritten, Unreplicated)


sides = st.builds(
    Side,
    st.one_of(
        st.none(),
        st.builds(
            obj,
            key=st.just("k"),
            etag=st.sampled_from(["a", "b", "c"]),
            size=st.sampled_from([1, 2]),
            mtime=st.sampled_from([5.0, 1500.0]),
            metadata=st.one_of(
                st.just({}),
                st.builds(
                    lambda e, s: {STAMP_EPOCH: str(e), STAMP_SOURCE_ETAG: s},
                    st.integers(1, 2),
                    st.sampled_from(["a", "b", "c"]),
                ),
            ),
        ),
    ),
    st.one_of(
        st.none(),
        st.builds(
            Entry,
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from([1, 2]),
            st.one_of(st.none(), st.integers(1, 2)),
            st.one_of(st.none(), st.sampled_from(["a", "b", "c"])),
            st.none(),
            st.one_of(st.none(), st.integers(1, 2)),
        ),
    ),
    st.booleans(),
)


@given(source=sides, target=sides, propagate=st.booleans())
@settings(max_examples=400, deadline=None)
def test_plans_keep_the_rules(source: Side, target: Side, propagate: bool) -> None:
    policy = Policy(2, HISTORY, propagate)
    step = plan_key("k", source, target, policy)
    if isinstance(step, Delete):
        assert propagate and source.info is None
        if step.resolved and not held_at_source(source, target, policy):
            # Never an object of an older epoch that the source is not known to have had.
            assert target.info is not None
            copy, epoch = origin(target, HISTORY)
            assert copy is True and epoch is not None and epoch >= 2
    if isinstance(step, Unreplicated):
        assert source.info is None and step.epoch < 2
        assert not held_at_source(source, target, policy)
    if isinstance(step, Copy):
        assert source.info is not None
        if step.resolved and target.info is not None and target.headed:
            stamp = target.info.metadata.get(STAMP_EPOCH)
            written = int(stamp) if stamp else HISTORY.epoch_at(target.info.last_modified)
            assert step.source_epoch is not None and written <= step.source_epoch
    if isinstance(step, Conflict):
        assert step.source_epoch is None or step.target_epoch > step.source_epoch
    s, d = source.info, target.info
    if s is not None and d is not None and (s.etag, s.size) == (d.etag, d.size):
        assert step is None or isinstance(step, Record)  # never moved twice
    if source.headed and target.headed and step is not None:
        assert not isinstance(step, Copy | Delete) or step.resolved  # HEADs settle it


# --------------------------------------------------------------------------- listings


async def listing(keys: Iterable[str]) -> AsyncIterator[ObjectInfo]:
    for key in keys:
        yield obj(key=key)
        await asyncio.sleep(0)


async def paired(a: list[str], b: list[str]) -> list[tuple[str, bool, bool]]:
    return [
        (key, s is not None, d is not None)
        async for key, s, d in pair_listings(listing(a), listing(b))
    ]


@given(
    a=st.sets(st.text("abc/é", min_size=1, max_size=4)),
    b=st.sets(st.text("abc/é", min_size=1, max_size=4)),
)
@settings(max_examples=200, deadline=None)
def test_listings_pair_up_like_a_join(a: set[str], b: set[str]) -> None:
    got = asyncio.run(paired(sorted(a), sorted(b)))
    assert got == [(k, k in a, k in b) for k in sorted(a | b)]


async def test_listings_are_made_relative_and_checked_for_order() -> None:
    keys = ["data/.lifeboat/replication/x.json", "data/a", "data/b/c", "other"]
    got = [i.key async for i in ordered(listing(keys), "data/")]
    assert got == ["a", "b/c"]
    assert relative(".lifeboat/x", "") is None
    assert relative("data/", "data/") is None
    with pytest.raises(ListingOrderError):
        [i async for i in ordered(listing(["b", "a"]), "")]


# --------------------------------------------------------------------------- manifests


def test_manifest_round_trips() -> None:
    manifest = Manifest(
        site="usw2",
        entries={"a": Entry("e", 3, 1, "s", "m", 2), "b/ü": Entry("f", 0)},
        history=HISTORY,
        conflicts={"c": ("x", "y")},
        unreplicated={"d": ("g", 5, 1)},
        totals=Totals(copied_objects=2, copied_bytes=3, deletes=1, errors=4, conflicts=1),
    )
    again = Manifest.decode(manifest.encode(now=123.0))
    assert again.entries == manifest.entries
    assert (again.history, again.conflicts, again.unreplicated, again.totals) == (
        HISTORY,
        {"c": ("x", "y")},
        {"d": ("g", 5, 1)},
        manifest.totals,
    )
    assert (again.site, again.saved_at) == ("usw2", 123.0)
    assert (
        manifest_key("p/", "shop/web", "photos") == "p/.lifeboat/replication/shop/web/photos.json"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"format": "other"}',
        b'{"format": "lifeboat.dev/replication-manifest", "version": 9}',
        b'{"format": "lifeboat.dev/replication-manifest", "version": 1, "objects": {"a": [1]}}',
    ],
)
def test_a_damaged_manifest_is_refused(data: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.decode(data)


# --------------------------------------------------------------------------- figures


def test_rpo_is_the_age_of_the_oldest_change_that_may_be_missing() -> None:
    figures = FlowFigures("photos", "usw2", "use1", 1)
    assert figures.rpo(100.0) is None  # never listed
    figures.listed_at, figures.blind = 90.0, False
    assert figures.rpo(90.0) == 0.0
    assert figures.rpo(100.0) == 10.0  # anything written since the listing may be missing
    figures.pending = Pending.of({"a": (70.0, 5), "b": (80.0, 7)})
    assert figures.rpo(100.0) == 30.0
    status = figures.status(100.0)
    assert (status.pending_objects, status.pending_bytes, status.rpo_seconds) == (2, 12, 30.0)
    assert status.oldest_pending_time == "1970-01-01T00:01:10Z"
    # Change notices read at t=99: only what came after is unknown.
    figures.pending = Pending()
    figures.watched_at = 99.0
    assert figures.rpo(100.0) == 1.0
    # Blind (cannot list, or held): notices do not count; nothing is known since the listing.
    figures.blind = True
    assert figures.rpo(200.0) == 110.0


def entry(destination: str, rpo: float | None, dataset: str = "photos") -> ReplicationStatus:
    return ReplicationStatus(
        dataset=dataset, destination=destination, kind="Objects", source="use1", rpo_seconds=rpo
    )


def test_lag_per_site_is_the_worst_rpo_and_unknown_wins() -> None:
    entries = [
        entry("usw2", 5.0),
        entry("usw2", 9.0, "logs"),
        entry("euc1", None),
        entry("euc1", 1.0, "logs"),
    ]
    assert replication_lag(entries) == {"usw2": 9.0, "euc1": None}
    assert replication_lag([]) == {}


def test_conditions_from_figures() -> None:
    replicating, breached = replication_conditions([entry("usw2", 5.0)], 30.0)
    assert (replicating[0], breached[0]) == ("True", "False")
    replicating, breached = replication_conditions([entry("usw2", 5.0), entry("euc1", 31.0)], 30.0)
    assert (replicating[0], replicating[1], breached[0]) == ("False", "RPOBreached", "True")
    assert "photos -> euc1" in breached[2] and "usw2" not in breached[2]
    replicating, breached = replication_conditions([entry("usw2", None)], 30.0)
    assert (replicating[0], breached[0], breached[1]) == ("False", "Unknown", "RPOUnknown")
    replicating, breached = replication_conditions([], 30.0)
    assert (replicating[0], breached[0]) == ("False", "False")
    assert describe_rpo([entry("usw2", 5.0), entry("euc1", 31.0)], 30.0).startswith(
        "RPO target 30s; photos -> euc1 31s"
    )


# --------------------------------------------------------------------------- bandwidth


def test_token_bucket_paces_at_the_rate() -> None:
    bucket = TokenBucket(rate=100.0, burst=100.0)
    assert bucket.take(100, now=0.0) == 0.0  # the burst
    assert bucket.take(50, now=0.0) == pytest.approx(0.5)  # in debt: wait
    assert bucket.take(50, now=1.0) == 0.0  # refilled 100, 50 owed
    assert bucket.take(1000, now=1.0) == pytest.approx(
        10.0
    )  # larger than the burst: passes, slowly
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0, burst=1)


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=50))
def test_token_bucket_never_exceeds_rate_plus_burst(sizes: list[int]) -> None:
    bucket = TokenBucket(rate=1000.0, burst=500.0)
    now = 0.0
    for size in sizes:
        now += bucket.take(size, now)  # a taker waits as told, then sends
    assert sum(sizes) <= 500.0 + 1000.0 * now + 1e-6
