"""A real BIND 9 for the sandbox: Debian's ``bind9`` package (``named``) with the shared
libraries it links, unpacked into the tools cache (nothing installed on the system), run
as an authoritative primary on a loopback address for the ``rfc2136`` CloudProvider type.

Nothing here is emulated: named serves the zones, takes RFC 2136 updates signed with a
TSIG key (``update-policy { grant <key> zonesub ANY; }``), checks their prerequisites and
refuses unsigned or wrongly signed ones, exactly as in production. What differs from a
production server: one primary and no secondaries (so "in sync" is the primary's commit),
no recursion, no DNSSEC, logs to the sandbox's log file.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.tsig

from sandbox.assets import Log
from sandbox.procs import ChildProcess, Service, free_loopback_port, require_loopback
from sandbox.tools import ensure_debian_program

NAMED_ENV = "NAMED"
"""A ``named`` binary to use instead of Debian's package (its libraries the system's)."""
NAMED_PACKAGES = (
    "bind9",
    "bind9-libs",
    "libjemalloc2",
    "liblmdb0",
    "libmaxminddb0",
    "libfstrm0",
    "libprotobuf-c1",
)
"""Debian's bind9 and the shared libraries named needs that a minimal system lacks."""
NAMED_PROGRAM = "usr/sbin/named"


_logger = logging.getLogger(__name__)


def ensure_named(log: Log = _logger.info) -> tuple[Path, Path]:
    """``named`` and the folder of its libraries (fetched once per machine)."""
    return ensure_debian_program(NAMED_PACKAGES, NAMED_PROGRAM, NAMED_ENV, log=log)


class BindServer(Service):
    """named serving ``zones`` on ``host``:``port`` (TCP and UDP), updatable with one TSIG
    key (``key_name``, ``secret`` in base64, hmac-sha256)."""

    algorithm = "hmac-sha256"

    def __init__(
        self,
        zones: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        key_name: str = "lifeboat",
        workdir: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__("bind9")
        self.zones = tuple(z.rstrip(".").lower() for z in zones)
        self.host = require_loopback(host)
        self._requested_port = port
        self.port = port
        self.key_name = key_name
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self._own_workdir = workdir is None
        self._workdir = workdir
        self.startup_timeout = startup_timeout
        self._child: ChildProcess | None = None

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("bind9 is not started")
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self.workdir / "named.log"

    def tsig_key(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.key_name, base64.b64decode(self.secret), self.algorithm)

    def _config(self) -> str:
        directory = self.workdir
        zones = "".join(
            f'zone "{zone}" {{\n'
            f"  type primary;\n"
            f'  file "{directory / (zone + ".db")}";\n'
            f"  update-policy {{ grant {self.key_name} zonesub ANY; }};\n"
            f"}};\n"
            for zone in self.zones
        )
        return (
            "options {\n"
            f'  directory "{directory}";\n'
            "  pid-file none;\n"
            f'  session-keyfile "{directory / "session.key"}";\n'
            f'  managed-keys-directory "{directory}";\n'
            f"  listen-on port {self.port} {{ {self.host}; }};\n"
            "  listen-on-v6 { none; };\n"
            "  recursion no;\n"
            "  dnssec-validation no;\n"
            "  notify no;\n"
            "  allow-query { any; };\n"
            "};\n"
            "controls { };\n"
            f'key "{self.key_name}" {{\n'
            f"  algorithm {self.algorithm};\n"
            f'  secret "{self.secret}";\n'
            "};\n" + zones
        )

    @staticmethod
    def _zone_file(zone: str) -> str:
        return (
            "$TTL 60\n"
            f"@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 60 60 3600 60\n"
            f"@ IN NS ns1.{zone}.\n"
            "ns1 IN A 127.0.0.1\n"
        )

    def _answers(self) -> str | None:
        query = dns.message.make_query(f"{self.zones[0]}.", "SOA")
        try:
            answer = dns.query.tcp(query, self.host, timeout=1.0, port=self.port)
        except (OSError, EOFError, dns.exception.DNSException) as error:
            return f"no answer yet ({type(error).__name__})"
        if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
            return f"answered {dns.rcode.to_text(answer.rcode())}"
        return None

    def _start(self) -> None:
        named, libraries = ensure_named()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="lifeboat-bind-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.port = self._requested_port or free_loopback_port(self.host)
        for zone in self.zones:
            (self.workdir / f"{zone}.db").write_text(self._zone_file(zone), encoding="utf-8")
        config = self.workdir / "named.conf"
        config.write_text(self._config(), encoding="utf-8")
        config.chmod(0o600)  # it holds the key's secret
        environment = {**os.environ}
        if libraries.is_dir():
            environment["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (str(libraries), os.environ.get("LD_LIBRARY_PATH", "")) if p
            )
        child = ChildProcess(
            # -g: foreground, logging to stderr; -n 1: one worker thread is plenty here.
            [str(named), "-g", "-n", "1", "-c", str(config)],
            log_path=self.log_path,
            name="named",
            env=environment,
        )
        child.start()
        self._child = child
        self._await_ready(
            self._answers,
            what=f"named to serve {self.zones[0]} on {self.host}:{self.port}",
            deadline=time.monotonic() + self.startup_timeout,
            children=[child],
        )

    def _stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
