"""Memory of one object replication pass, by bucket size (issue #17 item 8).

Not a test: ``python -m bench.memory --report bench/RESULTS.md`` (``make bench-memory``).

The engine (:class:`~controller.replication.objects.ObjectFlow`) runs against an in-process
fake store whose listings are generated on the fly (N keys, nothing held per object) and
whose only stored objects — Lifeboat's manifests — live in files on disk, so that what
``tracemalloc`` measures is the engine's own memory, not the fake store's. Two passes per
size, each measured on its own (peak of Python allocations above what was allocated
before the pass, ``tracemalloc``; and the process's peak RSS after it, which also counts
what C libraries allocate and what Python keeps in its arenas):

* ``first``: both ends hold the same N objects, no manifest yet: every key is recorded
  and the manifest is written (a failover's first pass, or the first after an upgrade);
* ``steady``: the next pass, from that manifest: nothing to copy.

Every size runs in a process of its own (RSS never goes down within one).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import commit, machine, write_section
from controller.providers.protocols import ObjectInfo, OpenedObject
from controller.replication.objects import FlowSettings, Location, ObjectFlow

TITLE = "# Benchmarks"
SIZES = (20_000, 200_000, 1_000_000)


def _etag(n: int) -> str:
    return hashlib.md5(str(n).encode(), usedforsecurity=False).hexdigest()


class GeneratedStore:
    """N objects listed in key order, generated as they are listed; Lifeboat's own objects
    (manifests) are kept in files under ``spool``."""

    def __init__(self, region: str, count: int, spool: Path) -> None:
        self.region = region
        self.count = count
        self.spool = spool

    def _file(self, key: str) -> Path:
        return self.spool / hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for n in range(self.count):
            yield ObjectInfo(f"objects/{n:09d}", 1000 + n % 1000, _etag(n), 1000.0)
            if n % 1000 == 0:
                await asyncio.sleep(0)

    async def head(self, key: str) -> ObjectInfo | None:
        raise AssertionError(f"no HEAD expected in this bench ({key})")

    async def get(self, key: str) -> AsyncIterator[bytes]:
        path = self._file(key)
        if not path.exists():
            raise KeyError(key)
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                yield chunk

    async def open(self, key: str) -> OpenedObject | None:
        raise AssertionError(f"no copy expected in this bench ({key})")

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        size: int,
        metadata: Mapping[str, str],
        *,
        md5_hex: str | None = None,
        replacing: bool = True,
    ) -> ObjectInfo:
        written = 0
        with self._file(key).open("wb") as file:
            async for chunk in chunks:
                file.write(chunk)
                written += len(chunk)
        return ObjectInfo(key, written, "manifest", time.time())

    async def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _measure(count: int) -> dict[str, Any]:
    results: dict[str, Any] = {"objects": count}
    with tempfile.TemporaryDirectory(prefix="lifeboat-bench-memory-") as spool:
        source = GeneratedStore("r1", count, Path(spool) / "source")
        target = GeneratedStore("r2", count, Path(spool) / "target")
        for store in (source, target):
            store.spool.mkdir()
        settings = FlowSettings(app="bench/memory", dataset="objects", epoch=1)
        tracemalloc.start()
        for name in ("first", "steady"):
            flow = ObjectFlow(settings, Location("a", source), Location("b", target))
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            began = time.perf_counter()
            assert await flow.scan(), flow.figures.last_error
            took = time.perf_counter() - began
            _, peak = tracemalloc.get_traced_memory()
            manifest = sum(f.stat().st_size for f in target.spool.iterdir())
            results[name] = {
                "peak_mib": round((peak - before) / 2**20, 1),
                "seconds": round(took, 1),
                "rss_mib": round(_rss_mib(), 1),
                "manifest_mib": round(manifest / 2**20, 1),
            }
            del flow
        tracemalloc.stop()
    return results


def _one(count: int) -> dict[str, Any]:
    """Measure ``count`` objects in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--one", str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _section(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"## Replication memory by bucket size ({datetime.now(tz=UTC):%Y-%m-%d})",
        "",
        f"Machine: {machine()}. Commit {commit()}. Command: `{command}`.",
        "",
        "One object flow against an in-process fake store (listings generated, manifests in",
        "files): `first` records every key and writes the manifest, `steady` is the next",
        "pass from it. Peak: Python allocations during the pass above what was allocated",
        "before it (`tracemalloc`); RSS: the process's peak resident set after the pass.",
        "",
        "| objects | pass | peak (MiB) | per object (bytes) | RSS (MiB) | seconds "
        "| manifest (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for name in ("first", "steady"):
            figures = result[name]
            per = figures["peak_mib"] * 2**20 / result["objects"]
            lines.append(
                f"| {result['objects']:,} | {name} | {figures['peak_mib']} | {per:.0f} | "
                f"{figures['rss_mib']} | {figures['seconds']} | {figures['manifest_mib']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--report", type=Path, default=None, help="write a section here")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(_measure(args.one))))
        return
    results = []
    for count in args.sizes:
        result = _one(count)
        print(json.dumps(result), flush=True)
        results.append(result)
    command = "python -m bench.memory " + " ".join(sys.argv[1:])
    section = _section(results, command.strip())
    print(section)
    if args.report is not None:
        write_section(args.report, "memory", section, title=TITLE)


if __name__ == "__main__":
    main()
