"""Events have a spam filter per object and reason, and the operator's memory of them is
bounded: a flapping zone, or an operator too loaded to probe on time, must not become a
storm of Event writes (a 100-app fleet spent a third of its CPU bumping Events)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from controller import metrics
from controller.operator import kube as kube_module
from controller.operator.kube import EventSpamFilter, KubeClient, ObjectRef


@given(
    gaps=st.lists(st.floats(min_value=0, max_value=400, allow_nan=False), max_size=200),
    burst=st.integers(min_value=1, max_value=30),
)
def test_no_more_than_the_burst_plus_the_refill_is_ever_posted(
    gaps: list[float], burst: int
) -> None:
    spam = EventSpamFilter(burst=burst, refill_seconds=300.0)
    now, allowed, suppressed_seen, suppressed = 0.0, 0, 0, 0
    for gap in gaps:
        now += gap
        ok, earlier = spam.allow(("uid", "ZoneStateChanged"), now)
        allowed += ok
        suppressed += not ok
        suppressed_seen += earlier
        assert allowed <= burst + now / 300.0 + 1e-9
    # Every suppressed Event is reported with the next one posted, or still pending.
    assert suppressed_seen + spam.suppressed(("uid", "ZoneStateChanged")) == suppressed


def test_reasons_and_objects_have_buckets_of_their_own_and_the_burst_comes_back() -> None:
    spam = EventSpamFilter(burst=3, refill_seconds=10.0)
    assert [spam.allow(("a", "ZoneStateChanged"), 0.0)[0] for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert spam.allow(("a", "FailoverStarted"), 0.0) == (True, 0)  # another reason
    assert spam.allow(("b", "ZoneStateChanged"), 0.0) == (True, 0)  # another object
    assert spam.allow(("a", "ZoneStateChanged"), 10.0) == (True, 1)  # one back, one missed


def test_buckets_are_bounded() -> None:
    spam = EventSpamFilter(burst=1, refill_seconds=300.0, kept=100)
    for i in range(1_000):
        spam.allow((f"uid-{i}", "ZoneStateChanged"), 0.0)
    assert len(spam._buckets) == 100


class _Core:
    """What KubeClient uses of CoreV1Api for Events, counting the writes."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.bumped: list[dict[str, Any]] = []

    def create_namespaced_event(self, namespace: str, body: Any, **_: Any) -> None:
        self.created.append(body)

    def patch_namespaced_event(self, name: str, namespace: str, body: Any, **_: Any) -> None:
        self.bumped.append(body)


def _client() -> tuple[KubeClient, _Core]:
    client = KubeClient(api=None)  # type: ignore[arg-type]  # no call reaches it
    core = _Core()
    client._core = core  # type: ignore[assignment]
    return client, core


async def test_a_storm_of_one_reason_writes_a_burst_and_is_counted() -> None:
    client, core = _client()
    ref = ObjectRef("ResilientApp", "resilientapps", "web", "shop", "uid-storm")
    counter = metrics.EVENTS_SUPPRESSED.labels(reason="ZoneStateChanged")
    before = counter._value.get()
    for i in range(100):
        message = f"zone use1/a {'Healthy -> Suspect' if i % 2 else 'Suspect -> Healthy'}"
        await client.event(ref, "Warning", "ZoneStateChanged", message)
    await client.event(ref, "Warning", "FailoverStarted", "failing over use1 -> usw2")
    writes = len(core.created) + len(core.bumped)
    assert writes == kube_module.EVENT_BURST + 1  # the burst, and the failover
    assert counter._value.get() - before == 100 - kube_module.EVENT_BURST
    assert core.created[-1]["reason"] == "FailoverStarted"


async def test_event_series_are_bounded_and_forgotten_oldest_first(monkeypatch: Any) -> None:
    monkeypatch.setattr(kube_module, "EVENT_KEYS_KEPT", 50)
    client, core = _client()
    for i in range(200):
        ref = ObjectRef("ResilientApp", "resilientapps", f"app{i}", "shop", f"uid-{i}")
        await client.event(ref, "Normal", "TrafficShifted", "DNS moved")
    assert len(client._series) == 50
    assert len(core.created) == 200
    # The newest are kept: a repeat of the last is a bump, of the first a new Event.
    last = ObjectRef("ResilientApp", "resilientapps", "app199", "shop", "uid-199")
    first = ObjectRef("ResilientApp", "resilientapps", "app0", "shop", "uid-0")
    await client.event(last, "Normal", "TrafficShifted", "DNS moved")
    await client.event(first, "Normal", "TrafficShifted", "DNS moved")
    assert len(core.bumped) == 1
    assert len(core.created) == 201
