"""rclone, the peer Lifeboat's object replication is measured against.

Taken from Debian's ``rclone`` package: downloaded with ``apt-get download`` and unpacked
with ``dpkg-deb -x`` into ``~/.cache/lifeboat/tools/`` (nothing is installed on the
system), once per machine and version, under a file lock so that concurrent runs share it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from controller.sandbox.assets import cache_root

PACKAGE = "rclone"


class RcloneError(RuntimeError):
    """rclone could not be fetched."""


def _candidate_version() -> str:
    for attempt in range(2):
        out = subprocess.run(
            ["apt-cache", "policy", PACKAGE], check=True, capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            if line.strip().startswith("Candidate:"):
                version = line.split(":", 1)[1].strip()
                if version and version != "(none)":
                    return version
        if attempt == 0:  # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    raise RcloneError(f"Debian has no {PACKAGE} package here:\n{out}")


def ensure_rclone() -> Path:
    """The path of an ``rclone`` binary (``$RCLONE`` when set)."""
    given = os.environ.get("RCLONE")
    if given:
        return Path(given)
    if shutil.which("apt-get") is None:
        raise RcloneError("apt-get not found: set RCLONE to an rclone binary")
    version = _candidate_version()
    home = cache_root() / "tools" / f"rclone-{version.replace(':', '_')}"
    binary = home / "usr" / "bin" / "rclone"
    if binary.exists():
        return binary
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / "rclone.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():
            return binary
        with tempfile.TemporaryDirectory(dir=home.parent) as scratch:
            subprocess.run(
                ["apt-get", "download", f"{PACKAGE}={version}"],
                cwd=scratch,
                check=True,
                capture_output=True,
            )
            (deb,) = Path(scratch).glob("*.deb")
            unpacked = Path(scratch) / "root"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
            unpacked.rename(home)
    if not binary.exists():
        raise RcloneError(f"{PACKAGE} {version} has no usr/bin/rclone")
    return binary
