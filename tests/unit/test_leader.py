"""Leader election rules, against an in-memory Lease store (the real API server is used by
tests/integration/test_leader_election.py and test_leader_outages.py)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import threading
from collections.abc import Sized
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from controller.operator.handlers import ApiRetries
from controller.operator.leader import LeadershipLost, LeaseElector, LeaseTimings


class Leases:
    """What the elector uses of CoordinationV1Api, for one Lease, with resourceVersions."""

    def __init__(self) -> None:
        self.lease: kubernetes.client.V1Lease | None = None
        self.version = 0
        self.hang = threading.Event()  # set: every call blocks (a silent partition)
        self.fail = False  # every call fails at once (connection refused)
        self.calls = 0

    def _enter(self, timeout: Any) -> None:
        self.calls += 1
        if self.fail:
            raise ConnectionRefusedError("connection refused")
        if self.hang.is_set():
            self.hang.wait(timeout if isinstance(timeout, float | int) else 5)
            raise TimeoutError("read timed out")

    def read_namespaced_lease(self, name: str, namespace: str, **kw: Any) -> Any:
        self._enter(kw.get("_request_timeout"))
        if self.lease is None:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace: str, lease: Any, **kw: Any) -> Any:
        self._enter(kw.get("_request_timeout"))
        if self.lease is not None:
            raise ApiException(status=409, reason="Conflict")
        return self._store(lease)

    def replace_namespaced_lease(self, name: str, namespace: str, lease: Any, **kw: Any) -> Any:
        self._enter(kw.get("_request_timeout"))
        if str(lease.metadata.resource_version) != str(self.version):
            raise ApiException(status=409, reason="Conflict")
        return self._store(lease)

    def _store(self, lease: Any) -> Any:
        self.version += 1
        stored = copy.deepcopy(lease)
        if stored.metadata is None:
            stored.metadata = kubernetes.client.V1ObjectMeta()
        stored.metadata.resource_version = str(self.version)
        self.lease = stored
        return copy.deepcopy(stored)

    def hold(self, holder: str, renewed: datetime, duration: int = 10) -> None:
        self._store(
            kubernetes.client.V1Lease(
                metadata=kubernetes.client.V1ObjectMeta(name="lifeboat", namespace="ns"),
                spec=kubernetes.client.V1LeaseSpec(
                    holder_identity=holder,
                    lease_duration_seconds=duration,
                    renew_time=renewed,
                    acquire_time=renewed,
                ),
            )
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(leases: Leases, clock: Clock | None = None, **timings: float) -> LeaseElector:
    made = LeaseElector(
        leases,  # type: ignore[arg-type]  # duck-typed CoordinationV1Api
        "ns",
        identity="me",
        timings=LeaseTimings(**timings) if timings else LeaseTimings(),
    )
    if clock is not None:
        made.clock = clock
    return made


def holder_of(leases: Leases) -> str | None:
    assert leases.lease is not None and leases.lease.spec is not None
    return leases.lease.spec.holder_identity


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "deadline"),
    [(10, 10, 2, 2), (10, 7, 7, 2), (10, 7, 0, 2), (10, 7, 2, 8), (10, 7, 2, 0)],
)
def test_timings_out_of_order_are_refused(
    lease: float, renew: float, retry: float, deadline: float
) -> None:
    with pytest.raises(ValueError, match=r"leader election|request deadline"):
        LeaseTimings(lease, renew, retry, deadline)


def test_client_go_proportions_scale_with_the_lease() -> None:
    default = LeaseTimings.for_lease(15)
    assert (default.renew_deadline, default.retry_seconds) == (10, 2)
    short = LeaseTimings.for_lease(5)
    assert short.retry_seconds < short.renew_deadline < short.lease_seconds
    assert LeaseTimings().takeover_bound == 14


def test_expiry_is_judged_on_the_candidates_clock_not_the_holders_renew_time() -> None:
    """A Lease stamped an hour ago by a host whose clock is behind is not expired: the
    candidate waits ``lease_seconds`` from when it first saw that record."""
    leases, clock = Leases(), Clock()
    leases.hold("other", datetime.now(tz=UTC) - timedelta(hours=1))
    candidate = elector(leases, clock)
    assert candidate._try_acquire(1.0) == "other"
    clock.now += 9.9
    assert candidate._try_acquire(1.0) == "other"
    clock.now += 0.2  # 10.1 s since the record was first seen unchanged
    assert candidate._try_acquire(1.0) == "me"
    assert holder_of(leases) == "me"
    assert leases.lease is not None and leases.lease.spec is not None
    assert leases.lease.spec.lease_transitions == 1


def test_a_renewal_seen_restarts_the_candidates_wait() -> None:
    leases, clock = Leases(), Clock()
    leases.hold("other", datetime.now(tz=UTC))
    candidate = elector(leases, clock)
    assert candidate._try_acquire(1.0) == "other"
    clock.now += 8
    leases.hold("other", datetime.now(tz=UTC))  # the holder renewed: a new resourceVersion
    assert candidate._try_acquire(1.0) == "other"
    clock.now += 8  # 16 s since the first sight, 8 s since the renewal
    assert candidate._try_acquire(1.0) == "other"


def test_a_lost_race_for_an_expired_lease_is_not_a_win() -> None:
    leases, clock = Leases(), Clock()
    leases.hold("other", datetime.now(tz=UTC))
    candidate = elector(leases, clock)
    candidate._try_acquire(1.0)
    clock.now += 11
    original = leases.replace_namespaced_lease

    def racing(name: str, namespace: str, lease: Any, **kw: Any) -> Any:
        leases.hold("third", datetime.now(tz=UTC))  # someone wrote first
        return original(name, namespace, lease, **kw)

    leases.replace_namespaced_lease = racing  # type: ignore[method-assign]
    assert candidate._try_acquire(1.0) == "other"


async def test_connection_errors_while_waiting_are_retried() -> None:
    leases = Leases()
    leases.fail = True
    candidate = elector(
        leases, lease_seconds=0.6, renew_deadline=0.4, retry_seconds=0.05, request_seconds=0.1
    )
    stop = asyncio.Event()
    task = asyncio.create_task(candidate.acquire(stop))
    await asyncio.sleep(0.3)
    assert not task.done() and leases.calls >= 3
    leases.fail = False
    assert await asyncio.wait_for(task, 2) is True


async def test_the_holder_stops_at_the_renew_deadline_while_a_renewal_hangs() -> None:
    """A silent API server: the renewal in flight must not keep the holder acting past
    its deadline (which comes before any candidate could see the Lease expire)."""
    leases = Leases()
    holder = elector(
        leases, lease_seconds=1.5, renew_deadline=0.8, retry_seconds=0.2, request_seconds=0.5
    )
    stop = asyncio.Event()
    assert await holder.acquire(stop)
    loop = asyncio.get_running_loop()
    started = loop.time()
    leases.hang.set()
    try:
        with pytest.raises(LeadershipLost, match="not renewed"):
            await asyncio.wait_for(holder.keep(stop), 5)
    finally:
        leases.hang.clear()
    assert loop.time() - started < 1.0  # the deadline (0.8 s) plus scheduling


async def test_another_holder_ends_the_term_and_a_clean_stop_releases() -> None:
    leases = Leases()
    holder = elector(
        leases, lease_seconds=1.5, renew_deadline=0.8, retry_seconds=0.1, request_seconds=0.2
    )
    stop = asyncio.Event()
    assert await holder.acquire(stop)
    keeping = asyncio.create_task(holder.keep(stop))
    await asyncio.sleep(0.25)
    stop.set()
    await asyncio.wait_for(keeping, 2)
    assert holder_of(leases) is None

    assert await holder.acquire(asyncio.Event())
    keeping = asyncio.create_task(holder.keep(asyncio.Event()))
    leases.hold("usurper", datetime.now(tz=UTC))
    with pytest.raises(LeadershipLost, match="usurper"):
        await asyncio.wait_for(keeping, 2)


def test_kopf_retries_api_errors_for_ever_with_a_fresh_sequence_per_request() -> None:
    retries = ApiRetries()
    first = list(itertools.islice(retries, 12))
    assert first[:8] == [1, 1, 2, 3, 5, 8, 13, 21] and first[8:] == [30] * 4
    assert list(itertools.islice(retries, 3)) == [1, 1, 2]  # not used up by the first
    assert not isinstance(retries, Sized)  # kopf counts no total


async def test_renewals_do_not_queue_behind_the_processs_other_blocking_calls() -> None:
    """The default thread pool busy with slow blocking calls (a hundred apps writing their
    first status at start-up) must not hold the renewals up: the leader of a 101-app fleet
    stood down with "not renewed for 7.7s" while its status writes queued in that pool."""
    leases = Leases()
    holder = elector(
        leases, lease_seconds=1.5, renew_deadline=0.8, retry_seconds=0.1, request_seconds=0.5
    )
    stop = asyncio.Event()
    assert await holder.acquire(stop)
    loop = asyncio.get_running_loop()
    release = threading.Event()
    busy = [loop.run_in_executor(None, release.wait, 5) for _ in range(64)]
    keeping = asyncio.create_task(holder.keep(stop))
    try:
        await asyncio.sleep(2.0)  # beyond the renew deadline, more than once
        assert not keeping.done(), keeping.exception()
        renewals = leases.calls
        await asyncio.sleep(0.5)
        assert leases.calls > renewals  # still renewing, not just not failed yet
    finally:
        release.set()
        stop.set()
        await asyncio.gather(*busy)
        await asyncio.wait_for(keeping, 2)
