"""The operator's object replication of one app, against in-memory stores: flows follow the
active site and epoch, unusable providers and Impaired regions show in the figures, and
metric series come and go with the flows."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller import metrics
from controller.api.models import ResilientAppSpec
from controller.core.apiplane import ApiPlaneState
from controller.operator.replication import ObjectReplication, ReplicationOptions
from controller.providers.backend import Capability
from controller.providers.errors import CapabilityUnsupported, ProviderUnavailable
from controller.replication.figures import replication_conditions
from tests.factories import app_spec
from tests.fixtures.worker import REF, FakeKube
from tests.unit.test_replication_engine import FakeFeed, MemoryStore

OPTIONS = ReplicationOptions(retry_seconds=0.2, checkpoint_seconds=0.0, poll_min_seconds=0.05)


class FakeStores:
    def __init__(self) -> None:
        self.stores: dict[tuple[str, str], MemoryStore] = {}
        self.states: dict[str, ApiPlaneState] = {}
        self.unavailable: set[str] = set()
        self.feeds: dict[str, FakeFeed] = {}
        self.without_events: set[str] = set()
        self.refusals: dict[str, str] = {}
        self.connection = 1
        """The revision of the providers' connection (:meth:`rotate` makes a new one)."""

    async def revision(self, provider: str) -> int:
        if provider in self.unavailable:
            raise ProviderUnavailable("ProviderNotFound", f"CloudProvider {provider} not found")
        return self.connection

    def store(self, region: str, bucket: str) -> MemoryStore:
        return self.stores.setdefault((region, bucket), MemoryStore(region=region))

    async def object_store(self, provider: str, region: str, bucket: str) -> MemoryStore:
        if provider in self.unavailable:
            raise ProviderUnavailable("ProviderNotFound", f"CloudProvider {provider} not found")
        return self.store(region, bucket)

    async def change_feed(self, provider: str, region: str, queue: str) -> FakeFeed:
        if provider in self.without_events:
            raise CapabilityUnsupported(Capability.CHANGE_FEED, f"{provider} sends no notices")
        return self.feeds.setdefault(queue, FakeFeed(region=region))

    def region_state(self, provider: str, region: str) -> ApiPlaneState:
        return self.states.get(region, ApiPlaneState.HEALTHY)

    def refused(self, provider: str) -> str | None:
        return self.refusals.get(provider)

    def explain(self, name: str, error: BaseException) -> str:
        return f"{type(error).__name__}: {error}"

    def cached_redactor(self, name: str) -> Callable[[str], str]:
        return lambda text: text


def spec(*, datasets: int = 1, **dataset: Any) -> ResilientAppSpec:
    raw = app_spec()
    raw["replication"] = {
        "rpoTargetSeconds": 60,
        "objects": [
            {
                "name": f"set{n}",
                "locations": [
                    {"site": "use1", "bucket": f"east{n}"},
                    {"site": "usw2", "bucket": f"west{n}"},
                ],
                **dataset,
            }
            for n in range(datasets)
        ],
    }
    return ResilientAppSpec.model_validate(raw)


async def eventually(check: Callable[[], object], what: str) -> None:
    """Wait (at most 5 s) until ``check`` holds."""
    try:
        async with asyncio.timeout(5.0):
            while not check():  # noqa: ASYNC110 - polls state the flows change
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def series(metric: Any, dataset: str, destination: str) -> bool:
    return ("shop", "web", dataset, destination) in metric._metrics


@pytest.fixture
def replication() -> Iterator[tuple[ObjectReplication, FakeStores, FakeKube]]:
    stores, kube = FakeStores(), FakeKube()
    runner = ObjectReplication(REF, kube, stores, options=OPTIONS)
    yield runner, stores, kube
    metrics.forget_app("shop", "web")


