"""The write-fence webhook, called for real on loopback: what it is sent, a 2xx answer
recorded, anything else a failure the action runner reports and retries."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controller.api.models import WriteFenceWebhook
from controller.core import model as m
from controller.operator.write_fence import FenceRefused, call_fence


class Hook:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                answer = b"writes read-only"
                self.send_response(hook.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fence"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_the_fence_is_told_what_to_do_and_its_answer_is_kept(hook: Hook) -> None:
    webhook = WriteFenceWebhook(url=hook.url, timeout_seconds=5)
    action = m.FenceWrites("use1", True, 4, "req-1")
    answer = asyncio.run(call_fence(webhook, "shop/web", action))
    assert answer == "writes read-only"
    assert hook.calls == [
        {"action": "stop", "site": "use1", "app": "shop/web", "epoch": 4, "requestId": "req-1"}
    ]
    asyncio.run(call_fence(webhook, "shop/web", m.FenceWrites("usw2", False, 5, "req-1")))
    assert hook.calls[-1]["action"] == "resume" and hook.calls[-1]["site"] == "usw2"


def test_an_answer_other_than_2xx_is_a_failure(hook: Hook) -> None:
    hook.status = 503
    webhook = WriteFenceWebhook(url=hook.url, timeout_seconds=5)
    with pytest.raises(FenceRefused, match="HTTP 503: writes read-only"):
        asyncio.run(call_fence(webhook, "shop/web", m.FenceWrites("use1", True, 1, "r")))


def test_a_fence_declares_exactly_one_kind() -> None:
    from pydantic import ValidationError

    from controller.api.models import WriteFence

    with pytest.raises(ValidationError, match="exactly one of webhook or none"):
        WriteFence()
    with pytest.raises(ValidationError, match="exactly one of webhook or none"):
        WriteFence.model_validate({"webhook": {"url": "http://a.test/"}, "none": {}})
    assert WriteFence.model_validate({"none": {}}).none is not None


def test_the_action_runner_carries_a_fence_call_out_and_reports_a_refusal(hook: Hook) -> None:
    import logging
    from types import SimpleNamespace

    from controller.api.events import EventReason
    from controller.operator.actions import ActionRunner
    from controller.operator.context import AppLog
    from controller.operator.kube import ObjectRef
    from tests.unit.test_planned import planned_spec

    ref = ObjectRef("ResilientApp", "resilientapps", "web", "shop", "uid-1")
    context = SimpleNamespace(clock=lambda: 1234.5)
    runner = ActionRunner(ref, context, AppLog(logging.getLogger("test"), ref))  # type: ignore[arg-type]
    spec = planned_spec(fence={"webhook": {"url": hook.url, "timeoutSeconds": 5}})
    stop = m.FenceWrites("use1", True, 1, "req-9")

    async def carry_out() -> tuple[Any, Any]:
        runner.start(stop, spec, {})
        await asyncio.wait_for(asyncio.shield(runner.task), 10)  # type: ignore[arg-type]
        done = await runner.take()
        hook.status = 500
        runner.start(stop, spec, {})
        await asyncio.wait_for(asyncio.shield(runner.task), 10)  # type: ignore[arg-type]
        return done, await runner.take()

    done, failed = asyncio.run(carry_out())
    assert done[1].at == 1234.5 and done[1].change_id == "writes read-only"
    assert "writes stopped at use1" in done[1].message
    assert failed[1].at is None and failed[1].reason == EventReason.FENCE_WRITES_FAILED
    assert "HTTP 500" in failed[1].detail
    assert hook.calls[0]["app"] == "shop/web"
