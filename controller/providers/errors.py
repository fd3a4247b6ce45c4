"""Errors every cloud backend raises alike, so that nothing above ``providers`` needs to
know which cloud it talks to.

Each carries what the operator reports: :class:`ProviderUnavailable` (and its
:class:`CapabilityUnsupported`) a CamelCase ``reason`` that becomes an Event's reason or a
condition's, and a message free of secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.providers.backend import Capability


class ProviderUnavailable(RuntimeError):
    """The CloudProvider cannot be used; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CapabilityUnsupported(ProviderUnavailable):
    """What was asked of a provider is a capability its type does not have (change notices
    from OpenStack, an Auto Scaling group at an OpenStack site, ...). Its reason is the
    capability's (``EventsUnsupported``, ``ObjectsUnsupported``, ...)."""

    def __init__(self, capability: Capability, message: str) -> None:
        super().__init__(capability.unsupported_reason, message)
        self.capability = capability


class CredentialsError(ValueError):
    """A credentials Secret that cannot be used (keys missing, no such cloud in its
    clouds.yaml); the message names keys, never values."""


class DnsOwnedByOther(RuntimeError):
    """The DNS name is held by another owner (its owner record names another app, or it
    holds record sets Lifeboat did not write): Lifeboat never touches it."""

    def __init__(self, name: str, owner: str) -> None:
        super().__init__(f"DNS name {name} is held by {owner}; Lifeboat leaves it alone")
        self.owner = owner


class DnsFenced(RuntimeError):
    """The DNS change was refused: the name's owner record holds a newer epoch than the
    change's (another writer failed over meanwhile), or changed between reading it and
    writing (the DNS service refused the conditional change)."""

    def __init__(self, name: str, stored: int | None, mine: int) -> None:
        held = f"epoch {stored}" if stored is not None else "a changed owner record"
        super().__init__(f"DNS name {name} holds {held}; a change of epoch {mine} is refused")
        self.stored = stored
        self.mine = mine


class DnsZoneNotFound(LookupError):
    """The DNS zone an app's traffic names cannot be found (or is ambiguous: Route 53 has
    a public and a private zone of that name)."""
