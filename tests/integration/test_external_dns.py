"""The ``external-dns`` traffic provider against the real kube-apiserver with
external-dns's own DNSEndpoint CRD (from its Go module, sigs.k8s.io/external-dns), as
a ServiceAccount granted only the Role of manifests/examples/external-dns/.

external-dns itself does not run here: :func:`external_dns_takes_in` does the one thing
its CRD source does to a DNSEndpoint — set ``status.observedGeneration`` to the
object's generation when it reads it (source/crd.go) — and nothing of what its DNS
providers do. Fencing is the API server's own optimistic concurrency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from controller.api.models import CloudProviderSpec
from controller.providers import registry
from controller.providers.errors import DnsFenced, DnsOwnedByOther
from controller.providers.externaldns.cloud import ExternalDnsCloud
from controller.providers.externaldns.endpoints import (
    GROUP,
    PLURAL,
    VERSION,
    DnsEndpoints,
    object_name,
)
from controller.providers.protocols import DnsOwner, DnsReading, DnsRecord, SiteRecord, TrafficPlan
from sandbox.kube import KubeControlPlane
from sandbox.tools import ensure_go_module_files
from sandbox.world import manifests_dir

pytestmark = pytest.mark.integration

EXTERNAL_DNS = ("sigs.k8s.io/external-dns", "v0.19.0")
CRD_FILE = "config/crd/standard/dnsendpoints.externaldns.k8s.io.yaml"
NAMESPACE = "external-dns"
ADDRESSES = {"use1": "192.0.2.1", "usw2": "192.0.2.2", "euc1": "192.0.2.3"}


@pytest.fixture(scope="module")
def cluster(kube: KubeControlPlane, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CRD, the example's Role for a ServiceAccount, and that account's kubeconfig
    (its text)."""
    crds = ensure_go_module_files(*EXTERNAL_DNS, [CRD_FILE])
    kube.install_crds([crds / Path(CRD_FILE).name])
    kube.kubectl("create", "namespace", NAMESPACE, check=False)
    example = yaml.safe_load_all(
        (manifests_dir() / "examples" / "external-dns" / "cloudprovider.yaml").read_text()
    )
    for document in example:
        if document["kind"] == "RoleBinding":
            document["subjects"] = [
                {"kind": "ServiceAccount", "name": "lifeboat-dns", "namespace": NAMESPACE}
            ]
        if document["kind"] in ("Role", "RoleBinding"):
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))
    path = tmp_path_factory.mktemp("external-dns") / "kubeconfig"
    return kube.service_account_kubeconfig(NAMESPACE, "lifeboat-dns", path).read_text()


@pytest.fixture
def traffic(cluster: str) -> Iterator[DnsEndpoints]:
    spec = CloudProviderSpec.model_validate(
        {
            "type": "external-dns",
            "regions": ["management"],
            "credentials": {"secretRef": {"name": "dns-kubeconfig"}},
            "externalDNS": {
                "namespace": NAMESPACE,
                "labels": {"dns.example.com/publish": "true"},
                "syncTimeoutSeconds": 1,
            },
        }
    )
    cloud = registry.connect("edns", spec, {"kubeconfig": cluster})
    assert isinstance(cloud, ExternalDnsCloud)
    yield cloud.traffic("management")
    cloud.close()


def objects(kube: KubeControlPlane) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(kube.api_client())


def external_dns_takes_in(kube: KubeControlPlane) -> int:
    """What external-dns's CRD source does on reading the namespace's DNSEndpoints: set
    status.observedGeneration where it lags. Returns how many it updated."""
    api = objects(kube)
    listed: Any = api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    updated = 0
    for item in listed["items"]:
        generation = item["metadata"]["generation"]
        if (item.get("status") or {}).get("observedGeneration") == generation:
            continue
        item["status"] = {"observedGeneration": generation}
        api.replace_namespaced_custom_object_status(
            GROUP, VERSION, NAMESPACE, PLURAL, item["metadata"]["name"], item
        )
        updated += 1
    return updated


def published(kube: KubeControlPlane, name: str) -> dict[str, list[str]]:
    """What the DNSEndpoint of ``name`` asks external-dns to publish: DNS name to targets."""
    found: Any = objects(kube).get_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, object_name(name)
    )
    return {e["dnsName"]: e["targets"] for e in found["spec"]["endpoints"]}


def plan(
    name: str, *sites: tuple[str, int], owner: str = "shop/web", epoch: int = 1
) -> TrafficPlan:
    record = DnsRecord(None, "example.com", name, "A", 30)
    active = max(sites, key=lambda s: s[1])[0]
    return TrafficPlan(
        record=record,
        records=tuple(SiteRecord(s, (ADDRESSES[s],), w) for s, w in sites),
        owner=DnsOwner(owner, epoch, active, f"fp-{epoch}"),
    )


