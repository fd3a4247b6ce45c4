"""Control-plane binaries for the sandbox: kube-apiserver, etcd and kubectl.

The sandbox runs a real kube-apiserver backed by a real etcd, the way
controller-runtime's envtest does. The binaries come from one of two places:

* ``$KUBEBUILDER_ASSETS``: a directory that already holds ``kube-apiserver``,
  ``etcd`` and ``kubectl`` (for instance prepared by ``setup-envtest``). Used
  as is, no version check.
* otherwise they are built once from source with the Go toolchain into
  ``cache_root()/envtest/k8s-<ver>_etcd-<ver>/bin/`` and reused afterwards.

Building uses throw-away Go modules created inside the cache directory, never
in the repository:

* Kubernetes: a module requiring ``k8s.io/kubernetes`` with one ``replace``
  per staging module (upstream points them at ``./staging/src/k8s.io/X``,
  which only exists in the Kubernetes repository; the published equivalents
  are ``k8s.io/X v0.<minor>.<patch>``). The version is stamped in with
  ``-ldflags -X`` so that ``--version`` and ``/version`` report the release
  instead of ``v0.0.0-master``.
* etcd: a module that ``go get``s ``go.etcd.io/etcd/server/v3``.

Concurrent callers (pytest-xdist workers, a demo next to a test run) serialise
on an exclusive file lock: the first one builds, the others wait and reuse.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

K8S_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"  # the etcd release that Kubernetes K8S_VERSION pins

ASSETS_ENV = "KUBEBUILDER_ASSETS"
CACHE_ENV = "LIFEBOAT_CACHE_DIR"

KUBE_APISERVER = "kube-apiserver"
ETCD = "etcd"
KUBECTL = "kubectl"
BINARIES = (KUBE_APISERVER, ETCD, KUBECTL)

_SOURCE_TREE = Path(__file__).resolve().parents[2]
_HEARTBEAT_SECONDS = 30.0
_OUTPUT_TAIL_LINES = 40

_KUBERNETES_MODULE = "k8s.io/kubernetes"
_KUBERNETES_COMMANDS = (
    f"{_KUBERNETES_MODULE}/cmd/kube-apiserver",
    f"{_KUBERNETES_MODULE}/cmd/kubectl",
)
_ETCD_SERVER_MODULE = "go.etcd.io/etcd/server/v3"
_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")

Log = Callable[[str], None]

_logger = logging.getLogger(__name__)


class AssetsError(RuntimeError):
    """The control-plane binaries can neither be found nor built."""


@dataclass(frozen=True)
class Assets:
    """Paths of the control-plane binaries and where they came from."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    source: str  # "KUBEBUILDER_ASSETS" or "built"


def cache_root() -> Path:
    """Lifeboat's cache directory (absolute).

    ``$LIFEBOAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lifeboat``, else
    ``~/.cache/lifeboat``. Refuses a location inside the source tree: build
    products and Go modules must never end up in the repository.
    """
    explicit = os.environ.get(CACHE_ENV)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if explicit:
        root = Path(explicit).expanduser()
    elif xdg:
        root = Path(xdg).expanduser() / "lifeboat"
    else:
        root = Path.home() / ".cache" / "lifeboat"
    root = root.resolve()
    if root.is_relative_to(_SOURCE_TREE):
        raise AssetsError(
            f"cache directory {root} is inside the source tree {_SOURCE_TREE}; "
            f"point ${CACHE_ENV} (or $XDG_CACHE_HOME) somewhere else"
        )
    return root


def built_assets_dir() -> Path:
    """The directory that holds (or will hold) the binaries built from source."""
    return cache_root() / "envtest" / f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}" / "bin"