async def test_flows_follow_the_active_site_and_reverse_with_the_epoch(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    runner, stores, _ = replication
    east, west = stores.store("us-east-1", "east0"), stores.store("us-west-2", "west0")
    east.write("a", b"written at use1")
    await runner.sync(spec(), "use1", 1, None)
    (entry,) = runner.figures()
    assert (entry.dataset, entry.destination, entry.source, entry.epoch) == (
        "set0",
        "usw2",
        "use1",
        1,
    )
    await eventually(lambda: "a" in west.objects, "the copy at usw2")
    assert series(metrics.REPLICATION_OBJECTS, "set0", "usw2")

    await runner.sync(spec(), "usw2", 2, 1000.0)  # a failover
    (entry,) = runner.figures()
    assert (entry.destination, entry.source, entry.epoch) == ("use1", "usw2", 2)
    assert not series(metrics.REPLICATION_OBJECTS, "set0", "usw2")  # that flow is gone
    west.write("b", b"written at usw2")
    await eventually(lambda: "b" in east.objects, "the copy back at use1")
    assert east.objects["b"].metadata["lifeboat-source-site"] == "usw2"
    await runner.sync(spec(), "usw2", 2, 1000.0)  # unchanged: the flows keep running
    await runner.close()


async def test_an_unusable_provider_shows_in_the_figures_and_is_retried(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    runner, stores, _ = replication
    stores.unavailable.add("aws-sandbox")
    await runner.sync(spec(), "use1", 1, None)
    (entry,) = runner.figures()
    assert entry.rpo_seconds is None and "CloudProvider aws-sandbox not found" in entry.last_error
    stores.unavailable.clear()
    await asyncio.sleep(0.25)
    await runner.sync(spec(), "use1", 1, None)
    await eventually(lambda: runner.figures()[0].rpo_seconds is not None, "a measured RPO")
    await runner.close()


async def test_a_restarted_dataset_keeps_its_rpo_growing_from_what_it_knew(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    runner, stores, _ = replication
    stores.store("us-east-1", "east0").write("a", b"to copy")
    await runner.sync(spec(), "use1", 1, None)
    await eventually(lambda: runner.figures()[0].rpo_seconds is not None, "a measured RPO")
    stores.unavailable.add("aws-sandbox")
    await runner.sync(spec(scanIntervalSeconds=30), "use1", 1, None)  # restarts the dataset
    (entry,) = runner.figures()
    assert "not found" in entry.last_error
    assert entry.rpo_seconds is not None  # not unknown: an RPO breach does not clear itself
    await asyncio.sleep(0.3)
    (later,) = runner.figures()
    assert later.rpo_seconds is not None and later.rpo_seconds >= entry.rpo_seconds + 0.2
    assert metrics.REGISTRY.get_sample_value(
        "lifeboat_replication_rpo_seconds",
        {"namespace": "shop", "app": "web", "dataset": "set0", "destination": "usw2"},
    ) == pytest.approx(later.rpo_seconds, abs=0.1)

    stores.unavailable.clear()  # and running again, it measures afresh
    await asyncio.sleep(0.25)
    await runner.sync(spec(scanIntervalSeconds=30), "use1", 1, None)
    before = later.rpo_seconds

    def measured_afresh() -> bool:
        rpo = runner.figures()[0].rpo_seconds
        return rpo is not None and rpo < before - 0.2

    await eventually(measured_afresh, "an RPO measured afresh")
    assert runner.figures()[0].last_error == ""
    await runner.close()


async def test_a_dataset_with_new_ends_starts_unmeasured_and_without_a_stale_series(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    runner, stores, _ = replication
    await runner.sync(spec(), "use1", 1, None)
    await eventually(lambda: runner.figures()[0].rpo_seconds is not None, "a measured RPO")
    assert series(metrics.REPLICATION_RPO, "set0", "usw2")
    stores.unavailable.add("aws-sandbox")
    raw = spec().model_dump(by_alias=True)
    raw["replication"]["objects"][0]["locations"][1]["bucket"] = "elsewhere"
    await runner.sync(ResilientAppSpec.model_validate(raw), "use1", 1, None)
    (entry,) = runner.figures()
    assert entry.rpo_seconds is None and "not found" in entry.last_error
    assert not series(metrics.REPLICATION_RPO, "set0", "usw2")
    assert series(metrics.REPLICATION_PENDING_OBJECTS, "set0", "usw2")
    await runner.close()


async def test_an_impaired_region_holds_its_flows(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    runner, stores, _ = replication
    stores.states["us-west-2"] = ApiPlaneState.IMPAIRED
    stores.store("us-east-1", "east0").write("a", b"data")
    await runner.sync(spec(), "use1", 1, None)
    await eventually(lambda: runner.figures()[0].last_error.startswith("paused:"), "the hold")
    west = stores.store("us-west-2", "west0")
    assert west.calls == []  # not even a listing
    assert "us-west-2 API plane Impaired" in runner.figures()[0].last_error
    await runner.close()


async def test_a_provider_that_stops_admitting_the_app_holds_its_running_flows(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    """A grant revoked (or a namespace relabelled) while a flow runs: nothing more is read
    from the queue or copied until the CloudProvider admits the app again."""
    from controller.providers.protocols import ChangeMessage, ObjectChange

    _, stores, kube = replication
    quick = dataclasses.replace(OPTIONS, poll_max_seconds=0.1)  # a held listener looks again
    runner = ObjectReplication(REF, kube, stores, options=quick)
    raw = spec(scanIntervalSeconds=3600).model_dump(by_alias=True)
    raw["replication"]["objects"][0]["locations"][0]["eventQueue"] = "events"
    await runner.sync(ResilientAppSpec.model_validate(raw), "use1", 1, None)
    west = stores.store("us-west-2", "west0")
    await eventually(lambda: west.listings() == 1, "the first scan")
    stores.refusals["aws-sandbox"] = "CloudProvider aws-sandbox does not admit namespace shop"
    stores.store("us-east-1", "east0").write("new", b"noticed")
    stores.feeds["events"].waiting.append(
        ChangeMessage("m1", (ObjectChange("east0", "new", False, time.time()),))
    )
    calls = len(west.calls)
    await asyncio.sleep(0.5)
    assert "new" not in west.objects and len(west.calls) == calls
    assert stores.feeds["events"].acked == []  # the notice waits in the queue
    del stores.refusals["aws-sandbox"]  # admitted again
    await eventually(lambda: "new" in west.objects, "the copy once admitted again")
    await runner.close()


async def test_notices_from_the_source_queue_reach_every_flow(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    runner, stores, _ = replication
    raw = spec(scanIntervalSeconds=3600).model_dump(by_alias=True)
    raw["replication"]["objects"][0]["locations"][0]["eventQueue"] = "events"
    await runner.sync(ResilientAppSpec.model_validate(raw), "use1", 1, None)
    west = stores.store("us-west-2", "west0")
    await eventually(lambda: west.listings() == 1, "the first scan")
    stores.store("us-east-1", "east0").write("new", b"noticed")
    from controller.providers.protocols import ChangeMessage, ObjectChange

    stores.feeds["events"].waiting.append(
        ChangeMessage("m1", (ObjectChange("east0", "new", False, time.time()),))
    )
    await eventually(lambda: "new" in west.objects, "the noticed object at usw2")
    assert west.listings() == 1  # no scan did it
    assert stores.feeds["events"].acked == ["m1"]
    await runner.close()


async def test_an_event_queue_the_provider_cannot_fill_leaves_the_scan_to_replicate(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    runner, stores, _ = replication
    stores.without_events.add("aws-sandbox")
    raw = spec().model_dump(by_alias=True)
    raw["replication"]["objects"][0]["locations"][0]["eventQueue"] = "events"
    stores.store("us-east-1", "east0").write("a", b"found by the scan")
    await runner.sync(ResilientAppSpec.model_validate(raw), "use1", 1, None)
    west = stores.store("us-west-2", "west0")
    await eventually(lambda: "a" in west.objects, "the scanned object at usw2")
    (entry,) = runner.figures()
    assert not entry.last_error and "events" not in stores.feeds
    await runner.close()


async def test_datasets_leaving_the_spec_stop_and_their_series_go(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    runner, _, _ = replication
    await runner.sync(spec(datasets=2), "use1", 1, None)
    assert [e.dataset for e in runner.figures()] == ["set0", "set1"]
    assert series(metrics.REPLICATION_ERRORS, "set1", "usw2")
    await runner.sync(spec(datasets=1), "use1", 1, None)
    assert [e.dataset for e in runner.figures()] == ["set0"]
    assert not series(metrics.REPLICATION_ERRORS, "set1", "usw2")
    assert ("shop", "web", "set1") not in metrics.REPLICATION_RPO_TARGET._metrics
    await runner.sync(spec(datasets=0), "use1", 1, None)
    assert runner.figures() == []
    await runner.close()


async def test_at_a_reversal_the_old_flows_stop_together_before_new_ones_start(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    runner, stores, _ = replication
    events: list[tuple[str, str]] = []

    async def slow_to_stop(key: str) -> None:
        """Writes hang, and take a while to give up when cancelled."""
        events.append(("writing", key))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append(("cancelled", key))
            await asyncio.sleep(0.2)
            events.append(("ended", key))
            raise

    for n in range(2):
        stores.stores[("us-west-2", f"west{n}")] = MemoryStore(
            region="us-west-2", before_put=slow_to_stop
        )
        stores.store("us-east-1", f"east{n}").write(f"k{n}", b"on its way")
    await runner.sync(spec(datasets=2), "use1", 1, None)
    await eventually(lambda: len(events) == 2, "both copies under way")

    await runner.sync(spec(datasets=2), "usw2", 2, 1000.0)
    assert sorted(events[2:4]) == [("cancelled", "k0"), ("cancelled", "k1")]  # together
    assert sorted(events[4:]) == [("ended", "k0"), ("ended", "k1")]  # both before sync ends
    assert {(e.source, e.epoch) for e in runner.figures()} == {("usw2", 2)}
    await runner.close()


class Connected:
    """A store as one connection reaches it: once the connection is replaced, every call
    fails the way a closed connector's does."""

    def __init__(self, inner: MemoryStore, stores: RotatingStores, connection: int) -> None:
        self.inner, self.stores, self.connection = inner, stores, connection

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.stores.connection != self.connection:
                raise RuntimeError("cannot schedule new futures after shutdown")
            return found(*args, **kwargs)

        return call


class RotatingStores(FakeStores):
    async def object_store(self, provider: str, region: str, bucket: str) -> Any:
        return Connected(
            await super().object_store(provider, region, bucket), self, self.connection
        )

    def rotate(self) -> None:
        """The credentials Secret rotated: a new connection, the old one closed."""
        self.connection += 1


async def test_a_new_connection_restarts_the_flows_on_it() -> None:
    """Regression: a running flow kept the stores of the connection it started with after
    a Secret rotation or a CloudProvider edit; once that connection was closed (or its
    credentials revoked, its CA bundle gone) nothing more was copied."""
    stores, kube = RotatingStores(), FakeKube()
    runner = ObjectReplication(REF, kube, stores, options=OPTIONS)
    east, west = stores.store("us-east-1", "east0"), stores.store("us-west-2", "west0")
    east.write("a", b"before the rotation")
    app = spec()
    await runner.sync(app, "use1", 1, None)
    await eventually(lambda: "a" in west.objects, "the first copy")
    stores.rotate()
    east.write("b", b"after the rotation")
    await runner.sync(app, "use1", 1, None)
    await eventually(lambda: "b" in west.objects, "a copy over the new connection")
    (entry,) = runner.figures()
    assert not entry.stopped
    assert not [e for e in kube.events if e[1] == "ReplicationStopped"]
    await runner.close()
    metrics.forget_app("shop", "web")


async def test_a_deleted_cloudprovider_stops_the_flows_and_says_so(
    replication: tuple[ObjectReplication, FakeStores, FakeKube],
) -> None:
    """Regression: deleting a CloudProvider left its flows running on a closed connection,
    failing pass after pass, with nothing saying that replication had stopped."""
    runner, stores, kube = replication
    east, west = stores.store("us-east-1", "east0"), stores.store("us-west-2", "west0")
    app = spec()
    await runner.sync(app, "use1", 1, None)
    await eventually(lambda: runner.figures()[0].rpo_seconds is not None, "a measured RPO")
    stores.unavailable.add("aws-sandbox")
    await runner.sync(app, "use1", 1, None)
    (entry,) = runner.figures()
    assert entry.stopped and "CloudProvider aws-sandbox not found" in entry.last_error
    assert entry.rpo_seconds is not None  # what it knew still counts: the RPO grows
    east.write("c", b"written while stopped")
    for _ in range(3):  # not retried while the CloudProvider is gone, nor announced again
        await asyncio.sleep(0.25)
        await runner.sync(app, "use1", 1, None)
    assert "c" not in west.objects
    await asyncio.sleep(0)  # the Event is posted in the background
    stopped = [e for e in kube.events if e[1] == "ReplicationStopped"]
    assert len(stopped) == 1 and stopped[0][0] == "Warning"
    replicating, _ = replication_conditions(runner.figures(), 60)
    assert replicating[:2] == ("False", "ReplicationStopped")

    stores.unavailable.clear()  # made again: the flows start again by themselves
    await runner.sync(app, "use1", 1, None)
    await eventually(lambda: "c" in west.objects, "the copy once it is back")
    assert not runner.figures()[0].stopped
    await runner.close()
