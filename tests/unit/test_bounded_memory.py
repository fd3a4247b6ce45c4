"""Bounded memory (issue #17 item 8): every cache and map that could grow with the number
of apps, sites, keys or notices has a stated bound, checked here deterministically."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api.models import ResilientAppSpec
from controller.operator.capacity import DRIVER_CACHE_SIZE, DRIVER_CACHE_TTL, CapacityDrivers
from controller.replication import objects
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
