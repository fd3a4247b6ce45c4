"""The operator's own calls to the Kubernetes API: status, Events, Secrets.

kopf watches resources; these are the writes and reads kopf does not do for us. The
``kubernetes`` client is synchronous, so each call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from controller.api.conditions import rfc3339
from controller.api.models import GROUP, VERSION

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
REPORTING_COMPONENT = "lifeboat.dev/operator"
# Events about cluster-scoped objects (CloudProvider) go here, as kubectl looks for them.
CLUSTER_EVENTS_NAMESPACE = "default"
# A repeat of the same event within this window bumps its count instead of adding one.
EVENT_AGGREGATION_SECONDS = 600.0


class NotFound(LookupError):
    """The object does not exist."""


class StaleEpoch(RuntimeError):
    """A status write refused: the stored status holds a newer epoch than the writer's
    (another instance failed over since): the writer must read the status again."""

    def __init__(self, ref: ObjectRef, stored: int, mine: int) -> None:
        super().__init__(f"{ref.kind} {ref.name}: stored epoch {stored} is newer than {mine}")
        self.stored = stored


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to patch it and to hang Events on it."""

    kind: str
    plural: str
    name: str
    namespace: str | None
    uid: str
    api_version: str = f"{GROUP}/{VERSION}"


class Kube(Protocol):
    """What the operator needs from the Kubernetes API (a Protocol, for tests)."""

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str]: ...

    async def patch_status(
        self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None = None
    ) -> None:
        """Merge-patch the status; with ``epoch``, only if the stored epoch is not newer
        (else :class:`StaleEpoch`), atomically (resourceVersion precondition)."""
        ...

    async def event(
        self, ref: ObjectRef, type_: EventType, reason: str, message: str, action: str = ""
    ) -> None: ...


@dataclass
class _EventSeries:
    name: str
    namespace: str
    count: int
    first: float
    last: float


@dataclass
class KubeClient:
    """:class:`Kube` over the official client."""

    api: kubernetes.client.ApiClient
    instance: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        self._core = kubernetes.client.CoreV1Api(self.api)
        self._custom = kubernetes.client.CustomObjectsApi(self.api)
        self._series: dict[tuple[str, str, str, str], _EventSeries] = {}

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str]:
        """A Secret's decoded data and its resourceVersion."""
        try:
            secret = await asyncio.to_thread(self._core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"Secret {namespace}/{name} not found") from None
            raise
        data = {
            key: base64.b64decode(value).decode("utf-8", errors="replace")
            for key, value in (secret.data or {}).items()
        }
        return data, str(secret.metadata.resource_version if secret.metadata else "")

    async def patch_status(
        self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None = None
    ) -> None:
        """Merge-patch the status subresource (lists are replaced whole).

        With ``epoch`` the write is fenced: the object is read first, a stored epoch newer
        than ``epoch`` refuses the write (:class:`StaleEpoch`), and the patch carries the
        read's resourceVersion so that a write in between makes it fail (409) and start
        over, instead of an older epoch overwriting a newer one.
        """
        for _ in range(5):
            body: dict[str, Any] = {"status": status}
            if epoch is not None:
                current = await self._get(ref)
                stored = ((current.get("status") or {}).get("epoch")) or 0
                if isinstance(stored, int) and stored > epoch:
                    raise StaleEpoch(ref, stored, epoch)
                body["metadata"] = {"resourceVersion": current["metadata"]["resourceVersion"]}
            try:
                await self._patch_status(ref, body)
                return
            except ApiException as error:
                if error.status == 409 and epoch is not None:
                    continue  # written in between: read again
                raise
        raise RuntimeError(f"{ref.kind} {ref.name}: status kept changing under the write")

    async def _get(self, ref: ObjectRef) -> dict[str, Any]:
        try:
            if ref.namespace:
                found = await asyncio.to_thread(
                    self._custom.get_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                )
            else:
                found = await asyncio.to_thread(
                    self._custom.get_cluster_custom_object, GROUP, VERSION, ref.plural, ref.name
                )
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"{ref.kind} {ref.name} is gone") from None
            raise
        if not isinstance(found, dict):
            raise TypeError(f"{ref.kind} {ref.name}: unexpected answer {type(found).__name__}")
        return found

    async def _patch_status(self, ref: ObjectRef, body: dict[str, Any]) -> None:
        try:
            if ref.namespace:
                await asyncio.to_thread(
                    self._custom.patch_namespaced_custom_object_status,
                    GROUP,
                    VERSION,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                    body,
                )
            else:
                await asyncio.to_thread(
                    self._custom.patch_cluster_custom_object_status,
                    GROUP,
                    VERSION,
                    ref.plural,
                    ref.name,
                    body,
                )
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"{ref.kind} {ref.name} is gone") from None
            raise

    async def event(
        self, ref: ObjectRef, type_: EventType, reason: str, message: str, action: str = ""
    ) -> None:
        """Post an Event; a repeat within the aggregation window bumps the count instead."""
        namespace = ref.namespace or CLUSTER_EVENTS_NAMESPACE
        message = message[:1024]
        key = (ref.uid, reason, type_, message)
        now = time.time()
        self._forget_old_series(now)
        series = self._series.get(key)
        try:
            if series and now - series.last < EVENT_AGGREGATION_SECONDS:
                series.count += 1
                series.last = now
                await asyncio.to_thread(self._bump_event, series)
                return
            name = f"{ref.name}.{time.time_ns():x}"
            body = self._event_body(ref, name, namespace, type_, reason, message, action, now)
            await asyncio.to_thread(
                self._core.create_namespaced_event,
                namespace,
                body,  # type: ignore[arg-type]  # the client accepts plain dicts
            )
            self._series[key] = _EventSeries(name, namespace, 1, now, now)
        except Exception as error:
            # Events are best effort: losing one must never stop a failover.
            log.warning("could not post event %s on %s: %s", reason, ref.name, error)

    def _forget_old_series(self, now: float) -> None:
        stale = [k for k, s in self._series.items() if now - s.last >= EVENT_AGGREGATION_SECONDS]
        for key in stale:
            del self._series[key]

    def _bump_event(self, series: _EventSeries) -> None:
        self._core.patch_namespaced_event(
            series.name,
            series.namespace,
            {"count": series.count, "lastTimestamp": rfc3339(series.last)},
        )

    def _event_body(
        self,
        ref: ObjectRef,
        name: str,
        namespace: str,
        type_: EventType,
        reason: str,
        message: str,
        action: str,
        now: float,
    ) -> dict[str, Any]:
        stamp = rfc3339(now)
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace or "",
                "uid": ref.uid,
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "action": action or reason,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": "lifeboat"},
            "reportingComponent": REPORTING_COMPONENT,
            "reportingInstance": self.instance[:128],
        }
