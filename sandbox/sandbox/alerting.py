"""A real Prometheus and a real Alertmanager for the sandbox, with Lifeboat's alerting.

* :class:`PrometheusServer`: Debian's ``prometheus`` (pinned, unpacked into the tools cache
  by :func:`~sandbox.tools.ensure_prometheus`) scraping the operator's ``/metrics`` every
  second, evaluating Lifeboat's alert rules (the chart's ``rules/``, through
  :func:`hack.monitoring.alert_groups`: the same rules the chart installs, ``for`` optionally
  shortened for tests by ``pending_for``) and sending its alerts to Alertmanager.
* :class:`AlertmanagerServer`: Debian's ``prometheus-alertmanager`` with Lifeboat's
  inhibition rules (``charts/lifeboat/alertmanager/inhibit-rules.yaml``, as they are),
  notifying one webhook: every alert its own group, sent within a second.
* :class:`AlertWebhook`: that webhook, an HTTP server that keeps what it receives, for the
  tests and for ``lifeboat-sandbox up`` (which prints each notification).
* :class:`Alerting`: the three together.

Nothing here is emulated. What differs from a production setup: static scrape targets on
loopback instead of service discovery, one-second intervals, no clustering (Alertmanager's
gossip port is off), storage in a temporary folder. Debian's builds read their web assets
and notification templates from ``/usr/share/prometheus`` (and Prometheus' pages their
libraries from ``/usr/share/javascript``: Debian's libjs-* packages, pinned too), which are
not installed: each runs in a private mount namespace (``unshare``) where the cache's
unpacked ``usr/share`` folders are laid over ``/usr/share`` (an overlay seen by that process
only; nothing changes on the system). That needs root, or unprivileged user namespaces.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from hack import monitoring
from hack.generate import repo_root
from sandbox.assets import Log
from sandbox.procs import (
    ChildProcess,
    HttpService,
    Service,
    free_loopback_port,
    require_loopback,
)
from sandbox.tools import ensure_alertmanager, ensure_prometheus, ensure_prometheus_web

_OVERLAY_SCRIPT = 'mount -t overlay overlay -o "lowerdir=$1" /usr/share && shift && exec "$@"'
_NO_UI = "/usr/share/prometheus/alertmanager/no-ui/"

_logger = logging.getLogger(__name__)


def package_share(binary: Path) -> Path | None:
    """The ``usr/share`` unpacked next to ``binary`` (``<root>/usr/bin/<binary>``), if any:
    None for a build of another origin (``$PROMETHEUS``, ``$ALERTMANAGER``; upstream's
    builds carry their assets inside)."""
    share = binary.parent.parent / "share"
    return share if share.is_dir() else None


def with_package_share(binary: Path, argv: Sequence[str], also: Sequence[Path] = ()) -> list[str]:
    """``argv`` run in a private mount namespace where the ``usr/share`` unpacked next to
    ``binary``, then the ``also`` folders (packages it depends on), lie over
    ``/usr/share``; ``argv`` as it is when ``binary`` has no such folder."""
    share = package_share(binary)
    if share is None:
        return list(argv)
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.append("--map-root-user")
    layers = ":".join(str(p) for p in (share, *also, Path("/usr/share")))
    return [*unshare, "--", "sh", "-c", _OVERLAY_SCRIPT, "sh", layers, *argv]


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET ``url`` (loopback) and decode its JSON."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
        return json.loads(response.read().decode())


def _ready(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback
            return None if response.status == 200 else f"answered {response.status}"
    except (OSError, urllib.error.URLError) as error:
        return f"not answering yet ({type(error).__name__})"


@dataclass(frozen=True)
class Notification:
    """One alert of a webhook notification: its status, labels and annotations."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]

    @classmethod
    def of(cls, alert: dict[str, Any]) -> Notification:
        """One entry of a webhook payload's ``alerts``."""
        return cls(
            str(alert.get("status", "")),
            dict(alert.get("labels", {})),
            dict(alert.get("annotations", {})),
        )

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


