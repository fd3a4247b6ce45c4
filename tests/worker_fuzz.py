"""A property/fuzz suite for the per-app worker: mutated ResilientApp specs and statuses
(and a world that changes under it) pushed through the real
:class:`~controller.operator.app.AppWorker` — its status writer, action runner and DNS
read-back — over the in-memory fakes of :mod:`tests.fixtures.worker`.

A case starts from a realistic status (one the worker itself wrote: steady, after a
failover, after a failback, during an evacuation, with a pending recommendation), its spec
and the DNS owner record that goes with it; mutates the spec and the status (wrong types,
missing fields, NaN and infinities, huge and negative numbers, bad timestamps, a
non-string or unknown ``activeSite``, negative epochs, extra fields, unicode); sets DNS
ahead of, behind, or away from the status (or unreadable, or held by another app); and
runs a few steps: rounds with zones failing, restarts, status and spec edits, user
requests, another instance failing over, DNS changes and API server outages.

Invariants checked after every case:

* **no crash**: a round raises nothing but :class:`StaleEpoch` (by design: the daemon
  loop reads the status again), no action crashes, nothing is logged as an error;
* **no epoch regression**: every status the worker writes, every DNS change it submits
  and every action it starts carries an epoch no lower than the highest it has seen
  (in the status it loaded, its own writes, or DNS as read back);
* **no refused write**: every status patch is one the API server takes (JSON, the CRD
  schema);
* **reported**: an invalid spec ends as phase ``Invalid`` with an ``InvalidSpec`` Event,
  an unreadable status with a ``StatusUnreadable`` Event.

``make unit`` runs :func:`tests.unit.test_worker_fuzz` with a moderate number of examples
(derandomized); ``make fuzz`` runs ``python -m tests.worker_fuzz --cases 10000`` and
prints the figures (cases, crashes, regressions, duration, seed).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import math
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, cast

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.api.annotations import APPROVE, PIN, REQUEST
from controller.api.models import MAX_EPOCH, ResilientAppSpec, ResilientAppStatus
from controller.core import decide as core
from controller.core.model import Action, AppState
from controller.operator.app import AppContext, AppWorker
from controller.operator.kube import StaleEpoch
from controller.providers.errors import DnsZoneNotFound, ProviderUnavailable
from controller.providers.protocols import DnsOwner, DnsReading, TrafficChange, TrafficPlan
from tests.factories import app_spec
from tests.fixtures.worker import (
    REF,
    FakeCapacity,
    FakeKube,
    FakeProber,
    FakeProviders,
    FakeTraffic,
    drain,
)

ME = f"{REF.namespace}/{REF.name}"
START = 1_800_000_000.0
INT64_MAX = 2**63 - 1
EPOCH_MAX = MAX_EPOCH
"""The highest epoch the CRD stores (the API server refuses a higher one)."""

# --------------------------------------------------------------------------- values

BAD_TIMES = (
    "soon",
    "",
    "yesterday",
    "2026-13-45T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01T00:00:60Z",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "20260101T000000Z",
    "2026-01-01T00:00:00.123456789Z",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2262-04-11T23:47:16Z",
    "2026-01-01T00:00:00+25:00",
    "2026-W01-1",
    "1e10",
    "\u0662\u0660\u0662\u0666-\u0660\u0661-\u0660\u0661T00:00:00Z",  # Arabic-Indic digits
)
BAD_NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    -(2**31),
    2**31,
    2**53 + 1,
    INT64_MAX,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -0.0,
    5e-324,
    0.5,
    True,
    False,
    "7",
    "1e3",
    "NaN",
)
BAD_SITES: tuple[Any, ...] = (
    7,
    None,
    True,
    "",
    "mars",
    "USE1",
    "use1 ",
    "\uff55\uff53\uff45\uff11",  # fullwidth "use1"
    "usé1",
    "x" * 300,
    ["use1"],
    {"name": "use1"},
    "use1\x00",
    "🚀",
)
SITES = ("use1", "usw2")

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(BAD_NUMBERS),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(BAD_TIMES),
    st.sampled_from(BAD_SITES),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@dataclass(frozen=True)
class Values:
    """The values one mutation may use (which, is decided by where it lands)."""

    any: Any
    time: Any
    number: Any
    site: Any
    key: str


values = st.builds(
    Values,
    any=json_values,
    time=st.sampled_from(BAD_TIMES)
    | st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat()),
    number=st.sampled_from(BAD_NUMBERS) | st.integers() | st.floats(),
    site=st.sampled_from(BAD_SITES + SITES) | st.text(max_size=8),
    key=st.sampled_from(("", "epoch", "activeSite", "unknownField", "x-extra", "ü", "__proto__"))
    | st.text(max_size=8),
)

# --------------------------------------------------------------------------- mutations

Op = Literal["replace", "smart", "delete", "extra", "dup", "flood", "hot"]


@dataclass(frozen=True)
class Mutation:
    """One change to a JSON document, resolved against the document when applied: the
    node is the ``at``-th of its nodes (or of its hot paths, for ``hot``)."""

    op: Op
    at: int
    values: Values

    def apply(self, doc: Any, hot: tuple[tuple[str | int, ...], ...] = ()) -> Any:
        doc = copy.deepcopy(doc)
        if self.op == "hot" and hot:
            path = hot[self.at % len(hot)]
            return _set_path(doc, path, self._smart(path), create=True)
        nodes = list(_paths(doc))
        path = nodes[self.at % len(nodes)]
        node = _get(doc, path)
        if self.op == "delete" and path:
            return _delete(doc, path)
        if self.op == "extra" and isinstance(node, dict):
            node[self.values.key] = self.values.any
            return doc
        if self.op == "extra" and isinstance(node, list):
            node.append(self.values.any)
            return doc
        if self.op == "dup" and path and isinstance(_get(doc, path[:-1]), list):
            _get(doc, path[:-1]).append(copy.deepcopy(node))
            return doc
        if self.op == "flood" and isinstance(node, list) and node:
            node.extend(copy.deepcopy(node[0]) for _ in range(300))
            return doc
        value = self._smart(path) if self.op in ("smart", "hot") else self.values.any
        return _set_path(doc, path, value)

    def _smart(self, path: tuple[str | int, ...]) -> Any:
        """A value aimed at what the field holds."""
        name = str(path[-1]) if path else ""
        if name.endswith(("Time", "time", "Since", "since")) or path[-2:-1] == ("recentFailovers",):
            return self.values.time
        if name in ("epoch", "observedGeneration") or name.startswith(("consecutive", "latency")):
            return self.values.number
        if name in ("activeSite", "site", "toSite", "fromSite", "target", "name", "pinnedSite"):
            return self.values.site
        return self.values.any


def _paths(doc: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield path
    if isinstance(doc, dict):
        for key in doc:
            yield from _paths(doc[key], (*path, key))
    elif isinstance(doc, list):
        for index, item in enumerate(doc):
            yield from _paths(item, (*path, index))


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set_path(doc: Any, path: tuple[str | int, ...], value: Any, create: bool = False) -> Any:
    if not path:
        return value
    parent = doc
    for part in path[:-1]:
        if isinstance(parent, dict) and isinstance(part, str):
            if part not in parent or not isinstance(parent[part], dict | list):
                if not create:
                    return doc
                parent[part] = {}
            parent = parent[part]
        elif isinstance(parent, list) and isinstance(part, int) and part < len(parent):
            parent = parent[part]
        else:
            return doc
    last = path[-1]
    if (isinstance(parent, dict) and isinstance(last, str)) or (
        isinstance(parent, list) and isinstance(last, int) and last < len(parent)
    ):
        cast(Any, parent)[last] = value
    return doc


def _delete(doc: Any, path: tuple[str | int, ...]) -> Any:
    parent = _get(doc, path[:-1])
    del parent[path[-1]]
    return doc


mutations = st.builds(
    Mutation,
    op=st.sampled_from(("replace", "smart", "delete", "extra", "dup", "flood", "hot")),
    at=st.integers(min_value=0, max_value=10_000),
    values=values,
)

STATUS_HOT: tuple[tuple[str | int, ...], ...] = (
    ("epoch",),
    ("activeSite",),
    ("traffic", "epoch"),
    ("traffic", "activeSite"),
    ("traffic", "appliedTime"),
    ("lastFailover", "epoch"),
    ("lastFailover", "toSite"),
    ("lastFailover", "decidedTime"),
    ("lastFailover", "completedTime"),
    ("recentFailovers",),
    ("recentFailovers", 0),
    ("zones", 0, "since"),
    ("zones", 0, "state"),
    ("zones", 0, "site"),
    ("zones", 0, "consecutiveFailures"),
    ("zones", 0, "latencyMs"),
    ("sites", 0, "healthySince"),
    ("sites", 0, "capacity", "appliedTime"),
    ("lastDecision", "time"),
    ("lastDecision", "rule"),
    ("recommendation", "time"),
    ("lastRequest", "time"),
    ("volumeRestores", 0, "epoch"),
    ("conditions", 0, "lastTransitionTime"),
    ("pinnedSite",),
    ("phase",),
)
SPEC_HOT: tuple[tuple[str | int, ...], ...] = (
    ("sites", 0, "name"),
    ("sites", 1, "name"),
    ("sites", 0, "role"),
    ("sites", 0, "zones"),
    ("sites", 0, "endpoints", 0, "zone"),
    ("sites", 1, "priority"),
    ("health", "intervalSeconds"),
    ("health", "timeoutSeconds"),
    ("health", "failureThreshold"),
    ("health", "latencyThresholdSeconds"),
    ("health", "suspectIntervalSeconds"),
    ("failover", "minDwellSeconds"),
    ("failover", "maxFailoversPerHour"),
    ("failover", "mode"),
    ("traffic", "ttl"),
    ("traffic", "recordName"),
    ("traffic", "routing"),
)

# --------------------------------------------------------------------------- the world


def _spec(variant: str) -> dict[str, Any]:
    spec = app_spec()
    spec["failover"] = {"mode": "Automatic", "minDwellSeconds": 0}
    if variant == "capacity":
        for index, site in enumerate(spec["sites"]):
            site["capacity"] = {"perZone": 2, "autoScalingGroup": {"name": f"web-{index}"}}
    elif variant == "failover-routing":
        spec["traffic"]["routing"] = "Failover"
    elif variant == "manual":
        spec["failover"]["mode"] = "Manual"
    elif variant == "observe":
        spec["failover"]["mode"] = "Observe"
    elif variant == "automatic-failback":
        spec["failover"]["failback"] = {"mode": "Automatic", "stableSeconds": 0}
    return spec


@dataclass(frozen=True)
class Seed:
    """A realistic starting point: a spec, the status the worker wrote for it, DNS."""

    name: str
    spec: dict[str, Any]
    status: dict[str, Any]
    owner: DnsOwner | None


SCENARIOS: dict[str, tuple[str, tuple[frozenset[str], ...]]] = {
    "steady": ("plain", (frozenset(),) * 2),
    "failed-over": ("plain", (frozenset(),) + (frozenset({"use1"}),) * 5),
    "failed-back": (
        "automatic-failback",
        (frozenset(),) + (frozenset({"use1"}),) * 5 + (frozenset(),) * 6,
    ),
    "evacuated": ("capacity", (frozenset(),) + (frozenset({"use1/us-east-1b"}),) * 5),
    "recommended": ("manual", (frozenset(),) + (frozenset({"use1"}),) * 5),
    "observed": ("observe", (frozenset(),) + (frozenset({"use1"}),) * 5),
    "failover-routing": ("failover-routing", (frozenset(),) + (frozenset({"use1"}),) * 5),
}


@cache
def seeds() -> tuple[Seed, ...]:
    """The starting points, written by the worker itself (computed once)."""
    return tuple(asyncio.run(_make_seed(name, *plan)) for name, plan in SCENARIOS.items())


async def _make_seed(name: str, variant: str, rounds: tuple[frozenset[str], ...]) -> Seed:
    now = [START - 7200.0]
    clock = lambda: now[0]  # noqa: E731
    kube, traffic, prober = FakeKube(), FakeTraffic(clock=clock), FakeProber(clock, pause=0)
    context = AppContext(
        kube=kube,
        providers=FakeProviders(traffic),
        prober=prober,
        capacity=FakeCapacity(),
        clock=clock,
    )
    worker = AppWorker(REF, context)
    worker.dns.clock = clock
    spec = _spec(variant)
    for down in rounds:
        prober.down = set(down)
        await worker.round({"metadata": {"generation": 1}, "spec": spec, "status": kube.stored})
        await drain(worker)
        now[0] += 1.0
    await worker.actions.stop()
    return Seed(name, spec, copy.deepcopy(kube.stored), traffic.owner)


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Round:
    down: tuple[str, ...] = ()
    advance: float = 1.0


@dataclass(frozen=True)
class Restart:
    """The operator restarts: a new worker reads the stored status."""


@dataclass(frozen=True)
class EditStatus:
    """Someone edits the stored status (kubectl edit --subresource=status, a restore)."""

    mutations: tuple[Mutation, ...]


@dataclass(frozen=True)
class EditSpec:
    mutations: tuple[Mutation, ...]


@dataclass(frozen=True)
class Annotate:
    request: str | None = None
    approve: str | None = None
    pin: str | None = None


@dataclass(frozen=True)
class OtherInstance:
    """Another instance fails over meanwhile: it records a newer epoch and moves DNS."""

    by: int
    site: str


@dataclass(frozen=True)
class DnsChange:
    kind: Literal[
        "clear",
        "foreign",
        "other-owner",
        "readable",
        "unreadable",
        "apply-fails",
        "apply-works",
        "ahead",
    ]
    epoch: int = 0
    site: str = "usw2"


@dataclass(frozen=True)
class KubeOutage:
    down: bool


Step = Round | Restart | EditStatus | EditSpec | Annotate | OtherInstance | DnsChange | KubeOutage


@dataclass(frozen=True)
class Case:
    seed: str
    epoch_shift: int
    spec: tuple[Mutation, ...]
    status: tuple[Mutation, ...]
    dns: DnsChange | None
    steps: tuple[Step, ...]


requests = st.one_of(
    st.builds(
        lambda op, site, force, rid: json.dumps(
            {"id": rid, "op": op, "site": site, "force": force}
        ),
        op=st.sampled_from(("failover", "failback", "explode")) | json_scalars,
        site=st.sampled_from(SITES + BAD_SITES),
        force=st.booleans() | json_scalars,
        rid=st.text(max_size=6) | json_scalars,
    ),
    st.sampled_from(("{", "[]", "null", '"failover"', "{}", '{"id": 1, "op": "failover"}')),
    st.text(max_size=20),
)
dns_changes = st.builds(
    DnsChange,
    kind=st.sampled_from(
        (
            "clear",
            "foreign",
            "other-owner",
            "readable",
            "unreadable",
            "apply-fails",
            "apply-works",
            "ahead",
        )
    ),
    epoch=st.integers(min_value=-3, max_value=50)
    | st.sampled_from((EPOCH_MAX, EPOCH_MAX + 1, INT64_MAX, 2**64)),
    site=st.sampled_from((*SITES, "mars")),
)
steps = st.one_of(
    st.builds(
        Round,
        down=st.sampled_from(
            ((), (), ("use1",), ("use1",), ("use1/us-east-1b",), ("usw2",), ("use1", "usw2"))
        ),
        advance=st.sampled_from((1.0, 1.0, 5.0, 61.0, 3601.0, 0.0, -30.0)),
    ),
    st.just(Restart()),
    st.builds(EditStatus, st.lists(mutations, min_size=1, max_size=3).map(tuple)),
    st.builds(EditSpec, st.lists(mutations, min_size=1, max_size=2).map(tuple)),
    st.builds(
        Annotate,
        request=st.none() | requests,
        approve=st.none() | st.text(max_size=8),
        pin=st.none() | st.sampled_from((*SITES, "mars", "")),
    ),
    st.builds(OtherInstance, by=st.integers(1, 3), site=st.sampled_from(SITES)),
    dns_changes,
    st.builds(KubeOutage, st.booleans()),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    chosen = draw(st.sampled_from(tuple(s.name for s in seeds())))
    plan = draw(st.lists(steps, min_size=1, max_size=7))
    rounds = [Round()] if not any(isinstance(s, Round) for s in plan) else []
    return Case(
        seed=chosen,
        epoch_shift=draw(st.sampled_from((0, 0, 1, 7, 1000, 2**31))),
        spec=tuple(draw(st.lists(mutations, max_size=2))),
        status=tuple(draw(st.lists(mutations, max_size=4))),
        dns=draw(st.none() | dns_changes),
        steps=(Round(), *plan, *rounds),
    )


# --------------------------------------------------------------------------- running a case


@dataclass
class Outcome:
    """What went wrong in one case (nothing, for a pass)."""

    crashes: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unreported: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.crashes or self.regressions or self.refused or self.unreported)

    def lines(self) -> list[str]:
        return (
            [f"crash: {c}" for c in self.crashes]
            + [f"epoch regression: {r}" for r in self.regressions]
            + [f"status write refused: {r}" for r in self.refused]
            + [f"not reported: {u}" for u in self.unreported]
        )


class _Errors(logging.Handler):
    """Records logged at ERROR or above: each is a crash (an exception the worker only
    logged, or a task that died)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        where = ""
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            frame = traceback.extract_tb(error.__traceback__)[-1]
            where = f" ({type(error).__name__}: {error} at {frame.filename}:{frame.lineno})"
        self.seen.append(f"logged {record.getMessage()}{where}")


