"""Providers for sites that are Kubernetes clusters: :data:`CAPACITY` drives a site's
``kubernetesDeployments`` whatever its CloudProvider's type.

Built on first use: importing :mod:`controller.providers.kubernetes.client` (which the CLI
does for its API client) must not pull in the capacity driver and the provider models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.providers.kubernetes.capacity import DeploymentsBackend

    CAPACITY: DeploymentsBackend

__all__ = ["CAPACITY"]


def __getattr__(name: str) -> Any:
    if name == "CAPACITY":
        from controller.providers.kubernetes.capacity import DeploymentsBackend

        globals()["CAPACITY"] = backend = DeploymentsBackend()
        return backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
