"""openstacksdk connections for one CloudProvider of type ``openstack``.

Credentials come from the Secret the CloudProvider names, in one of three forms:

* ``clouds.yaml``: a clouds.yaml document; ``spec.openstack.cloud`` picks the entry;
* application credentials: keys ``auth_url``, ``application_credential_id``,
  ``application_credential_secret``;
* a password: keys ``auth_url``, ``username``, ``password``, ``project_name`` (and
  optionally ``user_domain_name``, ``project_domain_name``, default ``Default``).

With ``credentials.source: Environment`` the SDK's own lookup applies (``OS_*`` variables,
a clouds.yaml in the container). One connection per region; the SDK's own retries are off
so that every call goes through :class:`~controller.providers.calls.CloudCalls` (region
gate, retry budget, outcome accounting) like AWS calls do.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import keystoneauth1.exceptions
import openstack
import openstack.config
import openstack.connection
import openstack.exceptions
import requests.exceptions
import yaml
from pydantic import SecretStr

from controller import __version__
from controller.api.models import CloudProviderSpec
from controller.core.apiplane import CallOutcome
from controller.providers.calls import (
    CloudCalls,
    OutcomeHook,
    RegionImpaired,
    resolve_endpoint,
)
from controller.providers.errors import CredentialsError
from controller.providers.outcomes import Classified
from controller.providers.retry import DEFAULT_POLICY, RetryPolicy
from controller.providers.secrets import is_secret_key, redact, secret_values

T = TypeVar("T")

# The services' words when what was asked for cannot be had: Nova's scheduler ("No valid
# host", the OpenStack face of the 2012 symptom), Nova's and Cinder's quotas.
CAPACITY_MARKERS = (
    "No valid host",
    "Insufficient compute resources",
    "over quota",
    "Quota exceeded",
    "exceeds allowed",
)
# Throttling statuses: 429 everywhere; 498 is Swift's ratelimit middleware ("Slow down").
_THROTTLED_STATUSES = frozenset({429, 498})

_SERVICE_TYPES = ("identity", "compute", "dns", "volumev3", "block-storage", "object-store")


class CapacityError(RuntimeError):
    """The cloud could not place what was asked for (Nova "No valid host", quotas)."""


@dataclass(frozen=True)
class OpenStackCredentials:
    """Auth settings for openstacksdk; secret values are SecretStr (they print as stars).

    ``secrets``: the auth keys that hold secrets; ``extra``: the rest of a clouds.yaml
    entry, its secret keys in ``extra_secrets`` (which keys are secret:
    :func:`~controller.providers.secrets.is_secret_key`)."""

    auth_type: str
    auth: Mapping[str, str]
    secrets: Mapping[str, SecretStr] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    extra_secrets: Mapping[str, SecretStr] = field(default_factory=dict)

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str], cloud: str) -> OpenStackCredentials:
        if data.get("clouds.yaml"):
            return cls._from_clouds_yaml(data["clouds.yaml"], cloud)
        if data.get("application_credential_id"):
            return cls._require(
                data,
                "v3applicationcredential",
                plain=("auth_url", "application_credential_id"),
                secret=("application_credential_secret",),
            )
        if data.get("username"):
            return cls._require(
                data,
                "password",
                plain=("auth_url", "username", "project_name"),
                secret=("password",),
                optional={"user_domain_name": "Default", "project_domain_name": "Default"},
            )
        raise CredentialsError(
            "credentials Secret holds neither clouds.yaml, nor application_credential_id, "
            "nor username"
        )

    @classmethod
    def _require(
        cls,
        data: Mapping[str, str],
        auth_type: str,
        *,
        plain: tuple[str, ...],
        secret: tuple[str, ...],
        optional: Mapping[str, str] | None = None,
    ) -> OpenStackCredentials:
        missing = [k for k in (*plain, *secret) if not data.get(k)]
        if missing:
            raise CredentialsError(f"credentials Secret lacks key(s): {', '.join(missing)}")
        auth = {k: data[k] for k in plain}
        auth.update({k: data.get(k) or default for k, default in (optional or {}).items()})
        return cls(auth_type, auth, {k: SecretStr(data[k]) for k in secret})

    @classmethod
    def _from_clouds_yaml(cls, text: str, cloud: str) -> OpenStackCredentials:
        try:
            document = yaml.safe_load(text)
            entry = dict(document["clouds"][cloud])
        except (yaml.YAMLError, KeyError, TypeError):
            raise CredentialsError(f"clouds.yaml in the Secret has no cloud {cloud!r}") from None
        auth = dict(entry.pop("auth", {}) or {})
        secrets = {k: SecretStr(str(auth.pop(k))) for k in list(auth) if is_secret_key(k)}
        auth_type = str(entry.pop("auth_type", "password"))
        entry.pop("region_name", None)  # Lifeboat chooses the region
        hidden = {k: SecretStr(str(entry.pop(k))) for k in list(entry) if is_secret_key(k)}
        return cls(auth_type, {k: str(v) for k, v in auth.items()}, secrets, entry, hidden)

    def sdk_auth(self) -> dict[str, str]:
        return {**self.auth, **{k: v.get_secret_value() for k, v in self.secrets.items()}}

    def sdk_extra(self) -> dict[str, Any]:
        """The clouds.yaml entry's settings besides ``auth``, secret ones included."""
        hidden = {k: v.get_secret_value() for k, v in self.extra_secrets.items()}
        return {**self.extra, **hidden}

    def secret_values(self) -> list[str]:
        """Every secret value these credentials hold (for redaction)."""
        held = [*self.secrets.values(), *self.extra_secrets.values()]
        return [s.get_secret_value() for s in held] + secret_values(self.extra)


