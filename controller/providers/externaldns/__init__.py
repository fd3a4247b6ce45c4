"""external-dns as Lifeboat's DNS: DNSEndpoint objects (``externaldns.k8s.io/v1alpha1``)
that external-dns (``--source=crd``) publishes through whichever of its DNS providers it
runs with (Cloudflare, Azure DNS, Google Cloud DNS, ... every one it has).

:data:`BACKEND` is the ``external-dns`` CloudProvider type; it offers DNS traffic only.
"""

from controller.providers.backend import Backend, Capability, lazily

BACKEND = Backend(
    type="external-dns",
    offers=frozenset({Capability.TRAFFIC}),
    capacity_kinds=frozenset(),
    connect=lazily("controller.providers.externaldns.cloud"),
)

__all__ = ["BACKEND"]
