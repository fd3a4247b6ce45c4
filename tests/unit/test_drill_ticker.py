"""The drill ticker at the edge: the drill's status is written before the app is touched,
at the versions read, and a conflict drops the tick instead of moving the app."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.api.annotations import REQUEST
from controller.api.conditions import rfc3339
from controller.api.names import DRILL_ANNOTATION
from controller.operator.drills import DrillTicker
from tests.factories import app_spec

NOW = 1_800_000_000.0


def app_body() -> dict[str, Any]:
    spec = app_spec()
    spec["failover"] = {"mode": "Automatic"}
    zones = [
        {"site": s["name"], "zone": z, "state": "Healthy"}
        for s in spec["sites"]
        for z in s["zones"]
    ]
    return {
        "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "10", "annotations": {}},
        "spec": spec,
        "status": {
            "phase": "Healthy",
            "activeSite": spec["sites"][0]["name"],
            "epoch": 1,
            "traffic": {"activeSite": spec["sites"][0]["name"], "epoch": 1},
            "zones": zones,
        },
    }


def drill_body(target: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "dr",
            "namespace": "ns",
            "resourceVersion": "5",
            "generation": 1,
            "creationTimestamp": rfc3339(NOW - 60),
        },
        "spec": {
            "app": "web",
            "kind": "Switchover",
            "targetSite": target,
            "schedule": {"once": rfc3339(NOW - 1)},
        },
    }


@dataclass
class FakeApi:
    objects: dict[tuple[str, str], dict[str, Any]]
    conflicts: dict[str, int] = field(default_factory=dict)
    """Per call ("patch", "patch_status"): how many 409s to answer first."""
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((plural, name))
        return copy.deepcopy(found) if found is not None else None

    def get_cluster(self, plural: str, name: str) -> dict[str, Any] | None:
        return self.get(plural, "", name)

    def _write(self, call: str, plural: str, name: str, body: dict[str, Any]) -> None:
        if self.conflicts.get(call, 0) > 0:
            self.conflicts[call] -= 1
            raise ApiException(status=409, reason="Conflict")
        stored = self.objects[(plural, name)]
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version is not None and version != stored["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.calls.append((call, plural, body))
        annotations = ((body.get("metadata") or {}).get("annotations")) or {}
        mine = stored["metadata"].setdefault("annotations", {})
        for key, value in annotations.items():
            if value is None:
                mine.pop(key, None)
            else:
                mine[key] = value
        if "status" in body:
            stored["status"] = {
                k: v for k, v in {**stored.get("status", {}), **body["status"]}.items() if v
            }
        stored["metadata"]["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 1)

    def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        self._write("patch", plural, name, body)

    def patch_status(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        self._write("patch_status", plural, name, body)


def world() -> FakeApi:
    app = app_body()
    target = app["spec"]["sites"][1]["name"]
    return FakeApi({("resilientapps", "web"): app, ("failoverdrills", "dr"): drill_body(target)})


def test_a_start_writes_the_status_then_asks_the_app_and_claims_it() -> None:
    api = world()
    events = DrillTicker(api, clock=lambda: NOW).tick("ns", "dr")
    assert [(call, plural) for call, plural, _ in api.calls] == [
        ("patch_status", "failoverdrills"),
        ("patch", "resilientapps"),
    ]
    status = api.objects[("failoverdrills", "dr")]["status"]
    assert status["phase"] == "Running"
    annotations = api.objects[("resilientapps", "web")]["metadata"]["annotations"]
    assert annotations[DRILL_ANNOTATION] == "dr"
    request = json.loads(annotations[REQUEST])
    assert request["id"] == status["pendingRequest"] == "drill/dr/1/switch"
    assert request["drill"] is True and request["planned"] is True
    assert [reason for _, reason, _ in events] == ["DrillStarted"]


def test_a_stale_drill_touches_nothing() -> None:
    api = world()
    api.conflicts["patch_status"] = 1
    events = DrillTicker(api, clock=lambda: NOW).tick("ns", "dr")
    assert events == [] and api.calls == []
    assert not api.objects[("resilientapps", "web")]["metadata"]["annotations"]
    # The next tick does it.
    DrillTicker(api, clock=lambda: NOW + 2).tick("ns", "dr")
    assert api.objects[("resilientapps", "web")]["metadata"]["annotations"][DRILL_ANNOTATION]


def test_the_app_changing_under_the_claim_is_read_again() -> None:
    api = world()
    api.conflicts["patch"] = 2
    DrillTicker(api, clock=lambda: NOW).tick("ns", "dr")
    annotations = api.objects[("resilientapps", "web")]["metadata"]["annotations"]
    assert annotations[DRILL_ANNOTATION] == "dr"


def test_an_app_another_running_drill_holds_is_not_claimed() -> None:
    api = world()
    other = drill_body("x")
    other["metadata"]["name"] = "other"
    other["status"] = {"phase": "Running", "run": 1}
    api.objects[("failoverdrills", "other")] = other
    api.objects[("resilientapps", "web")]["metadata"]["annotations"][DRILL_ANNOTATION] = "other"
    DrillTicker(api, clock=lambda: NOW).tick("ns", "dr")
    status = api.objects[("failoverdrills", "dr")]["status"]
    assert status["result"] == "Failed"
    assert "FailoverDrill other is running on the app" in status["message"]
    annotations = api.objects[("resilientapps", "web")]["metadata"]["annotations"]
    assert annotations == {DRILL_ANNOTATION: "other"}


def test_a_stale_claim_of_a_drill_that_is_gone_holds_nothing() -> None:
    api = world()
    api.objects[("resilientapps", "web")]["metadata"]["annotations"][DRILL_ANNOTATION] = "gone"
    DrillTicker(api, clock=lambda: NOW).tick("ns", "dr")
    annotations = api.objects[("resilientapps", "web")]["metadata"]["annotations"]
    assert annotations[DRILL_ANNOTATION] == "dr"


@dataclass
class CountingApi(FakeApi):
    reads: list[str] = field(default_factory=list)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(plural)
        return super().get(plural, namespace, name)


def test_an_idle_drill_does_not_read_its_app() -> None:
    base = world()
    api = CountingApi(base.objects)
    drill = api.objects[("failoverdrills", "dr")]
    drill["spec"]["schedule"] = {"once": rfc3339(NOW + 3600)}
    DrillTicker(api, clock=lambda: NOW).tick("ns", "dr")
    assert api.reads == ["failoverdrills"]
    assert api.objects[("failoverdrills", "dr")]["status"]["phase"] == "Scheduled"
    api.reads.clear()
    DrillTicker(api, clock=lambda: NOW + 3600).tick("ns", "dr")  # due: it reads the app
    assert "resilientapps" in api.reads
    assert api.objects[("failoverdrills", "dr")]["status"]["phase"] == "Running"
