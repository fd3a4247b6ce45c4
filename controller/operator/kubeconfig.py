"""Connection to the Kubernetes API: one source for kopf and for our own client.

Order: an explicit kubeconfig path, ``$KUBECONFIG`` / ``~/.kube/config``, then the
in-cluster service account. Both kopf (aiohttp) and the ``kubernetes`` client use the
same resolved configuration, so they always talk to the same cluster as the same user.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import kubernetes.client
import kubernetes.config

from controller.providers.kubernetes.client import REQUEST_TIMEOUT, api_client

if TYPE_CHECKING:  # kopf costs a third of a second to import: the CLI never needs it
    import kopf

__all__ = ["REQUEST_TIMEOUT", "KubeConfigError", "api_client", "connection_info", "load"]


class KubeConfigError(RuntimeError):
    """No usable Kubernetes configuration was found."""


def load(
    kubeconfig: str | None = None, context: str | None = None
) -> kubernetes.client.Configuration:
    """A client configuration (never the library-wide default, so several can coexist).

    ``$KUBECONFIG`` may list several files, merged as kubectl merges them.
    """
    configuration = kubernetes.client.Configuration()
    default = Path.home() / ".kube" / "config"
    if kubeconfig or os.environ.get("KUBECONFIG") or default.exists():
        try:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig,  # None: $KUBECONFIG (merged) or ~/.kube/config
                context=context,
                client_configuration=configuration,
            )
        except (kubernetes.config.ConfigException, OSError) as error:
            source = kubeconfig or os.environ.get("KUBECONFIG") or str(default)
            raise KubeConfigError(f"cannot use kubeconfig {source}: {error}") from error
        return configuration
    try:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    except kubernetes.config.ConfigException as error:
        raise KubeConfigError(
            "no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config) "
            "and not running in a cluster"
        ) from error
    return configuration


def connection_info(configuration: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """The same connection, as kopf wants it."""
    import kopf  # only the operator needs kopf (a third of a second to import)

    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None)
    if len(parts) == 1:
        token = parts[0]
    elif len(parts) == 2:
        scheme, token = parts[0], parts[1]
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )
