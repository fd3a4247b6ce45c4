"""Run the operator: in its own process (``lifeboat run``) or in a thread (tests, demo)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import kopf
from prometheus_client import start_http_server

from controller import metrics
from controller.operator import handlers, kubeconfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorConfig:
    kubeconfig: str | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ()
    """Namespaces whose ResilientApps to serve; empty: every namespace."""
    controller_namespace: str = "lifeboat-system"
    """Where credentials Secrets live (the namespace Lifeboat runs in)."""
    metrics_address: str | None = "0.0.0.0"  # noqa: S104 - scraped at the pod IP
    metrics_port: int = 8080
    liveness_endpoint: str | None = "http://0.0.0.0:8081/healthz"


def start_metrics(config: OperatorConfig) -> int | None:
    """Serve /metrics in a daemon thread; the bound port (None when disabled)."""
    if config.metrics_address is None:
        return None
    server, _thread = start_http_server(
        config.metrics_port, addr=config.metrics_address, registry=metrics.REGISTRY
    )
    port = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", config.metrics_address, port)
    return port


async def serve(
    config: OperatorConfig,
    *,
    stop_flag: threading.Event | asyncio.Event | None = None,
    ready_flag: threading.Event | asyncio.Event | None = None,
) -> None:
    """Run until stopped (by the flag, or SIGINT/SIGTERM when in the main thread)."""
    configuration = kubeconfig.load(config.kubeconfig, config.context)
    wiring = handlers.build(configuration, config.controller_namespace)
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    log.info(
        "Lifeboat operator for %s on %s",
        ", ".join(config.namespaces) or "all namespaces",
        configuration.host,
    )
    await kopf.operator(
        registry=wiring.registry,
        settings=settings,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=True,
        liveness_endpoint=config.liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def run(config: OperatorConfig) -> None:
    """``lifeboat run``: metrics, then the operator in this thread until a signal."""
    start_metrics(config)
    asyncio.run(serve(config))


@contextmanager
def in_background(config: OperatorConfig, ready_timeout: float = 60.0) -> Iterator[None]:
    """The operator in a daemon thread for the duration of the block (tests, demo)."""
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(serve(config, stop_flag=stop, ready_flag=ready))
        except BaseException as error:  # surfaced to the caller below
            failure.append(error)
            ready.set()

    thread = threading.Thread(target=target, name="lifeboat-operator", daemon=True)
    thread.start()
    if not ready.wait(ready_timeout) or failure:
        stop.set()
        raise RuntimeError(f"operator did not start: {failure[0] if failure else 'timeout'}")
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
