"""User commands against a cluster: status, explain, failover, failback, approve, pin, unpin,
replication unreplicated.

They talk to the Kubernetes API only (never to a cloud): they read ResilientApps' status
and Events, and they ask the operator for something by annotating the app, then wait for
the operator's answer in the status. The same code serves ``lifeboat ...`` and the kubectl
plugin (``kubectl lifeboat ...``).

Exit codes:

* 0: done, or accepted by the operator;
* 1: refused (by the operator's safety checks, or by the API server: forbidden) or failed;
* 2: usage error (bad arguments, a site the app does not have);
* 3: not found (the app, or the ResilientApp CRD) or the cluster cannot be reached
  (no kubeconfig, connection refused, credentials rejected);
* 4: no answer from the operator in time (is it running?), or, with ``--wait``, the
  operation not done in time;
* 5: accepted, but it did not complete (``--wait``): the new site's capacity was not
  Ready within ``capacityTimeoutSeconds``, or another failover overtook it.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from controller.api.annotations import (
    ManualOperations,
    Request,
    RequestOp,
    TailAction,
    UnreplicatedRequest,
)
from controller.api.names import GROUP, RESILIENT_APP, VERSION
from controller.cli.follow import EXIT_FAILED as EXIT_FAILED
from controller.cli.follow import Operation, follow
from controller.operator.kubeconfig import KubeConfigError, api_client, load

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_TIMEOUT = 0, 1, 2, 3, 4
EXIT_UNREACHABLE = EXIT_NOT_FOUND
PLURAL = RESILIENT_APP.plural
_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

T = TypeVar("T")


class CommandError(RuntimeError):
    """A command could not be carried out; ``code`` is the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace kubectl would use: the context's, in a pod its own, else ``default``."""
    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
    except (kubernetes.config.ConfigException, OSError, TypeError):
        if _IN_CLUSTER_NAMESPACE.is_file():
            return _IN_CLUSTER_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


@dataclass
class Cluster:
    api: kubernetes.client.ApiClient
    namespace: str = "default"
    """The default namespace (the kubeconfig context's)."""

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None) -> Cluster:
        try:
            configuration = load(kubeconfig, context)
        except KubeConfigError as error:
            raise CommandError(str(error), EXIT_UNREACHABLE) from None
        # Fail fast when the API server is down instead of retrying for minutes.
        configuration.retries = 0
        return cls(api_client(configuration), default_namespace(kubeconfig, context))

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    def call(self, what: str, function: Callable[[], T], *, missing: str | None = None) -> T:
        """``function()``, its failures turned into CommandErrors with the right exit code."""
        try:
            return function()
        except ApiException as error:
            raise self._api_error(what, error, missing) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise CommandError(
                f"cannot reach the cluster at {self.api.configuration.host}: {_reason(error)}",
                EXIT_UNREACHABLE,
            ) from None

    def _api_error(self, what: str, error: ApiException, missing: str | None) -> CommandError:
        detail = _api_message(error)
        if error.status == 404:
            return CommandError(missing or f"cannot {what}: not found ({detail})", EXIT_NOT_FOUND)
        if error.status == 401:
            return CommandError(
                f"cannot {what}: the cluster rejected the credentials ({detail})",
                EXIT_UNREACHABLE,
            )
        if error.status == 403:
            return CommandError(f"cannot {what}: forbidden: {detail}", EXIT_REFUSED)
        if not error.status:
            return CommandError(
                f"cannot reach the cluster at {self.api.configuration.host}: {detail}",
                EXIT_UNREACHABLE,
            )
        return CommandError(f"cannot {what}: {detail}", EXIT_REFUSED)

    def app(self, namespace: str, name: str) -> dict[str, Any]:
        body = self.call(
            f"read ResilientApp {namespace}/{name}",
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            ),
            missing=f"ResilientApp {namespace}/{name} not found",
        )
        assert isinstance(body, dict)
        return body

    def apps(self, namespace: str | None) -> list[dict[str, Any]]:
        """The ResilientApps of ``namespace`` (None: of every namespace)."""
        missing = (
            f"the ResilientApp API ({PLURAL}.{GROUP}/{VERSION}) is not installed in this "
            "cluster: install Lifeboat's CRDs first"
        )
        if namespace is None:
            listing = self.call(
                "list ResilientApps in all namespaces",
                lambda: self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL),
                missing=missing,
            )
        else:
            listing = self.call(
                f"list ResilientApps in namespace {namespace}",
                lambda: self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL
                ),
                missing=missing,
            )
        items = listing.get("items", []) if isinstance(listing, dict) else []
        return sorted(
            items,
            key=lambda a: (a["metadata"].get("namespace", ""), a["metadata"]["name"]),
        )

    def annotate(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        patch = {"metadata": {"annotations": annotations}}
        self.call(
            f"annotate ResilientApp {namespace}/{name}",
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch
            ),
            missing=f"ResilientApp {namespace}/{name} not found",
        )

    def events(self, namespace: str, name: str, limit: int = 15) -> list[Any]:
        listing = self.call(
            f"list the Events of {namespace}/{name}",
            lambda: kubernetes.client.CoreV1Api(self.api).list_namespaced_event(
                namespace,
                field_selector=f"involvedObject.name={name},involvedObject.kind={RESILIENT_APP.kind}",
            ),
        )
        items = sorted(listing.items, key=lambda e: e.last_timestamp or e.event_time or 0)
        return items[-limit:]


