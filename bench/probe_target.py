"""The probe benchmark's target: a fast HTTP/1.1 endpoint on several loopback addresses.

``python -m bench.probe_target --port P 127.20.0.1 127.20.0.2 ...`` answers every request
with ``200 OK`` and a short body, then closes the connection, as a zone's health endpoint
would. It is an :class:`asyncio.Protocol` on uvloop in its own process (a full web
framework would cost several times the CPU per connection, and on 2 cores that CPU is taken
from the probers being measured). One listener per address: each address has its own
range of client ports, so tens of thousands of new connections a second do not run out of
them. Prints ``ready`` once listening; runs until killed.

``GET /__count`` answers the number of requests answered so far (itself not counted), so a
benchmark can count the probes it received without a thread of its own in the measured
processes.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from collections.abc import Sequence
from typing import cast

import uvloop

BODY = b'{"status": "ok"}\n'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + BODY
)


COUNT_PATH = b"/__count"
_answered = 0


def _count_answer() -> bytes:
    body = f"{_answered}\n".encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )


class Endpoint(asyncio.Protocol):
    """Reads a request head, answers, closes."""

    __slots__ = ("head", "transport")

    def __init__(self) -> None:
        self.head = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.head += data
        if b"\r\n\r\n" in self.head and self.transport is not None:
            global _answered
            if self.head.startswith(b"GET " + COUNT_PATH + b" "):
                self.transport.write(_count_answer())
            else:
                _answered += 1
                self.transport.write(ANSWER)
            self.transport.close()


async def serve(addresses: Sequence[str], port: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(Endpoint, address, port, backlog=4096, reuse_address=True)
        for address in addresses
    ]
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for server in servers:
            server.close()


def main(argv: Sequence[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--port", type=int, required=True)
    options.add_argument("addresses", nargs="+", help="loopback addresses to listen on")
    args = options.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    del soft
    try:
        uvloop.run(serve(args.addresses, args.port))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
