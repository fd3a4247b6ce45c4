"""The peer world itself: three peer clusters, each reached by the others through its own
relay and a kubeconfig Secret, peers probing from distinct source addresses, a zone cut off
from one peer only, two peers partitioned, and a region killed whole.

These tests share one world (``peer_world``, no operator running); the region kill comes
last in the module because nothing brings a region back.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.api.models import ResilientAppSpec
from controller.core.health import ProbeOutcome, ZoneKey
from controller.operator.probes import HttpProber
from sandbox.kube import KubectlError
from sandbox.peers import DEFAULT_PEERS, PeerCluster, PeerWorld, secret_name
from sandbox.procs import SourceCut
from sandbox.world import CONTROLLER_NAMESPACE, GLOBAL

pytestmark = pytest.mark.integration

NAMES = [p.name for p in DEFAULT_PEERS]


def _get(peer: PeerCluster, *args: str) -> Any:
    return yaml.safe_load(peer.kube.kubectl("get", *args, "-o", "yaml").stdout)


def _peer_kubeconfig(reader: PeerCluster, target: str, path: Path) -> Path:
    """The kubeconfig ``reader``'s cluster holds for reaching ``target``'s, as a file."""
    data = _get(reader, "secret", "-n", CONTROLLER_NAMESPACE, secret_name(target))["data"]
    path.write_bytes(base64.b64decode(data["kubeconfig"]))
    return path


def _probe_from(source: str, spec: ResilientAppSpec) -> dict[ZoneKey, ProbeOutcome]:
    """One round of the product's prober over every zone of ``spec``, from ``source``."""

    async def round_() -> dict[ZoneKey, ProbeOutcome]:
        prober = HttpProber(source_address=source)
        return {r.key: r.outcome for r in await prober.probe_app(spec)}

    return asyncio.run(round_())


def _app_spec(world: PeerWorld) -> ResilientAppSpec:
    document = next(d for d in world.sandbox.example_documents() if d["kind"] == "ResilientApp")
    # A timeout that a machine shared with other test runs keeps: these tests are about
    # who can reach what, not about speed.
    document["spec"]["health"].update(intervalSeconds=10, timeoutSeconds=3)
    return ResilientAppSpec.model_validate(document["spec"])


def test_three_peer_clusters_hold_the_same_specs_and_lifeboat_peers(peer_world: PeerWorld) -> None:
    peers = list(peer_world.peers.values())
    assert [p.name for p in peers] == NAMES
    assert [p.region for p in peers] == ["us-east-1", "us-west-2", "eu-central-1"]
    assert len({p.kube.server_url for p in peers}) == 3
    assert len({p.kube.workdir for p in peers}) == 3  # three etcds, nothing shared

    specs = [_get(p, "resilientapp", "-n", "shop", "web")["spec"] for p in peers]
    providers = [_get(p, "cloudprovider", "aws-sandbox")["spec"] for p in peers]
    assert specs[0] == specs[1] == specs[2]
    assert providers[0] == providers[1] == providers[2]
    for peer in peers:
        lifeboat_peers = _get(peer, "lifeboatpeers", "lifeboat")["spec"]
        assert [p["name"] for p in lifeboat_peers["peers"]] == NAMES
        secrets = {
            s["metadata"]["name"]
            for s in _get(peer, "secrets", "-n", CONTROLLER_NAMESPACE)["items"]
        }
        others = {secret_name(n) for n in NAMES if n != peer.name}
        assert others <= secrets
        assert secret_name(peer.name) not in secrets  # a peer reaches its own in-cluster


def test_each_peer_reaches_the_others_as_their_service_account_through_its_relay(
    peer_world: PeerWorld, tmp_path: Path
) -> None:
    reader, target = peer_world.peer("usw2"), peer_world.peer("use1")
    kubeconfig = _peer_kubeconfig(reader, "use1", tmp_path / "use1.kubeconfig")
    config = yaml.safe_load(kubeconfig.read_text())
    relay = target.relays["usw2"]
    assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{relay.port}"
    assert config["users"][0]["name"] == "system:serviceaccount:lifeboat-system:lifeboat"

    seen = target.kube.kubectl("get", "lifeboatpeers", "lifeboat", kubeconfig=kubeconfig)
    assert "lifeboat" in seen.stdout
    before = relay.connections
    target.kube.kubectl("get", "resilientapps", "-A", kubeconfig=kubeconfig)
    assert relay.connections > before  # through the relay, not straight to the apiserver
    # the operator's RBAC, not an admin's: no Secrets of the other cluster
    assert (
        target.kube.kubectl(
            "auth", "can-i", "list", "secrets", "-A", kubeconfig=kubeconfig, check=False
        ).stdout.strip()
        == "no"
    )


