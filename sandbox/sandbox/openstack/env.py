"""The isolated Python environment that runs real Keystone and Swift for the sandbox.

Keystone, Swift, keystonemiddleware and uWSGI bring ~100 packages (eventlet,
oslo.*, SQLAlchemy, ...) whose pins must never mix with Lifeboat's own. They
live in a virtualenv of their own, pinned by ``requirements.txt``
beside this module, found in one of two places:

* ``$LIFEBOAT_OPENSTACK_VENV``: a virtualenv that already holds those packages
  (for instance baked into a CI image). Used as is; only checked for the
  executables the sandbox runs.
* otherwise it is built once with uv into
  ``cache_root()/openstack/<python tag>-<requirements hash>/`` and reused
  afterwards. Any edit of the requirements file, or another Python version,
  gives another directory (old ones can be deleted by hand).

Building runs ``sys.executable -m uv venv --relocatable`` and ``uv pip sync
--strict --compile-bytecode`` into a scratch directory next to the target,
checks the result and renames it into place, so an interrupted build never
leaves a half-made environment behind. Concurrent callers (pytest-xdist
workers, a demo next to a test run) serialise on an exclusive file lock: the
first one builds, the others wait and reuse.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.assets import AssetsError, cache_root, exclusive_lock

REQUIREMENTS_FILE = Path(__file__).with_name("requirements.txt")
VENV_ENV = "LIFEBOAT_OPENSTACK_VENV"

# What the sandbox starts from the environment, and the modules they import.
EXECUTABLES = ("python", "uwsgi")
MODULES = ("keystone", "swift", "keystonemiddleware", "pyuwsgi")

_OUTPUT_TAIL_LINES = 40
_CHECK_TIMEOUT_SECONDS = 120.0

Log = Callable[[str], None]

_logger = logging.getLogger(__name__)


class OpenStackEnvError(RuntimeError):
    """The isolated OpenStack environment can neither be found nor built."""


@dataclass(frozen=True)
class OpenStackEnv:
    """A virtualenv holding Keystone, Swift, keystonemiddleware and uWSGI."""

    root: Path
    source: str  # "built" or "LIFEBOAT_OPENSTACK_VENV"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin_dir / "python"

    @property
    def uwsgi(self) -> Path:
        return self.bin_dir / "uwsgi"

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for processes run from this virtualenv.

        Starts from this process's environment without anything that would
        leak Lifeboat's own interpreter settings into it (``PYTHONPATH``,
        ``PYTHONHOME``, another ``VIRTUAL_ENV``); turns off eventlet's
        dnspython-based resolver, which costs a second of start-up per process
        and is useless on loopback.
        """
        environment = {
            name: value
            for name, value in os.environ.items()
            if name not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        }
        environment["VIRTUAL_ENV"] = str(self.root)
        environment["PATH"] = os.pathsep.join([str(self.bin_dir), environment.get("PATH", "")])
        environment["EVENTLET_NO_GREENDNS"] = "yes"
        environment["PYTHONUNBUFFERED"] = "1"
        environment.update(extra or {})
        return environment


