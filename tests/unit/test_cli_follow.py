"""``--wait``: failover, failback and approve follow the operation to its end, one line per
step, and exit by the documented codes. The operator's part is played by the real decision
core and the real status composer, so the follower reads statuses as the operator writes
them."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from typing import Any

import pytest

from controller.api.annotations import ManualOperations
from controller.api.models import ResilientAppSpec, ResilientAppStatus
from controller.cli import commands
from controller.cli.follow import Operation, progress
from controller.cli.main import EXIT_CODES, parser
from controller.core import model as m
from controller.core.status import status_from_state
from tests.unit.test_decide import Run
from tests.unit.test_planned import planned_spec


class OperatorCluster:
    """A cluster whose operator is the decision core: every read of the app is one round
    (one second), its actions carried out at once unless ``stuck``."""

    def __init__(self, spec: ResilientAppSpec, **flows: Any) -> None:
        self.spec = spec
        self.run = Run(spec=spec)
        self.run.rounds(4)
        self.annotations: dict[str, str] = {}
        self.status = ResilientAppStatus()
        self.down: list[str] = []
        self.drains = True
        self._compose(self.run.decisions[-1], m.Observations())

    def _flows(self) -> tuple[m.FlowProgress, ...]:
        state = self.run.state
        site = "usw2" if state.active_site == "use1" else "use1"
        caught = self.run.t if self.drains else None
        return (m.FlowProgress("photos", site, state.active_site, state.epoch, 0, caught),)

    def _compose(self, decision: m.Decision, obs: m.Observations) -> None:
        self.status = status_from_state(
            replace(decision, state=self.run.state),
            self.spec,
            self.status,
            observations=obs,
            running=None,
            generation=1,
            now=self.run.t,
        )

    def app(self, namespace: str, name: str) -> dict[str, Any]:
        asked = ManualOperations.from_annotations(self.annotations)
        extra: dict[str, Any] = {
            "request": asked.request,
            "approval": asked.approval,
            "replication_flows": self._flows(),
        }
        obs = self.run.obs_of(self.down, **extra)
        decision = self.run.round(self.down, **extra)
        self._compose(decision, obs)
        return {
            "metadata": {"name": name, "namespace": namespace, "annotations": self.annotations},
            "spec": self.spec.to_wire(),
            "status": self.status.to_wire(),
        }

    def events(self, namespace: str, name: str, limit: int = 15) -> list[Any]:
        return []

    def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        for key, value in annotations.items():
            if value is None:
                self.annotations.pop(key, None)
            else:
                self.annotations[key] = value


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1.0)


def ask(cluster: OperatorCluster, op: str = "failover", **kw: Any) -> tuple[int, str]:
    out, clock = io.StringIO(), Clock()
    code = commands.request(
        cluster,  # type: ignore[arg-type]
        "shop",
        "web",
        op,
        "usw2" if op == "failover" else None,
        force=False,
        wait=kw.pop("wait", 60.0),
        out=out,
        clock=clock,
        sleep=clock.sleep,
        to_the_end=True,
        **kw,
    )
    return code, out.getvalue()


def test_a_planned_switchover_is_followed_step_by_step_to_its_end() -> None:
    cluster = OperatorCluster(planned_spec())
    code, out = ask(cluster, planned=True)
    assert code == commands.EXIT_OK, out
    lines = out.splitlines()
    expected = [
        "requested planned failover to usw2",
        "writes stopped at use1",
        "replication to usw2 drained",
        "accepted: planned failover requested by a user",
        "failover use1 -> usw2 decided, epoch 2",
        "DNS in sync: usw2 takes the traffic (epoch 2",
        "capacity of usw2 Ready: 4 instances",
        "writes resumed at usw2",
        "RPO 0 s",
        "done: usw2 serves the app (epoch 2)",
    ]
    assert len(lines) == len(expected), out
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), out
    body = json.loads(cluster.annotations["lifeboat.dev/request"])
    assert body["planned"] is True


def test_a_drain_that_times_out_exits_refused() -> None:
    cluster = OperatorCluster(planned_spec(drain=5))
    cluster.drains = False
    code, out = ask(cluster, planned=True)
    assert code == commands.EXIT_REFUSED, out
    assert "refused: replication to usw2 did not drain within 5 s" in out
    assert cluster.run.state.active_site == "use1"


def test_capacity_that_never_comes_up_exits_failed() -> None:
    spec = planned_spec(readiness={"capacityTimeoutSeconds": 5})
    cluster = OperatorCluster(spec)
    cluster.run.cap = {"usw2": 1}  # the new site's scale-up fails
    code, out = ask(cluster)
    assert code == commands.EXIT_FAILED, out
    assert "DNS in sync: usw2 takes the traffic" in out
    assert out.splitlines()[-1] == "failed: capacity not Ready: usw2: 1/4 instances Ready after 5 s"


def test_an_operation_not_done_in_time_exits_4_and_says_what_it_waits_for() -> None:
    cluster = OperatorCluster(planned_spec(drain=300))
    cluster.drains = False
    code, out = ask(cluster, planned=True, wait=5)
    assert code == commands.EXIT_TIMEOUT, out
    assert "not done within 5s: waiting for the operator's answer" in out
    assert "writes stopped at use1" in out


def test_an_unsafe_request_is_refused_at_once() -> None:
    cluster = OperatorCluster(planned_spec())
    cluster.down = ["usw2"]
    cluster.run.rounds(4, down=["usw2"])
    code, out = ask(cluster)
    assert code == commands.EXIT_REFUSED, out
    assert out.splitlines()[-1].startswith("refused: ")


def test_an_approval_is_followed_through_the_failover_it_starts() -> None:
    spec = planned_spec(mode="Manual")
    cluster = OperatorCluster(spec)
    cluster.down = ["use1"]
    for _ in range(6):
        cluster.app("shop", "web")
    assert cluster.status.recommendation is not None
    out, clock = io.StringIO(), Clock()
    code = commands.approve(
        cluster,  # type: ignore[arg-type]
        "shop",
        "web",
        None,
        out=out,
        wait=60,
        clock=clock,
        sleep=clock.sleep,
    )
    assert code == commands.EXIT_OK, out.getvalue()
    text = out.getvalue()
    assert "carried out" in text and "DNS in sync: usw2" in text and "done: usw2" in text


def test_progress_of_a_snapshot_is_pure_and_waits_for_the_answer() -> None:
    waiting = progress({"status": {"epoch": 1}}, Operation(1, request_id="r"))
    assert waiting.outcome is None and waiting.lines == ()
    assert "answer to request r" in waiting.waiting
    overtaken = progress(
        {
            "status": {
                "epoch": 3,
                "activeSite": "euw1",
                "lastRequest": {"id": "r", "accepted": True, "reason": "ok"},
                "lastFailover": {"epoch": 2, "fromSite": "use1", "toSite": "usw2"},
            }
        },
        Operation(1, request_id="r"),
    )
    assert overtaken.outcome == commands.EXIT_FAILED
    assert "overtaken" in overtaken.lines[-1]


def test_wait_is_optional_and_documented_with_the_exit_codes() -> None:
    args = parser().parse_args(["failover", "web", "--to", "usw2", "--planned", "--wait"])
    assert args.planned and args.wait == 600.0
    assert parser().parse_args(["failback", "web", "--wait", "30"]).wait == 30.0
    assert parser().parse_args(["failover", "web", "--to", "usw2"]).wait is None
    assert parser().parse_args(["approve", "web", "--wait"]).wait == 600.0
    for code in ("0  done", "1  refused", "4  no answer", "5  --wait: accepted but not"):
        assert code in EXIT_CODES


@pytest.mark.parametrize("planned", [True, False])
def test_a_request_says_whether_it_is_planned(planned: bool) -> None:
    cluster = OperatorCluster(planned_spec())
    ask(cluster, planned=planned)
    body = json.loads(cluster.annotations["lifeboat.dev/request"])
    assert body.get("planned", False) is planned


def test_explain_shows_the_planned_switchover_and_its_rpo() -> None:
    cluster = OperatorCluster(planned_spec())
    assert ask(cluster, planned=True)[0] == commands.EXIT_OK
    out = io.StringIO()
    commands.explain(cluster, "shop", "web", out=out)  # type: ignore[arg-type]
    text = out.getvalue()
    assert "planned, RPO 0.0s" in text
    assert "step Done (write fence Webhook)" in text
    assert "writes stopped at" in text and "writes resumed at" in text
