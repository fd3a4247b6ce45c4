"""CloudProvider resources turned into connected clouds, whatever their type.

Each CloudProvider is connected through its type's backend
(:mod:`controller.providers.registry`) into a :class:`~controller.providers.backend.Cloud`:
its connector (with the per-region gates), API-plane probe, identity check and the
factories of everything else the operator uses (DNS traffic, object stores, change feeds,
volume snapshots, capacity). Clouds are cached per CloudProvider and rebuilt when its spec
changes (generation, or a CloudProvider deleted and made again: uid) or its credentials
Secret changes (re-read at most every ``secret_ttl`` seconds when used, and every
``secret_ttl`` seconds for every cached provider by :meth:`ProviderRegistry.recheck`, which
the operator runs on that cadence: a Secret may change without any CloudProvider event).

Every built cloud has a *revision* (:meth:`ProviderRegistry.revision`): long-lived users —
the running replication flows — compare it with the one they were started under and
restart on the new connection when it changed. A replaced cloud is closed
``retire_seconds`` later (its users have moved over by then), not at once, so that a flow
under way is not cut off (its TLS settings, a CA bundle file, gone under it). A cloud whose
CloudProvider is deleted, or whose credentials Secret is gone, is closed at once: its
credentials were withdrawn (:data:`WITHDRAWN`).

Apps use the registry through :class:`TenantProviders`, the view of one namespace: a
CloudProvider whose ``spec.tenancy`` does not admit the namespace is refused there
(:mod:`controller.core.tenancy`), before anything is connected or called.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from controller import metrics
from controller.api.conditions import parse_rfc3339
from controller.api.events import EventReason
from controller.api.models import CloudProviderSpec, ProviderStatus, ResilientAppSpec
from controller.core import tenancy
from controller.core.apiplane import ApiPlaneHealth, ApiPlaneState
from controller.operator.kube import Kube, NotFound
from controller.providers import registry
from controller.providers.backend import Cloud
from controller.providers.errors import ProviderUnavailable
from controller.providers.outcomes import Classified
from controller.providers.protocols import (
    ObjectChangeFeed,
    ObjectStore,
    TrafficManager,
    VolumeSnapshots,
)


@dataclass(frozen=True)
class ProviderInfo:
    """What the operator's index keeps of a CloudProvider."""

    name: str
    uid: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]


log = logging.getLogger(__name__)

WITHDRAWN = frozenset(
    {
        EventReason.PROVIDER_NOT_FOUND,
        EventReason.INVALID_PROVIDER,
        EventReason.SECRET_NOT_FOUND,
        EventReason.CREDENTIALS_INCOMPLETE,
    }
)
"""Why a CloudProvider's connection is withdrawn, not just unreachable for a while: the
CloudProvider is gone or no longer valid, its credentials Secret is gone or unusable. Its
cloud is closed and the flows that ran through it stop (a Secret that cannot be *read*
for a while, an apiserver outage, leaves the connection as it was)."""

ProviderLookup = Callable[[str], ProviderInfo | None]
NamespaceLabels = Callable[[str], Mapping[str, str] | None]
"""A namespace's labels (None when the namespace is not known)."""


def _unknown_namespace(_name: str) -> Mapping[str, str] | None:
    return None


