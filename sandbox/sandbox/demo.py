"""``lifeboat-sandbox demo``: a region failover, end to end, on this machine.

Starts the sandbox, applies the example resources, runs the operator (as its own
ServiceAccount, under the RBAC from ``manifests/``), takes every zone of the primary
region down and narrates what the operator saw and did — from the Kubernetes Events and
status it wrote and from Route 53 in moto, the way a user would watch it — then cleans up.

A real Prometheus and Alertmanager (:mod:`sandbox.alerting`) watch the operator's metrics
with the chart's rules as shipped: the demo prints the alerts as they arrive (times from
the outage), holds the outage until the zone alert fires (bounded), brings the zones back,
waits (bounded) for what can resolve, says what still fires or is pending and why, and
draws the timeline picture from Prometheus' range API (:mod:`sandbox.timeline`). Without
them (not fetchable, no user namespaces) it says so and runs the failover alone.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes.client

from controller.operator.runner import in_background, start_metrics
from hack.generate import repo_root
from sandbox import timeline
from sandbox.alert_log import AlertLog, RuleFacts, describe, format_alert, rule_facts, seconds
from sandbox.alerting import Alerting, Notification
from sandbox.assets import AssetsError, cache_root, ensure_assets
from sandbox.procs import StartupError, free_loopback_port
from sandbox.tools import ToolError
from sandbox.world import HOSTED_ZONE, Sandbox

APP, NAMESPACE = "web", "shop"
REPORTER = "lifeboat.dev/operator"
READY_TIMEOUT = 30.0
FAILOVER_TIMEOUT = 90.0
SCRAPE_INTERVAL = 0.5
"""Prometheus scrapes the operator and evaluates the chart's rules this often (seconds)."""
SCRAPED_TIMEOUT = 20.0
BASELINE = 5.0
"""Seconds of the steady state Prometheus records before the outage (for the picture)."""
OUTAGE_HOLD = 100.0
"""The primary's zones stay down until LifeboatZoneDown (for: 1m) is notified, at most
this long after the outage began."""
RESOLVE_TIMEOUT = 45.0
"""After the zones serve again: how long the demo waits for alerts to resolve."""
HOLD_FOR = "LifeboatZoneDown"


def default_timeline() -> Path:
    """Where the demo writes its timeline picture unless told otherwise."""
    return cache_root() / "demo" / "lifeboat-demo-timeline.png"


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


@dataclass
class Watch:
    """Prometheus and Alertmanager watching the operator during the demo (None: they did
    not start), what the demo saw of the alerts, and when the outage began (unix time)."""

    alerting: Alerting | None
    log: AlertLog
    rules: dict[str, RuleFacts]
    timeline: Path | None
    started: float = field(default_factory=time.time)
    outage: float | None = None


def run_demo(
    verbose: bool = False,
    out: Callable[[str], None] = print,
    timeline_path: Path | None = None,
    draw: bool = True,
) -> int:
    """The demo; 0 when the failover happened as it should. ``timeline_path``: where the
    picture goes (default :func:`default_timeline`); ``draw`` False: no picture."""
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
    picture = (timeline_path or default_timeline()) if draw else None
    with Sandbox(assets) as sandbox:
        return _story(sandbox, narrator, picture)


def _story(sandbox: Sandbox, narrator: Narrator, picture: Path | None) -> int:
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
    metrics_port = free_loopback_port()
    config = sandbox.operator_config(metrics_address="127.0.0.1", metrics_port=metrics_port)
    start_metrics(config)  # a daemon thread, as `lifeboat run` serves them
    with ExitStack() as stack, in_background(config):
        say(
            "operator running as system:serviceaccount:lifeboat-system:lifeboat, "
            f"metrics on http://127.0.0.1:{metrics_port}/metrics"
        )
        watcher.start()
        watch = _watch(stack, narrator, f"127.0.0.1:{metrics_port}", picture)
        try:
            return _outage(sandbox, narrator, watcher, watch)
        finally:
            watcher.stop()