def _api_message(error: ApiException) -> str:
    """The API server's own message (its Status body), else the HTTP reason."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(error.reason or f"HTTP {error.status}")


def _reason(error: BaseException) -> str:
    """The innermost cause of a connection failure, without urllib3's wrapping."""
    reason = getattr(error, "reason", None)
    while isinstance(reason, BaseException) and getattr(reason, "reason", None) is not None:
        reason = getattr(reason, "reason", None)
    text = str(reason or error)
    return text.split(": ", 1)[-1] if text.startswith("<") else text


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class AppSummary:
    """One row of ``status``."""

    namespace: str
    name: str
    active: str | None
    state: str | None
    zones: str | None
    rpo_seconds: float | None
    last_failover: datetime | None
    failover_route: str | None
    epoch: int | None
    mode: str | None
    pinned: str | None
    recommendation: str | None

    @classmethod
    def of(cls, app: dict[str, Any]) -> AppSummary:
        status = app.get("status") or {}
        spec = app.get("spec") or {}
        rpos = [
            float(r["rpoSeconds"])
            for r in status.get("replication") or []
            if r.get("rpoSeconds") is not None
        ]
        failover = status.get("lastFailover") or {}
        when = failover.get("completedTime") or failover.get("decidedTime")
        recommendation = status.get("recommendation") or {}
        return cls(
            namespace=app["metadata"].get("namespace", ""),
            name=app["metadata"]["name"],
            active=status.get("activeSite"),
            state=status.get("phase"),
            zones=status.get("healthyZones"),
            rpo_seconds=max(rpos) if rpos else None,
            last_failover=_parse_time(when) if when else None,
            failover_route=(
                f"{failover['fromSite']}->{failover['toSite']}"
                if failover.get("fromSite") and failover.get("toSite")
                else None
            ),
            epoch=status.get("epoch"),
            mode=(spec.get("failover") or {}).get("mode"),
            pinned=status.get("pinnedSite"),
            recommendation=(
                " ".join(
                    part
                    for part in (recommendation.get("response"), recommendation.get("target"))
                    if part
                )
                or None
            ),
        )

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "activeSite": self.active,
            "state": self.state,
            "zones": self.zones,
            "rpoSeconds": self.rpo_seconds,
            "lastFailover": (
                {
                    "time": self.last_failover.isoformat().replace("+00:00", "Z"),
                    "ageSeconds": round((now - self.last_failover).total_seconds(), 3),
                    "route": self.failover_route,
                }
                if self.last_failover
                else None
            ),
            "epoch": self.epoch,
            "mode": self.mode,
            "pinnedSite": self.pinned,
            "recommendation": self.recommendation,
        }


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def human_duration(seconds: float) -> str:
    """A duration the way kubectl prints ages: 45s, 3m12s, 25m, 5h3m, 30h, 3d4h, 120d, 3y."""
    total = max(int(seconds), 0)
    minutes, hours, days = total // 60, total // 3600, total // 86400
    if total < 120:
        return f"{total}s"
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 730:
        return f"{days}d"
    return f"{days // 365}y"