def _epoch(value: Any) -> int:
    """An epoch as the stored status states it (0: none that is one)."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= EPOCH_MAX:
        return value
    return 0


def epochs_in(status: Any) -> int:
    """The highest epoch a status states: its own, DNS's as last applied, the last
    failover's and the restores' (0: none)."""
    if not isinstance(status, dict):
        return 0
    found = [_epoch(status.get("epoch"))]
    for key in ("traffic", "lastFailover"):
        if isinstance(status.get(key), dict):
            found.append(_epoch(status[key].get("epoch")))
    if isinstance(status.get("volumeRestores"), list):
        found += [_epoch(r.get("epoch")) for r in status["volumeRestores"] if isinstance(r, dict)]
    return max(found)


def _shift(status: dict[str, Any], by: int) -> dict[str, Any]:
    """The status with every epoch raised by ``by`` (a long-lived app)."""
    status = copy.deepcopy(status)
    if by:
        for node in (status, status.get("traffic"), status.get("lastFailover")):
            if isinstance(node, dict) and isinstance(node.get("epoch"), int) and node["epoch"]:
                node["epoch"] += by
        for key in ("replication", "volumeRestores"):
            for entry in status.get(key, ()):
                if isinstance(entry.get("epoch"), int):
                    entry["epoch"] += by
    return status


class Journal:
    """What the worker saw and did, in order: the epoch check reads it."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, int, str]] = []

    def add(self, kind: str, epoch: int, what: str = "") -> None:
        self.entries.append((kind, epoch, what))

    def regressions(self) -> list[str]:
        """Every record or action under an epoch below the highest seen by that worker."""
        found: list[str] = []
        highest = 0
        for kind, epoch, what in self.entries:
            if kind == "restart":
                highest = 0
            elif kind == "seen":
                highest = max(highest, epoch)
            elif epoch < highest:
                found.append(f"{kind} {what} under epoch {epoch} after seeing epoch {highest}")
        return found