def ensure_assets(log: Log = _logger.info) -> Assets:
    """Locate the control-plane binaries, building them on first use.

    ``log`` receives progress messages (the first build takes minutes).
    Raises AssetsError when ``$KUBEBUILDER_ASSETS`` is incomplete, or when
    the binaries must be built and the build is impossible or fails.
    """
    explicit = os.environ.get(ASSETS_ENV)
    if explicit:
        return _assets_in(Path(explicit), source=ASSETS_ENV)

    bin_dir = built_assets_dir()
    if not _missing_binaries(bin_dir):
        return _assets_in(bin_dir, source="built")

    bin_dir.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(bin_dir.parent / ".lock", log, "the sandbox binaries"):
        if _missing_binaries(bin_dir):  # nobody built them while we waited
            _build(bin_dir, log)
    return _assets_in(bin_dir, source="built")


# --- locating -----------------------------------------------------------------


def _missing_binaries(directory: Path) -> list[str]:
    return [
        name
        for name in BINARIES
        if not (directory / name).is_file() or not os.access(directory / name, os.X_OK)
    ]


def _assets_in(directory: Path, *, source: str) -> Assets:
    missing = _missing_binaries(directory)
    if missing:
        origin = f"${ASSETS_ENV}" if source == ASSETS_ENV else "the asset cache"
        raise AssetsError(
            f"{origin} directory {directory} lacks executable {', '.join(missing)} "
            f"(it must contain {', '.join(BINARIES)})"
        )
    return Assets(
        kube_apiserver=directory / KUBE_APISERVER,
        etcd=directory / ETCD,
        kubectl=directory / KUBECTL,
        source=source,
    )


