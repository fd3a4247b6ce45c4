"""FailoverDrills at the edge: each tick reads the drill and its app, runs the pure drill core
(:func:`controller.core.drill.step`) and carries out what it says: the app's request
annotation (the same path as ``lifeboat failover``: the app's worker checks and fences it),
the app's drill annotation (one drill at a time), the drill's status, Events and metrics.

Writes are guarded by resourceVersion preconditions. The drill's status is written first,
at the version read: a tick computed from a stale drill is dropped before it touches the
app, and the next tick computes it again. Then the app's annotations are patched at the
version read (a drill never takes an app another drill claimed in between). A request the
status records but the app never got (a crash in between) is asked again, under the same
ID, so asking twice asks once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from controller import metrics
from controller.api.annotations import REQUEST
from controller.api.conditions import parse_rfc3339
from controller.api.models import CloudProviderSpec, FailoverDrillSpec, FailoverDrillStatus
from controller.api.names import (
    ABORT_ANNOTATION,
    CLOUD_PROVIDER,
    DRILL_ANNOTATION,
    FAILOVER_DRILL,
    GROUP,
    RESILIENT_APP,
    VERSION,
)
from controller.core import drill as core
from controller.core import inputs
from controller.operator.kube import EventType, ObjectRef

log = logging.getLogger(__name__)

TICK_SECONDS = 2.0
"""How often every FailoverDrill is looked at."""
CLAIM_ATTEMPTS = 5


class Clock(Protocol):
    def __call__(self) -> float: ...


class DrillApi(Protocol):
    """The Kubernetes calls a drill makes (a Protocol, for tests)."""

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object (None: not found)."""
        ...

    def get_cluster(self, plural: str, name: str) -> dict[str, Any] | None:
        """The cluster-scoped object (None: not found)."""
        ...

    def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Merge-patch the object (ApiException 409 when a resourceVersion in ``body`` is
        stale)."""
        ...

    def patch_status(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Merge-patch the status subresource (409 likewise)."""
        ...


class EventSink(Protocol):
    async def event(
        self, ref: ObjectRef, type_: EventType, reason: str, message: str, action: str = ""
    ) -> None: ...


