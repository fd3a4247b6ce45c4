"""CloudProvider resources turned into ready-to-use provider handles.

A :class:`ProviderHandle` bundles what the operator uses of one CloudProvider: its
connector (with the per-region gates), DNS traffic manager, API-plane probe and identity
check, whatever the cloud. Handles are cached per CloudProvider and rebuilt when its spec
changes (generation) or its credentials Secret changes (re-read at most every
``secret_ttl`` seconds, so rotated keys are picked up without a restart).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from controller import metrics
from controller.api.conditions import parse_rfc3339
from controller.api.models import CloudProviderSpec, ProviderStatus, ResilientAppSpec
from controller.core.apiplane import ApiPlaneHealth, ApiPlaneState
from controller.operator.kube import Kube, NotFound
from controller.providers.aws.apiplane import Ec2ApiPlaneProbe
from controller.providers.aws.connector import AwsConnector, AwsCredentials
from controller.providers.aws.connector import CredentialsError as AwsCredentialsError
from controller.providers.aws.events import SqsChangeFeed
from controller.providers.aws.identity import StsIdentity
from controller.providers.aws.objects import S3ObjectStore
from controller.providers.aws.route53 import Route53Traffic
from controller.providers.aws.volumes import EbsSnapshots
from controller.providers.calls import CloudCalls
from controller.providers.outcomes import Classified
from controller.providers.protocols import (
    ApiPlaneProbe,
    IdentityChecker,
    ObjectChangeFeed,
    ObjectStore,
    TrafficManager,
    VolumeSnapshots,
)


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


class Connector(Protocol):
    """What every cloud's connector offers the operator."""

    calls: CloudCalls

    def redact(self, text: str) -> str: ...

    def explain(self, error: BaseException) -> str:
        """A failed call in words, with no secret in them."""
        ...

    def close(self) -> None: ...


@dataclass
class ProviderHandle:
    """Everything the operator uses of one CloudProvider."""

    name: str
    spec: CloudProviderSpec
    connector: Connector
    dns: Callable[[str], TrafficManager]
    """The DNS traffic manager serving a region (global services ignore the region)."""
    probe: ApiPlaneProbe
    identity: IdentityChecker
    global_dns: bool
    """True when DNS is a global service (Route 53, judged in the "global" gate)."""

    def traffic(self, region: str | None) -> TrafficManager:
        return self.dns(region or self.spec.regions[0])

    def dns_region(self, region: str | None) -> str:
        """The gate region that DNS changes go through."""
        return "global" if self.global_dns else (region or self.spec.regions[0])


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
    handle: ProviderHandle


