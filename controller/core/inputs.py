"""The core's observations, built one way for the operator and for ``lifeboat simulate``.

The operator's worker and the simulator gather their evidence differently (real probes
and API calls; a scripted timeline), but what the decision core is shown is made here,
from the same kinds of evidence, by one function, so that the two can never drift:

* every probe is judged against the app's ``health.timeoutSeconds``: an answer that came
  later than the timeout counts as a timeout (a real probe would have given up);
* every region an app's sites live in has a verdict (Unknown when none was given), and
  the reason of a Degraded or Impaired verdict, with its figure, goes along for the words
  of refusals and holds;
* the app's RPO target goes along with the replication lag, so that an automatic failback
  waits for replication to catch up to it;
* the user's operations (request, approval, pin) are passed as they are;
* each site's capacity reading (what its driver reported, when) goes along for the sites
  the app has: standby readiness, capacity coming up after a failover or an evacuation,
  and the old site's shrink waiting for the new site's capacity to be Ready all rest on
  it. A reading stamped later than the round (a clock that went back) is not used.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from controller.api.annotations import Request
from controller.api.models import ResilientAppSpec
from controller.core.apiplane import ApiPlaneHealth, ApiPlaneState
from controller.core.capacity import CapacityReading
from controller.core.health import ProbeOutcome, ProbeResult
from controller.core.model import DnsObservation, FlowProgress, Observations, RegionKey
from controller.core.vantage import Vantage

_TROUBLED = (ApiPlaneState.DEGRADED, ApiPlaneState.IMPAIRED)


def regions(spec: ResilientAppSpec) -> tuple[RegionKey, ...]:
    """The (provider, region) of every site, in spec order, each once."""
    return tuple(dict.fromkeys((s.provider, s.region) for s in spec.sites))


def judged(probe: ProbeResult, timeout: float) -> ProbeResult:
    """``probe`` as the core must see it: an answer later than ``timeout`` is a timeout."""
    if probe.outcome is ProbeOutcome.OK and probe.latency > timeout:
        return replace(
            probe,
            outcome=ProbeOutcome.TIMEOUT,
            detail=f"no answer within {timeout:g}s (took {probe.latency:.2f}s)",
        )
    return probe


def observations(
    spec: ResilientAppSpec,
    *,
    probes: Iterable[ProbeResult],
    api_planes: Mapping[RegionKey, ApiPlaneHealth],
    traffic_plane: ApiPlaneState,
    request: Request | None = None,
    approval: str | None = None,
    pinned: str | None = None,
    replication_lag: Mapping[str, float | None] | None = None,
    dns: DnsObservation | None = None,
    vantage: Vantage | None = None,
    capacity: Mapping[str, CapacityReading] | None = None,
    now: float | None = None,
    replication_flows: Iterable[FlowProgress] = (),
    drill: str | None = None,
) -> Observations:
    """What the decision core is shown in one round (``now``: the round's time)."""
    timeout = float(spec.health.timeout_seconds)
    health = {key: api_planes.get(key, ApiPlaneHealth()) for key in regions(spec)}
    replication = spec.replication
    return Observations(
        probes=tuple(judged(p, timeout) for p in probes),
        api_planes={key: h.state for key, h in health.items()},
        api_plane_reasons={
            key: h.reason for key, h in health.items() if h.state in _TROUBLED and h.reason
        },
        traffic_plane=traffic_plane,
        request=request,
        approval=approval,
        pinned=pinned,
        replication_lag=dict(replication_lag or {}),
        replication_target=float(replication.rpo_target_seconds) if replication else None,
        dns=dns,
        vantage=vantage,
        capacity={
            name: reading
            for name, reading in (capacity or {}).items()
            if spec.site(name) is not None and (now is None or reading.at <= now)
        },
        replication_flows=tuple(replication_flows),
        drill=drill or None,
    )
