"""A planned switchover on real servers loses nothing (issue 20, items 4 to 6).

The real API server, the operator in-process, moto's S3 in two regions: an app writes
objects at its primary until its write fence (a webhook: a small HTTP server on loopback,
here) is told to stop; ``lifeboat failover --planned --wait`` then follows the switchover
to its end. Every object written before the stop is at the new site, the move records
RPO 0, and the webhook got stop (old site) then resume (new site), in that order. An
ordinary failover, asked right after while a large object is still on its way, does not
wait for it.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controller.cli import commands
from sandbox.world import Sandbox
from tests.fixtures.world import Apps, wait_for
from tests.integration.test_replication_objects import (
    Buckets,
    combine,
    entry,
    failover_policy,
    replication,
    when,
)

pytestmark = pytest.mark.integration


class Fence:
    """The app's write fence: a webhook on loopback that records every call, and the
    app's writer, which writes at its site until the fence says stop."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        fence = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body["at"] = time.time()
                fence.calls.append(body)
                if body["action"] == "stop":
                    fence.stopped.set()
                    fence.writer_done.wait(10)  # writes have stopped when this answers
                answer = f"{body['action']} ok".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.writer_done = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fence"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fence() -> Iterator[Fence]:
    hook = Fence()
    try:
        yield hook
    finally:
        hook.close()


def test_a_planned_switchover_loses_no_object_written_before_it(
    apps: Apps, sandbox: Sandbox, fence: Fence
) -> None:
    buckets = Buckets(sandbox)
    for n in range(5):
        buckets.put("use1", f"before/{n}", f"object {n}".encode())
    ns, name = apps.create(
        combine(
            # The scan is the only way changes are found (no event queue), every 20 s: the
            # objects written in the last seconds before the stop are still pending when it
            # is asked (a move that did not wait for the drain loses them: checked by
            # hand). A 256 KiB object at 1 KiB/s after a 64 KiB burst takes minutes (below).
            replication(
                buckets.names,
                scanIntervalSeconds=20,
                rpoTargetSeconds=60,
                bandwidthLimitBytesPerSecond=1024,
            ),
            failover_policy(
                minDwellSeconds=0,
                planned={
                    "writeFence": {"webhook": {"url": fence.url, "timeoutSeconds": 15}},
                    "drainTimeoutSeconds": 120,
                },
            ),
        )
    )
    apps.wait_serving(ns, name)

    # The app writes at use1 until its fence says stop.
    written: dict[str, bytes] = {}

    def writer() -> None:
        n = 0
        while not fence.stopped.is_set():
            key, data = f"live/{n:04d}", f"written live {n}".encode()
            buckets.put("use1", key, data)
            written[key] = data
            n += 1
            time.sleep(0.1)
        fence.writer_done.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(2)
    cluster = commands.Cluster(sandbox.kube.api_client())
    out = io.StringIO()
    code = commands.request(
        cluster,
        ns,
        name,
        "failover",
        "usw2",
        force=False,
        wait=240,
        out=out,
        planned=True,
        to_the_end=True,
    )
    thread.join(15)
    report = out.getvalue()
    assert code == commands.EXIT_OK, report
    for step in (
        "writes stopped at use1",
        "replication to usw2 drained",
        "failover use1 -> usw2 decided, epoch 2",
        "DNS in sync: usw2 takes the traffic",
        "capacity of usw2 Ready",
        "writes resumed at usw2",
        "RPO 0 s",
        "done: usw2 serves the app (epoch 2)",
    ):
        assert step in report, report

    # Nothing written before the stop is missing at the new site.
    assert written, "the writer wrote nothing"
    for key, data in {
        **written,
        **{f"before/{n}": f"object {n}".encode() for n in range(5)},
    }.items():
        assert buckets.get("usw2", key) == data, f"{key} lost in the switchover"

    status = apps.status(ns, name)
    record = status["lastFailover"]
    assert (record["planned"], record["rpoSeconds"], record["toSite"]) == (True, 0, "usw2")
    planned = status["plannedSwitchover"]
    assert planned["step"] == "Done" and planned["movedEpoch"] == 2
    assert planned["writesStoppedTime"] <= planned["drainedTime"] <= record["decidedTime"]

    # The fence: stop at use1 under the old epoch, then resume at usw2 under the new one.
    calls = [(c["action"], c["site"], c["epoch"]) for c in fence.calls]
    assert calls == [("stop", "use1", 1), ("resume", "usw2", 2)], fence.calls
    assert {c["app"] for c in fence.calls} == {f"{ns}/{name}"}
    assert fence.calls[0]["at"] < fence.calls[1]["at"]
    reasons = [reason for _, reason, _ in apps.events(ns, name)]
    for reason in (
        "PlannedSwitchoverStarted",
        "WritesStopped",
        "ReplicationDrained",
        "FailoverStarted",
        "WritesResumed",
        "PlannedSwitchoverDone",
    ):
        assert reason in reasons, reasons

    # Regression guard: an ordinary failover does not wait for replication. A large object
    # written at usw2 is still on its way to use1 (the bandwidth limit) when it is asked.
    big = os.urandom(256 * 1024)
    buckets.put("usw2", "big.bin", big)
    wait_for(
        when(apps, ns, name, lambda s: entry(s, "use1").get("pendingObjects", 0) >= 1),
        30,
        "replication to use1 to find big.bin",
    )
    code = commands.request(
        cluster, ns, name, "failover", "use1", force=False, wait=30, out=io.StringIO()
    )
    assert code == commands.EXIT_OK
    status = apps.status(ns, name)
    assert status["activeSite"] == "use1" and status["epoch"] == 3
    assert status["lastFailover"]["planned"] is False
    assert "rpoSeconds" not in status["lastFailover"]
    assert buckets.get("use1", "big.bin") is None  # the move did not wait for it
    assert len(fence.calls) == 2  # and the fence was not called


