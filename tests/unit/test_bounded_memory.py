"""Bounded memory (issue #17 item 8): every cache and map that could grow with the number
of apps, sites, keys or notices has a stated bound, checked here deterministically."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api.models import ResilientAppSpec
from controller.operator.capacity import DRIVER_CACHE_SIZE, DRIVER_CACHE_TTL, CapacityDrivers
from controller.replication import objects
from controller.replication.figures import PENDING_TRACKED, FlowFigures
from tests.factories import app_spec
from tests.unit.test_replication_engine import MemoryStore, flow, user_keys


class Tenant:
    namespace = "shop"

    async def handle(self, name: str) -> Any:
        return self


async def test_the_capacity_driver_cache_is_an_lru_with_a_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []

    async def build(site: Any, cloud: Any, clusters: Any) -> Any:
        built.append(site.name)
        return object()

    monkeypatch.setattr("controller.operator.capacity.registry.capacity_driver", build)
    now = [0.0]
    drivers = CapacityDrivers(Tenant(), None, None, "lifeboat-system", clock=lambda: now[0])  # type: ignore[arg-type]
    assert (drivers.max_size, drivers.ttl) == (DRIVER_CACHE_SIZE, DRIVER_CACHE_TTL)
    site = ResilientAppSpec.model_validate(app_spec()).sites[0]
    first = await drivers.for_site("shop/web", site)
    assert await drivers.for_site("shop/web", site) is first  # cached
    for n in range(DRIVER_CACHE_SIZE + 10):  # many apps: the least recently used go
        await drivers.for_site(f"shop/app-{n}", site)
        assert len(drivers) <= DRIVER_CACHE_SIZE
    assert len(drivers) == DRIVER_CACHE_SIZE
    assert await drivers.for_site("shop/web", site) is not first  # evicted, rebuilt
    now[0] += DRIVER_CACHE_TTL  # nothing used for the TTL: everything but the next goes
    await drivers.for_site("shop/web", site)
    assert len(drivers) == 1


def rescan_due(f: objects.ObjectFlow) -> bool:
    return f._rescan


async def test_notices_waiting_are_bounded_and_an_overflow_turns_into_a_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(objects, "MAX_DIRTY", 5)
    east, west = MemoryStore(), MemoryStore()
    f = flow(east, west)
    assert await f.scan()
    f.watched(250.0)  # the flow's clock reads 200: notices read until 250 vouch for more
    assert f.figures.looked_at() == 250.0
    for n in range(5):
        f.notify(f"k{n}", 120.0)
    assert len(f._dirty) == 5 and not rescan_due(f)
    f.notify("k5", 121.0)  # one too many: dropped; the notices no longer vouch
    assert len(f._dirty) == 5 and rescan_due(f)
    f.watched(260.0)
    assert f.figures.looked_at() == f.figures.listed_at == 200.0  # the last listing only
    for n in range(6):
        east.write(f"k{n}", b"x")
    assert await f.scan()  # finds all six
    assert user_keys(west) == [f"k{n}" for n in range(6)]
    f.watched(300.0)
    assert f.figures.looked_at() == 300.0  # notices count again


def test_pending_changes_and_the_status_entry_are_bounded_whatever_the_backlog() -> None:
    """30,000 changes pending, 50,000 unreplicated objects: 10,000 keys are tracked, the
    rest counted; the status entry stays a few hundred bytes and says its pending figures
    are upper bounds."""
    figures = FlowFigures("photos", "usw2", "use1", 1)
    for n in range(30_000):
        figures.pending.add(f"k{n:05}", 1000.0 + n, 10)
    figures.unreplicated_objects, figures.unreplicated_bytes = 50_000, 500_000
    figures.unreplicated_keys = tuple(f"t{n}" for n in range(objects.UNREPLICATED_SHOWN))
    figures.listed_at = 40_000.0
    assert len(figures.pending.keys) == PENDING_TRACKED == 10_000
    status = figures.status(40_000.0)
    assert (status.pending_objects, status.pending_bytes) == (30_000, 300_000)
    assert status.pending_estimated and status.rpo_seconds == 39_000.0  # the oldest change
    assert len(status.model_dump_json(by_alias=True)) < 1024
    for n in range(10_000):  # settled: the tracked ones go, the counted ones stay counted
        figures.pending.pop(f"k{n:05}")
    assert len(figures.pending) == 20_000 and figures.pending.estimated
    figures.pending.begin_pass()  # a pass lists both ends to the end: counted afresh
    figures.pending.end_listing()
    assert len(figures.pending) == 0 and not figures.pending.estimated
