"""What a cloud backend is: the capabilities it builds for one CloudProvider, and how it
says plainly that it lacks one.

A :class:`Backend` stands for one ``CloudProvider.spec.type`` (``aws``, ``openstack``);
:mod:`controller.providers.registry` maps each type to its backend. ``connect`` turns a
CloudProvider (spec and credentials) into a :class:`Cloud`: its connector (region gates,
retry budgets, outcome accounting, redaction), API-plane probe and identity check (which
every cloud has), and factories for the optional capabilities, each a
:class:`Capability`: DNS traffic, object stores, change feeds, volume snapshots and
capacity drivers. A capability a cloud lacks raises
:class:`~controller.providers.errors.CapabilityUnsupported`, whose reason (e.g.
``EventsUnsupported``) and message reach the app's status and Events like any other
reason for not acting.

A site's capacity driver is chosen by the driver its ``capacity`` names (its *kind*:
``autoScalingGroup``, ``openstackServers``, ``kubernetesDeployments``). A cloud's own
kinds are built by its :class:`Cloud`; a kind that needs no cloud (Kubernetes
Deployments, in this cluster or a member cluster the CloudProvider lists) is a
:class:`SiteCapacity`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from controller.api.events import EventReason
from controller.api.models import CapacitySpec, CloudProviderSpec, Site
from controller.providers.calls import CloudCalls, OutcomeHook
from controller.providers.errors import CapabilityUnsupported
from controller.providers.protocols import (
    ApiPlaneProbe,
    CapacityDriver,
    IdentityChecker,
    ObjectChangeFeed,
    ObjectStore,
    TrafficManager,
    VolumeSnapshots,
)

if TYPE_CHECKING:
    import kubernetes.client


class Capability(Enum):
    """What a CloudProvider may be asked to build beyond its probe and identity check:
    (the words for it, the reason given when its type cannot)."""

    TRAFFIC = ("DNS traffic", EventReason.TRAFFIC_UNSUPPORTED)
    OBJECT_STORE = ("object stores", EventReason.OBJECTS_UNSUPPORTED)
    CHANGE_FEED = ("change notices (eventQueue)", EventReason.EVENTS_UNSUPPORTED)
    VOLUME_SNAPSHOTS = ("volume snapshots", EventReason.VOLUMES_UNSUPPORTED)
    CAPACITY = ("capacity drivers", EventReason.CAPACITY_UNSUPPORTED)

    def __init__(self, words: str, unsupported_reason: EventReason) -> None:
        self.words = words
        self.unsupported_reason = unsupported_reason


class Connector(Protocol):
    """What every cloud's connector offers the operator."""

    calls: CloudCalls

    def redact(self, text: str) -> str: ...

    def explain(self, error: BaseException) -> str:
        """A failed call in words, with no secret in them."""
        ...

    def close(self) -> None: ...


def capacity_kind(spec: CapacitySpec) -> str:
    """The driver a site's capacity names: the (camelCase) name of its one driver field,
    e.g. ``autoScalingGroup``."""
    kinds = [
        info.alias or name
        for name, info in type(spec).model_fields.items()
        if isinstance(getattr(spec, name), BaseModel)
    ]
    if len(kinds) != 1:  # the model's own rule allows exactly one
        raise ValueError(f"capacity names {len(kinds)} drivers, not one")
    return kinds[0]