def test_a_drain_that_does_not_finish_in_time_is_refused_and_writes_resume_where_they_were(
    apps: Apps, sandbox: Sandbox, fence: Fence
) -> None:
    buckets = Buckets(sandbox)
    ns, name = apps.create(
        combine(
            replication(
                buckets.names,
                scanIntervalSeconds=5,
                rpoTargetSeconds=600,
                bandwidthLimitBytesPerSecond=1024,
            ),
            failover_policy(
                minDwellSeconds=0,
                planned={
                    "writeFence": {"webhook": {"url": fence.url, "timeoutSeconds": 15}},
                    "drainTimeoutSeconds": 15,
                },
            ),
        )
    )
    apps.wait_serving(ns, name)
    fence.writer_done.set()  # no writer here: the stop answers at once
    # 256 KiB at 1 KiB/s after a 64 KiB burst: minutes to copy, far beyond the timeout.
    buckets.put("use1", "big.bin", os.urandom(256 * 1024))
    wait_for(
        when(apps, ns, name, lambda s: entry(s, "usw2").get("pendingObjects", 0) >= 1),
        30,
        "replication to usw2 to find big.bin",
    )
    out = io.StringIO()
    code = commands.request(
        commands.Cluster(sandbox.kube.api_client()),
        ns,
        name,
        "failover",
        "usw2",
        force=False,
        wait=120,
        out=out,
        planned=True,
        to_the_end=True,
    )
    report = out.getvalue()
    assert code == commands.EXIT_REFUSED, report
    assert "writes stopped at use1" in report
    assert "refused: replication to usw2 did not drain within 15 s" in report
    assert "photos: 1 pending" in report
    status = wait_for(
        when(apps, ns, name, lambda s: s["plannedSwitchover"]["step"] == "Aborted"),
        30,
        "writes resumed at use1",
    )
    assert status["activeSite"] == "use1" and status["epoch"] == 1
    assert "lastFailover" not in status
    calls = [(c["action"], c["site"], c["epoch"]) for c in fence.calls]
    assert calls == [("stop", "use1", 1), ("resume", "use1", 1)], fence.calls
    reasons = [reason for _, reason, _ in apps.events(ns, name)]
    assert "PlannedSwitchoverAborted" in reasons and "RequestRefused" in reasons