async def test_a_change_is_a_dnsendpoint_in_sync_once_external_dns_took_it_in(
    kube: KubeControlPlane, traffic: DnsEndpoints
) -> None:
    first = plan("web.example.com", ("use1", 100), ("usw2", 0))
    change = await traffic.apply(first)
    assert not change.in_sync  # nobody took it in yet
    assert published(kube, "web.example.com") == {
        "web.example.com": [ADDRESSES["use1"]],
        "_lifeboat.web.example.com": [first.owner.text()],  # type: ignore[union-attr]
    }
    assert external_dns_takes_in(kube) == 1
    again = await traffic.apply(first)  # the same change: nothing written, now in sync
    assert again.in_sync and again.change_id == change.change_id
    assert await traffic.weights(first) == {"use1": 100, "usw2": 0}

    moved = plan("web.example.com", ("use1", 0), ("usw2", 100), epoch=2)
    await traffic.apply(moved)
    assert published(kube, "web.example.com")["web.example.com"] == [ADDRESSES["usw2"]]
    assert await traffic.read(moved) == DnsReading(moved.owner)
    found: Any = objects(kube).get_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, object_name("web.example.com")
    )
    assert found["metadata"]["labels"]["dns.example.com/publish"] == "true"

    renamed = dataclasses.replace(
        moved, record=dataclasses.replace(moved.record, name="www.example.com"), retire=moved.record
    )
    await traffic.apply(renamed)
    assert published(kube, "www.example.com")["www.example.com"] == [ADDRESSES["usw2"]]
    with pytest.raises(kubernetes.client.ApiException) as gone:
        published(kube, "web.example.com")
    assert gone.value.status == 404


async def test_one_owner_an_older_epoch_refused_and_foreign_endpoints_left_alone(
    kube: KubeControlPlane, traffic: DnsEndpoints
) -> None:
    await traffic.apply(plan("owned.example.com", ("use1", 100), ("usw2", 0), epoch=1))
    await traffic.apply(plan("owned.example.com", ("use1", 0), ("usw2", 100), epoch=2))
    with pytest.raises(DnsFenced) as fenced:
        await traffic.apply(plan("owned.example.com", ("use1", 100), ("usw2", 0), epoch=1))
    assert (fenced.value.stored, fenced.value.mine) == (2, 1)
    with pytest.raises(DnsOwnedByOther):
        await traffic.apply(plan("owned.example.com", ("use1", 100), owner="other/app", epoch=9))
    assert published(kube, "owned.example.com")["owned.example.com"] == [ADDRESSES["usw2"]]

    # A DNSEndpoint someone else wrote for the same name: the name is theirs.
    objects(kube).create_namespaced_custom_object(
        GROUP,
        VERSION,
        NAMESPACE,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DNSEndpoint",
            "metadata": {"name": "hand-made"},
            "spec": {
                "endpoints": [
                    {"dnsName": "theirs.example.com", "recordType": "A", "targets": ["192.0.2.9"]}
                ]
            },
        },
    )
    theirs = plan("theirs.example.com", ("use1", 100))
    reading = await traffic.read(theirs)
    assert reading.owner is None and "hand-made" in (reading.foreign or "")
    with pytest.raises(DnsOwnedByOther):
        await traffic.apply(theirs)


async def test_the_api_server_refuses_a_writer_whose_read_is_stale(
    kube: KubeControlPlane, traffic: DnsEndpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "race.example.com"
    await traffic.apply(plan(name, ("use1", 100), ("usw2", 0), epoch=1))
    stale = await traffic._get(name)
    await traffic.apply(plan(name, ("use1", 0), ("usw2", 100), epoch=2))  # the new leader
    real_get = DnsEndpoints._get
    reads = 0

    async def first_read_is_stale(self: DnsEndpoints, which: str) -> Any:
        nonlocal reads
        reads += 1
        return stale if reads == 1 else await real_get(self, which)

    monkeypatch.setattr(DnsEndpoints, "_get", first_read_is_stale)
    with pytest.raises(DnsFenced) as fenced:  # what it read allows it; the API server does not
        await traffic.apply(plan(name, ("euc1", 100), ("use1", 0), epoch=1))
    assert fenced.value.stored == 2
    assert published(kube, name)[name] == [ADDRESSES["usw2"]]


async def test_the_service_account_reaches_no_other_namespace(
    kube: KubeControlPlane, cluster: str
) -> None:
    spec = CloudProviderSpec.model_validate(
        {
            "type": "external-dns",
            "regions": ["management"],
            "credentials": {"secretRef": {"name": "dns-kubeconfig"}},
            "externalDNS": {"namespace": "default"},
        }
    )
    cloud = registry.connect("edns", spec, {"kubeconfig": cluster})
    try:
        report = await cloud.probe.probe("management")
        assert report.outcome.value == "auth_error" and "403" in report.detail
        assert "lifeboat-dns" in await cloud.identity.whoami()
    finally:
        cloud.close()
