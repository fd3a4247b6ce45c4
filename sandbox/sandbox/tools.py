"""Developer tools and files from Go modules, cached by version: helm, promtool, linters, CRDs.

* :func:`ensure_go_tool` builds one command of a Go module (the versions its go.mod pins)
  into ``cache_root()/tools/<binary>-<version>-<key>/`` the first time, and returns the
  cached binary afterwards. ``key`` is a short digest of the package and the build flags,
  so two builds of one version with different flags never share a slot.
* :func:`ensure_go_module_files` copies files out of a Go module (``go mod download``) into
  ``cache_root()/modules/<name>-<version>/``: data that projects publish only in their
  repository, such as CustomResourceDefinitions.

Both use the Go toolchain and its module proxy, never the repository: nothing they fetch or
build lands in the source tree. Prometheus, promtool and Alertmanager come from Debian's
packages instead (:func:`ensure_pinned_debian_package`): one pinned version of each, its
``.deb`` checked against a pinned SHA-256 before it is unpacked into the cache.
Concurrent callers (pytest workers, a demo next to a test run) serialise on a file lock
per item: the first one builds, the others wait and reuse.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.assets import (
    AssetsError,
    Log,
    _elapsed,
    _go,
    _go_json,
    cache_root,
    exclusive_lock,
)

_logger = logging.getLogger(__name__)


class ToolError(AssetsError):
    """A tool (or module file) can neither be found in the cache nor built (fetched)."""


def tools_dir() -> Path:
    """Where built tools are cached."""
    return cache_root() / "tools"


def tool_path(package: str, version: str, binary: str, ldflags: Sequence[str] = ()) -> Path:
    """Where :func:`ensure_go_tool` keeps ``binary`` (whether or not it is built yet)."""
    key = hashlib.sha256("\0".join([package, version, *ldflags]).encode()).hexdigest()[:10]
    return tools_dir() / f"{binary}-{version}-{key}" / binary


def ensure_go_tool(
    package: str,
    version: str,
    binary: str,
    *,
    ldflags: Sequence[str] = (),
    check: Sequence[str] = ("--version",),
    sums: Sequence[str] = (),
    log: Log = _logger.info,
) -> Path:
    """The path of ``binary``, built from Go ``package`` at module ``version`` on first use.

    ``package`` is the import path of the ``main`` package (``helm.sh/helm/v3/cmd/helm``);
    ``version`` a module version (``v3.22.0``). ``ldflags`` are added to ``-s -w`` (e.g.
    ``-X`` version stamps). After a build, ``binary check...`` must exit 0. ``sums`` are
    go.sum lines pinning modules that the checksum database does not serve (Go then
    verifies the download against them instead of failing). Raises ToolError when Go is
    missing or the build fails.
    """
    path = tool_path(package, version, binary, ldflags)
    if _executable(path):
        return path
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.parent.parent / f".{path.parent.name}.lock", log, binary):
        if not _executable(path):  # nobody built it while we waited
            _build_tool(package, version, path, ldflags, check, sums, log)
    return path


def ensure_go_module_files(
    module: str,
    version: str,
    files: Sequence[str],
    *,
    name: str | None = None,
    log: Log = _logger.info,
) -> Path:
    """A cache directory holding ``files`` (paths inside Go ``module`` at ``version``).

    The files keep their base names. ``name`` (default: the module's last path element)
    names the directory: ``cache_root()/modules/<name>-<version>/``.
    """
    directory = cache_root() / "modules" / f"{name or module.rsplit('/', 1)[-1]}-{version}"
    wanted = [directory / Path(f).name for f in files]
    if all(p.is_file() for p in wanted):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(directory.parent / f".{directory.name}.lock", log, directory.name):
        if not all(p.is_file() for p in wanted):
            _copy_module_files(module, version, files, directory, log)
    return directory


# --- internals ----------------------------------------------------------------


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _require_go(what: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolError(
            f"the Go toolchain ('go') is not on PATH; it is needed once to build {what} "
            f"into {tools_dir()} (later runs reuse it). Install Go >= 1.26."
        )
    return go


def _build_tool(
    package: str,
    version: str,
    path: Path,
    ldflags: Sequence[str],
    check: Sequence[str],
    sums: Sequence[str],
    log: Log,
) -> None:
    go = _require_go(f"{path.name} {version}")
    started = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"building {path.name} {version} from {package} into {path.parent} (once per machine)")
    with tempfile.TemporaryDirectory(prefix=".build-", dir=path.parent.parent) as scratch:
        module_dir, staged = Path(scratch) / "module", Path(scratch) / "bin"
        module_dir.mkdir()
        staged.mkdir()
        if sums:
            (module_dir / "go.sum").write_text("".join(f"{line}\n" for line in sums))
        # A throw-away module requiring the tool's (as lifeboat-sandbox assets builds etcd):
        # the versions the tool's own go.mod pins, resolved once, nothing in the repository.
        steps = [
            (
                ["mod", "init", f"lifeboat.local/tools/{path.name}"],
                f"creating the {path.name} module",
            ),
            (["get", f"{package}@{version}"], f"resolving {path.name} {version} dependencies"),
            (
                [
                    "build",
                    "-trimpath",
                    "-buildvcs=false",
                    "-ldflags",
                    " ".join(["-s", "-w", *ldflags]),
                    "-o",
                    str(staged / path.name),
                    package,
                ],
                f"compiling {path.name} {version} (go build)",
            ),
        ]
        try:
            for args, step in steps:
                _go(go, args, module_dir, log, step)
        except AssetsError as error:
            raise ToolError(str(error)) from None
        built = staged / path.name
        if not _executable(built):
            raise ToolError(f"building {package}@{version} produced no {path.name}")
        result = subprocess.run(
            [str(built), *check], capture_output=True, text=True, check=False, timeout=60
        )
        if result.returncode != 0:
            raise ToolError(
                f"freshly built {path.name} fails `{path.name} {' '.join(check)}`: "
                f"{(result.stdout + result.stderr).strip()!r}"
            )
        built.rename(path)
    log(f"{path.name} {version} ready at {path} (built in {_elapsed(started)})")


def _copy_module_files(
    module: str, version: str, files: Sequence[str], directory: Path, log: Log
) -> None:
    go = _require_go(f"files of {module} {version}")
    log(f"fetching {', '.join(files)} from {module}@{version} (go mod download)")
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=directory.parent) as scratch:
        try:
            download = _go_json(
                go, ["mod", "download", "-json", f"{module}@{version}"], Path(scratch)
            )
        except AssetsError as error:
            raise ToolError(str(error)) from None
        source = Path(download["Dir"])
        staged = Path(scratch) / "files"
        staged.mkdir()
        for relative in files:
            origin = source / relative
            if not origin.is_file():
                raise ToolError(f"{module}@{version} has no file {relative}")
            shutil.copyfile(origin, staged / origin.name)
        if directory.exists():
            shutil.rmtree(directory)  # incomplete leftovers; we hold the lock
        staged.rename(directory)


# --- monitoring tools -------------------------------------------------------------

DASHBOARD_LINTER_PACKAGE = "github.com/grafana/dashboard-linter"
DASHBOARD_LINTER_VERSION = "v0.0.0-20241224134444-1765d94aec4a"
# The module proxy serves this pseudo-version but the checksum database does not: pin it.
DASHBOARD_LINTER_SUMS = (
    f"{DASHBOARD_LINTER_PACKAGE} {DASHBOARD_LINTER_VERSION} "
    "h1:wpyAYX8+Rqu0LIEE7zXBR/qjBH4t0yXvqlRGa1wD5rg=",
    f"{DASHBOARD_LINTER_PACKAGE} {DASHBOARD_LINTER_VERSION}/go.mod "
    "h1:aeONzEz1tWGxQvxYm5DFxxaJ90JINhRT50TrZ0oXuJM=",
)
PROMTOOL_ENV = "PROMTOOL"
PROMETHEUS_ENV = "PROMETHEUS"
ALERTMANAGER_ENV = "ALERTMANAGER"
BLACKBOX_EXPORTER_ENV = "BLACKBOX_EXPORTER"
BLACKBOX_EXPORTER_DEB = "prometheus-blackbox-exporter"


def ensure_dashboard_linter(log: Log = _logger.info) -> Path:
    """Grafana's dashboard linter, built from its Go module on first use."""
    return ensure_go_tool(
        DASHBOARD_LINTER_PACKAGE,
        DASHBOARD_LINTER_VERSION,
        "dashboard-linter",
        check=("rules",),
        sums=DASHBOARD_LINTER_SUMS,
        log=log,
    )


@dataclass(frozen=True)
class DebianPin:
    """One version of one of Debian's packages, and the SHA-256 of its ``.deb`` for each
    architecture (``dpkg --print-architecture``) it is pinned for (``all``: an
    architecture-independent package)."""

    package: str
    version: str
    sha256: Mapping[str, str]

    @property
    def folder(self) -> str:
        """The cache folder's name: ``<package>-<version>`` (an epoch's ``:`` as ``_``)."""
        return f"{self.package}-{self.version.replace(':', '_')}"


# Prometheus and promtool (one package: the rules are checked by the promtool of the
# Prometheus that evaluates them) and Alertmanager, from Debian 12 (bookworm). A new pin
# needs both figures: `apt-get download prometheus=<version>` and `sha256sum` the .deb.
PROMETHEUS_PIN = DebianPin(
    "prometheus",
    "2.42.0+ds-5+deb12u1",
    {"amd64": "81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"},
)
ALERTMANAGER_PIN = DebianPin(
    "prometheus-alertmanager",
    "0.25.0-1+b4",
    {"amd64": "4fb9aed15cfe8e0c32408e643ab32a1e41ee87d2cc26f18aeba928b1b0b98ae7"},
)
# The libraries of Prometheus' (classic) web pages, which Debian's prometheus depends on
# instead of shipping them: its usr/share/prometheus/web/static links into
# /usr/share/javascript. Architecture-independent packages: one SHA-256 each ("all").
PROMETHEUS_WEB_PINS = tuple(
    DebianPin(package, version, {"all": sha256})
    for package, version, sha256 in (
        (
            "libjs-jquery",
            "3.6.1+dfsg+~3.5.14-1",
            "a58c9ff6afe96c769cb6535754c909410760e4efa1e1540236194e489adcfb25",
        ),
        (
            "libjs-jquery-hotkeys",
            "0~20130707+git2d51e3a9+dfsg-2.1",
            "4a1eccaad84f0208932d5574864d9975022d5edc192799104f06082adadb9d91",
        ),
        (
            "libjs-popper.js",
            "1.16.1+ds-6",
            "4eac75024544eb50b93141586317671d20feb7c405adbe5ab426dfb8bccb1dbc",
        ),
        (
            "libjs-bootstrap4",
            "4.6.1+dfsg1-4+deb12u1",
            "975b5761281c694676757aa48c5f9a5e4d093c8d661b885221eaccce811bc58b",
        ),
        (
            "fonts-glyphicons-halflings",
            "1.009~3.4.1+dfsg-3+deb12u2",
            "5a570d64fab14243a277771c9d5493f2b0e0e15e77a04c57caf3f28274d194bf",
        ),
        (
            "libjs-d3",
            "3.5.17-4",
            "08b73c423d0a3bb7b657eebf5f7ebac501931cbdcf6422da3a634f7baa263749",
        ),
        (
            "libjs-rickshaw",
            "1.5.1.dfsg-5",
            "6e9328a86c2d4d8f84f8404467484dfe94f72d932d5a546771a7b10cd725ccc1",
        ),
        (
            "libjs-moment",
            "2.29.4+ds-1",
            "1d77475a3db570ac3b8ab56cf612bd64271f4da367e8819ee59ecf43eb25c180",
        ),
        (
            "libjs-moment-timezone",
            "0.5.40+dfsg-1+2023c",
            "6b4673458531f2ea331f130dd9e88dfaf684175dd2973d3911b6a2ff55a664f0",
        ),
        (
            "libjs-eonasdan-bootstrap-datetimepicker",
            "4.17.47-6",
            "335cc1896e77b7664e611d50a78c373d03a064c31f379ccfdf7e660b6bc43dd2",
        ),
        (
            "libjs-mustache",
            "3.0.1-1",
            "ab00ed3fa806a37de9399975ab1780786a160619eeb96abd8f9d09bfd864b22f",
        ),
    )
)
# Debian's Alertmanager ships its web UI unbuilt (ui/ is empty): this page stands in for it.
ALERTMANAGER_NO_UI = "usr/share/prometheus/alertmanager/no-ui"


def ensure_promtool(log: Log = _logger.info) -> Path:
    """Prometheus' ``promtool``: ``$PROMTOOL`` when set, else from Debian's ``prometheus``
    package at :data:`PROMETHEUS_PIN` (see :func:`ensure_pinned_debian_package`)."""
    return _pinned_binary(PROMETHEUS_PIN, "usr/bin/promtool", PROMTOOL_ENV, log)


def ensure_prometheus(log: Log = _logger.info) -> Path:
    """The Prometheus server: ``$PROMETHEUS`` when set, else from Debian's ``prometheus``
    package at :data:`PROMETHEUS_PIN`."""
    return _pinned_binary(PROMETHEUS_PIN, "usr/bin/prometheus", PROMETHEUS_ENV, log)


def ensure_alertmanager(log: Log = _logger.info) -> Path:
    """Alertmanager: ``$ALERTMANAGER`` when set, else from Debian's
    ``prometheus-alertmanager`` package at :data:`ALERTMANAGER_PIN`."""
    return _pinned_binary(
        ALERTMANAGER_PIN, "usr/bin/prometheus-alertmanager", ALERTMANAGER_ENV, log
    )


def ensure_amtool(log: Log = _logger.info) -> Path:
    """Alertmanager's ``amtool`` (``check-config``), from the same package and version."""
    return ensure_pinned_debian_package(ALERTMANAGER_PIN, ("usr/bin/amtool",), log=log) / (
        "usr/bin/amtool"
    )


def ensure_prometheus_web(log: Log = _logger.info) -> list[Path]:
    """The ``usr/share`` folders of :data:`PROMETHEUS_WEB_PINS`, unpacked (once)."""
    return [
        ensure_pinned_debian_package(pin, (), log=log) / "usr" / "share"
        for pin in PROMETHEUS_WEB_PINS
    ]


def _pinned_binary(pin: DebianPin, binary: str, env: str, log: Log) -> Path:
    given = os.environ.get(env)
    if given:
        if not _executable(Path(given)):
            raise ToolError(f"${env} is {given}, which is not an executable file")
        return Path(given)
    return ensure_pinned_debian_package(pin, (binary,), log=log) / binary


def ensure_pinned_debian_package(
    pin: DebianPin, executables: Sequence[str], *, log: Log = _logger.info
) -> Path:
    """The folder holding Debian's ``pin.package`` at ``pin.version``, unpacked: fetched
    with ``apt-get download`` (nothing installed on the system), its ``.deb`` checked
    against the pinned SHA-256, unpacked with ``dpkg-deb -x`` into
    ``tools_dir()/<package>-<version>/`` once per machine, under a file lock shared by
    concurrent runs. ``executables`` (paths inside the package) must be there and run
    with ``--version``. A version Debian no longer serves, or a ``.deb`` of another
    checksum, is an error: the pin is updated in the source, never silently."""
    root = tools_dir() / pin.folder
    if root.is_dir() and all(_executable(root / e) for e in executables):
        return root
    for command in ("apt-get", "dpkg", "dpkg-deb"):
        if shutil.which(command) is None:
            raise ToolError(
                f"{command} not found: {pin.package} {pin.version} comes from Debian's "
                "packages (apt-get download, dpkg-deb -x)"
            )
    architecture = _run(["dpkg", "--print-architecture"]).stdout.strip()
    expected = pin.sha256.get(architecture) or pin.sha256.get("all")
    if expected is None:
        raise ToolError(
            f"{pin.package} {pin.version} is pinned for {', '.join(sorted(pin.sha256))} only, "
            f"not {architecture}: add its .deb's SHA-256 to the pin in {__name__}"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root.parent / f".{root.name}.lock", log, pin.package):
        if root.is_dir() and all(_executable(root / e) for e in executables):
            return root
        log(f"fetching Debian's {pin.package} {pin.version} into {root} (once per machine)")
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root.parent) as scratch:
            deb = _download_pinned(pin, Path(scratch), log)
            actual = hashlib.sha256(deb.read_bytes()).hexdigest()
            if actual != expected:
                raise ToolError(
                    f"{deb.name} has SHA-256 {actual}, not the pinned {expected}: refusing it"
                )
            staged = Path(scratch) / "root"
            _run(["dpkg-deb", "-x", str(deb), str(staged)])
            for executable in executables:
                found = staged / executable
                if not _executable(found):
                    raise ToolError(f"{pin.package} {pin.version} has no {executable}")
                check = subprocess.run(
                    [str(found), "--version"],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=60,
                )
                if check.returncode != 0:
                    raise ToolError(f"{executable} of {pin.package} {pin.version} does not run")
            if root.exists():
                shutil.rmtree(root)  # an older, incomplete unpacking; we hold the lock
            staged.rename(root)
    log(f"{pin.package} {pin.version} ready in {root}")
    return root


