"""OpenStack providers (openstacksdk): Designate, Nova, Swift, Cinder, Keystone.

:data:`BACKEND` is the ``openstack`` CloudProvider type. openstacksdk is slow to import
(more than a second), so it is imported only when the first provider of the type is
connected (:mod:`controller.providers.openstack.cloud`): an operator serving AWS alone
never loads it.
"""

from controller.providers.backend import Backend, Capability, lazily

BACKEND = Backend(
    type="openstack",
    offers=frozenset(Capability) - {Capability.CHANGE_FEED},
    capacity_kinds=frozenset({"openstackServers"}),
    connect=lazily("controller.providers.openstack.cloud"),
)

__all__ = ["BACKEND"]
