"""KubeClient's calls end at their deadline: an API server that accepts a connection and
then never answers (a lost region seldom sends resets) gives the caller an error and the
thread back, instead of holding both until the socket dies."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import kubernetes.client
import pytest

from controller.operator.kube import KubeClient, ObjectRef

REF = ObjectRef("ResilientApp", "resilientapps", "web", "shop", "uid-1")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback listener that accepts connections and never reads or answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    server.settimeout(0.05)

    def accept_all() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    pool = ThreadPoolExecutor(max_workers=1)
    pool.submit(accept_all)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for connection in accepted:
            connection.close()
        pool.shutdown(wait=True)


async def test_a_call_to_a_silent_api_server_ends_at_the_request_deadline(
    silent_server: str,
) -> None:
    configuration = kubernetes.client.Configuration()
    configuration.host = silent_server
    configuration.retries = 0
    api = kubernetes.client.ApiClient(configuration)
    pool = ThreadPoolExecutor(max_workers=1)
    client = KubeClient(api, request_seconds=0.3, executor=pool)
    started = time.monotonic()
    try:
        with pytest.raises(Exception, match=r"(?i)timed? ?out"):
            await asyncio.wait_for(client.read(REF), 10)
        took = time.monotonic() - started
        assert took < 5, took
        # The thread is free again: the next call runs at once rather than queueing.
        with pytest.raises(Exception, match=r"(?i)timed? ?out"):
            await asyncio.wait_for(client.read(REF), 10)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        api.close()  # type: ignore[no-untyped-call]


async def test_a_secret_read_from_a_silent_api_server_ends_at_the_request_deadline(
    silent_server: str,
) -> None:
    """The core/v1 reads (controller/operator/core_calls.py) keep the same deadline."""
    configuration = kubernetes.client.Configuration()
    configuration.host = silent_server
    configuration.retries = 0
    api = kubernetes.client.ApiClient(configuration)
    pool = ThreadPoolExecutor(max_workers=1)
    client = KubeClient(api, request_seconds=0.3, executor=pool)
    try:
        with pytest.raises(Exception, match=r"(?i)timed? ?out"):
            await asyncio.wait_for(client.read_secret("lifeboat-system", "creds"), 10)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        api.close()  # type: ignore[no-untyped-call]
