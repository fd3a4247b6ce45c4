"""A failover killed (SIGKILL) at each of its persisted steps ends in one consistent state,
at the same epoch, with no cloud call made twice.

`lifeboat run` runs as a process and is killed outright at each step of a region failover;
a new process then takes over (after the dead one's Lease expires). The cloud calls that
succeeded are counted at the fault proxies; every case expects the same fixed counts (each
of the failover's calls made exactly once), so each case stands alone (``-k shrink``):

* ``none``: not killed (the counts themselves);
* ``decided``: the failover is on record (status epoch 2), its DNS change never left;
* ``dns-submitted``: Route 53 carried the DNS change out, its answer never came back;
* ``dns-in-sync``: the change is on record as in sync, capacity not yet moved;
* ``capacity``: the standby's Auto Scaling group was resized, its answer never came back;
* ``shrink``: the old site's Auto Scaling group was shrunk to its standby size, its answer
  never came back;
* ``volume-restore``: the app has a volume dataset; the new site's CreateVolume (the
  restore from the newest copy) was carried out, its answer never came back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from sandbox.faults import ROUTE53_CHANGE, Fault, FaultProxy, FaultSpec
from sandbox.world import GLOBAL, Sandbox
from tests.fixtures.process import OperatorProcess
from tests.fixtures.world import Apps

pytestmark = pytest.mark.integration

WEST, EAST = "us-west-2", "us-east-1"
RESIZE = "UpdateAutoScalingGroup"
RESTORE = "CreateVolume"
STEPS = ("none", "decided", "dns-submitted", "dns-in-sync", "capacity", "shrink", "volume-restore")
EXPECTED = {
    "dns changes": 1,
    f"{EAST} resizes": 1,  # the old site shrinks to its standby size
    f"{WEST} resizes": 1,  # the new site grows to its active size
    f"{WEST} volumes made": 0,
}
"""The cloud calls a failover makes, killed or not; ``volume-restore`` makes one volume."""


def succeeded(proxy: FaultProxy, action: str) -> int:
    """Mutating calls of ``action`` (a glob) the cloud carried out (answered 2xx
    upstream, whether or not the answer reached the caller)."""
    return sum(
        1
        for r in proxy.records()
        if r.mutating and fnmatchcase(r.action, action) and r.status is not None and r.status < 300
    )


def calls(sandbox: Sandbox) -> dict[str, int]:
    return {
        "dns changes": succeeded(sandbox.proxies[GLOBAL], ROUTE53_CHANGE),
        f"{EAST} resizes": succeeded(sandbox.proxies[EAST], RESIZE),
        f"{WEST} resizes": succeeded(sandbox.proxies[WEST], RESIZE),
        f"{WEST} volumes made": succeeded(sandbox.proxies[WEST], RESTORE),
    }


def landed(proxy: FaultProxy, action: str) -> bool:
    """A call whose answer was lost has been carried out upstream."""
    return any(
        r.fault is Fault.LOST and fnmatchcase(r.action, action) and r.status is not None
        for r in proxy.records()
    )


def with_volume(volume_id: str) -> Callable[[dict[str, Any]], None]:
    """The app protects ``volume_id`` at use1 as the volume dataset ``db``, copied to usw2."""

    def mutate(body: dict[str, Any]) -> None:
        body["spec"]["replication"] = {
            "volumes": [
                {
                    "name": "db",
                    "intervalSeconds": 60,  # the first snapshot is taken at once
                    "retain": 2,
                    "locations": [{"site": "use1", "volumeIds": [volume_id]}, {"site": "usw2"}],
                }
            ]
        }

    return mutate


@pytest.mark.parametrize("step", STEPS)
def test_a_failover_killed_at_any_step_ends_the_same_with_no_call_made_twice(
    step: str, sandbox: Sandbox, app_harness: Apps, tmp_path: Path
) -> None:
    process = OperatorProcess.start(sandbox, tmp_path / "first.log")
    try:
        expected = dict(EXPECTED)
        if step == "volume-restore":
            east = sandbox.aws_client("ec2", EAST)
            volume = east.create_volume(AvailabilityZone=f"{EAST}c", Size=1)["VolumeId"]
            namespace, name = app_harness.create(with_volume(volume))
            expected[f"{WEST} volumes made"] = 1
        else:
            namespace, name = app_harness.create()
        app_harness.wait_serving(namespace, name, 90)

        def status() -> dict[str, Any]:
            return app_harness.status(namespace, name)

        def traffic_epoch() -> object:
            traffic = status().get("traffic")
            return traffic.get("epoch") if isinstance(traffic, dict) else None

        def copied() -> bool:
            entries = status().get("replication", [])
            return any(e["destination"] == "usw2" and e.get("copiedObjects", 0) for e in entries)

        if step == "volume-restore":
            process.wait_for(copied, 90, "a first copy of the volume's snapshot in usw2")
        before = calls(sandbox)

        kill_when: Callable[[], bool]
        if step == "decided":
            sandbox.proxies[GLOBAL].set_faults(
                FaultSpec(timeout=1.0, action=ROUTE53_CHANGE, max_hold=120)
            )
            kill_when = lambda: status().get("epoch") == 2  # noqa: E731
        elif step == "dns-submitted":
            sandbox.proxies[GLOBAL].set_faults(
                FaultSpec(lost=1.0, action=ROUTE53_CHANGE, max_hold=120, times=1)
            )
            kill_when = lambda: landed(sandbox.proxies[GLOBAL], ROUTE53_CHANGE)  # noqa: E731
        elif step == "dns-in-sync":
            sandbox.proxies[WEST].set_faults(FaultSpec(timeout=1.0, action=RESIZE, max_hold=120))
            kill_when = lambda: traffic_epoch() == 2  # noqa: E731
        elif step in ("capacity", "shrink", "volume-restore"):
            proxy, action = {
                "capacity": (sandbox.proxies[WEST], RESIZE),
                "shrink": (sandbox.proxies[EAST], RESIZE),
                "volume-restore": (sandbox.proxies[WEST], RESTORE),
            }[step]
            proxy.set_faults(FaultSpec(lost=1.0, action=action, max_hold=120, times=1))
            kill_when = lambda: landed(proxy, action)  # noqa: E731
        else:
            kill_when = lambda: False  # noqa: E731
        for endpoint in sandbox.zones.site_endpoints("use1"):
            endpoint.down()
        if step != "none":
            process.wait_for(kill_when, 60, f"the failover to reach step {step}")
            process.kill()
            for each in sandbox.proxies.values():
                each.clear_faults()
            process = OperatorProcess.start(sandbox, tmp_path / "second.log")

        def settled() -> bool:
            now = status()
            restores = now.get("volumeRestores", [])
            return (
                now.get("activeSite") == "usw2"
                and traffic_epoch() == 2
                and not now.get("actions")
                and app_harness.dns_weights(namespace, name) == {"use1": 0, "usw2": 100}
                and (
                    step != "volume-restore"
                    or any(r["site"] == "usw2" and r["epoch"] == 2 for r in restores)
                )
            )

        process.wait_for(settled, 120, "one consistent end state")
        time.sleep(3)  # any call still on its way lands before counting
        made = {k: v - before[k] for k, v in calls(sandbox).items()}
        assert status()["epoch"] == 2
        print(f"\nkilled at {step}: {made}")
        assert made == expected, f"killed at {step}: {made}, expected {expected}"
        if step == "volume-restore":
            (restore,) = [r for r in status()["volumeRestores"] if r["site"] == "usw2"]
            assert [v["volume"] for v in restore["volumes"]] == [volume]
            assert not restore.get("missing")
        app_harness.delete_all()
    finally:
        for each in sandbox.proxies.values():
            each.clear_faults()
        process.stop()
