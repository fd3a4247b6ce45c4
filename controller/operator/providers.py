"""CloudProvider resources turned into ready-to-use provider connectors.

Connectors are cached per CloudProvider and rebuilt when the resource changes or when the
credentials Secret changes (re-read at most every ``secret_ttl`` seconds, so rotated keys
are picked up without a restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from controller import metrics
from controller.api.models import CloudProviderSpec
from controller.operator.kube import Kube, NotFound
from controller.providers.aws.connector import AwsConnector, AwsCredentials, CredentialsError
from controller.providers.aws.route53 import Route53Traffic
from controller.providers.outcomes import Classified


class ProviderUnavailable(RuntimeError):
    """The CloudProvider cannot be used; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


ProviderLookup = Callable[[str], tuple[Mapping[str, Any], str] | None]
"""Name -> (spec, resourceVersion) of a CloudProvider, or None when there is none."""


@dataclass
class _Cached:
    resource_version: str
    secret_version: str
    checked: float
    connector: AwsConnector
    traffic: Route53Traffic


def spec_error(error: ValidationError) -> str:
    """A short, secret-free summary of a validation error."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "spec"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


@dataclass
class ProviderRegistry:
    kube: Kube
    controller_namespace: str
    lookup: ProviderLookup
    secret_ttl: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, _Cached] = field(default_factory=dict)

    def parse(self, name: str) -> tuple[CloudProviderSpec, str]:
        found = self.lookup(name)
        if found is None:
            raise ProviderUnavailable("ProviderNotFound", f"CloudProvider {name} not found")
        raw, resource_version = found
        try:
            return CloudProviderSpec.model_validate(raw), resource_version
        except ValidationError as error:
            raise ProviderUnavailable(
                "InvalidProvider", f"CloudProvider {name} is invalid: {spec_error(error)}"
            ) from None

    async def connector(self, name: str) -> AwsConnector:
        return (await self._entry(name)).connector

    async def traffic(self, name: str) -> Route53Traffic:
        return (await self._entry(name)).traffic

    async def _entry(self, name: str) -> _Cached:
        spec, resource_version = self.parse(name)
        cached = self._cache.get(name)
        fresh = cached is not None and cached.resource_version == resource_version
        if cached is not None and fresh and self.clock() - cached.checked < self.secret_ttl:
            return cached
        credentials, secret_version = await self._credentials(name, spec)
        if cached is not None and fresh and cached.secret_version == secret_version:
            cached.checked = self.clock()
            return cached
        connector = AwsConnector(name, spec, credentials, on_outcome=_count_call(name))
        entry = _Cached(
            resource_version, secret_version, self.clock(), connector, Route53Traffic(connector)
        )
        self._cache[name] = entry
        return entry

    async def _credentials(
        self, name: str, spec: CloudProviderSpec
    ) -> tuple[AwsCredentials | None, str]:
        if spec.credentials.source == "Environment" or spec.credentials.secret_ref is None:
            return None, ""
        secret = spec.credentials.secret_ref.name
        try:
            data, version = await self.kube.read_secret(self.controller_namespace, secret)
        except NotFound:
            raise ProviderUnavailable(
                "SecretNotFound",
                f"CloudProvider {name}: Secret {self.controller_namespace}/{secret} not found",
            ) from None
        try:
            return AwsCredentials.from_secret_data(data), version
        except CredentialsError as error:
            raise ProviderUnavailable(
                "CredentialsIncomplete", f"CloudProvider {name}: {error}"
            ) from None


def _count_call(provider: str) -> Callable[[str, str, str, Classified, float], None]:
    def hook(region: str, service: str, _op: str, verdict: Classified, latency: float) -> None:
        metrics.CLOUD_CALLS.labels(provider, region, service, verdict.outcome.value).inc()
        metrics.CLOUD_CALL_DURATION.labels(provider, region, service).observe(latency)

    return hook