class _World:
    """One case's fakes, wired to the journal."""

    def __init__(self, case: Case, journal: Journal) -> None:
        origin = next(s for s in seeds() if s.name == case.seed)
        self.journal = journal
        self.now = [START]
        self.kube = _JournaledKube(journal, _shift(origin.status, case.epoch_shift))
        self.traffic = _JournaledTraffic(journal, clock=self.clock)
        if origin.owner is not None:
            self.traffic.owner = DnsOwner(
                origin.owner.owner,
                origin.owner.epoch + case.epoch_shift,
                origin.owner.active_site,
                origin.owner.fingerprint,
            )
        self.providers = FakeProviders(self.traffic)
        self.prober = FakeProber(self.clock, pause=0)
        self.capacity = FakeCapacity()
        self.base_spec = origin.spec
        self.spec: Any = origin.spec
        self.annotations: dict[str, str] = {}
        self.generation = 1

    def clock(self) -> float:
        return self.now[0]

    def worker(self) -> AppWorker:
        context = AppContext(
            kube=self.kube,
            providers=self.providers,
            prober=self.prober,
            capacity=self.capacity,
            clock=self.clock,
        )
        worker = AppWorker(REF, context)
        worker.dns.clock = self.clock
        started = worker.actions.start
        journal = self.journal

        def start(action: Action, spec: ResilientAppSpec, restores: Any) -> None:
            journal.add("action", action.epoch, action.id)
            started(action, spec, restores)

        worker.actions.start = start  # type: ignore[method-assign]
        return worker

    def body(self) -> dict[str, Any]:
        return {
            "metadata": {"generation": self.generation, "annotations": dict(self.annotations)},
            "spec": copy.deepcopy(self.spec),
            "status": copy.deepcopy(self.kube.stored),
        }


