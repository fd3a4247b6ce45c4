"""The demo's timeline picture (sandbox.timeline) from synthetic range-query answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox import timeline
from sandbox.timeline import Failover, Segment

NS, APP = "shop", "web"
T0 = 1_800_000_000.0  # the outage (x = 0)
STEP = 0.5
START, END = T0 - 6, T0 + 12
FAILOVER = Failover(decided_at=T0 + 2.5, detection=3.0, rto=3.5)  # last good probe T0 - 0.5


def times(start: float, end: float) -> list[float]:
    n = round((end - start) / STEP)
    return [start + i * STEP for i in range(n)]


def series(metric: dict[str, str], start: float, end: float, value: float = 1.0) -> dict[str, Any]:
    return {"metric": metric, "values": [[t, str(value)] for t in times(start, end)]}


def zone(z: str, state: str, start: float, end: float, site: str = "use1") -> dict[str, Any]:
    labels = {"namespace": NS, "app": APP, "site": site, "zone": z, "state": state}
    return series({"__name__": "lifeboat_zone_state", **labels}, start, end)


def answers() -> dict[str, timeline.Matrix]:
    """What Prometheus would return for the demo: use1's two zones Suspect then Down; usw2
    Healthy throughout; Healthy, FailingOver, Degraded; DNS moved at T0 + 3."""
    app = {"namespace": NS, "app": APP}
    zones = []
    for z in ("us-east-1a", "us-east-1b"):
        zones += [
            zone(z, "Healthy", START, T0 + 0.5),
            zone(z, "Suspect", T0 + 0.5, T0 + 2.5),
            zone(z, "Down", T0 + 2.5, END),
        ]
    zones.append(zone("us-west-2a", "Healthy", START, END, site="usw2"))
    weights: list[dict[str, Any]] = [
        {
            "metric": {**app, "site": site},
            "values": [
                [t, "100" if (t < T0 + 3) == (site == "use1") else "0"] for t in times(START, END)
            ],
        }
        for site in ("use1", "usw2")
    ]
    return {
        "zones": zones,
        "phase": [
            series({**app, "phase": "Healthy"}, START, T0 + 2.5),
            series({**app, "phase": "FailingOver"}, T0 + 2.5, T0 + 3),
            series({**app, "phase": "Degraded"}, T0 + 3, END),
        ],
        "weights": weights,
        "alerts": [
            series({"alertname": "LifeboatCascadeDetected", "alertstate": "firing"}, T0 + 3, END),
            series({"alertname": "LifeboatZoneDown", "alertstate": "pending"}, T0 + 2.5, END),
            # one zone's alert firing while another's is pending: the row shows firing
            series({"alertname": "LifeboatZoneDown", "alertstate": "firing"}, T0 + 9, END),
        ],
        "decided": [series(app, T0 + 2.5, END, FAILOVER.decided_at)],
        "detection": [series(app, T0 + 3, END, FAILOVER.detection)],
        "rto": [series(app, T0 + 3, END, FAILOVER.rto)],
    }


def query_range(promql: str, start: float, end: float, step: float) -> timeline.Matrix:
    """Prometheus' range API, answering the picture's queries from :func:`answers`."""
    assert (start, end, step) == (START, END, STEP)
    parts = {query: part for part, query in timeline.queries(NS, APP).items()}
    return answers()[parts[promql]]


def data() -> timeline.TimelineData:
    return timeline.fetch(
        query_range, namespace=NS, app=APP, origin=T0, start=START, end=END, step=STEP
    )


def test_every_query_selects_the_app_and_names_its_metric() -> None:
    found = timeline.queries(NS, APP)
    assert set(found) == {"zones", "phase", "weights", "alerts", "decided", "detection", "rto"}
    for promql in found.values():
        assert 'namespace="shop",app="web"' in promql
    assert "lifeboat_zone_state" in found["zones"]
    assert "lifeboat_dns_weight" in found["weights"]


def test_one_hot_series_become_runs_per_key() -> None:
    got = data()
    assert list(got.zones) == ["use1/us-east-1a", "use1/us-east-1b", "usw2/us-west-2a"]
    assert got.zones["use1/us-east-1a"] == [
        Segment(START, T0 + 0.5, "Healthy"),
        Segment(T0 + 0.5, T0 + 2.5, "Suspect"),
        Segment(T0 + 2.5, END, "Down"),  # the last sample holds one step
    ]
    assert [s.value for s in got.phase] == ["Healthy", "FailingOver", "Degraded"]
    assert got.alerts["LifeboatZoneDown"] == [
        Segment(T0 + 2.5, T0 + 9, "pending"),
        Segment(T0 + 9, END, "firing"),
    ]
    assert got.failover == FAILOVER
    assert got.failover.outage_start == T0 - 0.5
    assert got.failover.dns_moved == T0 + 3


def test_samples_far_apart_leave_a_gap() -> None:
    matrix = [{"metric": {"phase": "Healthy"}, "values": [[0, "1"], [1, "1"], [5, "1"]]}]
    assert timeline.segments(matrix, (), "phase", 1.0)[""] == [
        Segment(0, 2, "Healthy"),
        Segment(5, 6, "Healthy"),
    ]


def test_no_failover_without_its_three_figures() -> None:
    decided = [{"metric": {}, "values": [[1, "100"]]}]
    assert timeline.latest_failover(decided, [], decided) is None


def test_the_figure_shows_zones_phase_weights_alerts_and_the_failover_marks() -> None:
    fig = timeline.figure(data())
    assert len(fig.axes) == 8  # four rows, each in a detail column and a whole-window one
    zones_ax, phase_ax, weights_ax, alerts_ax = fig.axes[1::2]  # the whole window
    detail = fig.axes[0::2]
    assert detail[0].get_xlim() == pytest.approx((-2.5, 7))  # last good probe - 2 to DNS + 4
    assert zones_ax.get_xlim() == pytest.approx((-6, 12))
    assert detail[0].get_title(loc="left") == "zone states (lifeboat_zone_state)"
    assert [t.get_text() for t in detail[0].get_yticklabels()] == [
        "usw2/us-west-2a",
        "use1/us-east-1b",
        "use1/us-east-1a",
    ]
    assert len(zones_ax.collections) == 7  # 3 runs per use1 zone, 1 for usw2's
    # every phase in the legend; names written on runs wide enough (not FailingOver's 0.5s)
    legend = phase_ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "Healthy",
        "FailingOver",
        "Degraded",
    ]
    assert [t.get_text() for t in phase_ax.texts] == ["Healthy", "Degraded"]
    lines = {line.get_label(): line for line in weights_ax.lines if line.get_gid() is None}
    assert set(lines) == {"use1", "usw2"}
    east = _floats(lines["use1"].get_ydata())
    assert east[0] == 100 and east[-1] == 0
    west = _floats(lines["usw2"].get_xdata())
    assert west[0] == pytest.approx(-6)  # seconds from the outage
    assert [t.get_text() for t in detail[3].get_yticklabels()] == [
        "LifeboatZoneDown",
        "LifeboatCascadeDetected",
    ]
    alert_legend = alerts_ax.get_legend()
    assert alert_legend is not None
    assert [t.get_text() for t in alert_legend.get_texts()] == ["pending", "firing"]
    marks = {line.get_gid(): _first(line.get_xdata()) for line in zones_ax.lines}
    assert marks == {
        "zones stopped (demo's clock)": 0,
        "last good probe (RTO starts)": pytest.approx(-0.5),
        "failover decided (detection 3.0s)": pytest.approx(2.5),
        "DNS moved (RTO 3.5s)": pytest.approx(3),
    }
    assert "rendered from Lifeboat's Prometheus metrics" in fig.get_suptitle()
    assert marks == {line.get_gid(): _first(line.get_xdata()) for line in detail[3].lines}
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == list(marks)
    assert [t.get_text() for t in detail[2].texts] == ["", "RTO 3.5s"]  # arrow, label


def test_without_a_failover_or_alerts_there_are_no_failover_marks_and_three_panels() -> None:
    plain = timeline.TimelineData(
        app="shop/web",
        origin=T0,
        start=START,
        end=END,
        step=STEP,
        zones={"use1/a": [Segment(START, END, "Healthy")]},
        phase=[Segment(START, END, "Healthy")],
        weights={},
    )
    fig = timeline.figure(plain)
    assert len(fig.axes) == 6
    assert fig.axes[0].get_xlim() == pytest.approx((-2, 10))
    assert [line.get_gid() for line in fig.axes[0].lines] == ["zones stopped (demo's clock)"]


def test_render_writes_a_png(tmp_path: Path) -> None:
    path = timeline.render(data(), tmp_path / "out" / "timeline.png")
    body = path.read_bytes()
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    assert 10_000 < len(body) < 200_000


def _first(values: Any) -> float:
    return float(next(iter(values)))


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]
