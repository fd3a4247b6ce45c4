"""A failover killed (SIGKILL) at each of its persisted steps ends in one consistent state,
at the same epoch, with no cloud call made twice.

`lifeboat run` runs as a process and is killed outright at each step of a region failover;
a new process then takes over (after the dead one's Lease expires). The cloud calls that
succeeded are counted at the fault proxies and compared with a run killed nowhere:

* ``decided``: the failover is on record (status epoch 2), its DNS change never left;
* ``dns-submitted``: Route 53 carried the DNS change out, its answer never came back;
* ``dns-in-sync``: the change is on record as in sync, capacity not yet moved;
* ``capacity``: the standby's Auto Scaling group was resized, its answer never came back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from sandbox.faults import ROUTE53_CHANGE, Fault, FaultProxy, FaultSpec
from sandbox.world import GLOBAL, Sandbox
from tests.fixtures.process import OperatorProcess
from tests.fixtures.world import Apps

pytestmark = pytest.mark.integration

WEST, EAST = "us-west-2", "us-east-1"
RESIZE = "UpdateAutoScalingGroup"
STEPS = ("none", "decided", "dns-submitted", "dns-in-sync", "capacity")
_BASELINE: dict[str, int] = {}


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
    }


def landed(proxy: FaultProxy, action: str) -> bool:
    """A call whose answer was lost has been carried out upstream."""
    return any(
        r.fault is Fault.LOST and fnmatchcase(r.action, action) and r.status is not None
        for r in proxy.records()
    )


@pytest.mark.parametrize("step", STEPS)
def test_a_failover_killed_at_any_step_ends_the_same_with_no_call_made_twice(
    step: str, sandbox: Sandbox, app_harness: Apps, tmp_path: Path
) -> None:
    process = OperatorProcess.start(sandbox, tmp_path / "first.log")
    try:
        namespace, name = app_harness.create()
        app_harness.wait_serving(namespace, name, 90)
        before = calls(sandbox)

        def status() -> dict[str, object]:
            return app_harness.status(namespace, name)

        def traffic_epoch() -> object:
            traffic = status().get("traffic")
            return traffic.get("epoch") if isinstance(traffic, dict) else None

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
        elif step == "capacity":
            sandbox.proxies[WEST].set_faults(
                FaultSpec(lost=1.0, action=RESIZE, max_hold=120, times=1)
            )
            kill_when = lambda: landed(sandbox.proxies[WEST], RESIZE)  # noqa: E731
        else:
            kill_when = lambda: False  # noqa: E731
        for endpoint in sandbox.zones.site_endpoints("use1"):
            endpoint.down()
        if step != "none":
            process.wait_for(kill_when, 60, f"the failover to reach step {step}")
            process.kill()
            for proxy in sandbox.proxies.values():
                proxy.clear_faults()
            process = OperatorProcess.start(sandbox, tmp_path / "second.log")

        def settled() -> bool:
            now = status()
            return (
                now.get("activeSite") == "usw2"
                and traffic_epoch() == 2
                and not now.get("actions")
                and app_harness.dns_weights(namespace, name) == {"use1": 0, "usw2": 100}
            )

        process.wait_for(settled, 120, "one consistent end state")
        time.sleep(3)  # any call still on its way lands before counting
        made = {k: v - before[k] for k, v in calls(sandbox).items()}
        assert status()["epoch"] == 2
        print(f"\nkilled at {step}: {made}")
        if step == "none":
            _BASELINE.update(made)
        elif _BASELINE:
            assert made == _BASELINE, f"killed at {step}: {made}, not killed: {_BASELINE}"
        app_harness.delete_all()
    finally:
        for proxy in sandbox.proxies.values():
            proxy.clear_faults()
        process.stop()
