"""Two shards on one cluster: each app is served by exactly one operator process, each
shard elects its own leader, and a region failure fails every app over once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest

from controller.api.names import FINALIZER
from controller.operator.shards import Shard
from sandbox.world import CONTROLLER_NAMESPACE, Sandbox
from tests.fixtures.process import OperatorProcess
from tests.fixtures.world import Apps
from tests.integration.test_metrics_exported import scrape, value

pytestmark = pytest.mark.integration

SHARDS = 2


@pytest.fixture
def shard_leases(sandbox: Sandbox) -> Iterator[None]:
    with sandbox.shard_leases(SHARDS):
        yield


@pytest.fixture
def shards(sandbox: Sandbox, tmp_path: Path, shard_leases: None) -> Iterator[list[OperatorProcess]]:
    started = [
        OperatorProcess.start(sandbox, tmp_path / f"shard-{i}.log", f"--shard={i}/{SHARDS}")
        for i in range(SHARDS)
    ]
    try:
        yield started
    finally:
        for operator in started:
            operator.stop()


def _holders(sandbox: Sandbox) -> dict[str, str]:
    api = kubernetes.client.CoordinationV1Api(sandbox.kube.api_client())
    leases: list[kubernetes.client.V1Lease] = api.list_namespaced_lease(CONTROLLER_NAMESPACE).items
    names = {str(lease.metadata.name): lease for lease in leases if lease.metadata is not None}
    return {
        name: str(lease.spec.holder_identity or "") if lease.spec is not None else ""
        for name, lease in names.items()
        if name.startswith("lifeboat")
    }


def test_each_app_is_served_by_one_shard_and_fails_over_once(
    sandbox: Sandbox, app_harness: Apps, shards: list[OperatorProcess]
) -> None:
    apps: list[tuple[str, str]] = []
    owners: dict[tuple[str, str], int] = {}

    def left_by_one_operator(body: dict[str, object]) -> None:
        """The first app comes with the finalizer of an unsharded operator, as if the
        shards had just replaced it: its owner takes that one off."""
        meta = body["metadata"]
        assert isinstance(meta, dict)
        meta["finalizers"] = [FINALIZER]

    try:
        while min([*map(list(owners.values()).count, range(SHARDS))]) < 2:
            app = app_harness.create(None if apps else left_by_one_operator)
            apps.append(app)
            owners[app] = Shard(0, SHARDS).of(*app)
        for namespace, name in apps:
            app_harness.wait_serving(namespace, name, timeout=60)

        # Each app holds its owner's finalizer alone: no shard takes off another's.
        for (namespace, name), owner in owners.items():

            def alone(app: tuple[str, str] = (namespace, name), owner: int = owner) -> bool:
                held = app_harness.get(*app)["metadata"].get("finalizers")
                return bool(held == [Shard(owner, SHARDS).finalizer])

            shards[owner].wait_for(alone, 30, f"{namespace}/{name} to hold its owner's finalizer")
        for operator in shards:
            assert "status kept changing under the write" not in operator.tail(2000)

        # Each shard has a leader of its own; neither holds the unsharded Lease (which an
        # earlier operator of this session may have left behind).
        holders = _holders(sandbox)
        mine = [holders.get(Shard(i, SHARDS).lease_name, "") for i in range(SHARDS)]
        assert all(mine) and len(set(mine)) == SHARDS, holders
        assert holders.get("lifeboat") not in mine

        # An app's series come from its own shard only: the other never ran its worker.
        scrapes = [scrape(operator.metrics_port) for operator in shards]
        for (namespace, name), owner in owners.items():
            for i, samples in enumerate(scrapes):
                phase = value(
                    samples, "lifeboat_app_phase", namespace=namespace, app=name, phase="Healthy"
                )
                assert (phase == 1.0) if i == owner else (phase is None), (namespace, i, owner)

        # The primary region fails: every app fails over, once, by its own shard.
        for endpoint in sandbox.zones.site_endpoints("use1"):
            endpoint.down()
        for app in apps:

            def failed_over(app: tuple[str, str] = app) -> bool:
                return bool(app_harness.status(*app).get("traffic", {}).get("epoch") == 2)

            shards[owners[app]].wait_for(failed_over, 60, f"{app} to fail over")
        for namespace, name in apps:
            reasons = [reason for _, reason, _ in app_harness.events(namespace, name)]
            assert reasons.count("FailoverStarted") == 1, (namespace, reasons)
            assert app_harness.dns_weights(namespace, name) == {"use1": 0, "usw2": 100}
    finally:
        for endpoint in sandbox.zones.site_endpoints("use1"):
            endpoint.serve()
        app_harness.delete_all()
