"""DNS servers taking dynamic updates (RFC 2136) signed with TSIG (RFC 8945): BIND 9,
Knot, PowerDNS, Windows DNS, Infoblox (dnspython).

:data:`BACKEND` is the ``rfc2136`` CloudProvider type. It offers DNS traffic only: the
sites it serves run on capacity of other CloudProviders (or none Lifeboat scales), and its
"API plane" is the DNS server itself, probed with a signed SOA query.
"""

from controller.providers.backend import Backend, Capability, lazily

BACKEND = Backend(
    type="rfc2136",
    offers=frozenset({Capability.TRAFFIC}),
    capacity_kinds=frozenset(),
    connect=lazily("controller.providers.rfc2136.cloud"),
)

__all__ = ["BACKEND"]
