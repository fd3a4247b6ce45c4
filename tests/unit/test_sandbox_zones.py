"""Zonal app endpoints and fleets, on real loopback sockets."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from sandbox.procs import SourceCut
from sandbox.zones import ZoneCounts, ZoneEndpoint, ZoneFleet, ZoneMode
from tests.fixtures.cloud import MakeZoneFleet


@pytest.fixture
def zone() -> Iterator[ZoneEndpoint]:
    with ZoneEndpoint("primary", "zone-a", host="127.10.200.1", max_hold=30.0) as endpoint:
        yield endpoint


def get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        body: dict[str, Any] = json.loads(response.read())
        return response.status, body
    finally:
        connection.close()


def test_serves_root_and_health_with_site_and_zone(zone: ZoneEndpoint) -> None:
    assert zone.health_url == f"http://127.10.200.1:{zone.port}/healthz"
    assert get(zone.url) == (200, {"site": "primary", "zone": "zone-a", "status": "ok"})
    assert get(zone.health_url)[0] == 200
    assert zone.mode is ZoneMode.SERVING
    assert zone.counts() == ZoneCounts(total=2, ok=2, failed=0)
    zone.reset_counts()
    assert zone.counts() == ZoneCounts()


def test_down_refuses_connections_and_serve_reopens_the_same_port(zone: ZoneEndpoint) -> None:
    port = zone.port
    zone.down()
    assert zone.mode is ZoneMode.DOWN
    with pytest.raises(ConnectionRefusedError):
        get(zone.health_url)
    zone.serve()
    assert zone.port == port
    assert get(zone.health_url)[0] == 200


def test_every_other_mode_reopens_a_stopped_listener(zone: ZoneEndpoint) -> None:
    zone.down()
    zone.error(502)
    assert get(zone.health_url)[0] == 502


def test_stop_and_start_again(zone: ZoneEndpoint) -> None:
    port = zone.port
    zone.stop()
    zone.start()
    assert zone.port == port
    assert get(zone.health_url)[0] == 200


def test_hang_accepts_but_never_answers(zone: ZoneEndpoint) -> None:
    zone.hang()
    with pytest.raises(TimeoutError):
        get(zone.health_url, timeout=0.3)
    _wait_until(lambda: zone.counts().total == 1)
    assert zone.counts() == ZoneCounts(total=1, ok=0, failed=0)
    zone.serve()
    assert get(zone.health_url)[0] == 200


def test_hang_is_bounded_by_max_hold() -> None:
    with ZoneEndpoint("s", "z", host="127.10.200.2", max_hold=0.2) as endpoint:
        endpoint.hang()
        with pytest.raises(http.client.RemoteDisconnected):
            get(endpoint.health_url, timeout=10.0)


def test_slow_answers_late(zone: ZoneEndpoint) -> None:
    zone.slow(0.2)
    started = time.monotonic()
    assert get(zone.health_url)[0] == 200
    assert time.monotonic() - started >= 0.2


def test_error_answers_with_the_status(zone: ZoneEndpoint) -> None:
    zone.error(503)
    status, body = get(zone.health_url)
    assert status == 503
    assert body["zone"] == "zone-a"
    assert zone.counts() == ZoneCounts(total=1, ok=0, failed=1)


@pytest.mark.parametrize(("share", "failures"), [(0.0, 0), (1.0, 10)])
def test_flaky_extremes_are_exact(zone: ZoneEndpoint, share: float, failures: int) -> None:
    zone.flaky(share, seed=1)
    statuses = [get(zone.health_url)[0] for _ in range(10)]
    assert statuses.count(500) == failures
    assert zone.counts() == ZoneCounts(total=10, ok=10 - failures, failed=failures)


def test_flaky_with_a_seed_is_reproducible(zone: ZoneEndpoint) -> None:
    def statuses() -> list[int]:
        zone.flaky(0.5, seed=7, status=502)
        return [get(zone.health_url)[0] for _ in range(20)]

    first = statuses()
    assert first == statuses()
    assert set(first) == {200, 502}


@pytest.mark.parametrize(
    ("switch", "message"),
    [
        (lambda zone: zone.slow(-1), "delay"),
        (lambda zone: zone.error(200), "400..599"),
        (lambda zone: zone.flaky(1.5), "share"),
    ],
)
def test_rejects_invalid_modes(
    zone: ZoneEndpoint, switch: Callable[[ZoneEndpoint], None], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        switch(zone)


def test_modes_need_a_started_endpoint() -> None:
    endpoint = ZoneEndpoint("s", "z", host="127.10.200.3")
    with pytest.raises(RuntimeError, match="start"):
        endpoint.error()


def test_refuses_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ZoneEndpoint("s", "z", host="192.0.2.1")


def test_close_releases_hung_requests_quickly() -> None:
    endpoint = ZoneEndpoint("s", "z", host="127.10.200.4", max_hold=30.0)
    endpoint.start()
    endpoint.hang()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            get(endpoint.health_url, timeout=10.0)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    _wait_until(lambda: endpoint.counts().total == 1)
    started = time.monotonic()
    endpoint.stop()
    assert time.monotonic() - started < 3.0
    thread.join(5.0)
    assert not thread.is_alive()
    assert len(errors) == 1


def test_mode_switches_race_safely_with_requests(zone: ZoneEndpoint) -> None:
    stop = threading.Event()

    def switch_modes() -> None:
        while not stop.is_set():
            zone.error(500)
            zone.serve()

    switcher = threading.Thread(target=switch_modes)
    switcher.start()
    try:
        statuses = {get(zone.health_url)[0] for _ in range(30)}
    finally:
        stop.set()
        switcher.join(5.0)
    assert statuses <= {200, 500}
    counts = zone.counts()
    assert counts.total == counts.ok + counts.failed == 30


# --- fleets --------------------------------------------------------------------------------------

SITES = [("primary", "a"), ("primary", "b"), ("standby", "a"), ("standby", "b")]


def test_fleet_gives_each_zone_its_own_address(make_zone_fleet: MakeZoneFleet) -> None:
    fleet = make_zone_fleet(SITES)
    hosts = [endpoint.host for endpoint in fleet.endpoints]
    assert hosts == ["127.10.1.1", "127.10.1.2", "127.10.2.1", "127.10.2.2"]
    for site, zone in SITES:
        status, body = get(fleet.url(site, zone))
        assert (status, body["site"], body["zone"]) == (200, site, zone)
    assert fleet.endpoint("standby", "b").host == "127.10.2.2"
    assert [e.zone for e in fleet.site_endpoints("primary")] == ["a", "b"]


def test_fleet_lookup_of_an_unknown_zone_names_the_known_ones(
    make_zone_fleet: MakeZoneFleet,
) -> None:
    fleet = make_zone_fleet([("primary", "a")])
    with pytest.raises(KeyError, match="primary/a"):
        fleet.endpoint("primary", "z")


def test_fleet_rejects_duplicate_zones() -> None:
    with pytest.raises(ValueError, match="twice"):
        ZoneFleet([("s", "a"), ("s", "a")])


def test_fleet_down_all_and_stop(make_zone_fleet: MakeZoneFleet) -> None:
    fleet = make_zone_fleet(SITES)
    fleet.down_all()
    for site, zone in SITES:
        with pytest.raises(ConnectionRefusedError):
            get(fleet.url(site, zone))
    fleet.stop()
    fleet.stop()  # idempotent


def test_fleet_zones_fail_independently(make_zone_fleet: MakeZoneFleet) -> None:
    fleet = make_zone_fleet(SITES)
    fleet.endpoint("primary", "a").down()
    fleet.endpoint("primary", "b").error(503)
    assert get(fleet.url("standby", "a"))[0] == 200
    assert get(fleet.url("primary", "b"))[0] == 503
    host = fleet.endpoint("primary", "a").host
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, fleet.endpoint("primary", "a").port), timeout=2).close()


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# ----------------------------------------------------------------------------- source cuts


def get_from(source: str, url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """``get`` over a connection bound to the local address ``source``."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=timeout, source_address=(source, 0)
    )
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        body: dict[str, Any] = json.loads(response.read())
        return response.status, body
    finally:
        connection.close()