def format_rpo(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 10 else human_duration(seconds)


def status_table(
    apps: Iterable[AppSummary], now: datetime, *, namespaces: bool, wide: bool
) -> list[list[str]]:
    """Rows of the ``status`` table, header first."""
    header = ["APP", "ACTIVE", "STATE", "ZONES", "RPO", "LAST FAILOVER"]
    if wide:
        header += ["ROUTE", "EPOCH", "MODE", "PINNED", "RECOMMENDATION"]
    if namespaces:
        header.insert(0, "NAMESPACE")
    rows = [header]
    for app in apps:
        row = [
            app.name,
            app.active or "-",
            app.state or "-",
            app.zones or "-",
            format_rpo(app.rpo_seconds),
            human_duration((now - app.last_failover).total_seconds()) if app.last_failover else "-",
        ]
        if wide:
            row += [
                app.failover_route or "-",
                "-" if app.epoch is None else str(app.epoch),
                app.mode or "-",
                app.pinned or "-",
                app.recommendation or "-",
            ]
        if namespaces:
            row.insert(0, app.namespace)
        rows.append(row)
    return rows


def render_table(rows: list[list[str]]) -> str:
    """Columns padded as kubectl pads them (three spaces apart)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )


def status(
    cluster: Cluster,
    namespace: str | None,
    name: str | None = None,
    *,
    output: str = "table",
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    now: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
) -> int:
    """Print a table (or JSON) of apps: active site, state, zones, RPO, last failover.

    ``namespace`` None lists every namespace; ``name`` picks one app.
    """
    if name is not None:
        if namespace is None:
            raise CommandError("an app name needs a namespace, not --all-namespaces", EXIT_USAGE)
        apps = [cluster.app(namespace, name)]
    else:
        apps = cluster.apps(namespace)
    summaries = [AppSummary.of(a) for a in apps]
    moment = now()
    if output == "json":
        out.write(json.dumps([s.as_json(moment) for s in summaries], indent=2) + "\n")
        return EXIT_OK
    if not summaries:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        err.write(f"No ResilientApps found in {where}.\n")
        return EXIT_OK
    rows = status_table(summaries, moment, namespaces=namespace is None, wide=output == "wide")
    out.write(render_table(rows))
    return EXIT_OK


# --------------------------------------------------------------------------- explain


def explain(
    cluster: Cluster, namespace: str, name: str, out: TextIO = sys.stdout, prog: str = "lifeboat"
) -> int:
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
            f"\nRecommendation (approve with: {prog} approve {name} -n {namespace}):\n"
            f"  {recommendation['summary']}\n  id {recommendation['id']}\n"
        )
    failover = status.get("lastFailover")
    if failover:
        write(
            f"\nLast failover: {failover['fromSite']} -> {failover['toSite']} (epoch "
            f"{failover['epoch']}) at {failover['decidedTime']}\n  why: {failover['reason']}\n"
            f"  detection {failover.get('detectionSeconds', '-')}s, "
            f"RTO {failover.get('rtoSeconds', '-')}s"
            + (
                f", planned, RPO {failover.get('rpoSeconds', '-')}s"
                if failover.get("planned")
                else ""
            )
            + "\n"
        )
    planned = status.get("plannedSwitchover")
    if planned:
        write(_planned_lines(planned))
    for restore in status.get("volumeRestores") or []:
        write(_restore_lines(restore))
    write(_capacity_lines(status.get("sites") or []))
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


def _planned_lines(planned: dict[str, Any]) -> str:
    """The latest planned switchover: its step, and each step's time."""
    lines = [
        f"\nPlanned switchover {planned['id']} ({planned['op']}): {planned['fromSite']} -> "
        f"{planned['toSite']}, step {planned['step']} (write fence {planned['fence']})"
    ]
    for label, key in (
        ("asked", "startTime"),
        ("writes stopped", "writesStoppedTime"),
        ("drained", "drainedTime"),
        ("writes resumed", "writesResumedTime"),
    ):
        if planned.get(key):
            lines.append(f"  {label} at {planned[key]}")
    if planned.get("message"):
        lines.append(f"  {planned['message']}")
    return "\n".join(lines) + "\n"


def _capacity_lines(sites: list[dict[str, Any]]) -> str:
    """Each site's capacity as set and whether it is Ready; each standby's readiness."""
    lines = []
    for site in sites:
        capacity, readiness = site.get("capacity"), site.get("readiness")
        if capacity:
            counts = ", ".join(f"{z['zone']}={z['count']}" for z in capacity.get("zones", []))
            ready = (
                f"Ready after {capacity['readySeconds']}s"
                if capacity.get("readySeconds") is not None
                else "not Ready yet"
            )
            lines.append(
                f"  {site['name']}: {counts or 'nothing'}, set {capacity['appliedTime']}: {ready}"
            )
        if readiness:
            verdict = {"True": "ready", "False": "not ready"}.get(readiness["ready"], "unknown")
            why = "; ".join(readiness.get("reasons") or [])
            lines.append(f"  {site['name']} as a standby: {verdict}" + (f": {why}" if why else ""))
    return "\nCapacity:\n" + "\n".join(lines) + "\n" if lines else ""


def _restore_lines(restore: dict[str, Any]) -> str:
    """What a failover restored at a site, a volume a line, with each one's state."""
    lines = [
        f"\nVolumes restored at {restore['site']} (epoch {restore['epoch']}, {restore['time']}):"
    ]
    for v in restore.get("volumes") or []:
        data = f", data as of {v['snapshotTime']}" if v.get("snapshotTime") else ""
        lines.append(
            f"  {v['dataset']}/{v['volume']}: {v['volumeId']} in {v['zone']} from "
            f"{v['snapshotId']}{data}: {v.get('state') or 'state not seen yet'}"
        )
    lines += [
        f"  {m}: no copy at {restore['site']}, not restored" for m in restore.get("missing") or []
    ]
    return "\n".join(lines) + "\n"


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
    prog: str = "lifeboat",
    planned: bool = False,
    to_the_end: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Ask for a failover (to ``site``) or a failback (``planned``: a planned switchover,
    writes stopped and replication drained first); wait up to ``wait`` seconds for the
    operator's answer, or (``to_the_end``) follow the operation until it is done."""
    app = cluster.app(namespace, name)
    sites = [s["name"] for s in (app.get("spec") or {}).get("sites", [])]
    if site is not None and site not in sites:
        raise CommandError(
            f"no site {site!r} in {namespace}/{name} (sites: {', '.join(sites)})", EXIT_USAGE
        )
    request_id = uuid.uuid4().hex[:12]
    asked = _asked(app)
    wanted = Request(request_id, RequestOp(op), site or None, force, planned)
    epoch = int((app.get("status") or {}).get("epoch") or 0)
    cluster.annotate(namespace, name, replace(asked, request=wanted).merge_patch(asked))
    kind = f"planned {op}" if planned else op
    out.write(f"requested {kind}{' to ' + site if site else ''} (request {request_id})\n")
    if to_the_end:
        code = follow(
            lambda: cluster.app(namespace, name),
            Operation(epoch, request_id=request_id, site=site),
            wait,
            out=out,
            clock=clock,
            sleep=sleep,
        )
        if code == EXIT_TIMEOUT:
            out.write(f"see {prog} explain {name} -n {namespace}\n")
        return code
    deadline = clock() + wait
    while clock() < deadline:
        answer = (cluster.app(namespace, name).get("status") or {}).get("lastRequest") or {}
        if answer.get("id") == request_id:
            verdict = "accepted" if answer["accepted"] else "refused"
            out.write(f"{verdict}: {answer['reason']}\n")
            return EXIT_OK if answer["accepted"] else EXIT_REFUSED
        time.sleep(0.5)
    out.write(
        f"no answer within {wait:.0f}s; is the operator running? "
        f"({prog} explain {name} -n {namespace})\n"
    )
    return EXIT_TIMEOUT


def approve(
    cluster: Cluster,
    namespace: str,
    name: str,
    recommendation: str | None,
    out: TextIO = sys.stdout,
    *,
    wait: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Approve the app's current recommendation (or the one given); with ``wait``, follow
    what it starts until it is done."""
    app = cluster.app(namespace, name)
    current = ((app.get("status") or {}).get("recommendation") or {}).get("id")
    chosen = recommendation or current
    if not chosen:
        raise CommandError(f"{namespace}/{name} has no recommendation to approve")
    if recommendation and current and recommendation != current:
        out.write(f"note: the current recommendation is {current}\n")
    asked = _asked(app)
    epoch = int((app.get("status") or {}).get("epoch") or 0)
    cluster.annotate(namespace, name, replace(asked, approval=chosen).merge_patch(asked))
    out.write(f"approved {chosen}\n")
    if wait is None:
        return EXIT_OK
    return follow(
        lambda: cluster.app(namespace, name),
        Operation(epoch, approval=chosen),
        wait,
        out=out,
        clock=clock,
        sleep=sleep,
    )


def pin(
    cluster: Cluster, namespace: str, name: str, site: str | None, out: TextIO = sys.stdout
) -> int:
    """Pin the app to a site (default: the active one), or unpin it (site None)."""
    app = cluster.app(namespace, name)
    asked = _asked(app)
    if site == "":
        cluster.annotate(namespace, name, replace(asked, pin=None).merge_patch(asked))
        out.write(f"unpinned {namespace}/{name}\n")
        return EXIT_OK
    chosen = site or (app.get("status") or {}).get("activeSite")
    sites = [s["name"] for s in (app.get("spec") or {}).get("sites", [])]
    if chosen not in sites:
        raise CommandError(
            f"no site {chosen!r} in {namespace}/{name} (sites: {', '.join(sites)})", EXIT_USAGE
        )
    cluster.annotate(namespace, name, replace(asked, pin=chosen).merge_patch(asked))
    out.write(f"pinned {namespace}/{name} to {chosen}: nothing moves it automatically\n")
    return EXIT_OK


def _asked(app: dict[str, Any]) -> ManualOperations:
    """What the app's annotations ask of the operator now (as read)."""
    return ManualOperations.from_annotations((app.get("metadata") or {}).get("annotations"))


# --------------------------------------------------------------------------- unreplicated


def unreplicated(
    cluster: Cluster,
    namespace: str,
    name: str,
    action: str | None,
    dataset: str | None,
    *,
    wait: float,
    out: TextIO = sys.stdout,
    clock: Callable[[], float] = time.monotonic,
    prog: str = "lifeboat",
) -> int:
    """List the objects of an older epoch that never reached the active site (``action``
    None), or ask the operator to merge them into the active site or discard them, and wait
    for its answer."""
    app = cluster.app(namespace, name)
    spec = app.get("spec") or {}
    datasets = {
        d["name"]: d for d in ((spec.get("replication") or {}).get("objects") or []) if "name" in d
    }
    if dataset is not None and dataset not in datasets:
        known = ", ".join(sorted(datasets)) or "none"
        raise CommandError(
            f"no object dataset {dataset!r} in {namespace}/{name} (datasets: {known})", EXIT_USAGE
        )
    if action is None:
        out.write(_tail_listing(app, dataset, datasets))
        return EXIT_OK
    request_id = uuid.uuid4().hex[:12]
    asked = _asked(app)
    wanted = UnreplicatedRequest(request_id, TailAction(action), dataset)
    cluster.annotate(namespace, name, replace(asked, unreplicated=wanted).merge_patch(asked))
    out.write(f"requested {action} of the unreplicated objects (request {request_id})\n")
    deadline = clock() + wait
    while clock() < deadline:
        answer = (cluster.app(namespace, name).get("status") or {}).get("unreplicatedRequest") or {}
        if answer.get("id") == request_id and answer.get("phase") != "Running":
            out.write(f"{answer.get('phase', '').lower()}: {answer.get('message', '')}\n")
            return EXIT_OK if answer.get("phase") == "Succeeded" else EXIT_REFUSED
        time.sleep(0.5)
    out.write(
        f"not done within {wait:.0f}s (a large merge takes a while); "
        f"see {prog} replication unreplicated {name} -n {namespace}\n"
    )
    return EXIT_TIMEOUT


def _tail_listing(app: dict[str, Any], dataset: str | None, datasets: dict[str, Any]) -> str:
    status = app.get("status") or {}
    namespace, name = app["metadata"].get("namespace", ""), app["metadata"]["name"]
    entries = [
        e
        for e in status.get("replication") or []
        if e.get("kind") == "Objects"
        and (dataset is None or e.get("dataset") == dataset)
        and e.get("unreplicatedObjects")
    ]
    lines: list[str] = []
    if not entries:
        lines.append(
            f"{namespace}/{name}: no objects of an older epoch wait at any site "
            f"(active site {status.get('activeSite', '-')}, epoch {status.get('epoch', '-')})"
        )
    else:
        rows = [["DATASET", "SITE", "OBJECTS", "BYTES"]]
        rows += [
            [
                e["dataset"],
                e["destination"],
                str(e["unreplicatedObjects"]),
                str(e.get("unreplicatedBytes", 0)),
            ]
            for e in entries
        ]
        lines.append(render_table(rows).rstrip("\n"))
        for e in entries:
            keys = e.get("unreplicatedKeys") or []
            lines.append(f"\n{e['dataset']} at {e['destination']} (epoch < {e.get('epoch', '-')}):")
            lines += [f"  {key}" for key in keys]
            more = int(e["unreplicatedObjects"]) - len(keys)
            location: dict[str, Any] = next(
                (
                    loc
                    for loc in (datasets.get(e["dataset"]) or {}).get("locations") or []
                    if loc.get("site") == e["destination"]
                ),
                {},
            )
            where = (
                f"{location.get('bucket', '?')}/{location.get('prefix', '')}.lifeboat/"
                f"replication/{namespace}/{name}/{e['dataset']}.json"
            )
            if more > 0:
                lines.append(f"  ... and {more} more")
            lines.append(f'  (all of them: "unreplicated" in {where})')
        lines.append(
            "\nmerge them into the active site with --merge, or delete them where they are "
            "with --discard"
        )
    answer = status.get("unreplicatedRequest")
    if answer:
        lines.append(
            f"\nlast request {answer['id']} ({answer['action']}): {answer['phase']}: "
            f"{answer.get('message', '')}"
        )
    return "\n".join(lines) + "\n"