class _JournaledKube(FakeKube):
    def __init__(self, journal: Journal, status: dict[str, Any]) -> None:
        super().__init__(status)
        self.journal = journal

    async def patch_status(
        self, ref: Any, status: dict[str, Any], *, epoch: int | None = None
    ) -> None:
        written = status.get("epoch")
        if epoch is not None:
            self.journal.add("status write", epoch, "(fence)")
        if isinstance(written, int):
            self.journal.add("status write", written, "(status.epoch)")
        await super().patch_status(ref, status, epoch=epoch)
        if isinstance(written, int):
            self.journal.add("seen", written)


class _JournaledTraffic(FakeTraffic):
    def __init__(self, journal: Journal, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.journal = journal

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        if plan.owner is not None:
            self.journal.add("DNS change", plan.owner.epoch, f"to {plan.owner.active_site}")
        return await super().apply(plan)

    async def read(self, plan: TrafficPlan) -> DnsReading:
        reading = await super().read(plan)
        if reading.owner is not None and reading.owner.owner == ME:
            self.journal.add("seen", _epoch(reading.owner.epoch))
        return reading


def _dns(world: _World, change: DnsChange) -> None:
    traffic, kind = world.traffic, change.kind
    if kind == "clear":
        traffic.owner, traffic.foreign = None, None
    elif kind == "foreign":
        traffic.owner, traffic.foreign = None, "A 203.0.113.9 (no owner record)"
    elif kind == "other-owner":
        traffic.owner = DnsOwner("shop/other", change.epoch, change.site, "x")
    elif kind == "ahead":
        traffic.owner = DnsOwner(ME, change.epoch, change.site, "edited")
    elif kind == "unreadable":
        traffic.read_error = (
            ConnectionError("reset"),
            DnsZoneNotFound("example.test."),
            ProviderUnavailable("ProviderNotFound", "no such CloudProvider"),
            RuntimeError("boom"),
        )[abs(change.epoch) % 4]
    elif kind == "readable":
        traffic.read_error = None
    elif kind == "apply-fails":
        traffic.apply_error = ConnectionError("throttled")
    elif kind == "apply-works":
        traffic.apply_error = None


def _other_instance(world: _World, step: OtherInstance) -> None:
    """Another instance's failover at a newer epoch: its status and its DNS change."""
    stored = world.kube.stored if isinstance(world.kube.stored, dict) else {}
    epoch = (
        max(epochs_in(stored), world.traffic.owner.epoch if world.traffic.owner else 0) + step.by
    )
    epoch = min(epoch, EPOCH_MAX)
    world.kube.stored = {**stored, "epoch": epoch, "activeSite": step.site}
    try:
        spec = ResilientAppSpec.model_validate(world.spec)
        fingerprint = core.desired_traffic(AppState(step.site, epoch=epoch), spec).fingerprint
    except (ValidationError, ValueError, TypeError):
        fingerprint = "unknown"
    world.traffic.owner = DnsOwner(ME, epoch, step.site, fingerprint)


async def run_case(case: Case) -> Outcome:
    """Run one case; what went wrong."""
    journal, outcome, errors = Journal(), Outcome(), _Errors()
    loggers = [logging.getLogger("controller"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(errors)
    world = _World(case, journal)
    for mutation in case.spec:
        world.spec = mutation.apply(world.spec, SPEC_HOT)
    for mutation in case.status:
        world.kube.stored = mutation.apply(world.kube.stored, STATUS_HOT)
    if case.dns is not None:
        _dns(world, case.dns)
    unreadable_at_start = _unreadable(world.kube.stored)
    worker = world.worker()
    try:
        for step in case.steps:
            if isinstance(step, Round):
                world.prober.down = set(step.down)
                world.now[0] += step.advance
                await _round(worker, world, outcome)
            elif isinstance(step, Restart):
                await worker.actions.stop()
                journal.add("restart", 0)
                worker = world.worker()
            elif isinstance(step, EditStatus):
                for mutation in step.mutations:
                    world.kube.stored = mutation.apply(world.kube.stored, STATUS_HOT)
            elif isinstance(step, EditSpec):
                for mutation in step.mutations:
                    world.spec = mutation.apply(world.spec, SPEC_HOT)
                world.generation += 1
            elif isinstance(step, Annotate):
                for key, value in (
                    (REQUEST, step.request),
                    (APPROVE, step.approve),
                    (PIN, step.pin),
                ):
                    if value is None:
                        world.annotations.pop(key, None)
                    else:
                        world.annotations[key] = value
            elif isinstance(step, OtherInstance):
                _other_instance(world, step)
            elif isinstance(step, DnsChange):
                _dns(world, step)
            elif isinstance(step, KubeOutage):
                world.kube.fail_patches = step.down
        world.kube.fail_patches = False
        world.traffic.apply_error = world.traffic.read_error = None
        for _ in range(2):  # last rounds with the world reachable (a fenced one is retried)
            await _round(worker, world, outcome)
        _check_reported(world, unreadable_at_start, outcome)
    finally:
        await worker.actions.stop()
        for logger in loggers:
            logger.removeHandler(errors)
    outcome.crashes += errors.seen
    outcome.regressions += journal.regressions()
    outcome.refused += world.kube.refused
    return outcome


async def _round(worker: AppWorker, world: _World, outcome: Outcome) -> None:
    """One round as the daemon loop runs it (a StaleEpoch abandons the round, and the
    status is read again at the next)."""
    body = world.body()
    if worker.state is None:
        world.journal.add("seen", epochs_in(body["status"]))
    try:
        await worker.round(body)
        await drain(worker)
    except StaleEpoch as error:
        await worker._fenced_out(error)
    except Exception as error:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        outcome.crashes.append(
            f"round raised {type(error).__name__}: {error} at {frame.filename}:{frame.lineno}"
        )


def _unreadable(status: Any) -> bool:
    try:
        ResilientAppStatus.model_validate(status or {})
    except ValidationError:
        return True
    return False


def _check_reported(world: _World, unreadable: bool, outcome: Outcome) -> None:
    reasons = {reason for _, reason, _ in world.kube.events}
    try:
        ResilientAppSpec.model_validate(world.spec or {})
    except ValidationError:
        stored = world.kube.stored if isinstance(world.kube.stored, dict) else {}
        if stored.get("phase") != "Invalid" or "InvalidSpec" not in reasons:
            outcome.unreported.append("an invalid spec is not reported as phase Invalid")
        return
    if unreadable and "StatusUnreadable" not in reasons and "DNSDiverged" not in reasons:
        outcome.unreported.append("an unreadable status is not said in an Event")


def check(case: Case) -> Outcome:
    """Run ``case`` in an event loop of its own."""
    seeds()  # computed in a loop of their own, once
    return asyncio.run(run_case(case))


# --------------------------------------------------------------------------- make fuzz


@dataclass
class Tally:
    cases: int = 0
    failed: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    examples: dict[str, Case] = field(default_factory=dict)

    def add(self, case: Case, outcome: Outcome) -> None:
        self.cases += 1
        if outcome.ok:
            return
        self.failed += 1
        for line in outcome.lines():
            signature = _signature(line)
            self.kinds[signature] += 1
            self.examples.setdefault(signature, case)

    def count(self, prefix: str) -> int:
        return sum(n for kind, n in self.kinds.items() if kind.startswith(prefix))


def _signature(line: str) -> str:
    """A failure without its figures (one line per distinct defect)."""
    return "".join("#" if c.isdigit() else c for c in line)[:200]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--show", type=int, default=1, help="print an example case per defect")
    parser.add_argument("--replay", metavar="FILE", help="run the case printed in FILE, say why")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    if args.replay:
        with open(args.replay) as printed:
            case = eval(printed.read(), vars(sys.modules[__name__]))  # noqa: S307 (our own repr)
        lines = check(case).lines()
        print("\n".join(lines) or "no failure")
        return 1 if lines else 0
    chosen = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    tally = Tally()

    @seed(chosen)
    @settings(
        max_examples=args.cases,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def one(case: Case) -> None:
        tally.add(case, check(case))

    seeds()  # the starting points, before the clock starts
    started = time.monotonic()
    one()
    elapsed = time.monotonic() - started
    print(f"seed {chosen}: python -m tests.worker_fuzz --cases {args.cases} --seed {chosen}")
    print(
        f"cases {tally.cases}, crashes {tally.count('crash')}, "
        f"epoch regressions {tally.count('epoch')}, "
        f"refused status writes {tally.count('status write refused')}, "
        f"unreported {tally.count('not reported')}, "
        f"failing cases {tally.failed}, {elapsed:.0f} s ({tally.cases / elapsed:.0f} cases/s)"
    )
    for kind, number in tally.kinds.most_common():
        print(f"  {number:6d} x {kind}")
        if args.show:  # the whole case: --replay runs it again
            print(f"           e.g. {tally.examples[kind]!r}")
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
