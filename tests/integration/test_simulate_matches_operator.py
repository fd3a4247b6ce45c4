"""One timeline, two runs: ``lifeboat simulate`` and the real operator on the sandbox make
the same decisions (issue 19: the observations are built by one code path).

The timeline is played in real time against the sandbox (zonal endpoints stopped, a user
request through the CLI's code) and handed to the simulator as it is; the decisions are
compared by what the core announced (Events, in order, with their words: evacuations,
failovers, refusals with every cause) and where the app ends (active site, epoch, zones in
traffic, DNS weights).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cli import commands
from controller.cli.simulate import simulation
from controller.core.model import NoteKind
from sandbox.world import Sandbox
from tests.fixtures.world import Apps, wait_for

pytestmark = pytest.mark.integration

TIMELINE: list[dict[str, Any]] = [
    {"at": 3, "zones": {"use1/us-east-1b": "fail"}},
    {
        "at": 15,
        "zones": {"use1/us-east-1a": "fail", "use1/us-east-1b": "fail", "use1/us-east-1c": "fail"},
    },
    {"at": 30, "request": {"op": "failback"}},
]
DURATION = 40
ANNOUNCED = {k.value for k in NoteKind} - {
    NoteKind.ZONE_STATE.value,
    NoteKind.CAPACITY_READY.value,
    NoteKind.CAPACITY_NOT_READY.value,
    NoteKind.STANDBY_READY.value,
    NoteKind.STANDBY_NOT_READY.value,
}
"""What the core announces, zone state and capacity readiness changes aside (their timing
is the probes' and the capacity drivers', which the simulator reads every round)."""


def policy(body: dict[str, Any]) -> None:
    body["spec"]["failover"] = {
        **body["spec"].get("failover", {}),
        "minDwellSeconds": 0,
        "zonalEvacuation": {"restoreAfterSeconds": 600},
    }


def _at_least(seen: Callable[[], list[tuple[str, str]]], count: int) -> bool:
    return len(seen()) >= count


def _words(message: str) -> str:
    """A message without the request's generated id."""
    return re.sub(r"request \S+:", "request ID:", message)


def test_simulate_and_the_operator_decide_alike(
    apps: Apps, sandbox: Sandbox, tmp_path: Path
) -> None:
    ns, name = apps.create(policy)
    apps.wait_serving(ns, name, timeout=90)
    app = tmp_path / "app.yaml"
    app.write_text(yaml.safe_dump({"spec": apps.get(ns, name)["spec"]}))
    timeline = tmp_path / "timeline.yaml"
    timeline.write_text(yaml.safe_dump({"duration": DURATION, "timeline": TIMELINE}))
    simulated = simulation(app, timeline)
    expected = [
        (row["time"], n["kind"], _words(n["message"]))
        for row in simulated.decisions
        for n in row["notes"]
        if n["kind"] in ANNOUNCED
    ]

    def announced() -> list[tuple[str, str]]:
        return [(r, _words(m)) for _, r, m in apps.events(ns, name) if r in ANNOUNCED]

    # The same timeline, in real time. On a loaded machine the operator's rounds may lag
    # the clock: an entry is played only once the operator has announced what the
    # simulation did before the entry's time (the decisions are compared, not timings).
    cluster = commands.Cluster(sandbox.kube.api_client())
    start = time.monotonic()
    refused: int | None = None
    for entry in TIMELINE:
        before = len([e for e in expected if e[0] < entry["at"]])
        what = f"the decisions before t={entry['at']}"
        wait_for(partial(_at_least, announced, before), 60, what)
        time.sleep(max(0.0, start + entry["at"] - time.monotonic()))
        for key, outcome in entry.get("zones", {}).items():
            site, zone = key.split("/")
            assert outcome == "fail"
            sandbox.zones.endpoint(site, zone).down()
        if "request" in entry:
            refused = commands.request(cluster, ns, name, "failback", None, force=False, wait=20)
    time.sleep(max(0.0, start + DURATION - time.monotonic()))

    wait_for(lambda: len(announced()) >= len(expected), 30, "the operator's announcements")
    assert announced() == [(kind, words) for _, kind, words in expected]
    assert [k for _, k, _ in expected] == [
        "ZoneEvacuated",
        "FailoverStarted",
        "NoFailoverTarget",
        "RequestRefused",
    ]
    assert expected[-1][2] == (
        "failback request ID: requested by a user (failback); failover held: "
        "use1: 0/3 zones Healthy (needs 1)"
    )
    assert refused == commands.EXIT_REFUSED

    last = simulated.decisions[-1]
    status = apps.status(ns, name)
    assert (status["activeSite"], status["epoch"]) == (last["activeSite"], last["epoch"])
    in_traffic = {z["zone"] for z in status["zones"] if z["inTraffic"]}
    published = {z for d in last["dns"] for z in d["zones"]}
    assert in_traffic == published
    assert apps.dns_weights(ns, name) == {d["site"]: d["weight"] for d in last["dns"]}
    assert status["lastDecision"]["rule"] == last["rule"]
