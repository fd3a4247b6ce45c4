"""The demo's timeline picture, rendered from Lifeboat's own metrics.

:func:`fetch` asks Prometheus (the sandbox's, which scraped the operator's ``/metrics``
during the demo) for range queries over the demo's window: every zone's state
(``lifeboat_zone_state``), the app's phase (``lifeboat_app_phase``), each site's DNS weight
(``lifeboat_dns_weight``), the alerts Prometheus evaluated from the chart's rules
(``ALERTS``), and the latest failover's figures (``lifeboat_last_failover_*``: when it was
decided, detection, RTO). :func:`figure` draws them with matplotlib (Agg, no display);
:func:`render` writes the PNG. Nothing is drawn that Prometheus did not return, except
the moment the demo stopped the zones (its own clock), which is labelled as such.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

Matrix = list[dict[str, Any]]
"""A range query's result: ``[{"metric": {...}, "values": [[unix time, "value"], ...]}]``."""

QueryRange = Callable[[str, float, float, float], Matrix]
"""``(promql, start, end, step)`` -> the range query's result."""

CAPTION = "rendered from Lifeboat's Prometheus metrics"
ZONE_COLORS = {
    "Healthy": "#2ca02c",
    "Recovering": "#1f77b4",
    "Suspect": "#ffbf00",
    "Down": "#d62728",
    "Unknown": "#9e9e9e",
}
PHASE_COLORS = {
    "Pending": "#9e9e9e",
    "Healthy": "#2ca02c",
    "Degraded": "#ff7f0e",
    "Frozen": "#17becf",
    "FailingOver": "#9467bd",
    "Down": "#d62728",
    "Invalid": "#000000",
}
ALERT_COLORS = {"pending": "#fdd49e", "firing": "#d62728"}
_ALERT_PRIORITY = ("pending", "firing")  # a later state wins where both are seen at once
GAP = 2.5
"""Samples further apart than this many steps leave a gap (no data) between them."""
TEXT_SHARE = 0.08
"""A phase's name is written on runs at least this share of the window wide."""


@dataclass(frozen=True)
class Segment:
    """``value`` held from ``start`` to ``end`` (unix times)."""

    start: float
    end: float
    value: str


@dataclass(frozen=True)
class Failover:
    """The latest failover, as the operator's metrics give it (unix times, seconds)."""

    decided_at: float
    detection: float
    rto: float

    @property
    def outage_start(self) -> float:
        """The operator's outage start: the last successful probe (detection counts from it)."""
        return self.decided_at - self.detection

    @property
    def dns_moved(self) -> float:
        """When the traffic shift was carried out (RTO counts to it)."""
        return self.outage_start + self.rto


@dataclass(frozen=True)
class TimelineData:
    """Everything the picture shows; times are unix times, ``origin`` is x = 0."""

    app: str
    origin: float
    start: float
    end: float
    step: float
    zones: Mapping[str, list[Segment]]
    phase: list[Segment]
    weights: Mapping[str, list[tuple[float, float]]]
    alerts: Mapping[str, list[Segment]] = field(default_factory=dict)
    failover: Failover | None = None
    origin_label: str = "zones stopped (demo's clock)"


def queries(namespace: str, app: str) -> dict[str, str]:
    """The PromQL of each part of the picture."""
    sel = f'namespace="{namespace}",app="{app}"'
    return {
        "zones": f"lifeboat_zone_state{{{sel}}} == 1",
        "phase": f"lifeboat_app_phase{{{sel}}} == 1",
        "weights": f"lifeboat_dns_weight{{{sel}}}",
        "alerts": f'max by (alertname, alertstate) (ALERTS{{alertname=~"Lifeboat.+",{sel}}})',
        "decided": f"lifeboat_last_failover_timestamp_seconds{{{sel}}} > 0",
        "detection": f"lifeboat_last_failover_detection_seconds{{{sel}}}",
        "rto": f"lifeboat_last_failover_rto_seconds{{{sel}}}",
    }


def fetch(
    query_range: QueryRange,
    *,
    namespace: str,
    app: str,
    origin: float,
    start: float,
    end: float,
    step: float,
) -> TimelineData:
    """The picture's data from Prometheus' range API over ``[start, end]``."""
    found = {
        part: query_range(promql, start, end, step)
        for part, promql in queries(namespace, app).items()
    }
    return TimelineData(
        app=f"{namespace}/{app}",
        origin=origin,
        start=start,
        end=end,
        step=step,
        zones=segments(found["zones"], ("site", "zone"), "state", step),
        phase=segments(found["phase"], (), "phase", step).get("", []),
        weights=points(found["weights"], "site"),
        alerts=segments(found["alerts"], ("alertname",), "alertstate", step, _ALERT_PRIORITY),
        failover=latest_failover(found["decided"], found["detection"], found["rto"]),
    )