def test_partitioning_two_peers_cuts_their_path_only(peer_world: PeerWorld, tmp_path: Path) -> None:
    use1, usw2, euc1 = (peer_world.peer(n) for n in NAMES)
    usw2_to_use1 = _peer_kubeconfig(usw2, "use1", tmp_path / "usw2-use1")
    use1_to_usw2 = _peer_kubeconfig(use1, "usw2", tmp_path / "use1-usw2")
    euc1_to_use1 = _peer_kubeconfig(euc1, "use1", tmp_path / "euc1-use1")
    peer_world.partition("use1", "usw2")
    try:
        for kubeconfig, cluster in ((usw2_to_use1, use1), (use1_to_usw2, usw2)):
            with pytest.raises(KubectlError, match="refused"):
                cluster.kube.kubectl(
                    "--request-timeout=5s", "get", "lifeboatpeers", kubeconfig=kubeconfig
                )
        # each still reaches its own cluster, and the third peer reaches both
        use1.kube.kubectl("get", "lifeboatpeers")
        usw2.kube.kubectl("get", "lifeboatpeers")
        use1.kube.kubectl("get", "lifeboatpeers", kubeconfig=euc1_to_use1)
    finally:
        peer_world.reconnect("use1", "usw2")
    use1.kube.kubectl("get", "lifeboatpeers", kubeconfig=usw2_to_use1)
    usw2.kube.kubectl("get", "lifeboatpeers", kubeconfig=use1_to_usw2)


def test_peers_probe_from_distinct_source_addresses(peer_world: PeerWorld) -> None:
    sources = [p.source_address for p in peer_world.peers.values()]
    assert sources == ["127.20.0.1", "127.20.0.2", "127.20.0.3"]
    for peer in peer_world.peers.values():
        argv = peer.operator.argv
        assert argv[argv.index("--peer-name") + 1] == peer.name
        assert f"--probe-source-address={peer.source_address}" in argv
        assert f"--kubeconfig={peer.operator_kubeconfig}" in argv
    spec = _app_spec(peer_world)
    for source in sources:
        assert set(_probe_from(source, spec).values()) == {ProbeOutcome.OK}


def test_a_zone_cut_off_from_one_peer_still_serves_the_others(peer_world: PeerWorld) -> None:
    spec = _app_spec(peer_world)
    cut_zone = ZoneKey("use1", "us-east-1a")
    euc1 = peer_world.peer("euc1").source_address
    try:
        peer_world.cut("euc1", "use1", "us-east-1a")
        from_euc1 = _probe_from(euc1, spec)
        assert from_euc1[cut_zone] is ProbeOutcome.FAIL
        assert {o for k, o in from_euc1.items() if k != cut_zone} == {ProbeOutcome.OK}
        for other in ("use1", "usw2"):
            outcomes = _probe_from(peer_world.peer(other).source_address, spec)
            assert set(outcomes.values()) == {ProbeOutcome.OK}

        peer_world.cut("euc1", "use1", how=SourceCut.BLACKHOLE)  # the whole site, silently
        from_euc1 = _probe_from(euc1, spec)
        use1_zones = {k: o for k, o in from_euc1.items() if k.site == "use1"}
        assert set(use1_zones.values()) == {ProbeOutcome.TIMEOUT}
        assert {o for k, o in from_euc1.items() if k.site == "usw2"} == {ProbeOutcome.OK}
    finally:
        peer_world.heal("euc1")
    assert set(_probe_from(euc1, spec).values()) == {ProbeOutcome.OK}


def test_killing_a_region_takes_its_zones_api_and_peer_cluster_down_together(
    peer_world: PeerWorld,
) -> None:
    """Last in the module: a killed region does not come back."""
    use1 = peer_world.peer("use1")
    spec = _app_spec(peer_world)
    peer_world.kill_region("use1")
    assert use1.dead and not use1.kube.alive
    assert [p.name for p in peer_world.living()] == ["usw2", "euc1"]
    outcomes = _probe_from(peer_world.peer("usw2").source_address, spec)
    assert {o for k, o in outcomes.items() if k.site == "use1"} == {ProbeOutcome.FAIL}
    assert {o for k, o in outcomes.items() if k.site == "usw2"} == {ProbeOutcome.OK}
    assert peer_world.sandbox.proxies["us-east-1"].is_down
    assert not peer_world.sandbox.proxies["us-west-2"].is_down
    assert not peer_world.sandbox.proxies[GLOBAL].is_down
    assert use1.app("shop", "web") is None
    assert set(peer_world.apps("shop", "web")) == {"usw2", "euc1"}
    with pytest.raises(subprocess.SubprocessError):
        use1.kube.kubectl("--request-timeout=3s", "get", "namespaces", timeout=10)
