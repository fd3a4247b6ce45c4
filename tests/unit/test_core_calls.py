"""KubeClient's core/v1 calls (Secrets, ConfigMaps, Events) without the client's generated
CoreV1Api, whose module costs the operator about 20 MiB: what goes on the wire, what comes
back, and that the module is never imported."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kubernetes.client
import pytest

from controller.operator.core_calls import CoreCalls
from controller.operator.kube import KubeClient, NotFound, ObjectRef

REF = ObjectRef("ResilientApp", "resilientapps", "web", "shop", "uid-1")
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "creds", "namespace": "lifeboat-system", "resourceVersion": "42"},
    "data": {"key": "dmFsdWU="},  # "value"
}
CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "ca", "namespace": "shop", "resourceVersion": "7"},
    "data": {"ca.crt": "PEM"},
}


@dataclass
class Seen:
    method: str
    path: str
    content_type: str | None
    authorization: str | None
    body: Any


@dataclass
class FakeApiServer:
    """Answers the four calls; remembers every request."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body: dict[str, Any] = json.loads(self.rfile.read(length)) if length else {}
            fake.seen.append(
                Seen(
                    self.command,
                    self.path,
                    self.headers.get("Content-Type"),
                    self.headers.get("Authorization"),
                    body,
                )
            )
            if self.path == "/api/v1/namespaces/lifeboat-system/secrets/creds":
                self._answer(200, SECRET)
            elif self.path == "/api/v1/namespaces/shop/configmaps/ca":
                self._answer(200, CONFIG_MAP)
            elif self.path == "/api/v1/namespaces/shop/events" and self.command == "POST":
                self._answer(201, body)
            elif self.path.startswith("/api/v1/namespaces/shop/events/"):
                self._answer(200, {"kind": "Event", **body})
            else:
                self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *_: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def client_of(server: FakeApiServer) -> KubeClient:
    configuration = kubernetes.client.Configuration()
    configuration.host = server.url
    configuration.api_key = {"BearerToken": "Bearer t0ken"}
    return KubeClient(kubernetes.client.ApiClient(configuration), request_seconds=5.0)


async def test_a_secret_is_read_with_the_clients_credentials(server: FakeApiServer) -> None:
    data, version = await client_of(server).read_secret("lifeboat-system", "creds")
    assert (data, version) == ({"key": "value"}, "42")
    [seen] = server.seen
    assert (seen.method, seen.authorization) == ("GET", "Bearer t0ken")


async def test_a_config_map_is_read(server: FakeApiServer) -> None:
    assert await client_of(server).read_config_map("shop", "ca") == {"ca.crt": "PEM"}


async def test_a_missing_secret_or_config_map_is_not_found(server: FakeApiServer) -> None:
    client = client_of(server)
    with pytest.raises(NotFound):
        await client.read_secret("lifeboat-system", "gone")
    with pytest.raises(NotFound):
        await client.read_config_map("shop", "gone")


async def test_an_event_is_created_then_its_repeat_bumps_its_count(
    server: FakeApiServer,
) -> None:
    client = client_of(server)
    for _ in range(2):
        await client.event(REF, "Warning", "ZoneDown", "zone use1a is Down")
    created, bumped = server.seen
    assert (created.method, created.path) == ("POST", "/api/v1/namespaces/shop/events")
    assert created.content_type == "application/json"
    assert created.body["involvedObject"]["uid"] == "uid-1"
    assert created.body["reason"] == "ZoneDown"
    assert bumped.method == "PATCH"
    assert bumped.path == f"/api/v1/namespaces/shop/events/{created.body['metadata']['name']}"
    assert bumped.content_type == "application/strategic-merge-patch+json"
    assert bumped.body["count"] == 2


def test_without_the_clients_request_methods_core_v1_api_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older ``kubernetes`` package (no ``param_serialize``): CoreV1Api's answer,
    as a dict."""

    class Api:
        def sanitize_for_serialization(self, found: Any) -> Any:
            return {"data": found["data"], "via": "CoreV1Api"}

    class Generated:
        def __init__(self, api: Any) -> None:
            pass

        def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> Any:
            return {"data": {"name": name, "namespace": namespace}}

    monkeypatch.setattr(kubernetes.client, "CoreV1Api", Generated)
    answer = CoreCalls(Api()).read_namespaced_config_map("ca", "shop")  # type: ignore[arg-type]
    assert answer == {"data": {"name": "ca", "namespace": "shop"}, "via": "CoreV1Api"}


def test_the_operator_never_imports_core_v1_api() -> None:
    """In a process of its own: the operator imported and its KubeClient built."""
    code = (
        "import sys, kubernetes.client\n"
        "import controller.operator.runner\n"
        "from controller.operator.kube import KubeClient\n"
        "KubeClient(kubernetes.client.ApiClient())\n"
        "print(sorted(m for m in sys.modules if m.endswith('core_v1_api')))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert found.stdout.strip() == "[]"
