"""What every benchmark's report shares: the machine and commit a run measured, and the
sections of ``bench/RESULTS.md`` (each run owns one section, found by its key; a new run
replaces only its own section and keeps everything else, the text written by hand
included)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

END_MARK = "<!-- end of bench run -->"


def write_section(path: Path, key: str, section: str, *, title: str) -> None:
    """Put a run's section into the report: in place of the section of an earlier run with
    the same key, else at the end. Everything else in the file (other runs, the text we
    write by hand around them) stays as it is. ``title`` heads a report written afresh."""
    begin = f"<!-- bench run {key} -->"
    block = f"{begin}\n{section.strip()}\n{END_MARK}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else f"{title}\n\n"
    start = text.find(begin)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        end = text.find(END_MARK, start)
        if end < 0:
            raise ValueError(f"{path}: the section {begin!r} has no {END_MARK!r}")
        rest = text[end + len(END_MARK) :].lstrip("\n")
        text = text[:start] + block + ("\n" + rest if rest else "")
    path.write_text(text, encoding="utf-8")


def commit() -> str:
    """The commit the benchmark runs (``+changes`` when the tree differs from it)."""
    here = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short=12", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> str:
    """The machine in one line: system, CPUs, memory, Python."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory = next(
        (
            int(line.split()[1]) // 1024 // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    system = f"{platform.system()} {platform.release()}"
    return (
        f"{system}, {os.cpu_count()} CPUs ({cpu}), {memory} GiB RAM, "
        f"Python {platform.python_version()}"
    )


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
