"""The volume replication planner: schedule, copies, retention and figures, rule by rule,
and its invariants over random histories against an in-memory cloud."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.names import (
    TAG_COPY_OF,
    TAG_EPOCH,
    TAG_KIND,
    TAG_ORIGIN,
    TAG_TAKEN,
    TAG_VOLUME,
    TAG_VOLUME_ID,
)
from controller.providers.protocols import Snapshot
from controller.replication import volumes as rv

SCOPE = rv.Scope(app="shop/web", dataset="db", source="use1", epoch=1)
VOL = rv.SourceVolume("vol-a", "vol-a")
State = Literal["pending", "completed", "error"]
_ids = itertools.count(1)


def snap(
    site: str,
    taken: float,
    *,
    kind: Literal["snapshot", "copy"] = "snapshot",
    state: State = "completed",
    volume: str = "vol-a",
    epoch: int = 1,
    origin: str = "use1",
    copy_of: str = "",
    sid: str | None = None,
    created: float | None = None,
) -> Snapshot:
    tags = {
        **rv.listing_tags("shop/web", "db", site),
        TAG_VOLUME: volume,
        TAG_VOLUME_ID: volume,
        TAG_EPOCH: str(epoch),
        TAG_ORIGIN: origin,
        TAG_KIND: kind,
    }
    if kind == "copy":
        tags[TAG_COPY_OF] = copy_of
        tags[TAG_TAKEN] = f"{taken:.3f}"
    return Snapshot(
        sid or f"snap-{next(_ids)}",
        volume,
        site,
        state,
        taken if created is None and kind == "snapshot" else (created or taken + 1),
        8,
        tags,
    )


def plan(
    listings: Mapping[str, Iterable[Snapshot]],
    now: float,
    *,
    scope: rv.Scope = SCOPE,
    volumes: tuple[rv.SourceVolume, ...] = (VOL,),
    destinations: tuple[str, ...] = ("usw2",),
    interval: float = 60,
    retain: int = 2,
    stale: Iterable[str] = (),
    **options: object,
) -> rv.Plan:
    given_listings = {
        site: rv.Listing(tuple(items), fresh=site not in set(stale))
        for site, items in listings.items()
    }
    return rv.plan(
        scope,
        volumes,
        destinations,
        given_listings,
        now,
        interval=interval,
        retain=retain,
        **options,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- schedule


def test_first_snapshot_is_taken_at_once_then_every_interval() -> None:
    assert plan({"use1": [], "usw2": []}, 1000).takes == (rv.Take(VOL),)
    recent = snap("use1", 970)
    assert plan({"use1": [recent], "usw2": []}, 1000).takes == ()
    assert plan({"use1": [recent], "usw2": []}, 1031).takes == (rv.Take(VOL),)


def test_no_new_snapshot_while_one_is_pending() -> None:
    pending = snap("use1", 100, state="pending")
    assert plan({"use1": [pending], "usw2": []}, 10_000).takes == ()


def test_a_failed_snapshot_is_retried_after_a_quarter_interval() -> None:
    failed = snap("use1", 990, state="error")
    assert plan({"use1": [failed], "usw2": []}, 1000).takes == ()
    assert plan({"use1": [failed], "usw2": []}, 1006).takes == (rv.Take(VOL),)


def test_a_volume_that_is_not_ready_is_not_snapshotted_and_its_rpo_grows() -> None:
    creating = rv.SourceVolume("vol-b", "vol-restored", ready=False)
    copy = snap("usw2", 400, kind="copy", volume="vol-b", epoch=1)
    assert plan({"use1": [], "usw2": []}, 1000, volumes=(VOL, creating)).takes == (
        rv.Take(VOL),  # the ready one goes on
    )
    for now in (1000, 1600):
        result = plan({"use1": [], "usw2": [copy]}, now, volumes=(creating,))
        assert result.takes == ()
        assert [f.rpo_seconds for f in result.figures] == [now - 400]  # its copy ages
    ready = replace(creating, ready=True)
    assert rv.Take(ready) in plan({"use1": [], "usw2": [copy]}, 1000, volumes=(ready,)).takes


def test_which_volume_states_are_ready_for_a_snapshot() -> None:
    # EBS's and Cinder's words for a volume's state.
    ready = ["available", "in-use", "attaching", "backing-up", "maintenance", "extending"]
    making = ["creating", "restoring-backup", "downloading"]
    failed = ["error", "error_restoring", "error_extending", "deleting", "deleted", "not-found"]
    assert [s for s in ready + making + failed if rv.volume_ready(s)] == ready
    assert [s for s in ready + making + failed if rv.volume_failed(s)] == failed


def test_snapshots_of_another_epoch_or_volume_do_not_count() -> None:
    older_epoch = snap("use1", 990, epoch=1)
    newer = replace(SCOPE, epoch=2)
    assert plan({"use1": [older_epoch], "usw2": []}, 1000, scope=newer).takes == (rv.Take(VOL),)
    other = rv.SourceVolume("vol-a", "vol-successor")  # the volume behind the key changed
    assert plan({"use1": [older_epoch], "usw2": []}, 1000, volumes=(other,)).takes == (
        rv.Take(other),
    )


def test_tags_of_a_snapshot_and_its_copy() -> None:
    tags = SCOPE.snapshot_tags(VOL)
    assert tags == {
        "lifeboat.dev/app": "shop/web",
        "lifeboat.dev/dataset": "db",
        "lifeboat.dev/site": "use1",
        "lifeboat.dev/volume": "vol-a",
        "lifeboat.dev/volume-id": "vol-a",
        "lifeboat.dev/epoch": "1",
        "lifeboat.dev/origin": "use1",
        "lifeboat.dev/kind": "snapshot",
    }
    source = rv.holding(Snapshot("snap-1", "vol-a", "us-east-1", "completed", 12.3456, 8, tags))
    assert source is not None
    copy = SCOPE.copy_tags(source, "usw2")
    assert copy["lifeboat.dev/site"] == "usw2"
    assert (copy["lifeboat.dev/kind"], copy["lifeboat.dev/copy-of"]) == ("copy", "snap-1")
    assert copy["lifeboat.dev/taken"] == "12.346"
    parsed = rv.holding(Snapshot("snap-9", "vol-x", "us-west-2", "completed", 99.0, 8, copy))
    assert parsed is not None and parsed.data == source.data  # the copy holds the same data


def test_snapshots_without_lifeboat_tags_are_ignored() -> None:
    foreign = Snapshot("snap-x", "vol-a", "us-east-1", "completed", 1.0, 8, {"owner": "me"})
    broken = replace(snap("use1", 1), tags={**snap("use1", 1).tags, TAG_EPOCH: "x"})
    assert rv.holding(foreign) is None and rv.holding(broken) is None
    result = plan({"use1": [foreign, broken], "usw2": []}, 1000, retain=1)
    assert result.prunes == () and result.copies == ()


# --------------------------------------------------------------------------- copies


def test_the_newest_completed_snapshot_is_copied_to_every_destination() -> None:
    old, new = snap("use1", 100), snap("use1", 200)
    pending = snap("use1", 300, state="pending")
    result = plan(
        {"use1": [old, new, pending], "usw2": [], "eu": []}, 310, destinations=("usw2", "eu")
    )
    assert [(c.destination, c.source.id) for c in result.copies] == [
        ("usw2", new.id),
        ("eu", new.id),
    ]
    tags = SCOPE.copy_tags(result.copies[0].source, "usw2")
    assert tags["lifeboat.dev/taken"] == "200.000"


def test_nothing_is_copied_twice_nor_while_a_copy_is_in_flight() -> None:
    new = snap("use1", 200)
    copied = snap("usw2", 200, kind="copy", copy_of=new.id)
    assert plan({"use1": [new], "usw2": [copied]}, 210).copies == ()
    same_id = snap("usw2", 200, kind="copy", copy_of=new.id, sid=new.id)  # Cinder keeps IDs
    assert plan({"use1": [new], "usw2": [same_id]}, 210).copies == ()
    newer = snap("use1", 300)
    in_flight = snap("usw2", 200, kind="copy", copy_of=new.id, state="pending")
    assert plan({"use1": [new, newer], "usw2": [in_flight]}, 310).copies == ()
    assert [c.source.id for c in plan({"use1": [new, newer], "usw2": [copied]}, 310).copies] == [
        newer.id
    ]


def test_a_failed_copy_is_retried_after_a_quarter_interval() -> None:
    new = snap("use1", 200)
    failed = snap("usw2", 200, kind="copy", copy_of=new.id, state="error", created=205)
    assert plan({"use1": [new], "usw2": [failed]}, 210).copies == ()
    assert len(plan({"use1": [new], "usw2": [failed]}, 221).copies) == 1


def test_fencing_only_the_current_source_and_epoch_are_copied() -> None:
    stale_epoch = snap("use1", 500, epoch=1)
    after_failover = replace(SCOPE, source="usw2", epoch=2)
    old_primary_snapshot = snap("use1", 600, epoch=2, origin="use1")
    result = plan(
        {"usw2": [], "use1": [stale_epoch, old_primary_snapshot]},
        700,
        scope=after_failover,
        destinations=("use1",),
    )
    assert result.copies == ()  # usw2 has nothing of its own yet; use1's data is not a source
    assert result.takes == (rv.Take(VOL),)


def test_stale_listings_are_not_acted_on_but_still_count() -> None:
    new = snap("use1", 200)
    copied = snap("usw2", 100, kind="copy", copy_of="older")
    result = plan({"use1": [new], "usw2": [copied]}, 400, stale={"usw2"}, retain=1)
    assert result.copies == () and result.prunes == ()
    assert result.figures[0].rpo_seconds == 300  # the region is unreachable: the RPO grows
    blind = plan({"use1": [new], "usw2": []}, 400, stale={"use1"})
    assert blind.takes == ()  # the source could not be listed: nothing taken
    assert [c.source.id for c in blind.copies] == [new.id]  # EBS copies need no source call


def test_figures_only_while_the_direction_changes() -> None:
    result = plan({"use1": [snap("use1", 1)], "usw2": []}, 1000, act=False)
    assert (result.takes, result.copies, result.prunes) == ((), (), ())
    assert result.figures[0].pending == 1


# --------------------------------------------------------------------------- retention


def test_retention_keeps_the_newest_per_volume_and_site() -> None:
    source = [snap("use1", t) for t in (100, 200, 300, 400)]
    copies = [
        snap("usw2", t, kind="copy", copy_of=s.id)
        for t, s in zip((100, 200, 300), source, strict=False)
    ]
    other = [snap("use1", t, volume="vol-b") for t in (100, 200)]
    result = plan({"use1": [*source, *other], "usw2": copies}, 410, retain=2)
    pruned = {(p.site, p.holding.id) for p in result.prunes}
    assert pruned == {("use1", source[0].id), ("use1", source[1].id), ("usw2", copies[0].id)}
    assert all(p.reason == "retention" for p in result.prunes)


def test_a_backup_whose_copy_shares_its_id_is_pruned_only_where_every_site_prunes_it() -> None:
    """Cinder: the copy is the source's backup record imported elsewhere (same ID, same
    objects in the backup store); deleting either record deletes the other's data. It is
    pruned only once every site that lists it prunes it, whichever site is the source."""

    def copy(t: int) -> Snapshot:
        return snap("usw2", t, kind="copy", copy_of=f"backup-{t}", sid=f"backup-{t}")

    source = [snap("use1", t, sid=f"backup-{t}") for t in (100, 200, 300, 400)]
    # The destination lags: its newest completed copy is of the second backup.
    result = plan({"use1": source, "usw2": [copy(100), copy(200)]}, 410, retain=2)
    assert result.prunes == ()  # use1 would prune both, but usw2 keeps them
    result = plan({"use1": source, "usw2": [copy(t) for t in (100, 200, 300, 400)]}, 420, retain=2)
    pruned = {(p.site, p.holding.id) for p in result.prunes}
    assert pruned == {(site, f"backup-{t}") for site in ("use1", "usw2") for t in (100, 200)}
    # After a failover usw2 is the source and use1 a destination: the same rule, both ways.
    scope = rv.Scope(SCOPE.app, SCOPE.dataset, "usw2", 2)
    newer = snap("usw2", 500, sid="new-500", epoch=2, origin="usw2")
    result = plan(
        {"use1": source, "usw2": [copy(300), copy(400), newer]},
        520,
        scope=scope,
        destinations=("use1",),
        retain=1,
    )
    pruned = {(p.site, p.holding.id) for p in result.prunes}
    # use1 would prune 100, 200 and 300 (it keeps 400); usw2 would prune 300 and 400 (it
    # keeps its epoch-2 backup). backup-400 stays at usw2 too: use1 still keeps it.
    assert pruned == {
        ("use1", "backup-100"),
        ("use1", "backup-200"),
        ("use1", "backup-300"),
        ("usw2", "backup-300"),
    }


def test_retention_never_prunes_pending_protected_or_read_snapshots() -> None:
    source = [snap("use1", t) for t in (100, 200, 300)]
    reading = snap("usw2", 100, kind="copy", copy_of=source[0].id, state="pending")
    pending = snap("use1", 400, state="pending")
    result = plan(
        {"use1": [*source, pending], "usw2": [reading]},
        410,
        retain=1,
        protected={source[1].id},
    )
    assert [p.holding.id for p in result.prunes] == []


def test_failed_snapshots_are_pruned_once_an_interval_old() -> None:
    failed = snap("use1", 100, state="error")
    assert plan({"use1": [failed], "usw2": []}, 150).prunes == ()
    (prune,) = plan({"use1": [failed], "usw2": []}, 161).prunes
    assert (prune.holding.id, prune.reason) == (failed.id, "failed")


def test_after_failback_new_copies_push_out_the_old_primary_snapshots() -> None:
    """use1 was the source in epoch 1; usw2 is now (epoch 2) and copies reach use1."""
    scope = replace(SCOPE, source="usw2", epoch=2)
    old = [snap("use1", t) for t in (100, 200)]
    fresh = [snap("use1", t, kind="copy", epoch=2, origin="usw2") for t in (300, 400)]
    result = plan({"usw2": [], "use1": [*old, *fresh]}, 500, scope=scope, destinations=("use1",))
    assert {p.holding.id for p in result.prunes} == {o.id for o in old}


# --------------------------------------------------------------------------- figures


def test_rpo_is_the_age_of_the_newest_completed_copy_of_the_worst_volume() -> None:
    b = rv.SourceVolume("vol-b", "vol-b")
    listings = {
        "use1": [snap("use1", t) for t in (100, 200, 300)] + [snap("use1", 250, volume="vol-b")],
        "usw2": [
            snap("usw2", 200, kind="copy"),
            snap("usw2", 300, kind="copy", state="pending"),
            snap("usw2", 250, kind="copy", volume="vol-b"),
        ],
    }
    (figures,) = plan(listings, 400, volumes=(VOL, b)).figures
    assert figures.rpo_seconds == 200  # vol-a's newest completed copy holds data from t=200
    assert figures.newest_copy_time == 200
    assert figures.pending == 1  # vol-a's snapshot of t=300
    assert figures.copying == 1


def test_rpo_is_unknown_until_every_volume_has_a_copy_and_zero_without_volumes() -> None:
    (figures,) = plan({"use1": [snap("use1", 100)], "usw2": []}, 400).figures
    assert (figures.rpo_seconds, figures.newest_copy_time, figures.pending) == (None, None, 1)
    (empty,) = plan({"use1": [], "usw2": []}, 400, volumes=()).figures
    assert (empty.rpo_seconds, empty.pending) == (0.0, 0)


def test_a_newer_epoch_copy_outranks_older_data() -> None:
    old_own = snap("use1", 390, epoch=1)
    newer_copy = snap("use1", 380, kind="copy", epoch=2, origin="usw2")
    scope = replace(SCOPE, source="usw2", epoch=2)
    (figures,) = plan(
        {"usw2": [], "use1": [old_own, newer_copy]}, 400, scope=scope, destinations=("use1",)
    ).figures
    assert figures.rpo_seconds == 20  # the epoch-2 copy, not use1's own epoch-1 snapshot


# --------------------------------------------------------------------------- histories


@dataclass
class Cloud:
    """Regions holding snapshots; copies and snapshots complete after a delay."""

    delay: float
    fail_every: int
    now: float = 0.0
    held: dict[str, list[Snapshot]] = field(default_factory=dict)
    made: int = 0
    ready_at: dict[str, float] = field(default_factory=dict)

    def listing(self, site: str) -> rv.Listing:
        done = []
        for s in self.held.setdefault(site, []):
            if s.state == "pending" and self.ready_at[s.id] <= self.now:
                s = replace(s, state="completed")
            done.append(s)
        self.held[site] = done
        return rv.Listing(tuple(done))

    def _new(self, site: str, tags: dict[str, str]) -> None:
        self.made += 1
        failed = self.fail_every and self.made % self.fail_every == 0
        sid = f"s{self.made}"
        self.ready_at[sid] = self.now + self.delay
        state: State = "error" if failed else "pending"
        self.held[site].append(Snapshot(sid, "v", site, state, self.now, 8, tags))

    def carry_out(self, scope: rv.Scope, result: rv.Plan) -> None:
        for take in result.takes:
            self._new(scope.source, scope.snapshot_tags(take.volume))
        for copy in result.copies:
            self._new(copy.destination, scope.copy_tags(copy.source, copy.destination))
        for prune in result.prunes:
            self.held[prune.site] = [s for s in self.held[prune.site] if s.id != prune.holding.id]


@settings(max_examples=60, deadline=None)
@given(
    interval=st.sampled_from([60.0, 120.0, 300.0]),
    retain=st.integers(1, 4),
    delay=st.sampled_from([0.0, 5.0, 45.0, 200.0]),
    fail_every=st.sampled_from([0, 3, 7]),
    volumes=st.integers(1, 3),
    destinations=st.integers(1, 2),
    tick=st.sampled_from([10.0, 30.0]),
)
def test_histories_keep_their_invariants(
    interval: float,
    retain: int,
    delay: float,
    fail_every: int,
    volumes: int,
    destinations: int,
    tick: float,
) -> None:
    cloud = Cloud(delay, fail_every)
    sources = tuple(rv.SourceVolume(f"vol-{i}", f"vol-{i}") for i in range(volumes))
    sites = tuple(f"d{i}" for i in range(destinations))
    for _ in range(int(40 * interval / tick)):
        listings = {site: cloud.listing(site) for site in (SCOPE.source, *sites)}
        result = rv.plan(
            SCOPE, sources, sites, listings, cloud.now, interval=interval, retain=retain
        )
        for prune in result.prunes:
            h = prune.holding
            group = [
                x
                for x in map(rv.holding, listings[prune.site].snapshots)
                if x is not None and x.volume == h.volume and x.state == "completed"
            ]
            assert h.state != "pending"
            if h.state == "completed":
                assert max(group, key=lambda x: x.order) != h  # never the newest completed
                assert sum(1 for x in group if x.order > h.order) >= retain
        for copy in result.copies:
            assert copy.source.epoch == SCOPE.epoch and copy.source.origin == SCOPE.source
            assert copy.source.state == "completed"
        cloud.carry_out(SCOPE, result)
        cloud.now += tick
    # Bounded: per volume and site, at most ``retain`` completed plus what is in flight.
    for items in cloud.held.values():
        for volume in sources:
            completed = [
                s for s in items if s.tags[TAG_VOLUME] == volume.key and s.state == "completed"
            ]
            assert len(completed) <= retain + 2
    if not fail_every:
        listings = {site: cloud.listing(site) for site in (SCOPE.source, *sites)}
        figures = rv.plan(
            SCOPE, sources, sites, listings, cloud.now, interval=interval, retain=retain
        ).figures
        for f in figures:
            assert f.rpo_seconds is not None
            # Data reaches every destination within an interval, two copy delays and ticks.
            assert f.rpo_seconds <= interval + 2 * delay + 3 * tick
