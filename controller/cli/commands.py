"""User commands against a cluster: explain, failover, failback, approve, pin, unpin.

They talk to the Kubernetes API only (never to a cloud): they read a ResilientApp's status
and Events, and they ask the operator for something by annotating the app, then wait for
the operator's answer in the status. The same code serves ``lifeboat ...`` and the kubectl
plugin.

Exit codes: 0 done/accepted, 1 refused or failed, 2 usage error, 3 no answer in time.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from controller.api.models import GROUP, VERSION
from controller.operator.app import APPROVE_ANNOTATION, PIN_ANNOTATION, REQUEST_ANNOTATION
from controller.operator.kubeconfig import KubeConfigError, load

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3
PLURAL = "resilientapps"


class CommandError(RuntimeError):
    """A command could not be carried out; ``code`` is the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Cluster:
    api: kubernetes.client.ApiClient

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None) -> Cluster:
        try:
            return cls(kubernetes.client.ApiClient(load(kubeconfig, context)))
        except KubeConfigError as error:
            raise CommandError(str(error), EXIT_USAGE) from None

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    def app(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            body = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                raise CommandError(f"ResilientApp {namespace}/{name} not found") from None
            raise CommandError(
                f"cannot read ResilientApp {namespace}/{name}: {error.reason}"
            ) from None
        assert isinstance(body, dict)
        return body

    def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        patch = {"metadata": {"annotations": annotations}}
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch
            )
        except ApiException as error:
            raise CommandError(f"cannot annotate {namespace}/{name}: {error.reason}") from None

    def events(self, namespace: str, name: str, limit: int = 15) -> list[Any]:
        listing = kubernetes.client.CoreV1Api(self.api).list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=ResilientApp"
        )
        items = sorted(listing.items, key=lambda e: e.last_timestamp or e.event_time or 0)
        return items[-limit:]


# --------------------------------------------------------------------------- explain


def explain(cluster: Cluster, namespace: str, name: str, out: TextIO = sys.stdout) -> int:
    """Print where the app stands, its last decision and why, and its recent events."""
    app = cluster.app(namespace, name)
    status = app.get("status") or {}
    spec = app.get("spec") or {}
    write = out.write
    write(f"ResilientApp {namespace}/{name}\n")
    write(
        f"  active site: {status.get('activeSite', '-')}   epoch: {status.get('epoch', '-')}   "
        f"phase: {status.get('phase', '-')}   zones healthy: {status.get('healthyZones', '-')}   "
        f"mode: {spec.get('failover', {}).get('mode', '-')}\n"
    )
    if status.get("pinnedSite"):
        write(f"  pinned to: {status['pinnedSite']}\n")
    decision = status.get("lastDecision")
    if decision:
        write(
            f"\nLast decision ({decision['time']}): {decision['rule']}\n  {decision['summary']}\n"
        )
        for fact in decision.get("facts", []):
            write(f"    {fact['name']}: {fact['value']}\n")
    for action in status.get("actions", []):
        extra = f" — {action['reason']}" if action.get("reason") else ""
        write(f"  action {action['state']}: {action['target']}{extra}\n")
    recommendation = status.get("recommendation")
    if recommendation:
        write(
            f"\nRecommendation (approve with: lifeboat approve {name} -n {namespace}):\n"
            f"  {recommendation['summary']}\n  id {recommendation['id']}\n"
        )
    failover = status.get("lastFailover")
    if failover:
        write(
            f"\nLast failover: {failover['fromSite']} -> {failover['toSite']} (epoch "
            f"{failover['epoch']}) at {failover['decidedTime']}\n  why: {failover['reason']}\n"
            f"  detection {failover.get('detectionSeconds', '-')}s, "
            f"RTO {failover.get('rtoSeconds', '-')}s\n"
        )
    request = status.get("lastRequest")
    if request:
        verdict = "accepted" if request["accepted"] else "refused"
        write(f"\nLast request {request['id']} ({request['op']}): {verdict}: {request['reason']}\n")
    events = cluster.events(namespace, name)
    if events:
        write("\nRecent events:\n")
        for event in events:
            when = event.last_timestamp or event.event_time
            write(f"  {when:%H:%M:%S} {event.type:7} {event.reason}: {event.message}\n")
    return EXIT_OK


# --------------------------------------------------------------------------- requests


def request(
    cluster: Cluster,
    namespace: str,
    name: str,
    op: str,
    site: str | None,
    *,
    force: bool,
    wait: float,
    out: TextIO = sys.stdout,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Ask for a failover (to ``site``) or a failback; wait for the operator's answer."""
    cluster.app(namespace, name)  # exists?
    request_id = uuid.uuid4().hex[:12]
    body = {"id": request_id, "op": op, "force": force}
    if site:
        body["site"] = site
    cluster.annotate(namespace, name, {REQUEST_ANNOTATION: json.dumps(body)})
    out.write(f"requested {op}{' to ' + site if site else ''} (request {request_id})\n")
    deadline = clock() + wait
    while clock() < deadline:
        answer = (cluster.app(namespace, name).get("status") or {}).get("lastRequest") or {}
        if answer.get("id") == request_id:
            verdict = "accepted" if answer["accepted"] else "refused"
            out.write(f"{verdict}: {answer['reason']}\n")
            return EXIT_OK if answer["accepted"] else EXIT_REFUSED
        time.sleep(0.5)
    out.write(f"no answer within {wait:.0f}s; is the operator running? (lifeboat explain {name})\n")
    return EXIT_TIMEOUT


def approve(
    cluster: Cluster,
    namespace: str,
    name: str,
    recommendation: str | None,
    out: TextIO = sys.stdout,
) -> int:
    """Approve the app's current recommendation (or the one given)."""
    status = cluster.app(namespace, name).get("status") or {}
    current = (status.get("recommendation") or {}).get("id")
    chosen = recommendation or current
    if not chosen:
        raise CommandError(f"{namespace}/{name} has no recommendation to approve")
    if recommendation and current and recommendation != current:
        out.write(f"note: the current recommendation is {current}\n")
    cluster.annotate(namespace, name, {APPROVE_ANNOTATION: chosen})
    out.write(f"approved {chosen}\n")
    return EXIT_OK


def pin(
    cluster: Cluster, namespace: str, name: str, site: str | None, out: TextIO = sys.stdout
) -> int:
    """Pin the app to a site (default: the active one), or unpin it (site None)."""
    app = cluster.app(namespace, name)
    if site == "":
        cluster.annotate(namespace, name, {PIN_ANNOTATION: None})
        out.write(f"unpinned {namespace}/{name}\n")
        return EXIT_OK
    chosen = site or (app.get("status") or {}).get("activeSite")
    sites = [s["name"] for s in (app.get("spec") or {}).get("sites", [])]
    if chosen not in sites:
        raise CommandError(
            f"no site {chosen!r} in {namespace}/{name} (sites: {', '.join(sites)})", EXIT_USAGE
        )
    cluster.annotate(namespace, name, {PIN_ANNOTATION: chosen})
    out.write(f"pinned {namespace}/{name} to {chosen}: nothing moves it automatically\n")
    return EXIT_OK
