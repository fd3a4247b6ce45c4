"""``lifeboat-sandbox demo``: a region failover, end to end, on this machine.

Starts the sandbox, applies the example resources, runs the operator (as its own
ServiceAccount, under the RBAC from ``manifests/``), takes every zone of the primary
region down and narrates what the operator saw and did — from the Kubernetes Events and
status it wrote and from Route 53 in moto, the way a user would watch it — then cleans up.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client

from controller.operator.runner import in_background
from sandbox.alerting import Alerting, Notification
from sandbox.assets import AssetsError, ensure_assets
from sandbox.procs import StartupError, free_loopback_port
from sandbox.tools import ToolError
from sandbox.world import HOSTED_ZONE, Sandbox

APP, NAMESPACE = "web", "shop"
REPORTER = "lifeboat.dev/operator"
READY_TIMEOUT = 30.0
FAILOVER_TIMEOUT = 90.0


@dataclass
class Narrator:
    """Timestamped lines relative to the start of the demo."""

    out: Callable[[str], None] = print
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, message: str) -> None:
        with self.lock:
            self.out(f"[{time.monotonic() - self.started:6.1f}s] {message}")

    def block(self, text: str) -> None:
        with self.lock:
            for line in text.rstrip().splitlines():
                self.out(f"          {line}")


class Watcher(threading.Thread):
    """Prints new Events of the demo's objects and every change of the DNS weights."""

    def __init__(self, sandbox: Sandbox, narrator: Narrator) -> None:
        super().__init__(name="demo-watcher", daemon=True)
        self.sandbox = sandbox
        self.narrator = narrator
        self.stop_flag = threading.Event()
        self.seen: set[str] = set()
        self.weights: dict[str, int] = {}
        self.api = kubernetes.client.CoreV1Api(sandbox.kube.api_client())
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_flag.wait(0.25):
            self.poll()

    def poll(self) -> None:
        """Print what is new; also called before each milestone, to keep the story in order."""
        with self.lock:
            self._poll()

    def _poll(self) -> None:
        events: list[Any] = []
        for namespace in (NAMESPACE, "default"):
            events.extend(self.api.list_namespaced_event(namespace).items)
        events.sort(key=lambda e: (e.first_timestamp or e.event_time or 0, e.metadata.name))
        for event in events:
            if event.metadata.uid in self.seen or event.reporting_component != REPORTER:
                continue
            self.seen.add(event.metadata.uid)
            kind = event.involved_object.kind
            marker = "!" if event.type == "Warning" else " "
            self.narrator.say(
                f"{marker}{kind}/{event.involved_object.name} {event.reason}: {event.message}"
            )
        weights = self.sandbox.dns_weights()
        if weights and weights != self.weights:
            self.weights = weights
            shown = ", ".join(f"{site}={weight}" for site, weight in sorted(weights.items()))
            self.narrator.say(f" Route 53 web.{HOSTED_ZONE} weights: {shown}")

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(5)
        self.poll()  # anything that arrived in the last moments


def _app(sandbox: Sandbox) -> dict[str, Any]:
    api = kubernetes.client.CustomObjectsApi(sandbox.kube.api_client())
    result = api.get_namespaced_custom_object(
        "lifeboat.dev", "v1alpha1", NAMESPACE, "resilientapps", APP
    )
    assert isinstance(result, dict)
    return result


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _ready(sandbox: Sandbox) -> bool:
    status = _app(sandbox).get("status", {})
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    return bool(ready) and ready[0]["status"] == "True" and status.get("healthyZones") == "6/6"


def _failed_over(sandbox: Sandbox, primary: str) -> bool:
    status = _app(sandbox).get("status", {})
    traffic = status.get("traffic") or {}
    return status.get("activeSite") not in (None, primary) and traffic.get("epoch") == status.get(
        "epoch"
    )


