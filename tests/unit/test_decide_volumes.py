"""The decision core and volume datasets: a failover calls for a volume restore at the new
site, once per epoch, after the traffic shift, never towards an Impaired region."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from controller.api.annotations import Request, RequestOp
from controller.api.models import ResilientAppSpec, ResilientAppStatus
from controller.core import decide as core
from controller.core import model as m
from controller.core.status import state_from_status, status_from_state
from tests.unit.test_decide import EAST, IMP, WEST, H, Run, spec_of


def with_volumes(**failover: Any) -> ResilientAppSpec:
    """The two sites of :func:`spec_of` with two volume datasets, ``db`` (two volumes) and
    ``logs`` (one), protected at use1 and replicated to usw2."""
    raw = spec_of(**failover).to_wire()
    raw["replication"] = {
        "volumes": [
            {
                "name": "db",
                "locations": [{"site": "use1", "volumeIds": ["vol-a", "vol-b"]}, {"site": "usw2"}],
            },
            {
                "name": "logs",
                "locations": [{"site": "use1", "volumeIds": ["vol-l"]}, {"site": "usw2"}],
            },
        ]
    }
    return ResilientAppSpec.model_validate(raw)


SPEC = with_volumes()


def restores(run: Run) -> list[m.RestoreVolumes]:
    return [a for a in run.actions() if isinstance(a, m.RestoreVolumes)]


def fail_over(run: Run) -> m.Decision:
    run.round()
    run.rounds(2, down={"use1"})
    return run.round(down={"use1"})


def test_no_restore_at_the_start_nor_without_volume_datasets() -> None:
    run = Run(spec=SPEC)
    run.rounds(3)
    assert restores(run) == []
    plain = Run(spec=spec_of())
    fail_over(plain)
    assert plain.state.active_site == "usw2"
    assert restores(plain) == []


def test_a_failover_restores_the_volume_datasets_after_the_traffic_shift() -> None:
    run = Run(spec=SPEC, apply=False)
    decision = fail_over(run)
    assert run.state.active_site == "usw2" and run.state.epoch == 2
    kinds = [a.kind for a in decision.actions]
    assert kinds[:2] == ["ShiftTraffic", "RestoreVolumes"]
    restore = decision.actions[1]
    assert isinstance(restore, m.RestoreVolumes)
    assert (restore.site, restore.region, restore.epoch) == ("usw2", WEST, 2)
    assert (restore.datasets, restore.from_site) == (("db", "logs"), "use1")
    assert restore.zones == ("us-west-2a", "us-west-2b")
    assert restore.id == "restore-volumes/usw2/epoch-2"
    again = run.round(down={"use1"})  # not carried out yet: due again, same identity
    assert [a.id for a in again.actions if isinstance(a, m.RestoreVolumes)] == [restore.id]


def test_a_completed_restore_is_recorded_and_never_repeated() -> None:
    run = Run(spec=SPEC, apply=False)
    decision = fail_over(run)
    restore = next(a for a in decision.actions if isinstance(a, m.RestoreVolumes))
    made = (m.RestoredVolume("db", "vol-a", "vol-x", "us-west-2a", "snap-1", 100.0),)
    run.state = core.complete(run.state, restore, run.t, restored=made, missing=("logs/vol-l",))
    assert run.state.restores["usw2"] == m.AppliedRestore(2, run.t, made, ("logs/vol-l",))
    later = run.rounds(3, down={"use1"})
    assert not any(isinstance(a, m.RestoreVolumes) for a in later.actions)


def test_a_restore_of_an_older_epoch_is_stale() -> None:
    run = Run(spec=SPEC, apply=False)
    decision = fail_over(run)
    restore = next(a for a in decision.actions if isinstance(a, m.RestoreVolumes))
    newer = replace(run.state, epoch=3)
    assert core.complete(newer, restore, run.t) == newer


def test_the_restore_avoids_failed_zones_of_the_new_site() -> None:
    run = Run(spec=SPEC, apply=False)
    run.round()
    run.rounds(2, down={"use1", "usw2/us-west-2b"})
    decision = run.round(down={"use1", "usw2/us-west-2b"})
    (restore,) = [a for a in decision.actions if isinstance(a, m.RestoreVolumes)]
    assert restore.zones == ("us-west-2a",)


def test_a_restore_towards_an_impaired_region_is_held() -> None:
    run = Run(spec=SPEC, apply=False)
    fail_over(run)
    decision = run.round(down={"use1"}, api={WEST: IMP})
    assert not any(isinstance(a, m.RestoreVolumes) for a in decision.actions)
    (held,) = [h for h in decision.held if isinstance(h.action, m.RestoreVolumes)]
    assert "us-west-2" in held.reason and "static stability" in held.reason
    # and it never asks anything of the failed site's region
    assert all(a.region != EAST for a in restores(run))


def test_failback_restores_at_the_old_primary_under_the_new_epoch() -> None:
    run = Run(spec=SPEC)
    fail_over(run)
    run.rounds(40)
    run.round(request=Request("back", RequestOp.FAILBACK))
    assert (run.state.active_site, run.state.epoch) == ("use1", 3)
    assert [(r.site, r.epoch, r.from_site) for r in restores(run)] == [
        ("usw2", 2, "use1"),
        ("use1", 3, "usw2"),
    ]
    assert {site: r.epoch for site, r in run.state.restores.items()} == {"usw2": 2, "use1": 3}


def test_observe_and_unapproved_manual_modes_restore_nothing() -> None:
    for mode in ("Observe", "Manual"):
        run = Run(spec=with_volumes(mode=mode))
        fail_over(run)
        assert restores(run) == []


def test_restores_survive_a_round_trip_through_status() -> None:
    run = Run(spec=SPEC, apply=False)
    decision = fail_over(run)
    restore = next(a for a in decision.actions if isinstance(a, m.RestoreVolumes))
    made = (
        m.RestoredVolume("db", "vol-a", "vol-x", "us-west-2a", "snap-1", 100.25),
        m.RestoredVolume("db", "vol-b", "vol-y", "us-west-2b", "snap-2", None),
    )
    run.state = core.complete(run.state, restore, 1000.5, restored=made, missing=("logs/vol-l",))
    status = status_from_state(
        replace(decision, state=run.state),
        SPEC,
        ResilientAppStatus(),
        observations=m.Observations(api_planes={EAST: H, WEST: H}),
        running=restore.id,
        generation=1,
        now=run.t,
    )
    wire = status.to_wire()
    assert wire["volumeRestores"][0]["volumes"][0] == {
        "dataset": "db",
        "volume": "vol-a",
        "volumeId": "vol-x",
        "zone": "us-west-2a",
        "snapshotId": "snap-1",
        "snapshotTime": "1970-01-01T00:01:40.250Z",
    }
    back = state_from_status(ResilientAppStatus.model_validate(wire), SPEC)
    assert back.restores == run.state.restores
    assert core.desired_restore(back, SPEC) is None
    # a restore that was running when the operator stopped is due again after a restart
    running = state_from_status(
        ResilientAppStatus.model_validate({**wire, "volumeRestores": []}), SPEC
    )
    assert core.desired_restore(running, SPEC) == restore


def test_restores_of_sites_removed_from_the_spec_are_forgotten() -> None:
    state = m.AppState(
        active_site="use1",
        restores={"gone": m.AppliedRestore(2, 1.0), "usw2": m.AppliedRestore(3, 2.0)},
    )
    decision = core.decide(state, m.Observations(), SPEC, 10.0)
    assert set(decision.state.restores) == {"usw2"}