@dataclass
class ProviderRegistry:
    kube: Kube
    controller_namespace: str
    lookup: ProviderLookup
    secret_ttl: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _stores: dict[tuple[str, str, str], tuple[object, ObjectStore]] = field(default_factory=dict)

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
        """(reason, message) for every provider or region an app names that does not exist,
        and every eventQueue at a site whose provider cannot fill it."""
        problems: list[tuple[str, str]] = []
        wanted: list[tuple[str, str | None, str]] = [
            (s.provider, s.region, f"site {s.name}") for s in spec.sites
        ]
        wanted.append((spec.traffic.provider, spec.traffic.region, "traffic"))
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
        problems.extend(self._unsupported_event_queues(spec))
        return problems

    def _unsupported_event_queues(self, spec: ResilientAppSpec) -> list[tuple[str, str]]:
        """An ``eventQueue`` at a site whose provider sends no S3 event notifications."""
        problems: list[tuple[str, str]] = []
        datasets = spec.replication.objects if spec.replication is not None else ()
        for dataset in datasets:
            for location in dataset.locations:
                site = spec.site(location.site)
                if not location.event_queue or site is None:
                    continue
                try:
                    kind = self.parse(site.provider)[0].type
                except ProviderUnavailable:
                    continue  # reported above, for the site
                if kind != "aws":
                    problems.append(
                        (
                            "EventsUnsupported",
                            f"dataset {dataset.name} at site {site.name}: an eventQueue needs "
                            f"an aws provider, CloudProvider {site.provider} is {kind}; its "
                            "changes are found by the scan alone",
                        )
                    )
        return problems

    async def handle(self, name: str) -> ProviderHandle:
        """The provider's handle, built or refreshed as needed."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            spec, generation = self.parse(name)
            cached = self._cache.get(name)
            same = cached is not None and cached.generation == generation
            if cached is not None and same and self.clock() - cached.checked < self.secret_ttl:
                return cached.handle
            data, secret_version = await self._secret(name, spec)
            if cached is not None and same and cached.secret_version == secret_version:
                cached.checked = self.clock()
                return cached.handle
            handle = build_handle(name, spec, data)
            self._remember_verdicts(handle, self.lookup(name))
            self.forget(name)
            self._cache[name] = _Cached(generation, secret_version, self.clock(), handle)
            return handle

    @staticmethod
    def _remember_verdicts(handle: ProviderHandle, info: ProviderInfo | None) -> None:
        """Seed a new handle's region gates with the verdicts in the provider's status.

        A restarted operator must not treat an Impaired region as unknown (and send it
        mutating calls) until it has gathered fresh evidence: the last verdict stands
        until new calls say otherwise.
        """
        if info is None:
            return
        try:
            status = ProviderStatus.model_validate(dict(info.status or {}))
        except ValidationError:
            return
        for region in status.regions:
            state = ApiPlaneState(region.api_plane)
            if state is ApiPlaneState.UNKNOWN:
                continue
            since = parse_rfc3339(region.since) if region.since else None
            reason = f"{region.reason} (as last judged)" if region.reason else "as last judged"
            handle.connector.calls.gate(region.name).health = ApiPlaneHealth(
                state, since, reason=reason
            )

    async def connector(self, name: str) -> Connector:
        return (await self.handle(name)).connector

    async def traffic(self, name: str, region: str | None = None) -> TrafficManager:
        return (await self.handle(name)).traffic(region)

    async def api_plane(self, provider: str, region: str) -> ApiPlaneState:
        """The current API-plane verdict of a provider's region (Unknown if unusable)."""
        try:
            handle = await self.handle(provider)
        except ProviderUnavailable:
            return ApiPlaneState.UNKNOWN
        return handle.connector.calls.gate(region).health.state

    async def traffic_plane(self, provider: str, region: str | None) -> ApiPlaneState:
        """The API-plane verdict of the DNS service an app's traffic goes through."""
        try:
            handle = await self.handle(provider)
        except ProviderUnavailable:
            return ApiPlaneState.UNKNOWN
        return handle.connector.calls.gate(handle.dns_region(region)).health.state

    def region_state(self, provider: str, region: str) -> ApiPlaneState:
        """The API-plane verdict of a region as the cached handle knows it (no I/O)."""
        cached = self._cache.get(provider)
        if cached is None:
            return ApiPlaneState.UNKNOWN
        return cached.handle.connector.calls.gate(region).health.state

    async def object_store(self, provider: str, region: str, bucket: str) -> ObjectStore:
        """A bucket (S3) or container (Swift) of a provider's region; cached per handle."""
        handle = await self.handle(provider)
        key = (provider, region, bucket)
        cached = self._stores.get(key)
        if cached is not None and cached[0] is handle.connector:
            return cached[1]
        store: ObjectStore
        if isinstance(handle.connector, AwsConnector):
            store = S3ObjectStore(handle.connector, region, bucket)
        else:
            from controller.providers.openstack import OpenStackConnector
            from controller.providers.openstack import objects as swift_container

            if not isinstance(handle.connector, OpenStackConnector):
                raise ProviderUnavailable(
                    "ObjectsUnsupported", f"CloudProvider {provider} offers no object store"
                )
            store = swift_container(handle.connector, region, bucket)
        self._stores[key] = (handle.connector, store)
        return store

    async def change_feed(self, provider: str, region: str, queue: str) -> ObjectChangeFeed:
        """S3 event notifications read from an SQS queue of a provider's region."""
        handle = await self.handle(provider)
        if not isinstance(handle.connector, AwsConnector):
            raise ProviderUnavailable(
                "EventsUnsupported",
                f"CloudProvider {provider}: change notices (eventQueue) need an aws provider",
            )
        return SqsChangeFeed(handle.connector, region, queue)

    async def volume_snapshots(self, provider: str, region: str) -> VolumeSnapshots:
        """EBS snapshots or Cinder backups of a provider's region (cheap: built per call)."""
        handle = await self.handle(provider)
        if isinstance(handle.connector, AwsConnector):
            return EbsSnapshots(handle.connector, region)
        from controller.providers.openstack import OpenStackConnector
        from controller.providers.openstack import volumes as cinder_backups

        if not isinstance(handle.connector, OpenStackConnector):
            raise ProviderUnavailable(
                "VolumesUnsupported", f"CloudProvider {provider} offers no volume snapshots"
            )
        return cinder_backups(handle.connector, region)

    def explain(self, name: str, error: BaseException) -> str:
        """A failed call of provider ``name`` in words, secrets removed."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached.handle.connector.explain(error)
        return f"{type(error).__name__}"

    def cached_redactor(self, name: str) -> Callable[[str], str]:
        """The redaction of the provider's cached connector (identity when none)."""
        cached = self._cache.get(name)
        return cached.handle.connector.redact if cached else (lambda text: text)

    def cached(self, name: str) -> ProviderHandle | None:
        cached = self._cache.get(name)
        return cached.handle if cached else None

    def forget(self, name: str) -> None:
        self._stores = {k: v for k, v in self._stores.items() if k[0] != name}
        cached = self._cache.pop(name, None)
        if cached is not None:
            cached.handle.connector.close()

    async def _secret(
        self, name: str, spec: CloudProviderSpec
    ) -> tuple[Mapping[str, str] | None, str]:
        if spec.credentials.source == "Environment" or spec.credentials.secret_ref is None:
            return None, ""
        secret = f"{self.controller_namespace}/{spec.credentials.secret_ref.name}"
        try:
            return await self.kube.read_secret(
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


def build_handle(
    name: str, spec: CloudProviderSpec, secret: Mapping[str, str] | None
) -> ProviderHandle:
    """The handle for a CloudProvider of any type."""
    hook = _count_call(name)
    if spec.type == "aws":
        try:
            credentials = AwsCredentials.from_secret_data(secret) if secret is not None else None
        except AwsCredentialsError as error:
            raise ProviderUnavailable(
                "CredentialsIncomplete", f"CloudProvider {name}: {error}"
            ) from None
        aws = AwsConnector(name, spec, credentials, on_outcome=hook)
        route53 = Route53Traffic(aws)  # a global service: the same for every region
        identity = StsIdentity(aws, spec.regions[0])
        return ProviderHandle(
            name, spec, aws, lambda _region: route53, Ec2ApiPlaneProbe(aws), identity, True
        )
    return _openstack_handle(name, spec, secret, hook)


def _openstack_handle(
    name: str,
    spec: CloudProviderSpec,
    secret: Mapping[str, str] | None,
    hook: Callable[[str, str, str, Classified, float], None],
) -> ProviderHandle:
    from controller.providers.openstack import components

    try:
        connector, dns, probe, identity = components(name, spec, secret, hook)
    except ValueError as error:  # credentials that cannot be used
        raise ProviderUnavailable(
            "CredentialsIncomplete", f"CloudProvider {name}: {error}"
        ) from None
    return ProviderHandle(name, spec, connector, dns, probe, identity, False)


def _count_call(provider: str) -> Callable[[str, str, str, Classified, float], None]:
    def hook(region: str, service: str, _op: str, verdict: Classified, latency: float) -> None:
        metrics.CLOUD_CALLS.labels(provider, region, service, verdict.outcome.value).inc()
        metrics.CLOUD_CALL_DURATION.labels(provider, region, service).observe(latency)

    return hook