def run_demo(verbose: bool = False, out: Callable[[str], None] = print) -> int:
    """The demo; 0 when the failover happened as it should."""
    if not verbose:
        for name in ("kopf", "controller", "aiohttp"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    narrator = Narrator(out)
    out("Lifeboat demo: every zone of the primary region fails; watch the app move.\n")
    try:
        assets = ensure_assets(log=lambda line: narrator.say(f"build: {line}"))
    except AssetsError as error:
        out(f"lifeboat-sandbox demo: {error}")
        return 1
    narrator.say(f"control-plane binaries from {assets.kube_apiserver.parent} ({assets.source})")
    with Sandbox(assets) as sandbox:
        return _story(sandbox, narrator)


def _story(sandbox: Sandbox, narrator: Narrator) -> int:
    say = narrator.say
    say(f"kube-apiserver {sandbox.kube.version} at {sandbox.kube.server_url} (real, with etcd)")
    proxies = ", ".join(f"{name} {proxy.url}" for name, proxy in sandbox.proxies.items())
    say(f"moto (AWS) at {sandbox.moto.url}; fault proxies: {proxies}")
    for layout in sandbox.sites():
        urls = ", ".join(sandbox.zones.url(layout.site, z) for z in layout.zones)
        say(f"site {layout.site} ({layout.region}) zonal endpoints: {urls}")
    say("installed CRDs and RBAC from manifests/; applying manifests/examples/sandbox:")
    narrator.block(sandbox.apply_examples())

    watcher = Watcher(sandbox, narrator)
    with in_background(sandbox.operator_config()):
        say("operator running as system:serviceaccount:lifeboat-system:lifeboat")
        watcher.start()
        try:
            return _outage(sandbox, narrator, watcher)
        finally:
            watcher.stop()


def _outage(sandbox: Sandbox, narrator: Narrator, watcher: Watcher) -> int:
    say = narrator.say
    if not _wait(lambda: _ready(sandbox), READY_TIMEOUT):
        say(f"the app did not become Ready within {READY_TIMEOUT:.0f}s; status:")
        narrator.block(str(_app(sandbox).get("status")))
        return 1
    watcher.poll()
    say("app is Ready. $ kubectl get resilientapps -n shop")
    narrator.block(sandbox.kube.kubectl("get", "resilientapps", "-n", NAMESPACE).stdout)

    primary = sandbox.layout[0]
    say(f">>> OUTAGE: every zone of primary site {primary.site} ({primary.region}) goes down")
    outage_start = time.monotonic()
    for zone in primary.zones:
        sandbox.zones.endpoint(primary.site, zone).down()
    if not _wait(lambda: _failed_over(sandbox, primary.site), FAILOVER_TIMEOUT):
        say(f"no failover within {FAILOVER_TIMEOUT:.0f}s; status:")
        narrator.block(str(_app(sandbox).get("status")))
        return 1
    elapsed = time.monotonic() - outage_start
    watcher.poll()
    record = _app(sandbox)["status"].get("lastFailover", {})
    say(
        f"failover done: {record.get('fromSite')} -> {record.get('toSite')}, epoch "
        f"{record.get('epoch')}; measured by the operator: detection "
        f"{record.get('detectionSeconds')}s, RTO {record.get('rtoSeconds')}s "
        f"({elapsed:.1f}s on the demo's clock since the zones stopped; RTO counts from the "
        "last successful probe, so it includes up to one probe interval before the outage)"
    )
    say("$ kubectl get resilientapps -n shop -o wide")
    narrator.block(
        sandbox.kube.kubectl("get", "resilientapps", "-n", NAMESPACE, "-o", "wide").stdout
    )
    say("cleaning up")
    return 0


def run_sandbox() -> int:
    """``lifeboat-sandbox up``: the sandbox with the examples applied, Prometheus and
    Alertmanager watching the operator's metrics port, until Ctrl-C."""
    try:
        assets = ensure_assets(log=lambda line: print(f"build: {line}", file=sys.stderr))
    except AssetsError as error:
        print(f"lifeboat-sandbox up: {error}", file=sys.stderr)
        return 1
    metrics_port = free_loopback_port()
    with Sandbox(assets) as sandbox, ExitStack() as stack:
        print(sandbox.apply_examples())
        print(f"kube-apiserver: {sandbox.kube.server_url}")
        print(f"admin kubeconfig: {sandbox.kube.kubeconfig_path}")
        print(f"operator kubeconfig (ServiceAccount lifeboat): {sandbox.operator_kubeconfig}")
        print(f"moto: {sandbox.moto.url}")
        alerting = start_alerting(stack, [f"127.0.0.1:{metrics_port}"])
        lifeboat = Path(sys.executable).with_name("lifeboat")
        print(
            "run the operator against it in another terminal:\n"
            f"  {lifeboat} run --kubeconfig {sandbox.operator_kubeconfig} "
            "--controller-namespace lifeboat-system --metrics-address 127.0.0.1 "
            f"--metrics-port {metrics_port} --health-endpoint ''"
        )
        if alerting is not None:
            print("alerts notified by Alertmanager are printed here as they come.")
        print("Ctrl-C stops the sandbox.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopping")
    return 0


def start_alerting(stack: ExitStack, targets: list[str]) -> Alerting | None:
    """Prometheus (scraping ``targets``, operators' /metrics on loopback, once they run)
    and Alertmanager, with Lifeboat's rules, entered into ``stack``; their URLs printed, and
    every notification as it comes. None, said why, when they cannot start here (the rest
    of the sandbox runs on)."""

    def show(alert: Notification) -> None:
        where = ", ".join(
            f"{k}={v}" for k, v in sorted(alert.labels.items()) if k not in ("alertname",)
        )
        print(f"alert {alert.status}: {alert.name} ({where})", flush=True)

    try:
        alerting = stack.enter_context(
            Alerting(
                targets,
                on_alert=show,
                log=lambda line: print(f"fetch: {line}", file=sys.stderr),
            )
        )
    except (ToolError, StartupError, OSError) as error:
        print(f"Prometheus and Alertmanager not started: {error}", file=sys.stderr)
        return None
    prometheus, alertmanager = alerting.prometheus.url, alerting.alertmanager.url
    print(
        f"prometheus: {prometheus} (alerts: {prometheus}/classic/alerts, "
        f"API: {prometheus}/api/v1/alerts; scrapes {', '.join(targets)})"
    )
    print(f"alertmanager: {alertmanager} (API: {alertmanager}/api/v2/alerts)")
    print(f"alert webhook (Alertmanager's receiver): {alerting.webhook.endpoint}")
    return alerting