class AlertWebhook(HttpService):
    """Alertmanager's webhook receiver on loopback: ``POST /alerts`` payloads are kept (and
    passed to ``on_alert`` one alert at a time)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_alert: Callable[[Notification], None] | None = None,
    ) -> None:
        super().__init__("alert-webhook", host=host, port=port)
        self._lock = threading.Lock()
        self._payloads: list[dict[str, Any]] = []
        self._on_alert = on_alert

    @property
    def endpoint(self) -> str:
        return f"{self.url}/alerts"

    def payloads(self) -> list[dict[str, Any]]:
        """Every notification received, oldest first, as Alertmanager sent it."""
        with self._lock:
            return list(self._payloads)

    def notifications(self) -> list[Notification]:
        """Every alert of every notification received, oldest first."""
        return [
            Notification.of(alert)
            for payload in self.payloads()
            for alert in payload.get("alerts", ())
        ]

    def firing(self, alertname: str) -> list[Notification]:
        return [n for n in self.notifications() if n.name == alertname and n.status == "firing"]

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/alerts", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        payload = await request.json()
        with self._lock:
            self._payloads.append(payload)
        if self._on_alert is not None:
            for alert in payload.get("alerts", ()):
                self._on_alert(Notification.of(alert))
        return web.Response(text="ok")


class _Server(Service):
    """One of Debian's Prometheus programs as a child process on a loopback port."""

    ready_path = "/-/ready"

    def __init__(self, name: str, *, host: str, port: int, workdir: Path, timeout: float) -> None:
        super().__init__(name)
        self.host = require_loopback(host)
        self._requested_port = port
        self.port = port
        self.workdir = workdir
        self.startup_timeout = timeout
        self._child: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @abstractmethod
    def _argv(self) -> list[str]:
        """The command line (its configuration written to :attr:`workdir` first)."""

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self._requested_port or free_loopback_port(self.host)
        child = ChildProcess(self._argv(), log_path=self.log_path, name=self.name)
        child.start()
        self._child = child
        self._await_ready(
            lambda: _ready(f"{self.url}{self.ready_path}"),
            what=f"{self.name} at {self.url}",
            deadline=time.monotonic() + self.startup_timeout,
            children=[child],
        )

    def _stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None


