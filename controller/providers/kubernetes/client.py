"""A ``kubernetes`` API client with a deadline on every request.

The ``kubernetes`` client waits forever by default: one half-open connection to an API
server that went away would stall the caller (a status write, a Secret read, a scale of a
member cluster's Deployment) for good. Every client Lifeboat makes comes from here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

REQUEST_TIMEOUT: tuple[float, float] = (5.0, 20.0)
"""(connect, read) seconds of every request that does not set its own ``_request_timeout``."""


class TimedApiClient(kubernetes.client.ApiClient):
    """An API client whose every request has a deadline unless the call sets its own, and
    that does not retry at the transport level (urllib3 retries idempotent requests three
    times by default: against a silent API server, four deadlines in a row). Callers retry
    on their own schedule (the next round, the next renewal).

    Not for watches, which are long requests by design (kopf watches with its own client).
    """

    def __init__(
        self,
        configuration: kubernetes.client.Configuration,
        timeout: float | tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        own = copy.copy(configuration)
        own.retries = 0
        super().__init__(own)
        self.request_timeout = timeout

    def call_api(
        self,
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        if _request_timeout is None:
            _request_timeout = self.request_timeout
        return super().call_api(
            method, url, header_params, body, post_params, _request_timeout=_request_timeout
        )


def api_client(
    configuration: kubernetes.client.Configuration,
    timeout: float | tuple[float, float] = REQUEST_TIMEOUT,
) -> kubernetes.client.ApiClient:
    """A client for ``configuration`` with a deadline on every request."""
    return TimedApiClient(configuration, timeout)


def api_client_from_kubeconfig(document: Mapping[str, Any]) -> kubernetes.client.ApiClient:
    """A client for the cluster a parsed kubeconfig document describes (its current
    context), with a deadline on every request."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
        dict(document), client_configuration=configuration
    )
    return api_client(configuration)


_UNREACHABLE = (
    urllib3.exceptions.HTTPError,  # connection refused or reset, timeouts, TLS, retries spent
    ConnectionError,
    TimeoutError,
)


def unreachable(error: BaseException) -> str | None:
    """A one-line description when ``error`` means the API server could not be reached or
    did not answer in time (or answered 5xx); None for any other error.

    Such errors are expected while an API server is down or partitioned away: they are
    worth a warning line, never a traceback.
    """
    if isinstance(error, ApiException):
        if error.status is not None and int(error.status) >= 500:
            return f"API server answered HTTP {error.status} {error.reason}"
        return None
    if isinstance(error, _UNREACHABLE):
        detail = str(error).splitlines()[0] if str(error) else ""
        name = type(error).__name__
        return f"API server unreachable ({name}: {detail[:160]})" if detail else name
    return None
