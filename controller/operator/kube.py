"""The operator's own calls to the Kubernetes API: status, Events, Secrets, ConfigMaps.

kopf watches resources; these are the writes and reads kopf does not do for us. The
``kubernetes`` client is synchronous, so each call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from controller import metrics
from controller.api.conditions import rfc3339
from controller.api.names import API_VERSION, EVENT_SOURCE, GROUP, REPORTING_COMPONENT, VERSION
from controller.operator.core_calls import CoreCalls

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
# Events about cluster-scoped objects (CloudProvider) go here, as kubectl looks for them.
CLUSTER_EVENTS_NAMESPACE = "default"
# A repeat of the same event within this window bumps its count instead of adding one.
EVENT_AGGREGATION_SECONDS = 600.0
EVENT_BURST = 25
"""Events one object may post of one reason at once; then one per ``EVENT_REFILL_SECONDS``
(client-go's spam filter keeps the same figures per object)."""
EVENT_REFILL_SECONDS = 300.0
EVENT_KEYS_KEPT = 10_000
"""At most this many event series and spam buckets are remembered (least recently used go
first): a fleet's Events never grow the operator's memory without bound."""

REQUEST_SECONDS = 10.0
"""The deadline of each call of :class:`KubeClient` (connect and read; the leader election
keeps shorter ones of its own)."""

_T = TypeVar("_T")


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
    api_version: str = API_VERSION


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
class _Bucket:
    tokens: float
    at: float
    suppressed: int = 0


class EventSpamFilter:
    """A token bucket per (object, reason): ``burst`` Events at once, then one every
    ``refill_seconds``. A zone that flaps, or an operator too loaded to probe on time, must
    not turn into a storm of Event writes that loads the API server and the operator more
    (a 100-app fleet spent a third of its CPU bumping ZoneStateChanged Events). What is
    suppressed is counted (``lifeboat_events_suppressed_total``) and said once per episode
    in the log; status and metrics carry the current state regardless."""

    def __init__(
        self,
        burst: int = EVENT_BURST,
        refill_seconds: float = EVENT_REFILL_SECONDS,
        kept: int = EVENT_KEYS_KEPT,
    ) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.kept = kept
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    def allow(self, key: tuple[str, str], now: float) -> tuple[bool, int]:
        """Whether an Event of ``key`` may be posted at ``now``, and how many of that key
        were suppressed before it (0 when it is suppressed itself)."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            refilled = max(0.0, now - bucket.at) / self.refill_seconds
            bucket.tokens, bucket.at = min(float(self.burst), bucket.tokens + refilled), now
        self._buckets[key] = bucket
        while len(self._buckets) > self.kept:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            suppressed, bucket.suppressed = bucket.suppressed, 0
            return True, suppressed
        bucket.suppressed += 1
        return False, 0

    def suppressed(self, key: tuple[str, str]) -> int:
        """Events of ``key`` suppressed since the last one posted."""
        bucket = self._buckets.get(key)
        return bucket.suppressed if bucket is not None else 0


@dataclass
class KubeClient:
    """:class:`Kube` over the official client."""

    api: kubernetes.client.ApiClient
    instance: str = field(default_factory=socket.gethostname)
    request_seconds: float = REQUEST_SECONDS
    """The deadline of every call (the client's ``_request_timeout``): a blocking call to an
    API server that stopped answering gives its thread back when it ends."""
    executor: Executor | None = None
    """The threads the blocking calls run on (None: the event loop's default pool). Each
    peer cluster gets a pool of its own, so that calls to a lost cluster, each waiting out
    its deadline, never queue the calls to the others."""

    def __post_init__(self) -> None:
        self._core = CoreCalls(self.api)  # not CoreV1Api: 20 MiB of memory (core_calls.py)
        self._custom = kubernetes.client.CustomObjectsApi(self.api)
        self._series: OrderedDict[tuple[str, str, str, str], _EventSeries] = OrderedDict()
        """Event series by (uid, reason, type, message), least recently posted first."""
        self.spam = EventSpamFilter()
        self._versions: dict[str, tuple[str, int]] = {}
        """Per object UID: the resourceVersion of our last fenced status write and the
        epoch it wrote (so that the next write needs no GET while nothing changed)."""

    async def _call(self, call: Callable[..., _T], *args: Any) -> _T:
        """``call(*args)`` on the client's threads, with the request deadline."""
        bound = functools.partial(call, *args, _request_timeout=self.request_seconds)
        return await asyncio.get_running_loop().run_in_executor(self.executor, bound)

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str]:
        """A Secret's decoded data and its resourceVersion."""
        try:
            secret = await self._call(self._core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"Secret {namespace}/{name} not found") from None
            raise
        data = {
            key: base64.b64decode(value).decode("utf-8", errors="replace")
            for key, value in (secret.get("data") or {}).items()
        }
        return data, str((secret.get("metadata") or {}).get("resourceVersion") or "")

    async def read_config_map(self, namespace: str, name: str) -> dict[str, str]:
        """A ConfigMap's data (:class:`NotFound` when there is none)."""
        try:
            found = await self._call(self._core.read_namespaced_config_map, name, namespace)
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"ConfigMap {namespace}/{name} not found") from None
            raise
        return dict(found.get("data") or {})

    async def patch_status(
        self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None = None
    ) -> None:
        """Merge-patch the status subresource (lists are replaced whole).

        With ``epoch`` the write is fenced: it carries a resourceVersion at which the stored
        epoch is known not to be newer than ``epoch`` — that of this client's own last
        write when it wrote no newer epoch, else one read just before — so that a write in
        between makes it fail (409); the object is then read, a stored epoch newer than
        ``epoch`` refuses the write (:class:`StaleEpoch`), and it starts over. In steady
        state a write is one request: no read.
        """
        known = self._versions.get(ref.uid)
        for _ in range(5):
            body: dict[str, Any] = {"status": status}
            if epoch is not None:
                if known is not None and known[1] <= epoch:
                    version = known[0]
                else:
                    current = await self._get(ref)
                    stored = ((current.get("status") or {}).get("epoch")) or 0
                    if isinstance(stored, int) and stored > epoch:
                        raise StaleEpoch(ref, stored, epoch)
                    version = current["metadata"]["resourceVersion"]
                body["metadata"] = {"resourceVersion": version}
            try:
                written = await self._patch_status(ref, body)
            except ApiException as error:
                if error.status == 409 and epoch is not None:
                    known = None  # written in between: read again
                    continue
                raise
            now_at = (written.get("metadata") or {}).get("resourceVersion")
            if epoch is not None and now_at:
                self._versions[ref.uid] = (str(now_at), epoch)
            return
        raise RuntimeError(f"{ref.kind} {ref.name}: status kept changing under the write")

    def forget(self, uid: str) -> None:
        """Drop what is kept for an object that is gone."""
        self._versions.pop(uid, None)

    async def read(self, ref: ObjectRef) -> dict[str, Any]:
        """The object as stored (:class:`NotFound` when it is not there)."""
        return await self._get(ref)

    async def _get(self, ref: ObjectRef) -> dict[str, Any]:
        try:
            if ref.namespace:
                found = await self._call(
                    self._custom.get_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                )
            else:
                found = await self._call(
                    self._custom.get_cluster_custom_object, GROUP, VERSION, ref.plural, ref.name
                )
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"{ref.kind} {ref.name} is gone") from None
            raise
        if not isinstance(found, dict):
            raise TypeError(f"{ref.kind} {ref.name}: unexpected answer {type(found).__name__}")
        return found

    async def _patch_status(self, ref: ObjectRef, body: dict[str, Any]) -> dict[str, Any]:
        """The object as written."""
        try:
            if ref.namespace:
                written = await self._call(
                    self._custom.patch_namespaced_custom_object_status,
                    GROUP,
                    VERSION,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                    body,
                )
            else:
                written = await self._call(
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
        return written if isinstance(written, dict) else {}

    async def drop_finalizers(self, ref: ObjectRef, names: Collection[str]) -> None:
        """Take ``names`` off a namespaced custom object's finalizers: a JSON patch fenced by
        the resourceVersion it was read at, so that a finalizer added meanwhile is kept (read
        again on a conflict, three tries). Best effort: a failure is logged, not raised."""
        for _ in range(3):
            try:
                found = await self._call(
                    self._custom.get_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                )
                meta = (found if isinstance(found, dict) else {}).get("metadata") or {}
                held = list(meta.get("finalizers") or [])
                kept = [f for f in held if f not in names]
                if kept == held:
                    return
                patch = [
                    {
                        "op": "test",
                        "path": "/metadata/resourceVersion",
                        "value": meta.get("resourceVersion"),
                    },
                    {"op": "replace", "path": "/metadata/finalizers", "value": kept},
                ]
                await self._call(
                    functools.partial(
                        self._custom.patch_namespaced_custom_object,
                        _content_type="application/json-patch+json",
                    ),
                    GROUP,
                    VERSION,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                    patch,
                )
                log.info(
                    "%s %s/%s: finalizers of another shard layout taken off: %s",
                    ref.kind,
                    ref.namespace,
                    ref.name,
                    ", ".join(sorted(set(held) - set(kept))),
                )
                return
            except ApiException as error:
                if error.status in (409, 422):  # changed meanwhile: read it again
                    continue
                if error.status == 404:
                    return
                log.warning("could not take finalizers off %s: %s", ref.name, error.reason)
                return
            except Exception as error:
                log.warning("could not take finalizers off %s: %s", ref.name, error)
                return

    async def event(
        self, ref: ObjectRef, type_: EventType, reason: str, message: str, action: str = ""
    ) -> None:
        """Post an Event; a repeat within the aggregation window bumps the count instead."""
        namespace = ref.namespace or CLUSTER_EVENTS_NAMESPACE
        message = message[:1024]
        now = time.time()
        allowed, earlier = self.spam.allow((ref.uid, reason), time.monotonic())
        if not allowed:
            metrics.EVENTS_SUPPRESSED.labels(reason=reason).inc()
            if self.spam.suppressed((ref.uid, reason)) == 1:
                log.warning(
                    "events %s on %s/%s suppressed: more than %d lately (one per %gs "
                    "from now on); status and metrics keep the current state",
                    reason,
                    ref.namespace or "",
                    ref.name,
                    self.spam.burst,
                    self.spam.refill_seconds,
                )
            return
        if earlier:
            log.info("events %s on %s: %d were suppressed", reason, ref.name, earlier)
        key = (ref.uid, reason, type_, message)
        self._forget_old_series(now)
        series = self._series.pop(key, None)
        try:
            if series and now - series.last < EVENT_AGGREGATION_SECONDS:
                series.count += 1
                series.last = now
                self._keep_series(key, series)
                await self._call(self._bump_event, series)
                return
            name = f"{ref.name}.{time.time_ns():x}"
            body = self._event_body(ref, name, namespace, type_, reason, message, action, now)
            await self._call(self._core.create_namespaced_event, namespace, body)
            self._keep_series(key, _EventSeries(name, namespace, 1, now, now))
        except Exception as error:
            # Events are best effort: losing one must never stop a failover.
            log.warning("could not post event %s on %s: %s", reason, ref.name, error)

    def _keep_series(self, key: tuple[str, str, str, str], series: _EventSeries) -> None:
        self._series[key] = series  # the most recently posted last
        while len(self._series) > EVENT_KEYS_KEPT:
            self._series.popitem(last=False)

    def _forget_old_series(self, now: float) -> None:
        """Series not posted to within the aggregation window go: the oldest are first,
        so this looks at no more than it removes, plus one."""
        while self._series:
            key, oldest = next(iter(self._series.items()))
            if now - oldest.last < EVENT_AGGREGATION_SECONDS:
                return
            del self._series[key]

    def _bump_event(self, series: _EventSeries, _request_timeout: float) -> None:
        self._core.patch_namespaced_event(
            series.name,
            series.namespace,
            {"count": series.count, "lastTimestamp": rfc3339(series.last)},
            _request_timeout=_request_timeout,
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
            "source": {"component": EVENT_SOURCE},
            "reportingComponent": REPORTING_COMPONENT,
            "reportingInstance": self.instance[:128],
        }
