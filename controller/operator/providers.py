"""CloudProvider resources turned into ready-to-use provider connectors.

Connectors are cached per CloudProvider and rebuilt when its spec changes (generation)
or when its credentials Secret changes (re-read at most every ``secret_ttl`` seconds, so
rotated keys are picked up without a restart).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from controller import metrics
from controller.api.models import CloudProviderSpec, ResilientAppSpec
from controller.operator.kube import Kube, NotFound
from controller.providers.aws.connector import AwsConnector, AwsCredentials, CredentialsError
from controller.providers.aws.route53 import Route53Traffic
from controller.providers.outcomes import Classified


class ProviderUnavailable(RuntimeError):
    """The CloudProvider cannot be used; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ProviderInfo:
    """What the operator's index keeps of a CloudProvider."""

    name: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]


ProviderLookup = Callable[[str], ProviderInfo | None]


def spec_error(error: ValidationError) -> str:
    """A short, secret-free summary of a validation error."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "spec"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


@dataclass
class _Cached:
    generation: int
    secret_version: str
    checked: float
    connector: AwsConnector
    traffic: Route53Traffic


@dataclass
class ProviderRegistry:
    kube: Kube
    controller_namespace: str
    lookup: ProviderLookup
    secret_ttl: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def parse(self, name: str) -> tuple[CloudProviderSpec, int]:
        found = self.lookup(name)
        if found is None:
            raise ProviderUnavailable("ProviderNotFound", f"CloudProvider {name} not found")
        try:
            return CloudProviderSpec.model_validate(dict(found.spec)), found.generation
        except ValidationError as error:
            raise ProviderUnavailable(
                "InvalidProvider", f"CloudProvider {name} is invalid: {spec_error(error)}"
            ) from None

    def check_references(self, spec: ResilientAppSpec) -> list[tuple[str, str]]:
        """(reason, message) for every provider or region an app names that does not exist."""
        problems: list[tuple[str, str]] = []
        wanted: list[tuple[str, str | None, str]] = [
            (s.provider, s.region, f"site {s.name}") for s in spec.sites
        ]
        wanted.append((spec.traffic.provider, None, "traffic"))
        for provider, region, user in wanted:
            try:
                parsed, _ = self.parse(provider)
            except ProviderUnavailable as error:
                problems.append((error.reason, f"{user}: {error}"))
                continue
            if region is not None and region not in parsed.regions:
                problems.append(
                    (
                        "RegionNotOffered",
                        f"{user}: CloudProvider {provider} does not list region {region}",
                    )
                )
        return problems

    async def connector(self, name: str) -> AwsConnector:
        return (await self._entry(name)).connector

    async def traffic(self, name: str) -> Route53Traffic:
        return (await self._entry(name)).traffic

    def cached_redactor(self, name: str) -> Callable[[str], str]:
        """The redaction of the provider's cached connector (identity when none)."""
        cached = self._cache.get(name)
        return cached.connector.redact if cached else (lambda text: text)

    def forget(self, name: str) -> None:
        cached = self._cache.pop(name, None)
        if cached is not None:
            cached.connector.close()

    async def _entry(self, name: str) -> _Cached:
        async with self._locks.setdefault(name, asyncio.Lock()):
            spec, generation = self.parse(name)
            cached = self._cache.get(name)
            same = cached is not None and cached.generation == generation
            if cached is not None and same and self.clock() - cached.checked < self.secret_ttl:
                return cached
            credentials, secret_version = await self._credentials(name, spec)
            if cached is not None and same and cached.secret_version == secret_version:
                cached.checked = self.clock()
                return cached
            self.forget(name)
            connector = AwsConnector(name, spec, credentials, on_outcome=_count_call(name))
            entry = _Cached(
                generation, secret_version, self.clock(), connector, Route53Traffic(connector)
            )
            self._cache[name] = entry
            return entry

    async def _credentials(
        self, name: str, spec: CloudProviderSpec
    ) -> tuple[AwsCredentials | None, str]:
        if spec.credentials.source == "Environment" or spec.credentials.secret_ref is None:
            return None, ""
        secret = f"{self.controller_namespace}/{spec.credentials.secret_ref.name}"
        try:
            data, version = await self.kube.read_secret(
                self.controller_namespace, spec.credentials.secret_ref.name
            )
        except NotFound:
            raise ProviderUnavailable(
                "SecretNotFound", f"CloudProvider {name}: Secret {secret} not found"
            ) from None
        except ApiException as error:
            raise ProviderUnavailable(
                "SecretUnreadable",
                f"CloudProvider {name}: Secret {secret} cannot be read ({error.status} "
                f"{error.reason}); Lifeboat reads Secrets in its own namespace only",
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
