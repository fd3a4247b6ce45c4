"""AWS (and EC2/Route 53/S3-compatible clouds) behind the provider Protocols, with boto3.

:data:`BACKEND` is the ``aws`` CloudProvider type; boto3 is imported when the first
provider of the type is connected (:mod:`controller.providers.aws.cloud`).
"""

from controller.providers.backend import Backend, Capability, lazily

BACKEND = Backend(
    type="aws",
    offers=frozenset(Capability),
    capacity_kinds=frozenset({"autoScalingGroup"}),
    connect=lazily("controller.providers.aws.cloud"),
)

__all__ = ["BACKEND"]
