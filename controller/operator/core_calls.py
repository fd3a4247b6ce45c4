"""The four core/v1 calls the operator makes (read a Secret or a ConfigMap, create and
bump an Event), without ``kubernetes.client.CoreV1Api``.

The client's generated CoreV1Api is one module of 60,000 lines that imports every core/v1
model (each a pydantic model) when it is first used: about 20 MiB of the operator's
resident memory, more than a tenth of it, for four requests (bench/RESULTS.md, "Operator
memory"). These go through the same :class:`kubernetes.client.ApiClient` — its
configuration, credentials and connection pool — by its public request methods
(``param_serialize``, ``call_api``, ``response_deserialize``, the ones every generated API
method calls), and answer plain dicts (the objects' JSON, as a custom object's read
does). Errors are the client's own :class:`~kubernetes.client.exceptions.ApiException`.

A client without those methods (an older ``kubernetes`` package, whose generated APIs are
imported with the package anyway) is served by CoreV1Api itself.
"""

from __future__ import annotations

from typing import Any

import kubernetes.client

_ANSWER = {"200": "object", "201": "object"}
"""Every answer as its JSON (a dict), not as a generated model."""


class CoreCalls:
    """``CoreV1Api``'s ``read_namespaced_secret``, ``read_namespaced_config_map``,
    ``create_namespaced_event`` and ``patch_namespaced_event``, answering dicts."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api: Any = api  # its request methods are partly typed, and differ by version
        self._generated: Any = None
        if not hasattr(api, "param_serialize"):
            self._generated = kubernetes.client.CoreV1Api(api)

    def read_namespaced_secret(
        self, name: str, namespace: str, _request_timeout: float | None = None
    ) -> dict[str, Any]:
        return self._request(
            "GET",
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            {"namespace": namespace, "name": name},
            timeout=_request_timeout,
            generated=("read_namespaced_secret", name, namespace),
        )

    def read_namespaced_config_map(
        self, name: str, namespace: str, _request_timeout: float | None = None
    ) -> dict[str, Any]:
        return self._request(
            "GET",
            "/api/v1/namespaces/{namespace}/configmaps/{name}",
            {"namespace": namespace, "name": name},
            timeout=_request_timeout,
            generated=("read_namespaced_config_map", name, namespace),
        )

    def create_namespaced_event(
        self, namespace: str, body: dict[str, Any], _request_timeout: float | None = None
    ) -> dict[str, Any]:
        return self._request(
            "POST",
            "/api/v1/namespaces/{namespace}/events",
            {"namespace": namespace},
            body=body,
            timeout=_request_timeout,
            generated=("create_namespaced_event", namespace, body),
        )

    def patch_namespaced_event(
        self,
        name: str,
        namespace: str,
        body: dict[str, Any],
        _request_timeout: float | None = None,
    ) -> dict[str, Any]:
        """A strategic merge patch (what CoreV1Api sends for a dict)."""
        return self._request(
            "PATCH",
            "/api/v1/namespaces/{namespace}/events/{name}",
            {"namespace": namespace, "name": name},
            body=body,
            content_type="application/strategic-merge-patch+json",
            timeout=_request_timeout,
            generated=("patch_namespaced_event", name, namespace, body),
        )

    def _request(
        self,
        method: str,
        path: str,
        path_params: dict[str, str],
        *,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float | None,
        generated: tuple[Any, ...],
    ) -> dict[str, Any]:
        if self._generated is not None:
            call, *args = generated
            found = getattr(self._generated, call)(*args, _request_timeout=timeout)
            answer: dict[str, Any] = self.api.sanitize_for_serialization(found)
            return answer
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            path_params=path_params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=timeout)
        response.read()
        data: dict[str, Any] = self.api.response_deserialize(response, _ANSWER).data
        return data