def spec_error(error: ValidationError) -> str:
    """A short, secret-free summary of a validation error."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "spec"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


@dataclass
class _Cached:
    uid: str
    generation: int
    secret_version: str
    checked: float
    handle: Cloud
    revision: int


@dataclass
class ProviderRegistry:
    kube: Kube
    controller_namespace: str
    lookup: ProviderLookup
    namespace_labels: NamespaceLabels = _unknown_namespace
    secret_ttl: float = 60.0
    """Seconds between re-reads of a credentials Secret (``--secret-recheck-seconds``)."""
    retire_seconds: float = 30.0
    """How long a replaced cloud stays open for the users still holding it."""
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _parsed: dict[str, tuple[tuple[str, int], CloudProviderSpec | ProviderUnavailable]] = field(
        default_factory=dict
    )
    """Per CloudProvider name: its (uid, generation) and the spec validated from it (or why
    it is invalid)."""
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _stores: dict[tuple[str, str, str], tuple[object, ObjectStore]] = field(default_factory=dict)
    _retired: list[tuple[float, Cloud]] = field(default_factory=list)
    _revisions: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def parse(self, name: str) -> tuple[CloudProviderSpec, int]:
        spec, generation, _ = self._parse(name)
        return spec, generation

    def _parse(self, name: str) -> tuple[CloudProviderSpec, int, str]:
        found = self.lookup(name)
        if found is None:
            self._parsed.pop(name, None)
            raise ProviderUnavailable(
                EventReason.PROVIDER_NOT_FOUND, f"CloudProvider {name} not found"
            )
        # Every app's round checks its providers: a spec is validated once per generation
        # (a quarter of a steady 30-app fleet's rounds went into validating the same specs).
        known = self._parsed.get(name)
        if known is not None and known[0] == (found.uid, found.generation):
            outcome = known[1]
        else:
            try:
                outcome = CloudProviderSpec.model_validate(dict(found.spec))
            except ValidationError as error:
                outcome = ProviderUnavailable(
                    EventReason.INVALID_PROVIDER,
                    f"CloudProvider {name} is invalid: {spec_error(error)}",
                )
            self._parsed[name] = ((found.uid, found.generation), outcome)
        if isinstance(outcome, ProviderUnavailable):
            raise ProviderUnavailable(outcome.reason, str(outcome)) from None
        return outcome, found.generation, found.uid

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
                        EventReason.REGION_NOT_OFFERED,
                        f"{user}: CloudProvider {provider} does not list region {region}",
                    )
                )
        problems.extend(registry.unsupported(spec, self._type))
        return problems

    def tenant(self, namespace: str) -> TenantProviders:
        """The registry as the apps of ``namespace`` may use it."""
        return TenantProviders(self, namespace)

    def usable_spec(self, name: str) -> CloudProviderSpec | None:
        """A CloudProvider's spec, None when it cannot be used (reported for its users)."""
        try:
            return self.parse(name)[0]
        except ProviderUnavailable:
            return None

    def _type(self, name: str) -> str | None:
        """A CloudProvider's type, None when it cannot be used (reported for its users)."""
        spec = self.usable_spec(name)
        return spec.type if spec is not None else None

    async def handle(self, name: str) -> Cloud:
        """The provider, connected (or reconnected) as needed."""
        return (await self._connected(name, recheck=False)).handle

    async def revision(self, name: str) -> int:
        """The revision of the provider's cloud as of now, reconnected first if its spec
        or credentials changed: a user that holds parts of an earlier revision (a running
        flow's stores) restarts on this one. ProviderUnavailable when it cannot be used;
        a Secret that cannot be read for a while (not gone) leaves the cloud as it is."""
        try:
            return (await self._connected(name, recheck=False)).revision
        except ProviderUnavailable as error:
            cached = self._cache.get(name)
            if error.reason == EventReason.SECRET_UNREADABLE and cached is not None:
                return cached.revision
            raise

    async def recheck(self) -> None:
        """Re-read the credentials Secret of every connected provider now, reconnect those
        whose spec or Secret changed, close those withdrawn (:data:`WITHDRAWN`), and close
        the replaced clouds whose time is up. The operator runs it every ``secret_ttl``
        seconds: a Secret can change without any CloudProvider event."""
        for name in sorted(self._cache):
            try:
                await self._connected(name, recheck=True)
            except ProviderUnavailable as error:
                log.warning("CloudProvider %s: %s", name, error)
        self._close_retired()

    async def run_rechecks(self) -> None:
        """:meth:`recheck` every ``secret_ttl`` seconds, for ever."""
        while True:
            await asyncio.sleep(self.secret_ttl)
            try:
                await self.recheck()
            except Exception:  # the next round tries again
                log.exception("credentials re-check failed")

    async def _connected(self, name: str, *, recheck: bool) -> _Cached:
        async with self._locks.setdefault(name, asyncio.Lock()):
            try:
                return await self._connect(name, recheck=recheck)
            except ProviderUnavailable as error:
                if error.reason in WITHDRAWN and name in self._cache:
                    log.warning(
                        "CloudProvider %s withdrawn, its connection closed: %s", name, error
                    )
                    self.forget(name)
                raise

    async def _connect(self, name: str, *, recheck: bool) -> _Cached:
        spec, generation, uid = self._parse(name)
        cached = self._cache.get(name)
        same = cached is not None and (cached.uid, cached.generation) == (uid, generation)
        fresh = cached is not None and self.clock() - cached.checked < self.secret_ttl
        if cached is not None and same and fresh and not recheck:
            return cached
        data, secret_version = await self._secret(name, spec)
        if cached is not None and same and cached.secret_version == secret_version:
            cached.checked = self.clock()
            return cached
        handle = registry.connect(name, spec, data, _count_call(name))
        self._remember_verdicts(handle, self.lookup(name))
        self._retire(name)
        entry = _Cached(
            uid, generation, secret_version, self.clock(), handle, next(self._revisions)
        )
        self._cache[name] = entry
        if cached is not None:
            changed = "spec" if not same else "credentials Secret"
            log.info("CloudProvider %s reconnected: its %s changed", name, changed)
        return entry

    def _retire(self, name: str) -> None:
        """Replace the provider's cloud: closed ``retire_seconds`` from now."""
        self._stores = {k: v for k, v in self._stores.items() if k[0] != name}
        cached = self._cache.pop(name, None)
        if cached is not None:
            self._retired.append((self.clock(), cached.handle))
        self._close_retired()

    def _close_retired(self) -> None:
        now = self.clock()
        due = [h for at, h in self._retired if now - at >= self.retire_seconds]
        self._retired = [(at, h) for at, h in self._retired if now - at < self.retire_seconds]
        for handle in due:
            handle.close()

    @staticmethod
    def _remember_verdicts(handle: Cloud, info: ProviderInfo | None) -> None:
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

    async def traffic(self, name: str, region: str | None = None) -> TrafficManager:
        """The DNS traffic manager serving ``region`` (default: the provider's first)."""
        handle = await self.handle(name)
        return handle.traffic(region or handle.spec.regions[0])

    async def api_plane(self, provider: str, region: str) -> ApiPlaneState:
        """The current API-plane verdict of a provider's region (Unknown if unusable)."""
        return (await self.api_plane_health(provider, region)).state

    async def api_plane_health(self, provider: str, region: str) -> ApiPlaneHealth:
        """A provider's region's API-plane verdict with its reason and figures (Unknown if
        the provider is unusable)."""
        try:
            handle = await self.handle(provider)
        except ProviderUnavailable:
            return ApiPlaneHealth(reason=f"provider {provider} unusable")
        return handle.connector.calls.gate(region).health

    async def traffic_plane(self, provider: str, region: str | None) -> ApiPlaneState:
        """The API-plane verdict of the DNS service an app's traffic goes through."""
        try:
            handle = await self.handle(provider)
        except ProviderUnavailable:
            return ApiPlaneState.UNKNOWN
        gate = handle.dns_region(region or handle.spec.regions[0])
        return handle.connector.calls.gate(gate).health.state

    def region_state(self, provider: str, region: str) -> ApiPlaneState:
        """The API-plane verdict of a region as the cached handle knows it (no I/O)."""
        cached = self._cache.get(provider)
        if cached is None:
            return ApiPlaneState.UNKNOWN
        return cached.handle.connector.calls.gate(region).health.state

    async def object_store(self, provider: str, region: str, bucket: str) -> ObjectStore:
        """A bucket (S3) or container (Swift) of a provider's region; cached per cloud."""
        handle = await self.handle(provider)
        key = (provider, region, bucket)
        cached = self._stores.get(key)
        if cached is not None and cached[0] is handle:
            return cached[1]
        store = handle.object_store(region, bucket)
        self._stores[key] = (handle, store)
        return store

    async def change_feed(self, provider: str, region: str, queue: str) -> ObjectChangeFeed:
        """Change notices of a bucket, read from a queue of a provider's region."""
        return (await self.handle(provider)).change_feed(region, queue)

    async def volume_snapshots(self, provider: str, region: str) -> VolumeSnapshots:
        """Volume snapshots of a provider's region (cheap: built per call)."""
        return (await self.handle(provider)).volume_snapshots(region)

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

    def cached(self, name: str) -> Cloud | None:
        cached = self._cache.get(name)
        return cached.handle if cached else None

    def forget(self, name: str) -> None:
        """Close the provider's cloud now (its CloudProvider is gone or withdrawn)."""
        self._stores = {k: v for k, v in self._stores.items() if k[0] != name}
        cached = self._cache.pop(name, None)
        if cached is not None:
            cached.handle.close()

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
                EventReason.SECRET_NOT_FOUND, f"CloudProvider {name}: Secret {secret} not found"
            ) from None
        except ApiException as error:
            raise ProviderUnavailable(
                EventReason.SECRET_UNREADABLE,
                f"CloudProvider {name}: Secret {secret} cannot be read ({error.status} "
                f"{error.reason}); Lifeboat reads Secrets in its own namespace only",
            ) from None