class AlertmanagerServer(_Server):
    """Alertmanager with Lifeboat's inhibition rules, notifying ``webhook`` (None: nobody)."""

    def __init__(
        self,
        *,
        webhook: str | None,
        workdir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        log: Log = _logger.info,
    ) -> None:
        super().__init__(
            "alertmanager", host=host, port=port, workdir=workdir, timeout=startup_timeout
        )
        self.webhook = webhook
        self._log = log

    def config(self) -> dict[str, Any]:
        receiver: dict[str, Any] = {"name": "sandbox"}
        if self.webhook is not None:
            receiver["webhook_configs"] = [{"url": self.webhook, "send_resolved": True}]
        return {
            "route": {
                "receiver": "sandbox",
                "group_by": ["..."],  # every alert a group of its own
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [receiver],
            "inhibit_rules": monitoring.inhibit_rules(repo_root()),
        }

    def alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's alerts (``/api/v2/alerts``), inhibited and silenced ones included:
        ``status.state`` is ``active`` or ``suppressed``, ``status.inhibitedBy`` says by
        which."""
        found: list[dict[str, Any]] = get_json(f"{self.url}/api/v2/alerts")
        return found

    def _argv(self) -> list[str]:
        binary = ensure_alertmanager(self._log)
        config = self.workdir / "alertmanager.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False), encoding="utf-8")
        return with_package_share(
            binary,
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.path={self.workdir / 'alertmanager-data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--cluster.listen-address=",  # no gossip port: loopback only, one instance
                # Debian's flag: its package's page that stands in for the unbuilt UI.
                *([f"--web.ui-path={_NO_UI}"] if package_share(binary) is not None else []),
                "--log.level=info",
            ],
        )


class PrometheusServer(_Server):
    """Prometheus scraping ``targets`` (``host:port`` of operators' /metrics, loopback)
    every second, with Lifeboat's alert rules, alerting ``alertmanager`` (a base URL)."""

    def __init__(
        self,
        *,
        targets: Sequence[str],
        alertmanager: str | None,
        workdir: Path,
        settings: monitoring.AlertSettings | None = None,
        interval: str = "1s",
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        log: Log = _logger.info,
    ) -> None:
        super().__init__(
            "prometheus", host=host, port=port, workdir=workdir, timeout=startup_timeout
        )
        for target in targets:
            require_loopback(target.rsplit(":", 1)[0])
        self.targets = tuple(targets)
        self.alertmanager = alertmanager
        self.settings = settings or monitoring.AlertSettings()
        self.interval = interval
        self._log = log

    def rule_files(self) -> list[Path]:
        """Lifeboat's rules files with :attr:`settings` applied, as Prometheus loads them."""
        directory = self.workdir / "rules"
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for source in monitoring.rule_files(repo_root()):
            path = directory / source.name
            path.write_text(monitoring.rules_document(source, self.settings), encoding="utf-8")
            written.append(path)
        return written

    def config(self, rule_files: Sequence[Path]) -> dict[str, Any]:
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": "lifeboat",
                    "scrape_timeout": self.interval,
                    "static_configs": [{"targets": list(self.targets)}],
                }
            ],
        }
        if self.alertmanager is not None:
            address = self.alertmanager.removeprefix("http://").rstrip("/")
            require_loopback(address.rsplit(":", 1)[0])
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [address]}]}]}
        return config

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus' pending and firing alerts (``/api/v1/alerts``)."""
        found: list[dict[str, Any]] = get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return found

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        found: list[dict[str, Any]] = get_json(url)["data"]["result"]
        return found

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        """A range query's result matrix over ``[start, end]`` (unix times)."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step}
        url = f"{self.url}/api/v1/query_range?{urllib.parse.urlencode(params)}"
        found: list[dict[str, Any]] = get_json(url)["data"]["result"]
        return found

    def _argv(self) -> list[str]:
        binary = ensure_prometheus(self._log)
        config = self.workdir / "prometheus.yml"
        document = self.config(self.rule_files())
        config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        # Debian's pages load jQuery, Bootstrap, ... from its libjs-* packages.
        web = ensure_prometheus_web(self._log) if package_share(binary) is not None else []
        return with_package_share(
            binary,
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address={self.host}:{self.port}",
                # Firing alerts are sent again every second (and expire 4 s after the last
                # send), so Alertmanager follows Prometheus' state within moments.
                "--rules.alert.resend-delay=1s",
                "--log.level=info",
            ],
            web,
        )


class Alerting(Service):
    """Alertmanager (notifying :attr:`webhook`) and Prometheus (scraping ``targets`` and
    alerting it), started in that order and stopped in reverse."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        settings: monitoring.AlertSettings | None = None,
        on_alert: Callable[[Notification], None] | None = None,
        interval: str = "1s",
        host: str = "127.0.0.1",
        workdir: Path | None = None,
        log: Log = _logger.info,
    ) -> None:
        super().__init__("alerting")
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="lifeboat-alerting-"))
        self.webhook = AlertWebhook(host=host, on_alert=on_alert)
        self.alertmanager = AlertmanagerServer(
            webhook=None, workdir=self.workdir, host=host, log=log
        )
        self.prometheus = PrometheusServer(
            targets=targets,
            alertmanager=None,
            workdir=self.workdir,
            settings=settings,
            interval=interval,
            host=host,
            log=log,
        )

    def _start(self) -> None:
        self.webhook.start()
        self.alertmanager.webhook = self.webhook.endpoint
        self.alertmanager.start()
        self.prometheus.alertmanager = self.alertmanager.url
        self.prometheus.start()

    def _stop(self) -> None:
        try:
            for service in (self.prometheus, self.alertmanager, self.webhook):
                service.stop()
        finally:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