CALL_ERRORS: tuple[type[BaseException], ...] = (
    openstack.exceptions.SDKException,
    keystoneauth1.exceptions.ClientException,
    requests.exceptions.RequestException,
    OSError,
    CapacityError,
)
"""What a failed call raises: an error answer, a broken or timed-out connection, an
authentication failure, or a :class:`CapacityError` Lifeboat raised through the call."""

CLEANUP_ERRORS: tuple[type[BaseException], ...] = (*CALL_ERRORS, RegionImpaired)
"""What a best-effort clean-up survives and logs: a failed call, or a region whose gate
refuses it (the region is Impaired)."""


def classify(error: BaseException | None) -> Classified:
    """The outcome of an openstacksdk / keystoneauth call."""
    if error is None:
        return Classified(CallOutcome.OK, "")
    name = type(error).__name__
    if isinstance(error, CapacityError):
        return Classified(CallOutcome.CAPACITY_ERROR, name)
    if isinstance(
        error,
        keystoneauth1.exceptions.ConnectTimeout
        | requests.exceptions.Timeout
        | TimeoutError
        | openstack.exceptions.ResourceTimeout,
    ):
        return Classified(CallOutcome.TIMEOUT, name)
    if isinstance(error, keystoneauth1.exceptions.connection.ConnectionError) and not isinstance(
        error, keystoneauth1.exceptions.ConnectTimeout
    ):
        return Classified(CallOutcome.UNREACHABLE, name)
    if isinstance(error, requests.exceptions.ConnectionError | ConnectionError):
        return Classified(CallOutcome.UNREACHABLE, name)
    status = _status_of(error)
    if status is not None:
        return _by_status(status, str(error), name)
    if isinstance(error, keystoneauth1.exceptions.auth.AuthorizationFailure):
        return Classified(CallOutcome.AUTH_ERROR, name)
    return Classified(CallOutcome.CLIENT_ERROR, name)


def _status_of(error: BaseException) -> int | None:
    for attribute in ("status_code", "http_status"):
        value = getattr(error, attribute, None)
        if isinstance(value, int):
            return value
    return None


def _by_status(status: int, text: str, name: str) -> Classified:
    code = f"{status} {name}"
    # Quotas first: Cinder answers an exceeded quota with 413 and an "overLimit" body, the
    # shape old Nova used for rate limits.
    if any(marker in text for marker in CAPACITY_MARKERS):
        return Classified(CallOutcome.CAPACITY_ERROR, code)
    if status in _THROTTLED_STATUSES or (status == 413 and "overLimit" in text):
        return Classified(CallOutcome.THROTTLED, code)
    if status in (401, 403):
        return Classified(CallOutcome.AUTH_ERROR, code)
    if status >= 500:
        return Classified(CallOutcome.SERVER_ERROR, code)
    return Classified(CallOutcome.CLIENT_ERROR, code)


def describe(error: BaseException) -> str:
    """A failed call in words (the service's message is safe to show; it is redacted too)."""
    verdict = classify(error)
    message = getattr(error, "details", None) or getattr(error, "message", None) or ""
    text = f"{verdict.outcome.value} ({verdict.code})"
    return f"{text}: {str(message)[:300]}" if message else text


