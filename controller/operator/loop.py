"""The operator's event loop: uvloop's where it is installed, asyncio's otherwise.

Every probe opens a new connection, and on uvloop (libuv's loop, in C) connection set-up
costs a third of the CPU it costs on asyncio's loop (``python -m bench.probes``). uvloop is
a dependency on CPython outside Windows; without it, or with ``--event-loop asyncio``,
asyncio's own loop runs the operator the same way, only slower.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import Literal

EventLoop = Literal["auto", "uvloop", "asyncio"]
EVENT_LOOPS: tuple[EventLoop, ...] = ("auto", "uvloop", "asyncio")


def loop_factory(choice: EventLoop = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A loop factory for :class:`asyncio.Runner` (``None``: asyncio's default loop).
    ``auto`` takes uvloop when it can be imported; ``uvloop`` insists on it."""
    if choice == "asyncio":
        return None
    if choice == "auto" and importlib.util.find_spec("uvloop") is None:
        return None
    import uvloop

    return uvloop.new_event_loop


def loop_name() -> str:
    """The running loop's kind, for the start-up log line."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
