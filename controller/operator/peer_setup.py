"""The peer clusters this peer talks to: read ``LifeboatPeers/lifeboat`` in its own cluster
and build one API client per other peer from the kubeconfig Secret each names.

Shared by the peers' runtime: the quorum elector holds a Lease in every peer cluster, the
peer link reads every other peer's published view, and the peer status writer writes each
app's status to every peer cluster. Each of them gets the same :class:`PeerClusters`.

Set-up fails loudly (:class:`PeerSetupError`) when this peer is not listed, when another
peer names no kubeconfig Secret, or when a Secret is missing or unusable: a peer that
silently ran with fewer clusters than configured would compute a wrong majority. The
messages name the Secret and key, never their content.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from controller.api.models import LifeboatPeersSpec
from controller.api.models.peers import PEERS_OBJECT
from controller.api.names import GROUP, LIFEBOAT_PEERS, VERSION
from controller.providers.kubernetes.capacity import KubeconfigError, client_from_kubeconfig


class PeerSetupError(RuntimeError):
    """The peers cannot be set up as configured (the message never quotes a kubeconfig)."""


@dataclass(frozen=True)
class PeerCluster:
    """One peer's cluster as this peer reaches it."""

    name: str
    api: kubernetes.client.ApiClient
    own: bool = False
    """This peer's own cluster (reached in-cluster or through ``--kubeconfig``)."""


@dataclass(frozen=True)
class PeerClusters:
    """Every peer cluster, this peer's own first, and the configuration they share."""

    me: str
    spec: LifeboatPeersSpec
    clusters: tuple[PeerCluster, ...]

    @property
    def own(self) -> PeerCluster:
        return self.clusters[0]

    @property
    def others(self) -> tuple[PeerCluster, ...]:
        return self.clusters[1:]

    @property
    def majority(self) -> int:
        """How many peers make a majority of all the configured peers."""
        return len(self.spec.peers) // 2 + 1

    def close(self) -> None:
        """Close the clients built for the other peers (the own one belongs to the caller)."""
        for cluster in self.others:
            cluster.api.close()  # type: ignore[no-untyped-call]


ClientFactory = Callable[[str], kubernetes.client.ApiClient]
"""Builds a client from a kubeconfig document's text (tests may replace it)."""


def read_peers(api: kubernetes.client.ApiClient, timeout: float = 10.0) -> LifeboatPeersSpec:
    """The spec of ``LifeboatPeers/lifeboat`` in the cluster ``api`` reaches."""
    custom = kubernetes.client.CustomObjectsApi(api)
    try:
        found: Any = custom.get_cluster_custom_object(
            GROUP, VERSION, LIFEBOAT_PEERS.plural, PEERS_OBJECT, _request_timeout=timeout
        )
    except ApiException as error:
        if error.status == 404:
            raise PeerSetupError(
                f"no {LIFEBOAT_PEERS.kind}/{PEERS_OBJECT} in this cluster: create it to run "
                "as a peer (see manifests/examples/peers/)"
            ) from None
        raise PeerSetupError(
            f"cannot read {LIFEBOAT_PEERS.kind}/{PEERS_OBJECT}: HTTP {error.status} {error.reason}"
        ) from None
    try:
        return LifeboatPeersSpec.model_validate(dict(found).get("spec") or {})
    except ValidationError as error:
        raise PeerSetupError(
            f"{LIFEBOAT_PEERS.kind}/{PEERS_OBJECT} is invalid: {error.error_count()} error(s), "
            f"first: {error.errors()[0]['msg']}"
        ) from None


def build(
    own: kubernetes.client.ApiClient,
    me: str,
    namespace: str,
    *,
    client_factory: ClientFactory = client_from_kubeconfig,
    timeout: float = 10.0,
) -> PeerClusters:
    """Read the peers in the own cluster and build a client for every other one from its
    kubeconfig Secret in ``namespace`` (blocking: run it in a thread from async code)."""
    spec = read_peers(own, timeout)
    names = [peer.name for peer in spec.peers]
    if me not in names:
        raise PeerSetupError(
            f"this peer ({me}) is not listed in {LIFEBOAT_PEERS.kind}/{PEERS_OBJECT} "
            f"(peers: {', '.join(names)})"
        )
    core = kubernetes.client.CoreV1Api(own)
    clusters = [PeerCluster(me, own, own=True)]
    try:
        for peer in spec.peers:
            if peer.name == me:
                continue
            ref = peer.kubeconfig_secret_ref
            if ref is None:
                raise PeerSetupError(f"peer {peer.name} names no kubeconfigSecretRef")
            where = f"peer {peer.name}: Secret {namespace}/{ref.name}"
            try:
                secret = core.read_namespaced_secret(ref.name, namespace, _request_timeout=timeout)
            except ApiException as error:
                detail = "not found" if error.status == 404 else f"HTTP {error.status}"
                raise PeerSetupError(f"{where}: {detail}") from None
            data = secret.data or {}
            if ref.key not in data:
                raise PeerSetupError(f"{where} has no key {ref.key}")
            try:
                text = base64.b64decode(data[ref.key]).decode()
                clusters.append(PeerCluster(peer.name, client_factory(text)))
            except (KubeconfigError, ValueError) as error:
                raise PeerSetupError(f"{where}, key {ref.key}: {error}") from None
    except BaseException:
        for cluster in clusters[1:]:
            cluster.api.close()  # type: ignore[no-untyped-call]
        raise
    return PeerClusters(me, spec, tuple(clusters))


async def build_async(
    own: kubernetes.client.ApiClient,
    me: str,
    namespace: str,
    *,
    client_factory: ClientFactory = client_from_kubeconfig,
    request_seconds: float = 10.0,
) -> PeerClusters:
    """:func:`build` in a worker thread (``request_seconds``: each call's deadline)."""
    return await asyncio.to_thread(
        build, own, me, namespace, client_factory=client_factory, timeout=request_seconds
    )