def _watch(stack: ExitStack, narrator: Narrator, target: str, picture: Path | None) -> Watch:
    """Prometheus (scraping ``target`` with the chart's rules, as shipped) and Alertmanager
    (the chart's inhibition rules, notifying the demo's webhook), entered into ``stack``;
    a Watch without them, said why, when they cannot start here."""
    say = narrator.say
    log = AlertLog()
    rules = rule_facts(repo_root())
    watch = Watch(None, log, rules, picture)

    def arrived(notification: Notification) -> None:
        seen = log.notified(notification)
        if watch.outage is not None:
            say(f"ALERT {seen.line(watch.outage)}")

    try:
        alerting = stack.enter_context(
            Alerting(
                [target],
                on_alert=arrived,
                interval=f"{int(SCRAPE_INTERVAL * 1000)}ms",
                log=lambda line: say(f"fetch: {line}"),
            )
        )
    except (ToolError, StartupError, OSError) as error:
        say(f"Prometheus and Alertmanager not started, so no alerts and no picture: {error}")
        return watch
    watch.alerting = alerting
    say(
        f"Prometheus {alerting.prometheus.url} scrapes the operator every {SCRAPE_INTERVAL}s "
        f"with the chart's {len(rules)} alert rules (their for: as shipped); Alertmanager "
        f"{alerting.alertmanager.url} with the chart's inhibition rules notifies "
        f"{alerting.webhook.endpoint}"
    )
    return watch


def _outage(sandbox: Sandbox, narrator: Narrator, watcher: Watcher, watch: Watch) -> int:
    say = narrator.say
    if not _wait(lambda: _ready(sandbox), READY_TIMEOUT):
        say(f"the app did not become Ready within {READY_TIMEOUT:.0f}s; status:")
        narrator.block(str(_app(sandbox).get("status")))
        return 1
    watcher.poll()
    say("app is Ready. $ kubectl get resilientapps -n shop")
    narrator.block(sandbox.kube.kubectl("get", "resilientapps", "-n", NAMESPACE).stdout)
    _baseline(watch, narrator)

    primary = sandbox.layout[0]
    say(f">>> OUTAGE: every zone of primary site {primary.site} ({primary.region}) goes down")
    outage_start = time.monotonic()
    watch.outage = time.time()
    for s in watch.log.seen():  # notified before the outage (none, normally)
        say(f"ALERT {s.line(watch.outage)} (before the outage)")
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
    if watch.alerting is not None:
        _alerts(sandbox, narrator, watch, primary.site, primary.zones)
    say("cleaning up")
    return 0


def _baseline(watch: Watch, narrator: Narrator) -> None:
    """Wait until Prometheus has the app's series, then a few seconds of steady state."""
    if watch.alerting is None:
        return
    prometheus = watch.alerting.prometheus
    selector = f'lifeboat_dns_weight{{namespace="{NAMESPACE}",app="{APP}"}}'
    if not _wait(lambda: bool(_query(prometheus.query, selector)), SCRAPED_TIMEOUT):
        narrator.say(f"Prometheus has no {selector} after {SCRAPED_TIMEOUT:.0f}s")
    time.sleep(BASELINE)


def _query(query: Callable[[str], list[dict[str, Any]]], promql: str) -> list[dict[str, Any]]:
    try:
        return query(promql)
    except OSError:
        return []


def _alerts(
    sandbox: Sandbox, narrator: Narrator, watch: Watch, site: str, zones: tuple[str, ...]
) -> None:
    """Hold the outage until the zone alert fires (bounded), bring the zones back, wait
    (bounded) for the alerts that can resolve, then sum up and draw the picture."""
    say, log = narrator.say, watch.log
    assert watch.alerting is not None and watch.outage is not None
    origin, facts = watch.outage, watch.rules
    hold = facts.get(HOLD_FOR)
    say(
        f"{site}'s zones stay down until {HOLD_FOR} fires "
        f"({hold.why_pending() if hold else 'not in the chart'}; at most "
        f"{OUTAGE_HOLD:.0f}s after the outage began); alerts as Alertmanager notifies them:"
    )
    deadline = origin + OUTAGE_HOLD
    while time.time() < deadline and HOLD_FOR not in log.notified_names():
        _pending(watch, narrator)
        time.sleep(0.5)
    _pending(watch, narrator)
    if HOLD_FOR not in log.notified_names():
        say(f"{HOLD_FOR} was not notified within {OUTAGE_HOLD:.0f}s of the outage")
    say(f">>> RECOVERY: the zones of {site} serve again")
    for zone in zones:
        sandbox.zones.endpoint(site, zone).serve()
    recovered = time.time()

    def resolvable() -> list[str]:
        """Firing alerts that can resolve within the wait (a look-back window longer than
        it keeps the others firing whatever happens)."""
        names = []
        for seen in log.firing():
            rule = facts.get(seen.labels.get("alertname", ""))
            if rule is None or rule.lookback is None or seconds(rule.lookback) < RESOLVE_TIMEOUT:
                names.append(seen.labels.get("alertname", ""))
        return names

    if not _wait(lambda: not resolvable(), RESOLVE_TIMEOUT):
        say(f"not resolved {RESOLVE_TIMEOUT:.0f}s after the recovery: {', '.join(resolvable())}")
    _summary(watch, narrator, recovered)
    _picture(watch, narrator)