def _download_pinned(pin: DebianPin, into: Path, log: Log) -> Path:
    wanted = f"{pin.package}={pin.version}"
    for attempt in range(2):
        result = subprocess.run(
            ["apt-get", "download", wanted],
            cwd=into,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        debs = list(into.glob("*.deb"))
        if result.returncode == 0 and len(debs) == 1:
            return debs[0]
        if attempt == 0:  # a fresh machine may have no package lists yet
            log(f"apt-get download {wanted} failed; running apt-get update")
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
    raise ToolError(
        f"`apt-get download {wanted}` failed: {result.stderr.strip()} (Debian may no longer "
        f"serve that version: update the pin in {__name__})"
    )


def ensure_blackbox_exporter(log: Log = _logger.info) -> Path:
    """Prometheus' blackbox_exporter (the probe benchmark's peer): ``$BLACKBOX_EXPORTER``
    when set, else taken from Debian's package of that name (see :func:`ensure_debian_tool`)."""
    return ensure_debian_tool(
        BLACKBOX_EXPORTER_DEB, "prometheus-blackbox-exporter", BLACKBOX_EXPORTER_ENV, log=log
    )


def ensure_debian_tool(package: str, binary: str, env: str, *, log: Log = _logger.info) -> Path:
    """``usr/bin/<binary>`` of Debian's ``package``: ``$<env>`` when set, else fetched with
    ``apt-get download`` and unpacked with ``dpkg-deb -x`` (nothing installed on the
    system) into ``tools_dir()/<binary>-<version>/`` once per machine and version, under a
    file lock shared by concurrent runs."""
    given = os.environ.get(env)
    if given:
        if not _executable(Path(given)):
            raise ToolError(f"${env} is {given}, which is not an executable file")
        return Path(given)
    for command in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(command) is None:
            raise ToolError(
                f"{command} not found: {binary} comes from Debian's {package} package; "
                f"set ${env} to a {binary} binary instead"
            )
    version = _debian_candidate(package, log)
    path = tools_dir() / f"{binary}-{version.replace(':', '_')}" / binary
    if _executable(path):
        return path
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.parent.parent / f".{path.parent.name}.lock", log, binary):
        if not _executable(path):
            _extract_debian_binary(package, version, binary, path, log)
    return path


