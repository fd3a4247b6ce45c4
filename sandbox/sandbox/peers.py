"""Three Lifeboat peers, each in its own cluster in its own sandbox region: the test world of
multi-region Lifeboat (``lifeboat-sandbox up --peers``, ``demo --peers``, the peer tests).

A :class:`PeerWorld` starts:

* the shared cloud of :class:`~sandbox.world.Sandbox` (moto behind a fault proxy per region
  and one for Route 53, the sample app's zonal endpoints, its Auto Scaling groups and hosted
  zone), whose sites are ``use1`` (us-east-1, primary) and ``usw2`` (us-west-2, standby);
* one kube-apiserver + etcd per peer (:class:`~sandbox.kube.KubeControlPlane`): ``use1`` in
  us-east-1, ``usw2`` in us-west-2 and ``euc1`` in eu-central-1, a region with no site of
  the app (the tie-breaker), each with Lifeboat's CRDs and RBAC installed;
* in every peer cluster the same examples (``manifests/examples/sandbox``: the app's
  namespace, the credentials Secret, the CloudProvider and the ResilientApp), applied as a
  GitOps tool would, the same ``LifeboatPeers/lifeboat`` (``manifests/examples/peers``), and
  one kubeconfig Secret per *other* peer, holding a token of that peer's own ``lifeboat``
  ServiceAccount;
* one TCP relay per ordered pair of peers (:class:`~sandbox.tcp_relay.TcpRelay`): a peer
  reaches another's cluster only through its own relay, so that the path between two peers
  can be cut (:meth:`PeerWorld.partition`) while each still reaches its own cluster;
* one ``lifeboat run --peer-name <peer>`` per peer cluster, a process of its own (so that it
  can be SIGKILLed), as that cluster's ServiceAccount, probing from the peer's own loopback
  address (``--probe-source-address 127.20.0.<n>``): a zone can be cut off from one peer
  (:meth:`PeerWorld.cut`) while the others still reach it.

:meth:`PeerWorld.kill_region` plays a region's loss: its zonal endpoints stop, its cloud API
proxy goes down, and its peer cluster (kube-apiserver, etcd) and that peer's operator are
SIGKILLed — all together, as in the outages multi-region Lifeboat exists for.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import yaml

from sandbox.assets import Assets
from sandbox.kube import KubeControlPlane
from sandbox.procs import ChildProcess, Service, SourceCut, free_loopback_port
from sandbox.tcp_relay import TcpRelay
from sandbox.world import (
    CONTROLLER_NAMESPACE,
    Sandbox,
    install_lifeboat,
    manifests_dir,
)

GROUP, VERSION = "lifeboat.dev", "v1alpha1"
PEERS_OBJECT = "lifeboatpeers", "lifeboat"
PEER_EXAMPLES = "peers"
SOURCE_NETWORK = "127.20.0"
"""Peers probe from 127.20.0.<n> (zones listen on 127.10.0.0/16, services on 127.0.0.1)."""
TOKEN_SECONDS = 24 * 3600
LEASE_SECONDS = 5.0
T = TypeVar("T")
_LEADERSHIP = re.compile(r"quorum|lead|Lease|failing over", re.IGNORECASE)


@dataclass(frozen=True)
class PeerLayout:
    """One peer: its name (``--peer-name``), the region its cluster runs in, and the site
    of the app in that region (``None``: a region with no site, a tie-breaker)."""

    name: str
    region: str
    site: str | None


DEFAULT_PEERS = (
    PeerLayout("use1", "us-east-1", "use1"),
    PeerLayout("usw2", "us-west-2", "usw2"),
    PeerLayout("euc1", "eu-central-1", None),
)


@dataclass
class PeerOperator:
    """One peer's ``lifeboat run``, a process of its own with metrics and health on loopback."""

    argv: list[str]
    log_path: Path
    metrics_port: int
    health_port: int
    process: ChildProcess | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.exit_code() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        if self.running:
            return
        self.process = ChildProcess(
            self.argv,
            log_path=self.log_path,
            name=f"lifeboat {self.argv[self.argv.index('--peer-name') + 1]}",
            # No ambient kubeconfig: the operator reaches its cluster through --kubeconfig
            # and the other peers through the Secrets only.
            env={**os.environ, "KUBECONFIG": os.devnull},
            stop_grace=30.0,
        ).start()

    def stop(self) -> None:
        """SIGTERM (as the kubelet stops a pod), SIGKILL after 30 s."""
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL: the process ends where it stands."""
        if self.process is not None:
            self.process.kill()
            self.process.stop()

    def exit_code(self) -> int | None:
        return self.process.exit_code() if self.process is not None else None

    def metrics(self) -> str:
        """The operator's /metrics text ('' when it does not answer)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.metrics_url, timeout=2) as response:
                return str(response.read().decode("utf-8"))
        except (OSError, urllib.error.URLError):
            return ""

    def leadership(self, lines: int = 15) -> str:
        """The last lines of the log about leadership (quorum, terms, rebuilds)."""
        if not self.log_path.exists():
            return "(no log yet)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        kept = [line for line in text.splitlines() if _LEADERSHIP.search(line)]
        return "\n".join(kept[-lines:])

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log yet)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class PeerCluster:
    """One peer: its cluster, its probe source address and its operator."""

    layout: PeerLayout
    kube: KubeControlPlane
    source_address: str
    operator_kubeconfig: Path
    """Its own cluster, as its ``lifeboat`` ServiceAccount (what its operator uses)."""
    operator: PeerOperator
    relays: dict[str, TcpRelay] = field(default_factory=dict)
    """Fronts of this cluster's kube-apiserver, one per other peer (by that peer's name)."""
    dead: bool = False
    """Its region was killed (:meth:`PeerWorld.kill_region`)."""

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def region(self) -> str:
        return self.layout.region

    def custom(self) -> kubernetes.client.CustomObjectsApi:
        """An admin client of this cluster (close its ``api_client`` after use)."""
        return kubernetes.client.CustomObjectsApi(self.kube.api_client())

    def app(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ResilientApp as this cluster holds it (``None``: absent or unreachable)."""
        api = self.custom()
        try:
            result = api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "resilientapps", name, _request_timeout=5
            )
        except Exception:  # absent, or a dead or frozen cluster: no answer
            return None
        finally:
            api.api_client.close()
        return result if isinstance(result, dict) else None

    def events(self, namespace: str) -> list[Any]:
        """The Events of ``namespace`` in this cluster ([] when it does not answer)."""
        api: Any = kubernetes.client.CoreV1Api(self.kube.api_client())
        try:
            return list(api.list_namespaced_event(namespace, _request_timeout=5).items)
        except Exception:  # absent, or a dead or frozen cluster: no answer
            return []
        finally:
            api.api_client.close()

    def apps_summary(self) -> str:
        """One line per ResilientApp this cluster holds: what its status says it does and
        why (for failure messages; '(no answer)' for a dead or frozen cluster)."""
        api = self.custom()
        try:
            found = api.list_cluster_custom_object(
                GROUP, VERSION, "resilientapps", _request_timeout=5
            )
        except Exception:  # a dead or frozen cluster: no answer
            return "(no answer)"
        finally:
            api.api_client.close()
        lines = []
        for item in found.get("items", []) if isinstance(found, dict) else []:
            meta, status = item.get("metadata", {}), item.get("status") or {}
            conditions = "; ".join(
                f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}"
                for c in status.get("conditions") or []
                if c.get("status") != "True" or c.get("type") != "Ready"
            )
            zones = " ".join(
                f"{z.get('site')}/{z.get('zone')}={z.get('state')}"
                for z in status.get("zones") or []
            )
            lines.append(
                f"{meta.get('namespace')}/{meta.get('name')}: zones {zones}; phase "
                f"{status.get('phase')}, "
                f"active {status.get('activeSite')}, epoch {status.get('epoch')}, traffic "
                f"{status.get('traffic')}, actions {status.get('actions')}, last decision "
                f"{status.get('lastDecision')}; {conditions}"
            )
        return "\n".join(lines) or "(no apps)"

    def peers_status(self) -> dict[str, Any]:
        """The status this cluster's ``LifeboatPeers/lifeboat`` holds (what its peer
        published), or {}."""
        api = self.custom()
        try:
            result = api.get_cluster_custom_object(
                GROUP, VERSION, *PEERS_OBJECT, _request_timeout=5
            )
        except Exception:  # absent, or a dead or frozen cluster: no answer
            return {}
        finally:
            api.api_client.close()
        status = result.get("status") if isinstance(result, dict) else None
        return status if isinstance(status, dict) else {}


@dataclass
class PeerWorld(Service):
    """Start with :meth:`start` (or ``with``); everything stops on :meth:`stop`."""

    assets: Assets
    layout: tuple[PeerLayout, ...] = DEFAULT_PEERS
    operators: bool = True
    """Start every peer's ``lifeboat run`` (off: the world without Lifeboat running)."""
    apply_apps: bool = True
    """Apply the example ResilientApp to every peer cluster (off: tests create their own)."""
    lease_seconds: float = LEASE_SECONDS
    heartbeat_seconds: float | None = None
    """``spec.heartbeatSeconds`` of LifeboatPeers (``None``: the example's)."""
    keep: bool = False
    lifeboat: Path = field(default_factory=lambda: Path(sys.executable).with_name("lifeboat"))
    extra_args: tuple[str, ...] = ()
    """More ``lifeboat run`` arguments, for every peer."""
    sandbox: Sandbox = field(init=False)
    peers: dict[str, PeerCluster] = field(init=False, default_factory=dict)
    _components: list[Service] = field(init=False, default_factory=list)
    _log_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        super().__init__("peer world")
        names = [p.name for p in self.layout]
        if len(set(names)) != len(names) or len(names) < 1:
            raise ValueError(f"peer names must be unique: {names}")

    # ------------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        clusters = [
            self._start_one(KubeControlPlane(self.assets, keep=self.keep)) for _ in self.layout
        ]
        # The shared cloud and zones, installed into the first peer's cluster (it starts no
        # control plane of its own and leaves the given one to this world).
        self.sandbox = self._start_one(
            Sandbox(self.assets, keep=self.keep, control_plane=clusters[0])
        )
        sites = {s.site for s in self.sandbox.layout}
        for index, (layout, kube) in enumerate(zip(self.layout, clusters, strict=True), start=1):
            if layout.site is not None and layout.site not in sites:
                raise ValueError(f"peer {layout.name}: the sandbox has no site {layout.site}")
            # Again in the first cluster too: the sandbox's token lasts an hour, a world a day.
            kubeconfig = install_lifeboat(kube, token_seconds=TOKEN_SECONDS)
            source = f"{SOURCE_NETWORK}.{index}"
            self.peers[layout.name] = PeerCluster(
                layout=layout,
                kube=kube,
                source_address=source,
                operator_kubeconfig=kubeconfig,
                operator=self._operator(layout.name, kubeconfig, source, kube.workdir),
            )
        self._start_relays()
        for peer in self.peers.values():
            self._configure(peer)
        if self.operators:
            for peer in self.peers.values():
                peer.operator.start()

    def _start_one(self, component: Service) -> Any:
        self._components.append(component)
        return component.start()

    def _stop(self) -> None:
        for peer in self.peers.values():
            peer.operator.stop()
        for peer in self.peers.values():
            for relay in peer.relays.values():
                relay.stop()
        for component in reversed(self._components):
            component.stop()
        self._components.clear()

    # ------------------------------------------------------------------ set-up

    def _operator(self, name: str, kubeconfig: Path, source: str, workdir: Path) -> PeerOperator:
        metrics_port, health_port = free_loopback_port(), free_loopback_port()
        argv = [
            str(self.lifeboat),
            "run",
            f"--kubeconfig={kubeconfig}",
            f"--controller-namespace={CONTROLLER_NAMESPACE}",
            "--peer-name",
            name,
            f"--probe-source-address={source}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics_port}",
            f"--health-endpoint=http://127.0.0.1:{health_port}/healthz",
            f"--lease-seconds={self.lease_seconds:g}",
            *self.extra_args,
        ]
        return PeerOperator(argv, workdir / "lifeboat.log", metrics_port, health_port)

    def _start_relays(self) -> None:
        """A relay in front of each peer's kube-apiserver for each other peer."""
        for target in self.peers.values():
            port = int(target.kube.server_url.rsplit(":", 1)[1])
            for reader in self.peers.values():
                if reader is not target:
                    relay = TcpRelay("127.0.0.1", port)
                    relay.name = f"relay {reader.name}->{target.name}"
                    target.relays[reader.name] = relay.start()

    def _configure(self, peer: PeerCluster) -> None:
        """The examples, LifeboatPeers and the other peers' kubeconfig Secrets."""
        documents = [
            d
            for d in self.sandbox.example_documents()
            if self.apply_apps or d["kind"] != "ResilientApp"
        ]
        documents.append(self.peers_document())
        for other in self.peers.values():
            if other is not peer:
                documents.append(self._peer_secret(reader=peer, target=other))
        rendered = "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in documents)
        peer.kube.kubectl("apply", "--server-side", "--filename=-", input=rendered)

    def peers_document(self) -> dict[str, Any]:
        """``LifeboatPeers/lifeboat`` from manifests/examples/peers, naming this world's peers."""
        path = manifests_dir() / "examples" / PEER_EXAMPLES / "lifeboatpeers.yaml"
        document = copy.deepcopy(yaml.safe_load(path.read_text(encoding="utf-8")))
        document["spec"]["peers"] = [
            {
                "name": p.name,
                "kubeconfigSecretRef": {"name": secret_name(p.name), "key": "kubeconfig"},
            }
            for p in self.layout
        ]
        if self.heartbeat_seconds is not None:
            document["spec"]["heartbeatSeconds"] = self.heartbeat_seconds
        assert isinstance(document, dict)
        return document

    def _peer_secret(self, *, reader: PeerCluster, target: PeerCluster) -> dict[str, Any]:
        """In ``reader``'s cluster: a kubeconfig reaching ``target``'s cluster through the
        relay between them, as ``target``'s ServiceAccount."""
        config = yaml.safe_load(target.operator_kubeconfig.read_text(encoding="utf-8"))
        relay = target.relays[reader.name]
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret_name(target.name), "namespace": CONTROLLER_NAMESPACE},
            "type": "Opaque",
            "stringData": {"kubeconfig": yaml.safe_dump(config, sort_keys=False)},
        }

    # ------------------------------------------------------------------ accessors

    def peer(self, name: str) -> PeerCluster:
        try:
            return self.peers[name]
        except KeyError:
            raise KeyError(f"no peer {name}; the world has {', '.join(self.peers)}") from None

    def living(self) -> list[PeerCluster]:
        """The peers whose region was not killed."""
        return [p for p in self.peers.values() if not p.dead]

    def site_of(self, peer: str) -> str | None:
        return self.peer(peer).layout.site

    def apply_everywhere(self, documents: list[dict[str, Any]]) -> None:
        """Apply ``documents`` to every living peer cluster (as GitOps does)."""
        rendered = "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in documents)
        for peer in self.living():
            peer.kube.kubectl("apply", "--server-side", "--filename=-", input=rendered)

    def apps(self, namespace: str, name: str) -> dict[str, dict[str, Any]]:
        """The app as every living peer cluster holds it, by peer."""
        found = {p.name: p.app(namespace, name) for p in self.living()}
        return {peer: app for peer, app in found.items() if app is not None}

    # ------------------------------------------------------------------ faults

    def cut(
        self, peer: str, site: str, zone: str | None = None, how: SourceCut = SourceCut.RESET
    ) -> None:
        """Cut ``peer`` off from one zone of ``site`` (``zone=None``: every zone of it): its
        probes are reset (or, ``blackhole``, time out); the other peers still reach it."""
        source = self.peer(peer).source_address
        for endpoint in self._zones(site, zone):
            endpoint.cut(source, how)

    def heal(self, peer: str | None = None) -> None:
        """Undo :meth:`cut` for ``peer`` (``None``: every peer), on every zone."""
        source = self.peer(peer).source_address if peer is not None else None
        for endpoint in self.sandbox.zones.endpoints:
            endpoint.heal(source)

    def _zones(self, site: str, zone: str | None) -> list[Any]:
        if zone is not None:
            return [self.sandbox.zones.endpoint(site, zone)]
        endpoints = self.sandbox.zones.site_endpoints(site)
        if not endpoints:
            raise KeyError(f"no site {site} in the sandbox")
        return endpoints

    def partition(self, a: str, b: str, *, silent: bool = False) -> None:
        """Cut the path between peers ``a`` and ``b`` both ways (each still reaches its own
        cluster): refused connections, or with ``silent`` held ones (timeouts)."""
        for reader, target in ((a, b), (b, a)):
            relay = self.peer(target).relays[self.peer(reader).name]
            relay.blackhole() if silent else relay.refuse()

    def reconnect(self, a: str | None = None, b: str | None = None) -> None:
        """Undo :meth:`partition` between ``a`` and ``b`` (no names: every pair)."""
        for target in self.living():
            for reader, relay in target.relays.items():
                pair = {reader, target.name}
                if a is None or pair == {a, b}:
                    relay.serve()

    def kill_region(self, peer: str, *, cloud_api: bool = True) -> None:
        """The loss of ``peer``'s region: its site's zonal endpoints stop (connection
        refused), its cloud API proxy goes down (``cloud_api``), and its operator and
        cluster (kube-apiserver, etcd) are SIGKILLed. The other peers' relays to it refuse."""
        victim = self.peer(peer)
        if victim.layout.site is not None:
            for endpoint in self.sandbox.zones.site_endpoints(victim.layout.site):
                endpoint.down()
        if cloud_api and victim.region in self.sandbox.proxies:
            self.sandbox.proxies[victim.region].down()
        victim.operator.kill()
        victim.kube.kill()
        for relay in victim.relays.values():
            relay.refuse()
        victim.dead = True

    # ------------------------------------------------------------------ waiting

    def wait_for(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll ``check`` until truthy; on timeout the error carries every operator's log."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.25)
        logs = "".join(
            f"\n--- {p.name} operator (exit {p.operator.exit_code()}): leadership ---\n"
            f"{p.operator.leadership()}\n--- {p.name}: last lines ---\n{p.operator.tail(20)}"
            for p in self.peers.values()
        )
        apps = "".join(f"\n--- {p.name}: apps ---\n{p.apps_summary()}" for p in self.living())
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r}); "
            f"leading now: {', '.join(self.leaders()) or 'none'}{apps}{logs}"
        )

    def leaders(self) -> list[str]:
        """The peers whose operator says it acts now (``lifeboat_leader 1`` on /metrics)."""
        return [
            p.name
            for p in self.peers.values()
            if p.operator.running and _gauge(p.operator.metrics(), "lifeboat_leader") == 1.0
        ]

    def operators_alive(self) -> Iterator[PeerCluster]:
        for peer in self.peers.values():
            if peer.operator.running:
                yield peer


def _gauge(text: str, name: str) -> float | None:
    """The value of an unlabelled sample ``name`` in Prometheus text (None: absent)."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def secret_name(peer: str) -> str:
    """The kubeconfig Secret naming ``peer``'s cluster, in every other peer's cluster."""
    return f"lifeboat-peer-{peer}"
