"""DNSEndpoint objects as a :class:`~controller.providers.protocols.TrafficManager`.

One DNSEndpoint per DNS name, named after it (``lifeboat-<name>-<hash>``), holding two
endpoints: the name with the active site's values (DNS through external-dns has no
weights: as with Designate, the name holds the active site's values alone and
``Failover`` routing is served the same way), and its owner record (TXT
``_lifeboat.<name>``, see :class:`~controller.providers.protocols.DnsOwner`), which
external-dns publishes like any record, so every Lifeboat reading DNS sees the owner.
The owner is also the object's annotation ``lifeboat.dev/dns-owner``.

Fencing is the Kubernetes API server's optimistic concurrency: a change replaces the
object *with the resourceVersion it read* (or creates it, when there was none), so a
writer whose read is stale — another writer changed the object since — is refused with
409 Conflict and nothing changes; Lifeboat then reads it again and raises
:class:`DnsFenced` or :class:`DnsOwnedByOther`, unless the object already holds this
very change (an earlier attempt whose answer was lost). Another DNSEndpoint in the
namespace publishing the same name is someone else's, and the name is left alone.

"In sync" means external-dns has taken the object in: its ``status.observedGeneration``
reached the object's generation (external-dns sets it when its CRD source reads the
object, before its provider applies the records; the DNS provider's own propagation is
external-dns's business and shows in its metrics).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from controller.api.models import ExternalDnsSettings
from controller.api.names import DNS_NAME_ANNOTATION, DNS_OWNER_ANNOTATION
from controller.providers.calls import CloudCalls
from controller.providers.errors import DnsFenced, DnsOwnedByOther
from controller.providers.protocols import (
    DnsOwner,
    DnsReading,
    DnsRecord,
    TrafficChange,
    TrafficPlan,
    owner_name,
)

T = TypeVar("T")

GROUP, VERSION, PLURAL = "externaldns.k8s.io", "v1alpha1", "dnsendpoints"
MANAGED_BY = {"app.kubernetes.io/managed-by": "lifeboat"}


def _bare(name: str) -> str:
    return name.rstrip(".").lower()


def _as_dict(answer: object) -> dict[str, Any]:
    """A custom object as the client returns it (typed ``object`` by its stubs)."""
    if not isinstance(answer, dict):
        raise TypeError(f"the API server answered {type(answer).__name__}, not an object")
    return answer


def object_name(dns_name: str) -> str:
    """The DNSEndpoint of ``dns_name``: a DNS-1123 name, unique per DNS name."""
    bare = _bare(dns_name)
    slug = re.sub(r"[^a-z0-9]+", "-", bare).strip("-")[:40].strip("-")
    digest = hashlib.sha256(bare.encode()).hexdigest()[:10]
    return f"lifeboat-{slug}-{digest}"


@dataclass
class DnsEndpoints:
    """The DNSEndpoints of one CloudProvider, through its gate ``region``."""

    api: kubernetes.client.ApiClient
    calls: CloudCalls
    settings: ExternalDnsSettings
    region: str
    sync_poll_seconds: float = 0.5

    @property
    def _objects(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    async def _call(self, operation: str, fn: Callable[[], T], *, mutating: bool) -> T:
        return await self.calls.call(self.region, "dnsendpoints", operation, fn, mutating=mutating)

    async def _get(self, dns_name: str) -> dict[str, Any] | None:
        name = object_name(dns_name)

        def get() -> dict[str, Any] | None:
            try:
                found = _as_dict(
                    self._objects.get_namespaced_custom_object(
                        GROUP, VERSION, self.settings.namespace, PLURAL, name
                    )
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return found

        return await self._call("GetDNSEndpoint", get, mutating=False)

    async def _others_publishing(self, dns_name: str) -> list[str]:
        """Other DNSEndpoints of the namespace that publish ``dns_name`` or its owner
        record."""
        mine = object_name(dns_name)
        names = {_bare(dns_name), _bare(owner_name(dns_name))}
        listed: dict[str, Any] = await self._call(
            "ListDNSEndpoints",
            lambda: _as_dict(
                self._objects.list_namespaced_custom_object(
                    GROUP, VERSION, self.settings.namespace, PLURAL
                )
            ),
            mutating=False,
        )
        return [
            f"DNSEndpoint {self.settings.namespace}/{item['metadata']['name']}"
            for item in listed.get("items", ())
            if item["metadata"]["name"] != mine
            and any(
                _bare(str(e.get("dnsName", ""))) in names
                for e in (item.get("spec") or {}).get("endpoints") or ()
            )
        ]

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _owner_of(found: Mapping[str, Any] | None) -> tuple[DnsOwner | None, str | None]:
        """(the owner the object names, what makes it someone else's: None if nothing)."""
        if found is None:
            return None, None
        annotations = (found.get("metadata") or {}).get("annotations") or {}
        text = annotations.get(DNS_OWNER_ANNOTATION)
        if text is None:
            return None, f"DNSEndpoint {found['metadata']['name']} Lifeboat did not write"
        owner = DnsOwner.parse(text)
        if owner is None:
            return None, f"an owner annotation Lifeboat did not write ({text[:80]!r})"
        return owner, None

    @staticmethod
    def _published(found: Mapping[str, Any] | None, record: DnsRecord) -> tuple[set[str], int]:
        """(the values the object publishes for the record, their TTL)."""
        for endpoint in ((found or {}).get("spec") or {}).get("endpoints") or ():
            if _bare(str(endpoint.get("dnsName", ""))) == _bare(record.name) and (
                endpoint.get("recordType") == record.type
            ):
                values = {_bare(str(t)) for t in endpoint.get("targets") or ()}
                return values, int(endpoint.get("recordTTL") or 0)
        return set(), 0

    async def read(self, plan: TrafficPlan) -> DnsReading:
        found = await self._get(plan.record.name)
        owner, foreign = self._owner_of(found)
        if foreign is not None:
            return DnsReading(None, foreign)
        others = await self._others_publishing(plan.record.name)
        if others:
            return DnsReading(None, f"{others[0]} publishes it")
        return DnsReading(owner)

    async def weights(self, plan: TrafficPlan) -> dict[str, int]:
        published, _ = self._published(await self._get(plan.record.name), plan.record)
        return {
            r.site: 100 if r.values and {_bare(v) for v in r.values} <= published else 0
            for r in plan.records
        }

    # ------------------------------------------------------------------ changing

    def _body(self, plan: TrafficPlan, values: list[str], found: Mapping[str, Any] | None) -> Any:
        record = plan.record
        endpoints: list[dict[str, Any]] = []
        if values:
            endpoints.append(
                {
                    "dnsName": _bare(record.name),
                    "recordType": record.type,
                    "recordTTL": record.ttl,
                    "targets": values,
                }
            )
        annotations = {DNS_NAME_ANNOTATION: _bare(record.name)}
        if plan.owner is not None:
            annotations[DNS_OWNER_ANNOTATION] = plan.owner.text()
            endpoints.append(
                {
                    "dnsName": _bare(owner_name(record.name)),
                    "recordType": "TXT",
                    "recordTTL": record.ttl,
                    "targets": [plan.owner.text()],
                }
            )
        metadata: dict[str, Any] = {
            "name": object_name(record.name),
            "namespace": self.settings.namespace,
            "labels": {**self.settings.labels, **MANAGED_BY},
            "annotations": annotations,
        }
        if found is not None:
            metadata["resourceVersion"] = found["metadata"]["resourceVersion"]
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DNSEndpoint",
            "metadata": metadata,
            "spec": {"endpoints": endpoints},
        }

    def _judge(self, plan: TrafficPlan, found: Mapping[str, Any] | None) -> DnsOwner | None:
        name, mine = plan.record.name, plan.owner
        held, foreign = self._owner_of(found)
        if foreign is not None:
            raise DnsOwnedByOther(name, foreign)
        if mine is None:
            return held
        if held is not None and held.owner != mine.owner:
            raise DnsOwnedByOther(name, held.owner)
        if held is not None and held.epoch > mine.epoch:
            raise DnsFenced(name, held.epoch, mine.epoch)
        return held

    def _holds(self, plan: TrafficPlan, values: list[str], found: Mapping[str, Any] | None) -> bool:
        held, foreign = self._owner_of(found)
        published, ttl = self._published(found, plan.record)
        return (
            foreign is None
            and held == plan.owner
            and published == set(values)
            and (not values or ttl == plan.record.ttl)
        )

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        record = plan.record
        values = sorted({_bare(v) for r in plan.records if r.weight > 0 for v in r.values})
        found = await self._get(record.name)
        self._judge(plan, found)
        others = await self._others_publishing(record.name)
        if others:
            raise DnsOwnedByOther(record.name, others[0])
        submitted = time.time()
        if plan.owner is not None and plan.retire is None and self._holds(plan, values, found):
            synced = await self._wait_observed(record.name)
            return TrafficChange(self._change_id(found), synced is not None, submitted, synced)
        body = self._body(plan, values, found)
        written: dict[str, Any]
        try:
            if found is None:
                written = await self._call(
                    "CreateDNSEndpoint",
                    lambda: _as_dict(
                        self._objects.create_namespaced_custom_object(
                            GROUP, VERSION, self.settings.namespace, PLURAL, body
                        )
                    ),
                    mutating=True,
                )
            else:
                written = await self._call(
                    "ReplaceDNSEndpoint",
                    lambda: _as_dict(
                        self._objects.replace_namespaced_custom_object(
                            GROUP,
                            VERSION,
                            self.settings.namespace,
                            PLURAL,
                            body["metadata"]["name"],
                            body,
                        )
                    ),
                    mutating=True,
                )
        except ApiException as error:
            if error.status != 409:
                raise
            written = await self._refused(plan, values)
        if plan.retire is not None:
            await self._retire(plan.retire, plan.owner)
        synced = await self._wait_observed(record.name)
        return TrafficChange(self._change_id(written), synced is not None, submitted, synced)

    async def _refused(self, plan: TrafficPlan, values: list[str]) -> dict[str, Any]:
        """409: the object was created or changed since it was read. Done if it holds
        this very change (an earlier attempt's answer was lost); else fenced, or the name
        is someone else's now."""
        found = await self._get(plan.record.name)
        if found is not None and self._holds(plan, values, found):
            return found
        held, foreign = self._owner_of(found)
        if foreign is not None:
            raise DnsOwnedByOther(plan.record.name, foreign)
        if held is not None and plan.owner is not None and held.owner != plan.owner.owner:
            raise DnsOwnedByOther(plan.record.name, held.owner)
        mine = plan.owner.epoch if plan.owner is not None else 0
        raise DnsFenced(plan.record.name, held.epoch if held is not None else None, mine)

    async def _retire(self, record: DnsRecord, owner: DnsOwner | None) -> None:
        """Delete a renamed record's DNSEndpoint when it is this owner's (preconditioned on
        the version read, so a newer writer's object is never deleted)."""
        found = await self._get(record.name)
        held, foreign = self._owner_of(found)
        if found is None or foreign is not None:
            return
        if owner is not None and (held is None or held.owner != owner.owner):
            return
        metadata = found["metadata"]
        options = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(
                uid=metadata["uid"], resource_version=metadata["resourceVersion"]
            )
        )

        def delete() -> None:
            try:
                self._objects.delete_namespaced_custom_object(
                    GROUP, VERSION, self.settings.namespace, PLURAL, metadata["name"], body=options
                )
            except ApiException as error:
                if error.status not in (404, 409):
                    raise

        await self._call("DeleteDNSEndpoint", delete, mutating=True)

    async def _wait_observed(self, dns_name: str) -> float | None:
        """When external-dns was seen to have taken the object in (None: not within the
        sync timeout)."""
        deadline = time.monotonic() + self.settings.sync_timeout_seconds
        while True:
            found = await self._get(dns_name)
            if found is None:
                return None
            generation = int(found["metadata"].get("generation") or 0)
            observed = int((found.get("status") or {}).get("observedGeneration") or 0)
            if observed >= generation > 0:
                return time.time()
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.sync_poll_seconds)

    @staticmethod
    def _change_id(found: Mapping[str, Any] | None) -> str:
        if found is None:
            return "none"
        metadata = found["metadata"]
        return f"{metadata['name']}@{metadata.get('generation', 0)}"