def ensure_debian_program(
    packages: Sequence[str], program: str, env: str, *, log: Log = _logger.info
) -> tuple[Path, Path]:
    """A program of Debian's ``packages[0]`` that needs shared libraries of the others
    (e.g. BIND 9's ``usr/sbin/named``, with ``bind9-libs`` and what they link): ``$<env>``
    when set (then the system's libraries), else every package fetched with ``apt-get
    download`` and unpacked (nothing installed on the system) into one folder under
    ``tools_dir()``, once per machine and version of the first package. Returns the
    program and the folder to put on ``LD_LIBRARY_PATH``."""
    given = os.environ.get(env)
    if given:
        if not _executable(Path(given)):
            raise ToolError(f"${env} is {given}, which is not an executable file")
        return Path(given), Path(given).parent
    for command in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(command) is None:
            raise ToolError(
                f"{command} not found: {program} comes from Debian's {packages[0]} package; "
                f"set ${env} to it instead"
            )
    version = _debian_candidate(packages[0], log)
    root = tools_dir() / f"{packages[0]}-{version.replace(':', '_')}"
    path = root / program
    libraries = root / "usr" / "lib" / "x86_64-linux-gnu"
    if _executable(path):
        return path, libraries
    root.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root.parent / f".{root.name}.lock", log, packages[0]):
        if _executable(path):
            return path, libraries
        log(f"fetching {program} from Debian's {', '.join(packages)} into {root}")
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root.parent) as scratch:
            wanted = [f"{packages[0]}={version}", *packages[1:]]
            _run(["apt-get", "download", *wanted], cwd=Path(scratch))
            staged = Path(scratch) / "root"
            for deb in sorted(Path(scratch).glob("*.deb")):
                _run(["dpkg-deb", "-x", str(deb), str(staged)])
            if not _executable(staged / program):
                raise ToolError(f"{packages[0]} {version} has no {program}")
            if root.exists():
                shutil.rmtree(root)  # incomplete leftovers; we hold the lock
            staged.rename(root)
    log(f"{program} ({packages[0]} {version}) ready at {path}")
    return path, libraries