class Cloud:
    """One CloudProvider, connected. Subclasses (one per cloud) build what they offer and
    leave the rest to these methods, which say that the type does not offer it."""

    def __init__(
        self,
        name: str,
        spec: CloudProviderSpec,
        connector: Connector,
        probe: ApiPlaneProbe,
        identity: IdentityChecker,
    ) -> None:
        self.name = name
        self.spec = spec
        self.connector = connector
        self.probe = probe
        """A cheap read of a region's management API (sent even to an Impaired region)."""
        self.identity = identity
        """Whether the credentials work, and whose they are."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def unsupported(self, capability: Capability, detail: str = "") -> CapabilityUnsupported:
        """The error for a capability this CloudProvider's type does not offer."""
        message = f"CloudProvider {self.name} (type {self.spec.type}) offers no {capability.words}"
        return CapabilityUnsupported(capability, f"{message}{detail}")

    def dns_region(self, region: str) -> str:
        """The gate region DNS changes for ``region`` go through ("global" for a global
        DNS service)."""
        return region

    def traffic(self, region: str) -> TrafficManager:
        """The DNS traffic manager serving ``region``."""
        raise self.unsupported(Capability.TRAFFIC)

    def object_store(self, region: str, bucket: str) -> ObjectStore:
        """A bucket (or container) of ``region``."""
        raise self.unsupported(Capability.OBJECT_STORE)

    def change_feed(self, region: str, queue: str) -> ObjectChangeFeed:
        """Change notices of a bucket, read from ``queue`` of ``region``."""
        raise self.unsupported(Capability.CHANGE_FEED)

    def volume_snapshots(self, region: str) -> VolumeSnapshots:
        """Point-in-time copies of ``region``'s block volumes."""
        raise self.unsupported(Capability.VOLUME_SNAPSHOTS)

    def capacity(self, site: Site) -> CapacityDriver:
        """The driver of a site's capacity, of one of this cloud's kinds."""
        raise self.unsupported(Capability.CAPACITY, self._kind_of(site))

    def close(self) -> None:
        self.connector.close()

    @staticmethod
    def _kind_of(site: Site) -> str:
        if site.capacity is None:
            return f" for site {site.name}, which declares no capacity"
        return f" for site {site.name}'s {capacity_kind(site.capacity)}"


Connect = Callable[[str, CloudProviderSpec, Mapping[str, str] | None, OutcomeHook | None], Cloud]
"""(CloudProvider name, spec, its credentials Secret's data or None, call outcome hook)
to a connected :class:`Cloud`; raises CredentialsError for credentials it cannot use."""


def lazily(module: str) -> Connect:
    """A ``connect`` that imports ``module`` (and with it the cloud's SDK) on first use and
    calls the ``connect`` function it defines."""

    def connect(
        name: str,
        spec: CloudProviderSpec,
        secret: Mapping[str, str] | None,
        on_outcome: OutcomeHook | None,
    ) -> Cloud:
        connected: Connect = importlib.import_module(module).connect
        return connected(name, spec, secret, on_outcome)

    return connect


@dataclass(frozen=True)
class Backend:
    """One CloudProvider type.

    ``connect`` imports the cloud's SDK on first use (see :func:`lazily`), so that a
    backend is cheap to hold (openstacksdk takes more than a second to import)."""

    type: str
    """``CloudProvider.spec.type``."""
    offers: frozenset[Capability]
    """Every capability its :class:`Cloud` builds; the others raise CapabilityUnsupported."""
    capacity_kinds: frozenset[str]
    """The capacity drivers (kinds) a site of this type may name, e.g. autoScalingGroup."""
    connect: Connect

    def __post_init__(self) -> None:
        if (Capability.CAPACITY in self.offers) != bool(self.capacity_kinds):
            raise ValueError(
                f"backend {self.type}: capacity is offered if and only if it has kinds"
            )


class Clusters(Protocol):
    """The Kubernetes clusters one app's capacity may run in: the operator's own, and
    member clusters whose kubeconfig is in a Secret of the controller namespace (named by
    the site's CloudProvider); and the app's own namespace, where its Deployments are
    unless that CloudProvider grants another."""

    @property
    def local(self) -> kubernetes.client.ApiClient: ...

    @property
    def namespace(self) -> str:
        """The app's namespace."""
        ...

    async def secret(self, name: str) -> Mapping[str, str]:
        """A Secret's data (ProviderUnavailable when it is missing or unreadable)."""
        ...


class SiteCapacity(Protocol):
    """A capacity driver kind that runs in no cloud of its own (Kubernetes Deployments):
    whatever a site's CloudProvider, its capacity is driven here, within what that
    CloudProvider grants (its member clusters and capacity namespaces)."""

    @property
    def kind(self) -> str:
        """The capacity field naming it, e.g. kubernetesDeployments."""
        ...

    async def driver(self, site: Site, cloud: Cloud, clusters: Clusters) -> CapacityDriver: ...
