"""rclone, the peer Lifeboat's object replication is measured against: ``$RCLONE`` when
set, else Debian's ``rclone`` package unpacked into ``~/.cache/lifeboat/tools/`` (nothing
is installed on the system), once per machine and version."""

from __future__ import annotations

from pathlib import Path

from sandbox.tools import ensure_debian_tool


def ensure_rclone() -> Path:
    return ensure_debian_tool("rclone", "rclone", "RCLONE", log=print)