def segments(
    matrix: Matrix,
    keys: Sequence[str],
    value_label: str,
    step: float,
    priority: Sequence[str] = (),
) -> dict[str, list[Segment]]:
    """One-hot series (``... == 1``) as runs of one value per key (``keys``' labels joined
    by ``/``): each sample holds until the key's next sample, the last for one ``step``;
    samples more than :data:`GAP` steps apart leave a gap. Where two values of a key are
    seen at one time the later in ``priority`` wins."""
    at: dict[str, dict[float, str]] = {}
    for series in matrix:
        labels = series["metric"]
        key = "/".join(labels.get(k, "") for k in keys)
        value = labels.get(value_label, "")
        times = at.setdefault(key, {})
        for t, _ in series["values"]:
            held = times.get(float(t))
            if held is None or _rank(value, priority) > _rank(held, priority):
                times[float(t)] = value
    result: dict[str, list[Segment]] = {}
    for key in sorted(at):
        samples = sorted(at[key].items())
        runs: list[Segment] = []
        for i, (t, value) in enumerate(samples):
            following = samples[i + 1][0] if i + 1 < len(samples) else None
            end = following if following is not None and following - t <= GAP * step else t + step
            if runs and runs[-1].value == value and runs[-1].end == t:
                runs[-1] = Segment(runs[-1].start, end, value)
            else:
                runs.append(Segment(t, end, value))
        result[key] = runs
    return result


def _rank(value: str, priority: Sequence[str]) -> int:
    return priority.index(value) if value in priority else -1


def points(matrix: Matrix, key: str) -> dict[str, list[tuple[float, float]]]:
    """Each series' samples by ``key``'s label value."""
    return {
        series["metric"].get(key, ""): [(float(t), float(v)) for t, v in series["values"]]
        for series in sorted(matrix, key=lambda s: str(s["metric"].get(key, "")))
    }


def latest_failover(decided: Matrix, detection: Matrix, rto: Matrix) -> Failover | None:
    """The latest failover's figures (their last samples), None without all three."""
    last = [_last(m) for m in (decided, detection, rto)]
    if any(v is None for v in last):
        return None
    decided_at, detection_s, rto_s = (float(v) for v in last if v is not None)
    return Failover(decided_at, detection_s, rto_s)


def _last(matrix: Matrix) -> float | None:
    values = [(float(t), float(v)) for s in matrix for t, v in s["values"]]
    return max(values)[1] if values else None


def zoom(data: TimelineData) -> tuple[float, float]:
    """The detail column's window (unix times): the outage to a few seconds after DNS
    moved (or the first ten seconds of the outage without a failover)."""
    first = data.origin
    last = data.origin + 10
    if data.failover is not None and data.start <= data.failover.decided_at <= data.end:
        first = min(first, data.failover.outage_start)
        last = max(data.failover.dns_moved, data.origin) + 4
    return max(data.start, first - 2), min(data.end, last)