def debian_candidate_version(policy: str) -> str | None:
    """The ``Candidate:`` version in ``apt-cache policy`` output (None: no candidate)."""
    for line in policy.splitlines():
        key, _, version = line.strip().partition(":")
        if key == "Candidate":
            version = version.strip()
            return version if version and version != "(none)" else None
    return None


def _debian_candidate(package: str, log: Log) -> str:
    for attempt in range(2):
        policy = _run(["apt-cache", "policy", package]).stdout
        version = debian_candidate_version(policy)
        if version is not None:
            return version
        if attempt == 0:  # a fresh machine may have no package lists yet
            log(f"no {package} package known to apt; running apt-get update")
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
    raise ToolError(f"Debian offers no {package} package here (apt-cache policy: {policy!r})")


def _extract_debian_binary(package: str, version: str, binary: str, path: Path, log: Log) -> None:
    log(f"fetching {binary} from Debian's {package} {version} into {path.parent}")
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=path.parent.parent) as scratch:
        _run(["apt-get", "download", f"{package}={version}"], cwd=Path(scratch))
        debs = list(Path(scratch).glob("*.deb"))
        if len(debs) != 1:
            raise ToolError(f"apt-get download {package}={version} gave {debs}")
        unpacked = Path(scratch) / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
        found = unpacked / "usr" / "bin" / binary
        if not _executable(found):
            raise ToolError(f"{package} {version} has no usr/bin/{binary}")
        check = subprocess.run(
            [str(found), "--version"], capture_output=True, text=True, check=False, timeout=60
        )
        if check.returncode != 0:
            raise ToolError(f"{binary} from {package} {version} does not run: {check}")
        staged = Path(scratch) / "staged"
        staged.mkdir()
        found.rename(staged / binary)
        if path.parent.exists():
            shutil.rmtree(path.parent)  # incomplete leftovers; we hold the lock
        staged.rename(path.parent)
    log(f"{binary} {version} ready at {path}")


def _run(args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, check=False, timeout=600
    )
    if result.returncode != 0:
        raise ToolError(f"`{' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result