def test_a_reset_cut_resets_one_source_and_serves_the_others(zone: ZoneEndpoint) -> None:
    zone.cut("127.20.0.1")
    assert zone.cuts == {"127.20.0.1": SourceCut.RESET}
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        get_from("127.20.0.1", zone.health_url)
    assert get_from("127.20.0.2", zone.health_url)[0] == 200
    assert zone.refused == 1
    assert zone.counts().total == 1  # the cut-off request never reached the app
    zone.heal("127.20.0.1")
    assert zone.cuts == {}
    assert get_from("127.20.0.1", zone.health_url)[0] == 200


def test_a_blackhole_cut_holds_one_source_until_it_gives_up_or_is_healed(
    zone: ZoneEndpoint,
) -> None:
    zone.cut("127.20.0.1", SourceCut.BLACKHOLE)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        get_from("127.20.0.1", zone.health_url, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 3.0
    assert get_from("127.20.0.2", zone.health_url)[0] == 200

    failures: list[BaseException] = []

    def held() -> None:
        try:
            get_from("127.20.0.1", zone.health_url, timeout=20)
        except BaseException as error:
            failures.append(error)

    waiter = threading.Thread(target=held)
    waiter.start()
    time.sleep(0.3)
    zone.heal()  # the held connection breaks at once instead of hanging on
    waiter.join(5)
    assert not waiter.is_alive()
    assert failures and isinstance(failures[0], (ConnectionError, http.client.HTTPException))
    assert get_from("127.20.0.1", zone.health_url)[0] == 200


def test_a_cut_drops_the_sources_open_connections(zone: ZoneEndpoint) -> None:
    parts = urlsplit(zone.health_url)
    assert parts.hostname is not None
    keep_alive = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=5, source_address=("127.20.0.3", 0)
    )
    try:
        keep_alive.request("GET", "/healthz")
        assert keep_alive.getresponse().read()
        zone.cut("127.20.0.3")

        def again() -> None:
            keep_alive.request("GET", "/healthz")
            keep_alive.getresponse().read()

        with pytest.raises((ConnectionError, http.client.HTTPException)):
            again()
    finally:
        keep_alive.close()


def test_cuts_survive_a_zone_going_down_and_back(zone: ZoneEndpoint) -> None:
    zone.cut("127.20.0.1")
    zone.down()
    zone.serve()
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        get_from("127.20.0.1", zone.health_url)
    assert get_from("127.20.0.2", zone.health_url)[0] == 200


def test_cuts_are_by_loopback_address_only(zone: ZoneEndpoint) -> None:
    with pytest.raises(ValueError, match=r"outside 127\.0\.0\.0/8"):
        zone.cut("10.0.0.1")