def requirements_key(requirements: Path = REQUIREMENTS_FILE) -> str:
    """``<python tag>-<first 16 hex digits of the requirements' SHA-256>``."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    return f"{sys.implementation.cache_tag}-{digest}"


def built_env_dir() -> Path:
    """Where the environment for the current requirements file is (or will be) built."""
    try:
        root = cache_root()
    except AssetsError as error:
        raise OpenStackEnvError(str(error)) from error
    return root / "openstack" / requirements_key()


def ensure_openstack_env(log: Log = _logger.info) -> OpenStackEnv:
    """Locate the OpenStack environment, building it on first use.

    ``log`` receives progress messages (a first build downloads ~100 packages,
    ~25 MB, and takes about half a minute; ~15 s when uv's cache has them).
    Raises :class:`OpenStackEnvError` when ``$LIFEBOAT_OPENSTACK_VENV`` is
    unusable, or when the environment must be built and the build is
    impossible or fails.
    """
    explicit = os.environ.get(VENV_ENV)
    if explicit:
        root = Path(explicit).expanduser().resolve()
        problem = _unusable(root) or _missing_modules(root)
        if problem:
            raise OpenStackEnvError(
                f"${VENV_ENV} points at {root}, which is not a usable OpenStack environment: "
                f"{problem}. Unset it to let Lifeboat build one, or install "
                f"{REQUIREMENTS_FILE.name} into it"
            )
        return OpenStackEnv(root, source=VENV_ENV)

    target = built_env_dir()
    if _unusable(target) is None:
        return OpenStackEnv(target, source="built")
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.parent / ".lock", log, "the OpenStack environment"):
        if _unusable(target) is not None:  # nobody built it while we waited
            _build(target, log)
    return OpenStackEnv(target, source="built")


# --- checks ------------------------------------------------------------------------------


def _unusable(root: Path) -> str | None:
    """Why ``root`` cannot serve as the environment, or ``None`` when it can."""
    if not root.is_dir():
        return f"{root} does not exist"
    for name in EXECUTABLES:
        path = root / "bin" / name
        # is_file() follows the interpreter symlink: a removed base Python shows here.
        if not path.is_file() or not os.access(path, os.X_OK):
            return f"{path} is missing or not executable"
    return None


def _missing_modules(root: Path) -> str | None:
    """Ask the environment's interpreter whether it can import what the sandbox runs."""
    probe = (
        "import importlib.util, sys; "
        "missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]; "
        "print(' '.join(missing))"
    )
    try:
        result = subprocess.run(
            [str(root / "bin" / "python"), "-c", probe, *MODULES],
            capture_output=True,
            text=True,
            check=False,
            timeout=_CHECK_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"its interpreter does not run: {error}"
    if result.returncode != 0:
        return f"its interpreter failed: {result.stderr.strip()[-500:]}"
    missing = result.stdout.split()
    return f"it lacks the modules {', '.join(missing)}" if missing else None


# --- building ----------------------------------------------------------------------------


def _build(target: Path, log: Log) -> None:
    """Build into a scratch directory beside ``target``, check it, then rename it into place."""
    _require_uv()
    for stale in target.parent.glob(".build-*"):  # builds that were killed; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    log(
        f"building the OpenStack environment (Keystone, Swift, uWSGI) into {target} with uv; "
        f"this takes about half a minute and happens once, later runs reuse it "
        f"(set ${VENV_ENV} to use a prepared one instead)"
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=target.parent) as scratch:
        staged = Path(scratch) / "venv"
        uv = [sys.executable, "-m", "uv"]
        _run(
            [*uv, "venv", "--no-project", "--relocatable", "--python", sys.executable, str(staged)],
            log,
            "creating the virtualenv (uv venv)",
            target.parent,
        )
        _run(
            [
                *uv,
                "pip",
                "sync",
                "--strict",
                "--compile-bytecode",
                "--python",
                str(staged / "bin" / "python"),
                str(REQUIREMENTS_FILE),
            ],
            log,
            f"installing the pinned packages of {REQUIREMENTS_FILE.name} (uv pip sync)",
            target.parent,
        )
        problem = _unusable(staged) or _missing_modules(staged)
        if problem:
            raise OpenStackEnvError(
                f"the freshly built OpenStack environment is unusable: {problem}"
            )
        if target.exists():
            shutil.rmtree(target)  # a broken leftover (its interpreter is gone); we hold the lock
        staged.rename(target)
    log(f"OpenStack environment ready in {target} (built in {time.monotonic() - started:.0f} s)")


def _require_uv() -> None:
    if importlib.util.find_spec("uv") is None:
        raise OpenStackEnvError(
            f"uv is not installed for {sys.executable}; it builds the isolated OpenStack "
            f"environment and comes with Lifeboat's 'sandbox' extra (make test / make demo "
            f"install it). Or set ${VENV_ENV} to a virtualenv with {REQUIREMENTS_FILE.name} "
            "installed"
        )


def _uv_env() -> dict[str, str]:
    """uv's environment: this interpreter only, never a downloaded one, no active venv."""
    environment = {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}
    environment["UV_PYTHON_DOWNLOADS"] = "never"
    environment["NO_COLOR"] = "1"
    return environment


def _run(argv: Sequence[str], log: Log, step: str, cwd: Path) -> None:
    """Run a build step, passing its output to ``log`` line by line."""
    log(step)
    tail: deque[str] = deque(maxlen=_OUTPUT_TAIL_LINES)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_uv_env(),
            cwd=cwd,
        )
    except OSError as error:
        raise OpenStackEnvError(f"{step} failed: cannot run {argv[0]}: {error}") from error
    assert process.stdout is not None  # stdout=PIPE
    with process.stdout:
        for raw in process.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            log(f"  {line}")
    returncode = process.wait()
    if returncode != 0:
        output = "\n".join(tail)
        raise OpenStackEnvError(
            f"{step} failed: `{' '.join(argv)}` exited with {returncode}; last output:\n{output}"
        )
