"""Two operators, one Lease: only the leader acts, and the standby takes over."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from controller.operator.runner import in_background
from controller.sandbox.world import Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = pytest.mark.integration


def test_only_the_lease_holder_acts_and_the_standby_takes_over(
    sandbox: Sandbox, app_harness: Apps
) -> None:
    config = sandbox.operator_config()
    with ExitStack() as second:
        with ExitStack() as first:
            first.enter_context(in_background(config))
            standby = second.enter_context(in_background(config, wait_ready=False))
            namespace, name = app_harness.create()
            app_harness.wait_serving(namespace, name)
            for endpoint in sandbox.zones.site_endpoints("use1"):
                endpoint.stop()
            wait_for(
                lambda: app_harness.status(namespace, name).get("traffic", {}).get("epoch") == 2,
                30,
                "the failover to be applied",
            )
            assert not standby.is_set()  # the standby never ran a handler
            events = app_harness.events(namespace, name)
            assert [r for _, r, _ in events].count("FailoverStarted") == 1
            assert [r for _, r, _ in events].count("TrafficShifted") == 2  # epoch 1, epoch 2
        # The leader stopped and released the Lease: the standby takes over at once.
        wait_for(standby.is_set, 15, "the standby to take over")
        for endpoint in sandbox.zones.site_endpoints("use1"):
            endpoint.serve()
        wait_for(
            lambda: app_harness.status(namespace, name).get("healthyZones") == "6/6",
            30,
            "the new leader to probe the app",
        )
        app_harness.delete_all()