@dataclass(frozen=True)
class TenantProviders:
    """The provider registry as the apps of one namespace may use it.

    Every CloudProvider is checked against its ``spec.tenancy`` on every use, before
    anything is built or called through it (so a revoked grant or a relabelled namespace
    takes effect at once): one that does not admit the namespace raises ProviderUnavailable
    with reason ``ProviderNotPermitted`` (its API-plane verdicts read as Unknown). The
    per-app worker, its actions, capacity drivers and replication engines use the registry
    only through this view.
    """

    registry: ProviderRegistry
    namespace: str

    def admit(self, name: str) -> CloudProviderSpec:
        """The spec of CloudProvider ``name`` if it admits this namespace; else
        ProviderUnavailable (also for a missing or invalid CloudProvider)."""
        spec, _ = self.registry.parse(name)
        labels = self.registry.namespace_labels(self.namespace)
        if not tenancy.admits(spec.tenancy, self.namespace, labels):
            raise ProviderUnavailable(
                EventReason.PROVIDER_NOT_PERMITTED,
                tenancy.not_admitted(name, spec.tenancy, self.namespace),
            )
        return spec

    def _admitted(self, name: str) -> bool:
        try:
            self.admit(name)
        except ProviderUnavailable:
            return False
        return True

    def refused(self, name: str) -> str | None:
        """Why CloudProvider ``name`` does not admit this namespace (now: a running flow
        asks before every step), or None (admitted, or missing: reported elsewhere)."""
        try:
            self.admit(name)
        except ProviderUnavailable as error:
            return str(error) if error.reason == EventReason.PROVIDER_NOT_PERMITTED else None
        return None

    def check_references(self, spec: ResilientAppSpec) -> list[tuple[str, str]]:
        """The registry's reference problems, then every tenancy refusal: providers that do
        not admit this namespace, capacity namespaces and member clusters not granted."""
        problems = self.registry.check_references(spec)
        labels = self.registry.namespace_labels(self.namespace)
        refused = tenancy.refusals(spec, self.namespace, labels, self.registry.usable_spec)
        return problems + refused

    async def handle(self, name: str) -> Cloud:
        self.admit(name)
        return await self.registry.handle(name)

    async def revision(self, name: str) -> int:
        self.admit(name)
        return await self.registry.revision(name)

    async def traffic(self, name: str, region: str | None = None) -> TrafficManager:
        self.admit(name)
        return await self.registry.traffic(name, region)

    async def api_plane(self, provider: str, region: str) -> ApiPlaneState:
        if not self._admitted(provider):
            return ApiPlaneState.UNKNOWN
        return await self.registry.api_plane(provider, region)

    async def api_plane_health(self, provider: str, region: str) -> ApiPlaneHealth:
        if not self._admitted(provider):
            return ApiPlaneHealth(reason=f"provider {provider} not permitted")
        return await self.registry.api_plane_health(provider, region)

    async def traffic_plane(self, provider: str, region: str | None) -> ApiPlaneState:
        if not self._admitted(provider):
            return ApiPlaneState.UNKNOWN
        return await self.registry.traffic_plane(provider, region)

    def region_state(self, provider: str, region: str) -> ApiPlaneState:
        """No I/O, nothing built: what the registry's cached handle judged."""
        return self.registry.region_state(provider, region)

    async def object_store(self, provider: str, region: str, bucket: str) -> ObjectStore:
        self.admit(provider)
        return await self.registry.object_store(provider, region, bucket)

    async def change_feed(self, provider: str, region: str, queue: str) -> ObjectChangeFeed:
        self.admit(provider)
        return await self.registry.change_feed(provider, region, queue)

    async def volume_snapshots(self, provider: str, region: str) -> VolumeSnapshots:
        self.admit(provider)
        return await self.registry.volume_snapshots(provider, region)

    def explain(self, name: str, error: BaseException) -> str:
        return self.registry.explain(name, error)

    def cached_redactor(self, name: str) -> Callable[[str], str]:
        return self.registry.cached_redactor(name)


def _count_call(provider: str) -> Callable[[str, str, str, Classified, float], None]:
    def hook(region: str, service: str, _op: str, verdict: Classified, latency: float) -> None:
        metrics.CLOUD_CALLS.labels(provider, region, service, verdict.outcome.value).inc()
        metrics.CLOUD_CALL_DURATION.labels(provider, region, service).observe(latency)

    return hook