@contextmanager
def exclusive_lock(path: Path, log: Log, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` while building ``what`` into the cache, saying
    so when another process holds it and we have to wait (it builds; we reuse)."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building {what}; waiting for {path}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- go.mod generation (pure) -------------------------------------------------


def staging_version(k8s_version: str) -> str:
    """The version of the published staging modules: v1.36.3 -> v0.36.3."""
    match = re.fullmatch(r"v1\.(\d+\.\d+(?:-[0-9A-Za-z.-]+)?)", k8s_version)
    if match is None:
        raise AssetsError(
            f"unsupported Kubernetes version {k8s_version!r} (expected v1.<minor>.<patch>)"
        )
    return f"v0.{match.group(1)}"


def _gomod_directives(gomod: str) -> Iterator[tuple[str, list[str]]]:
    """Yield ``(verb, tokens)`` for each directive of a go.mod, blocks flattened."""
    block: str | None = None
    for line in gomod.splitlines():
        tokens = line.split("//", 1)[0].split()
        if not tokens:
            continue
        if block is not None:
            if tokens == [")"]:
                block = None
            else:
                yield block, tokens
        elif tokens[1:] == ["("]:
            block = tokens[0]
        else:
            yield tokens[0], tokens[1:]


def kubernetes_replacements(kubernetes_gomod: str, k8s_version: str) -> list[str]:
    """The ``replace`` lines a module depending on k8s.io/kubernetes needs.

    Staging replacements (``k8s.io/X => ./staging/src/k8s.io/X``) become the
    published ``k8s.io/X => k8s.io/X v0.<minor>.<patch>``; replacements by
    another module version are kept as they are, so the pins match upstream.
    """
    published = staging_version(k8s_version)
    lines = []
    for verb, tokens in _gomod_directives(kubernetes_gomod):
        if verb != "replace":
            continue
        arrow = tokens.index("=>")
        old, new = tokens[:arrow], tokens[arrow + 1 :]
        if new[0] == f"./staging/src/{old[0]}":
            lines.append(f"{old[0]} => {old[0]} {published}")
        elif new[0].startswith((".", "/")):
            raise AssetsError(
                f"{_KUBERNETES_MODULE} {k8s_version} replaces {old[0]} with the local path "
                f"{new[0]}, which cannot be reproduced outside the Kubernetes repository"
            )
        else:
            lines.append(" ".join(tokens))
    return lines


def render_kubernetes_gomod(kubernetes_gomod: str, k8s_version: str) -> str:
    """go.mod of the throw-away module that builds kube-apiserver and kubectl."""
    go_versions = [
        tokens[0] for verb, tokens in _gomod_directives(kubernetes_gomod) if verb == "go"
    ]
    if not go_versions:
        raise AssetsError(f"the go.mod of {_KUBERNETES_MODULE} {k8s_version} has no go directive")
    replacements = "".join(
        f"\t{line}\n" for line in kubernetes_replacements(kubernetes_gomod, k8s_version)
    )
    return (
        "module lifeboat.local/envtest/kubernetes\n\n"
        f"go {go_versions[0]}\n\n"
        f"require {_KUBERNETES_MODULE} {k8s_version}\n\n"
        f"replace (\n{replacements})\n"
    )


_TOOLS_GO = "//go:build tools\n\npackage tools\n\nimport (\n{imports})\n".format(
    imports="".join(f'\t_ "{command}"\n' for command in _KUBERNETES_COMMANDS)
)


def version_ldflags(k8s_version: str, build_date: str) -> str:
    """``-ldflags`` that strip the binaries and stamp the release version."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+.*", k8s_version)
    if match is None:
        raise AssetsError(f"unsupported Kubernetes version {k8s_version!r}")
    values = {
        "gitVersion": k8s_version,
        "gitMajor": match.group(1),
        "gitMinor": match.group(2),
        "buildDate": build_date,
    }
    stamps = [
        f"-X {package}.{key}={value}"
        for package in _VERSION_PACKAGES
        for key, value in values.items()
    ]
    return " ".join(["-s", "-w", *stamps])


# --- building -----------------------------------------------------------------


def _build(bin_dir: Path, log: Log) -> None:
    """Build all three binaries into a staging directory, then move it into place."""
    go = _require_go()
    version_dir = bin_dir.parent
    _remove_stale_builds(version_dir)
    log(
        f"building kube-apiserver and kubectl {K8S_VERSION} and etcd {ETCD_VERSION} from source "
        f"into {bin_dir}; the first build takes about 10 minutes on 2 cores, later runs reuse it "
        f"(set ${ASSETS_ENV} to use prebuilt binaries instead)"
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=version_dir) as scratch:
        staged = Path(scratch) / "bin"
        staged.mkdir()
        _build_kubernetes(go, Path(scratch) / "kubernetes", staged, log)
        _build_etcd(go, Path(scratch) / "etcd", staged, log)
        _verify_versions(staged)
        if bin_dir.exists():
            shutil.rmtree(bin_dir)  # incomplete leftovers; we hold the lock
        staged.rename(bin_dir)
    log(f"sandbox binaries ready in {bin_dir} (built in {_elapsed(started)})")


def _require_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise AssetsError(
            f"the Go toolchain ('go') is not on PATH; it is needed once to build kube-apiserver, "
            f"kubectl {K8S_VERSION} and etcd {ETCD_VERSION} for the sandbox. Install Go, or set "
            f"${ASSETS_ENV} to a directory holding {', '.join(BINARIES)} "
            f"(for instance from `setup-envtest use {K8S_VERSION.removeprefix('v')} -p path`)"
        )
    return go


def _remove_stale_builds(version_dir: Path) -> None:
    """Delete scratch directories of builds that were killed (we hold the lock)."""
    for stale in version_dir.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _build_kubernetes(go: str, module_dir: Path, out_dir: Path, log: Log) -> None:
    module_dir.mkdir()
    download = _go_json(
        go, ["mod", "download", "-json", f"{_KUBERNETES_MODULE}@{K8S_VERSION}"], module_dir
    )
    upstream_gomod = Path(download["GoMod"]).read_text(encoding="utf-8")
    release_time = json.loads(Path(download["Info"]).read_text(encoding="utf-8"))["Time"]
    (module_dir / "go.mod").write_text(
        render_kubernetes_gomod(upstream_gomod, K8S_VERSION), encoding="utf-8"
    )
    (module_dir / "tools.go").write_text(_TOOLS_GO, encoding="utf-8")
    _go(go, ["mod", "tidy"], module_dir, log, "resolving Kubernetes dependencies (go mod tidy)")
    _go(
        go,
        [
            "build",
            "-trimpath",
            "-buildvcs=false",
            "-ldflags",
            version_ldflags(K8S_VERSION, release_time),
            "-o",
            f"{out_dir}{os.sep}",
            *_KUBERNETES_COMMANDS,
        ],
        module_dir,
        log,
        "compiling kube-apiserver and kubectl (go build)",
    )


def _build_etcd(go: str, module_dir: Path, out_dir: Path, log: Log) -> None:
    module_dir.mkdir()
    _go(
        go,
        ["mod", "init", "lifeboat.local/envtest/etcd"],
        module_dir,
        log,
        "creating the etcd module",
    )
    _go(
        go,
        ["get", f"{_ETCD_SERVER_MODULE}@{ETCD_VERSION}"],
        module_dir,
        log,
        "resolving etcd dependencies",
    )
    _go(
        go,
        [
            "build",
            "-trimpath",
            "-buildvcs=false",
            "-ldflags",
            "-s -w",
            "-o",
            str(out_dir / ETCD),
            _ETCD_SERVER_MODULE,
        ],
        module_dir,
        log,
        "compiling etcd (go build)",
    )


def _verify_versions(bin_dir: Path) -> None:
    """Fail the build if a binary does not report the version it was built for."""
    checks = {
        KUBE_APISERVER: (["--version"], f"Kubernetes {K8S_VERSION}"),
        KUBECTL: (["version", "--client"], f"Client Version: {K8S_VERSION}"),
        ETCD: (["--version"], f"etcd Version: {ETCD_VERSION.removeprefix('v')}"),
    }
    for name, (args, expected) in checks.items():
        result = subprocess.run(
            [str(bin_dir / name), *args], capture_output=True, text=True, check=False, timeout=60
        )
        if expected not in result.stdout:
            raise AssetsError(
                f"freshly built {name} does not report {expected!r}: "
                f"{(result.stdout + result.stderr).strip()!r}"
            )


def _go_env() -> dict[str, str]:
    """Environment for the go command: static binaries, module mode, no workspace."""
    return {**os.environ, "CGO_ENABLED": "0", "GO111MODULE": "on", "GOWORK": "off"}


def _go_json(go: str, args: Sequence[str], cwd: Path) -> dict[str, Any]:
    result = subprocess.run(
        [go, *args], cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssetsError(f"`go {' '.join(args)}` failed:\n{result.stdout}{result.stderr}")
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def _go(go: str, args: Sequence[str], cwd: Path, log: Log, step: str) -> None:
    """Run a go command, streaming its output to ``log`` with a periodic heartbeat."""
    log(step)
    started = time.monotonic()
    process = subprocess.Popen(
        [go, *args],
        cwd=cwd,
        env=_go_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump_lines, args=(process.stdout, lines), daemon=True).start()
    tail: deque[str] = deque(maxlen=_OUTPUT_TAIL_LINES)
    while True:
        try:
            line = lines.get(timeout=_HEARTBEAT_SECONDS)
        except queue.Empty:
            log(f"  still {step}, {_elapsed(started)} elapsed")
            continue
        if line is None:
            break
        tail.append(line)
        log(f"  {line}")
    returncode = process.wait()
    if returncode != 0:
        output = "\n".join(tail)
        raise AssetsError(
            f"{step} failed: `go {' '.join(args)}` in {cwd} exited with {returncode}; "
            f"last output:\n{output}"
        )


def _pump_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    with stream:
        for line in stream:
            lines.put(line.rstrip("\n"))
    lines.put(None)


def _elapsed(started: float) -> str:
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    return f"{minutes}m{seconds:02d}s"