class OpenStackConnector:
    """Connections per region for one CloudProvider, and the calls that go through them."""

    def __init__(
        self,
        name: str,
        spec: CloudProviderSpec,
        credentials: OpenStackCredentials | None,
        *,
        max_concurrency: int = 4,
        timeout_seconds: float = 10.0,
        retry_policy: RetryPolicy = DEFAULT_POLICY,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self._credentials = credentials
        self._timeout = timeout_seconds
        self.calls = CloudCalls.from_spec(
            name,
            spec,
            classify,
            max_concurrency=max_concurrency,
            retry_policy=retry_policy,
            on_outcome=on_outcome,
        )
        self._connections: dict[str, openstack.connection.Connection] = {}
        self._lock = threading.Lock()
        self._ca_file: Path | None = None

    def __repr__(self) -> str:
        return f"OpenStackConnector({self.name!r})"

    def redact(self, text: str) -> str:
        """``text`` with every secret this connector holds replaced by stars."""
        if self._credentials is None:
            return text
        return redact(text, self._credentials.secret_values())

    def explain(self, error: BaseException) -> str:
        """A failed call in words (the service's message included), with no secret."""
        return self.redact(describe(error))

    def close(self) -> None:
        """Close the connections, release the worker threads and remove the CA bundle file
        (if one was written)."""
        self.calls.close()
        with self._lock:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()
            if self._ca_file is not None:
                self._ca_file.unlink(missing_ok=True)
                self._ca_file = None

    def _tls(self) -> dict[str, Any]:
        """The SDK's TLS settings: ``verify``, and ``cacert`` for a CA bundle (written to a
        file the first time it is needed; called with the lock held)."""
        if self.spec.tls.insecure_skip_verify:
            return {"verify": False}
        if not self.spec.tls.ca_bundle:
            return {"verify": True}
        if self._ca_file is None:
            bundle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as we do
                "w", suffix=".pem", prefix="lifeboat-ca-", delete=False
            )
            with bundle:
                bundle.write(self.spec.tls.ca_bundle)
            self._ca_file = Path(bundle.name)
        return {"verify": True, "cacert": str(self._ca_file)}

    def _overrides(self, region: str) -> dict[str, str]:
        """``<service>_endpoint_override`` settings from the CloudProvider's overrides."""
        found = {}
        for service in _SERVICE_TYPES:
            url = resolve_endpoint(self.spec.endpoint_overrides, service, region)
            if url and service != "identity":
                found[f"{service.replace('-', '_')}_endpoint_override"] = url
        return found

    def connection(self, region: str) -> openstack.connection.Connection:
        """The (cached, thread-safe to share) connection to ``region``."""
        with self._lock:
            if region not in self._connections:
                self._connections[region] = self._connect(region)
            return self._connections[region]

    def _connect(self, region: str) -> openstack.connection.Connection:
        settings = self.spec.openstack
        options: dict[str, Any] = {
            "region_name": region,
            "interface": settings.interface if settings else "public",
            **self._tls(),
            "api_timeout": self._timeout,
            "connect_retries": 0,
            "status_code_retries": 0,
            **self._overrides(region),
        }
        identity = self._identity_override(region)
        if self._credentials is None:
            cloud = settings.cloud if settings else None
            config = openstack.config.get_cloud_region(
                cloud=cloud, app_name="lifeboat", app_version=__version__, **options
            )
        else:
            auth = self._credentials.sdk_auth()
            if identity:
                auth["auth_url"] = identity
            config = openstack.config.get_cloud_region(
                load_yaml_config=False,
                load_envvars=False,
                app_name="lifeboat",
                app_version=__version__,
                auth_type=self._credentials.auth_type,
                auth=auth,
                **{**self._credentials.sdk_extra(), **options},
            )
        return openstack.connection.Connection(config=config)

    def _identity_override(self, region: str) -> str | None:
        return resolve_endpoint(self.spec.endpoint_overrides, "identity", region)

    async def call(
        self,
        region: str,
        service: str,
        operation: str,
        fn: Callable[[openstack.connection.Connection], T],
        *,
        mutating: bool,
        probe: bool = False,
    ) -> T:
        """Run ``fn(connection)`` off the event loop, through the region's gate."""
        return await self.calls.call(
            region,
            service,
            operation,
            lambda: fn(self.connection(region)),
            mutating=mutating,
            probe=probe,
        )