@dataclass
class CustomObjects:
    """:class:`DrillApi` over the official client (synchronous: run it in a thread)."""

    custom: Any
    """kubernetes.client.CustomObjectsApi"""
    timeout: float = 10.0

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    def get_cluster(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.custom.get_cluster_custom_object(
                GROUP, VERSION, plural, name, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, body, _request_timeout=self.timeout
        )

    def patch_status(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, body, _request_timeout=self.timeout
        )


def _conflict(error: ApiException) -> bool:
    return bool(error.status == 409)


@dataclass
class DrillTicker:
    """One tick of a FailoverDrill, blocking (the handler runs it in a thread)."""

    api: DrillApi
    clock: Clock = time.time

    def tick(self, namespace: str, name: str) -> list[tuple[EventType, str, str]]:
        """Advance the drill; the Events to post ``(type, reason, message)``."""
        body = self.api.get(FAILOVER_DRILL.plural, namespace, name)
        if body is None:
            return []
        meta = body.get("metadata") or {}
        try:
            spec = FailoverDrillSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            log.warning("FailoverDrill %s/%s: invalid spec: %s", namespace, name, error)
            return []
        try:
            status = FailoverDrillStatus.model_validate(body.get("status") or {})
        except ValidationError as error:
            log.warning(
                "FailoverDrill %s/%s: unreadable status, starting over: %s", namespace, name, error
            )
            status = FailoverDrillStatus()
        now = self.clock()
        created = parse_rfc3339(meta.get("creationTimestamp") or "1970-01-01T00:00:00Z")
        app = None
        if core.needs_app(spec, status, now, created=created):
            app = self._view(
                namespace, name, self.api.get(RESILIENT_APP.plural, namespace, spec.app)
            )
        if app is not None and spec.kind == "Observe":
            app = replace(app, providers=self._providers(app))
        abort = (meta.get("annotations") or {}).get(ABORT_ANNOTATION)
        new, actions = core.step(
            name,
            spec,
            status,
            app,
            now,
            created=created,
            generation=meta.get("generation"),
            abort=abort,
        )
        # The status first, at the version read: a tick computed from a stale drill is
        # dropped before it touches the app. Then the app (a request whose status was
        # written but that never reached the app is asked again by the next tick).
        if not self._write(namespace, name, meta, new, status):
            return []
        events: list[tuple[EventType, str, str]] = []
        for action in actions:
            if isinstance(action, core.Move):
                # False: another drill holds the app; the next tick sees it and ends the run.
                self._claim(namespace, name, spec.app, action)
            elif isinstance(action, core.Release):
                self._release(namespace, name, spec.app)
            elif isinstance(action, core.Notice):
                events.append(
                    ("Warning" if action.warning else "Normal", action.reason, action.message)
                )
            elif isinstance(action, core.Finished):
                metrics.drill_finished(
                    namespace, spec.app, name, spec.kind, action.result, new.rto_seconds
                )
        success = parse_rfc3339(new.last_successful_time) if new.last_successful_time else created
        metrics.drill_seen(
            namespace, spec.app, name, spec.kind, running=new.phase == "Running", success=success
        )
        return events

    def _providers(self, app: core.AppView) -> dict[str, CloudProviderSpec]:
        """The app's CloudProviders' specs (an Observe run judges API planes with their
        thresholds); one not found or unreadable is left out (default thresholds)."""
        found: dict[str, CloudProviderSpec] = {}
        if app.spec is None:
            return found
        for provider, _ in inputs.regions(app.spec):
            if provider in found:
                continue
            body = self.api.get_cluster(CLOUD_PROVIDER.plural, provider)
            if body is None:
                continue
            try:
                found[provider] = CloudProviderSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                log.warning("CloudProvider %s: unreadable spec, default thresholds", provider)
        return found

    def _view(
        self, namespace: str, name: str, app_body: dict[str, Any] | None
    ) -> core.AppView | None:
        if app_body is None:
            return None
        annotations = (app_body.get("metadata") or {}).get("annotations") or {}
        holder = annotations.get(DRILL_ANNOTATION)
        running = True
        if holder and holder != name:
            other = self.api.get(FAILOVER_DRILL.plural, namespace, holder)
            running = bool(other and (other.get("status") or {}).get("phase") == "Running")
        try:
            return core.app_view(app_body, holder_running=running)
        except ValidationError as error:
            log.warning("FailoverDrill %s/%s: its app is unreadable: %s", namespace, name, error)
            return None

    def _claim(self, namespace: str, name: str, app: str, move: core.Move) -> bool:
        """Annotate the app with the request and this drill as its holder, at the version
        read (False: another drill holds it)."""
        for _ in range(CLAIM_ATTEMPTS):
            body = self.api.get(RESILIENT_APP.plural, namespace, app)
            if body is None:
                return False
            meta = body.get("metadata") or {}
            holder = (meta.get("annotations") or {}).get(DRILL_ANNOTATION)
            if holder and holder != name:
                other = self.api.get(FAILOVER_DRILL.plural, namespace, holder)
                if other and (other.get("status") or {}).get("phase") == "Running":
                    return False
            patch = {
                "metadata": {
                    "resourceVersion": meta.get("resourceVersion"),
                    "annotations": {
                        REQUEST: move.request.serialise(),
                        DRILL_ANNOTATION: name,
                    },
                }
            }
            try:
                self.api.patch(RESILIENT_APP.plural, namespace, app, patch)
                return True
            except ApiException as error:
                if not _conflict(error):
                    raise
        return False

    def _release(self, namespace: str, name: str, app: str) -> None:
        for _ in range(CLAIM_ATTEMPTS):
            body = self.api.get(RESILIENT_APP.plural, namespace, app)
            if body is None:
                return
            meta = body.get("metadata") or {}
            if (meta.get("annotations") or {}).get(DRILL_ANNOTATION) != name:
                return
            patch = {
                "metadata": {
                    "resourceVersion": meta.get("resourceVersion"),
                    "annotations": {DRILL_ANNOTATION: None},
                }
            }
            try:
                self.api.patch(RESILIENT_APP.plural, namespace, app, patch)
                return
            except ApiException as error:
                if not _conflict(error):
                    raise

    def _write(
        self,
        namespace: str,
        name: str,
        meta: dict[str, Any],
        new: FailoverDrillStatus,
        old: FailoverDrillStatus,
    ) -> bool:
        if new == old:
            return True
        body = {
            "metadata": {"resourceVersion": meta.get("resourceVersion")},
            "status": new.to_merge_patch(),
        }
        try:
            self.api.patch_status(FAILOVER_DRILL.plural, namespace, name, body)
        except ApiException as error:
            if _conflict(error):
                return False  # the drill changed since it was read: the next tick redoes it
            raise
        return True

    def forget(self, namespace: str, name: str, app: str | None) -> None:
        """A drill was deleted: its metrics go, and its hold on the app (if any)."""
        metrics.forget_drill(namespace, name)
        if app:
            self._release(namespace, name, app)