def _pending(watch: Watch, narrator: Narrator) -> None:
    """Print the alerts newly pending in Prometheus (their ``for`` not elapsed yet)."""
    assert watch.alerting is not None and watch.outage is not None
    for alert in _prometheus_alerts(watch.alerting):
        if alert.get("state") != "pending":
            continue
        labels = dict(alert.get("labels", {}))
        active = _unix(str(alert.get("activeAt", "")))
        if active is None:
            continue
        seen = watch.log.pending(labels, active)
        if seen is not None:
            rule = watch.rules.get(labels.get("alertname", ""))
            note = rule.why_pending() if rule else ""
            narrator.say(f"ALERT {seen.line(watch.outage, f'in Prometheus; {note}')}")


def _prometheus_alerts(alerting: Alerting) -> list[dict[str, Any]]:
    try:
        return alerting.prometheus.alerts()
    except OSError:
        return []


def _unix(text: str) -> float | None:
    """An RFC 3339 time of Prometheus' API as unix time."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _summary(watch: Watch, narrator: Narrator, recovered: float) -> None:
    """Every alert seen, then what still fires and what is still pending, and why."""
    assert watch.alerting is not None and watch.outage is not None
    say, origin = narrator.say, watch.outage
    say(
        "alerts, seconds from the outage (FIRING/RESOLVED: Alertmanager's webhook "
        "notifications as they arrived; PENDING: Prometheus, since it became active); "
        f"recovery at {recovered - origin:+.1f}s:"
    )
    seen = watch.log.seen()
    narrator.block("\n".join(s.line(origin) for s in seen) or "(none arrived)")
    firing = watch.log.firing()
    if firing:
        lines = []
        for s in firing:
            rule = watch.rules.get(s.labels.get("alertname", ""))
            lines.append(s.line(origin, rule.why_still_firing() if rule else ""))
        say("still firing at the end of the demo:")
        narrator.block("\n".join(lines))
    pending = [a for a in _prometheus_alerts(watch.alerting) if a.get("state") == "pending"]
    if pending:
        lines = []
        for a in pending:
            labels = dict(a.get("labels", {}))
            rule = watch.rules.get(labels.get("alertname", ""))
            active = _unix(str(a.get("activeAt", ""))) or time.time()
            why = f"{rule.why_pending()}, not elapsed" if rule and rule.pending_for else ""
            lines.append(format_alert(active - origin, "pending", labels, why))
        say("still pending in Prometheus (never notified):")
        narrator.block("\n".join(lines))
    suppressed = [
        a for a in watch.alerting.alertmanager.alerts() if a["status"]["state"] == "suppressed"
    ]
    for a in suppressed:
        say(f"inhibited in Alertmanager (not notified): {describe(a['labels'])}")


def _picture(watch: Watch, narrator: Narrator) -> None:
    """The timeline, from Prometheus' range API over the demo's window."""
    if watch.timeline is None or watch.alerting is None or watch.outage is None:
        return
    end = time.time()
    try:
        data = timeline.fetch(
            watch.alerting.prometheus.query_range,
            namespace=NAMESPACE,
            app=APP,
            origin=watch.outage,
            start=max(watch.started, watch.outage - BASELINE),
            end=end,
            step=SCRAPE_INTERVAL,
        )
        path = timeline.render(data, watch.timeline)
    except (OSError, ValueError, KeyError) as error:
        narrator.say(f"no timeline picture: {error}")
        return
    narrator.say(f"timeline picture ({timeline.CAPTION}): {path}")


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