def figure(data: TimelineData) -> Figure:
    """The timeline: zone states, phase, DNS weights and (when there are any) the alerts
    Prometheus evaluated, one row each; the left column details the failover (:func:`zoom`),
    the right one shows the whole window; x is seconds from ``data.origin``."""
    rows = [1 + len(data.zones) * 0.4, 0.9, 1.6]
    if data.alerts:
        rows.append(0.6 + len(data.alerts) * 0.35)
    fig = Figure(figsize=(12, 1.6 + sum(rows) * 0.9), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(
        len(rows),
        2,
        sharey="row",
        gridspec_kw={"height_ratios": rows, "width_ratios": [1, 2.2]},
    )
    windows = (zoom(data), (data.start, data.end))
    marks = _marks(data)
    for column, (first, last) in enumerate(windows):
        axes = [grid[row][column] for row in range(len(rows))]
        _column(axes, data, last - first, legends=column == 1)
        for t, label, color, style in marks:
            for ax in axes:
                ax.axvline(t - data.origin, color=color, linestyle=style, lw=1.2, gid=label)
        for ax in axes:
            ax.set_xlim(first - data.origin, last - data.origin)
            if column == 1:
                ax.tick_params(labelleft=False)
        axes[-1].set_xlabel(
            "seconds from the outage: the failover" if column == 0 else "the whole demo"
        )
    _rto(grid[2][0], data)
    _rto(grid[2][1], data)
    fig.legend(
        handles=[_line(color, style) for _, _, color, style in marks],
        labels=[label for _, label, _, _ in marks],
        loc="outside lower center",
        ncols=len(marks),
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(f"Lifeboat demo: {data.app} region failover, {CAPTION}", fontsize=12)
    return fig


def _column(axes: list[Any], data: TimelineData, window: float, legends: bool) -> None:
    """One column's rows."""

    def x(t: float) -> float:
        return t - data.origin

    zones_ax, phase_ax, weights_ax = axes[0], axes[1], axes[2]
    titled = not legends  # the left column carries the titles, the right one the legends
    _bars(zones_ax, data.zones, ZONE_COLORS, x, window, legend=legends)
    _bars(phase_ax, {"phase": data.phase}, PHASE_COLORS, x, window, legend=legends, text=True)
    for site, samples in data.weights.items():
        weights_ax.plot(
            [x(t) for t, _ in samples],
            [v for _, v in samples],
            drawstyle="steps-post",
            linewidth=2,
            label=site,
        )
    weights_ax.set_ylim(-8, 115)
    weights_ax.set_yticks([0, 50, 100])
    if data.weights and legends:
        weights_ax.legend(
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            fontsize=8,
            ncols=len(data.weights),
            frameon=False,
            borderaxespad=0.1,
        )
    if data.alerts:
        _bars(axes[3], data.alerts, ALERT_COLORS, x, window, legend=legends)
    if titled:
        titles = [
            "zone states (lifeboat_zone_state)",
            "app phase (lifeboat_app_phase)",
            "DNS weight by site (lifeboat_dns_weight)",
            "alerts of the chart's rules (Prometheus ALERTS)",
        ]
        for ax, title in zip(axes, titles, strict=False):
            ax.set_title(title, loc="left", fontsize=10)


def _bars(
    ax: Any,
    rows: Mapping[str, list[Segment]],
    colors: Mapping[str, str],
    x: Callable[[float], float],
    window: float,
    legend: bool,
    text: bool = False,
) -> None:
    names = list(rows)
    seen: dict[str, str] = {}
    for i, name in enumerate(reversed(names)):
        for run in rows[name]:
            color = colors.get(run.value, "#cccccc")
            seen.setdefault(run.value, color)
            ax.broken_barh([(x(run.start), run.end - run.start)], (i - 0.4, 0.8), facecolors=color)
            if text and run.end - run.start >= TEXT_SHARE * window:
                ax.text(
                    x(run.start) + 0.02 * window,
                    i,
                    run.value,
                    va="center",
                    fontsize=8,
                    clip_on=True,
                )
    ax.set_yticks(range(len(names)), list(reversed(names)), fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    if seen and legend:
        handles = [_patch(color) for color in seen.values()]
        ax.legend(
            handles,
            list(seen),
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            fontsize=8,
            ncols=len(seen),
            frameon=False,
            borderaxespad=0.1,
        )


def _patch(color: str) -> Any:
    return Patch(facecolor=color)


def _line(color: str, style: Any) -> Any:
    return Line2D([], [], color=color, linestyle=style, linewidth=1.2)


def _marks(data: TimelineData) -> list[tuple[float, str, str, str]]:
    """The outage (the demo's clock), and from the operator's metrics: its last good probe,
    the failover decided and DNS moved: (unix time, label, color, line style)."""
    marks = [(data.origin, data.origin_label, "black", "--")]
    failover = data.failover
    if failover is not None and data.start <= failover.decided_at <= data.end:
        marks += [
            (failover.outage_start, "last good probe (RTO starts)", "#555555", ":"),
            (
                failover.decided_at,
                f"failover decided (detection {failover.detection:.1f}s)",
                "#9467bd",
                "-",
            ),
            (failover.dns_moved, f"DNS moved (RTO {failover.rto:.1f}s)", "#1f77b4", "-"),
        ]
    return marks


def _rto(ax: Any, data: TimelineData) -> None:
    """The RTO as an arrow from the last good probe to DNS moved."""
    failover = data.failover
    if failover is None or not data.start <= failover.decided_at <= data.end:
        return
    ax.annotate(
        "",
        (failover.dns_moved - data.origin, 50),
        (failover.outage_start - data.origin, 50),
        arrowprops={"arrowstyle": "<->", "color": "#1f77b4"},
    )
    ax.annotate(
        f"RTO {failover.rto:.1f}s",
        (failover.dns_moved - data.origin, 50),
        xytext=(4, 4),
        textcoords="offset points",
        color="#1f77b4",
        fontsize=9,
    )


def render(data: TimelineData, path: Path) -> Path:
    """Write the timeline as a PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure(data).savefig(path, format="png")
    return path
