"""The one place that maps a ``CloudProvider.spec.type`` to its backend, and a site's
capacity driver (its kind) to what builds it.

Adding a cloud takes a subpackage of :mod:`controller.providers` whose ``BACKEND`` (a
:class:`~controller.providers.backend.Backend`) connects a
:class:`~controller.providers.backend.Cloud` of its own, one line in :data:`BACKENDS`, and
the type's value in ``CloudProviderSpec.type`` (the CRD's enum). Nothing above
``providers`` names a cloud: the operator asks a connected Cloud for a capability, and a
capability the type lacks comes back as a
:class:`~controller.providers.errors.CapabilityUnsupported` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final

from controller.api.events import EventReason
from controller.api.models import CloudProviderSpec, ResilientAppSpec, Site
from controller.providers import aws, externaldns, kubernetes, openstack, rfc2136
from controller.providers.backend import (
    Backend,
    Capability,
    Cloud,
    Clusters,
    SiteCapacity,
    capacity_kind,
)
from controller.providers.calls import OutcomeHook
from controller.providers.errors import CapabilityUnsupported, CredentialsError, ProviderUnavailable
from controller.providers.protocols import CapacityDriver

BACKENDS: Final[Mapping[str, Backend]] = {
    backend.type: backend
    for backend in (
        aws.BACKEND,
        openstack.BACKEND,
        rfc2136.BACKEND,
        externaldns.BACKEND,
    )
}
"""Every CloudProvider type, by ``spec.type``."""

SITE_CAPACITY: Final[Mapping[str, SiteCapacity]] = {
    driver.kind: driver for driver in (kubernetes.CAPACITY,)
}
"""Capacity drivers that run in no cloud of their own, by kind."""


def backend(type_: str) -> Backend:
    """The backend of a CloudProvider type; ProviderUnavailable for a type none serves."""
    found = BACKENDS.get(type_)
    if found is None:
        raise ProviderUnavailable(
            "UnknownProviderType",
            f"no backend for CloudProvider type {type_!r}; known types: {', '.join(BACKENDS)}",
        )
    return found


def connect(
    name: str,
    spec: CloudProviderSpec,
    secret: Mapping[str, str] | None,
    on_outcome: OutcomeHook | None = None,
) -> Cloud:
    """The CloudProvider ``name`` connected through its type's backend (``secret``: its
    credentials Secret's data, None for the environment's)."""
    try:
        return backend(spec.type).connect(name, spec, secret, on_outcome)
    except CredentialsError as error:
        raise ProviderUnavailable(
            EventReason.CREDENTIALS_INCOMPLETE, f"CloudProvider {name}: {error}"
        ) from None


def offering(capability: Capability) -> tuple[str, ...]:
    """The CloudProvider types that offer ``capability``."""
    return tuple(t for t, b in BACKENDS.items() if capability in b.offers)


def running(kind: str) -> tuple[str, ...]:
    """The CloudProvider types whose sites may name capacity of ``kind``."""
    return tuple(t for t, b in BACKENDS.items() if kind in b.capacity_kinds)


async def capacity_driver(site: Site, cloud: Cloud, clusters: Clusters) -> CapacityDriver:
    """The driver of ``site``'s capacity: by its kind, built by a driver that needs no
    cloud (within what ``cloud``, the site's CloudProvider, grants), or else by ``cloud``
    if its type runs that kind."""
    if site.capacity is None:
        raise CapabilityUnsupported(Capability.CAPACITY, f"site {site.name} declares no capacity")
    kind = capacity_kind(site.capacity)
    if kind in SITE_CAPACITY:
        return await SITE_CAPACITY[kind].driver(site, cloud, clusters)
    problem = _capacity_problem(site, cloud.spec.type)
    if problem is not None:
        raise CapabilityUnsupported(Capability.CAPACITY, problem)
    return cloud.capacity(site)


def unsupported(
    spec: ResilientAppSpec, type_of: Callable[[str], str | None]
) -> list[tuple[str, str]]:
    """(reason, message) for every capability ``spec`` asks of a provider whose type lacks
    it; ``type_of`` gives a CloudProvider's type (None when it is unknown or invalid:
    reported elsewhere)."""
    problems: list[tuple[str, str]] = []
    for user, provider, capability, consequence in _needs(spec):
        kind = type_of(provider)
        if kind is None or capability in backend(kind).offers:
            continue
        types = " or ".join(offering(capability)) or "none"
        problems.append(
            (
                capability.unsupported_reason,
                f"{user}: {capability.words} need a CloudProvider of type {types}, "
                f"CloudProvider {provider} is {kind}{consequence}",
            )
        )
    for site in spec.sites:
        kind = type_of(site.provider)
        problem = _capacity_problem(site, kind) if kind is not None else None
        if problem is not None:
            problems.append((Capability.CAPACITY.unsupported_reason, problem))
    return problems


def _needs(spec: ResilientAppSpec) -> Iterator[tuple[str, str, Capability, str]]:
    """(who, provider, capability, what follows when it is missing) for what ``spec``
    asks of its providers; capacity aside (by kind)."""
    yield "traffic", spec.traffic.provider, Capability.TRAFFIC, ""
    replication = spec.replication
    for dataset in replication.objects if replication is not None else ():
        for location in dataset.locations:
            site = spec.site(location.site)
            if site is None:
                continue
            user = f"dataset {dataset.name} at site {site.name}"
            yield user, site.provider, Capability.OBJECT_STORE, ""
            if location.event_queue:
                scan = "; its changes are found by the scan alone"
                yield user, site.provider, Capability.CHANGE_FEED, scan
    for volumes in replication.volumes if replication is not None else ():
        for place in volumes.locations:
            site = spec.site(place.site)
            if site is not None:
                user = f"volume dataset {volumes.name} at site {site.name}"
                yield user, site.provider, Capability.VOLUME_SNAPSHOTS, ""


def _capacity_problem(site: Site, provider_type: str) -> str | None:
    """Why ``site``'s capacity cannot run at a provider of ``provider_type``, or None."""
    if site.capacity is None:
        return None
    kind = capacity_kind(site.capacity)
    if kind in SITE_CAPACITY or kind in backend(provider_type).capacity_kinds:
        return None
    types = " or ".join(running(kind)) or "none"
    return (
        f"site {site.name}: capacity {kind} needs a CloudProvider of type {types}, "
        f"CloudProvider {site.provider} is {provider_type}"
    )
