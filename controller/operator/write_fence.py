"""The write fence of planned switchovers: the webhook a ResilientApp declares
(``failover.planned.writeFence.webhook``) to stop writes at a site and resume them.

Lifeboat POSTs ``{"action": "stop"|"resume", "site", "app", "epoch", "requestId"}`` as
JSON; a 2xx answer means done (its body, up to 256 characters, is recorded in
``status.plannedSwitchover.fenceAnswer``), anything else is a failure, retried every round
until the switchover's drain timeout.
"""

from __future__ import annotations

import aiohttp

from controller.api.models import WriteFenceWebhook
from controller.core import model as m


class FenceRefused(RuntimeError):
    """The webhook answered, but not with a 2xx."""


async def call_fence(webhook: WriteFenceWebhook, app: str, action: m.FenceWrites) -> str:
    """Call ``webhook`` for ``action``; its answer (raises on anything but a 2xx)."""
    body = {
        "action": "stop" if action.stop else "resume",
        "site": action.site,
        "app": app,
        "epoch": action.epoch,
        "requestId": action.request_id,
    }
    timeout = aiohttp.ClientTimeout(total=webhook.timeout_seconds)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(webhook.url, json=body) as response,
    ):
        text = (await response.text(errors="replace"))[:256]
        if not 200 <= response.status < 300:
            raise FenceRefused(f"HTTP {response.status}: {text}".strip())
        return text or f"HTTP {response.status}"
