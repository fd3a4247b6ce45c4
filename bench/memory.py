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
from controller.replication.plan import RESERVED

TITLE = "# Benchmarks"
SIZES = (20_000, 200_000, 1_000_000)
PASSES = ("first", "steady", "copy")
COPY_UP_TO = 1_000_000
"""Sizes up to this also measure a pass that copies every object."""


class GeneratedStore:
    """N objects listed in key order, generated as they are listed (an object ``n`` has
    ``stamped`` stamps when read, as a copy made by Lifeboat would); Lifeboat's own
    objects (manifests) are kept in files under ``spool``. Copies into it are read to the
    end and counted, not kept."""

    def __init__(self, region: str, count: int, spool: Path) -> None:
        self.region = region
        self.count = count
        self.spool = spool
        self.copied = 0

    def _file(self, key: str) -> Path:
        return self.spool / key.replace("%", "%25").replace("/", "%2F")

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        if prefix.startswith(".lifeboat/") or RESERVED in prefix:
            for path in sorted(self.spool.iterdir()):
                key = path.name.replace("%2F", "/").replace("%25", "%")
                if key.startswith(prefix):
                    yield ObjectInfo(key, path.stat().st_size, "manifest", path.stat().st_mtime)
            return
        for n in range(self.count):
            body = _body(n)
            yield ObjectInfo(f"objects/{n:09d}", len(body), _etag_of(body), 1000.0)
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
        n = int(key.rsplit("/", 1)[-1])
        body = _body(n)
        info = ObjectInfo(key, len(body), _etag_of(body), 1000.0, {}, _etag_of(body))

        async def chunks() -> AsyncIterator[bytes]:
            yield body

        return OpenedObject(info, chunks(), lambda: None)

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
        if not key.startswith(".lifeboat/"):
            digest = hashlib.md5(usedforsecurity=False)
            async for chunk in chunks:
                digest.update(chunk)
            self.copied += 1
            return ObjectInfo(key, size, digest.hexdigest(), 1000.0)
        written = 0
        with self._file(key).open("wb") as file:
            async for chunk in chunks:
                file.write(chunk)
                written += len(chunk)
        return ObjectInfo(key, written, "manifest", time.time())

    async def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)


def _body(n: int) -> bytes:
    return str(n).encode() * 8


def _etag_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bytes_in(spool: Path) -> int:
    return sum(f.stat().st_size for f in spool.iterdir())


async def _pass(flow: ObjectFlow, spool: Path) -> dict[str, Any]:
    """One pass of ``flow``, measured."""
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    began = time.perf_counter()
    assert await flow.scan(), flow.figures.last_error
    took = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    manifest = _bytes_in(spool)
    return {
        "peak_mib": round((peak - before) / 2**20, 1),
        "seconds": round(took, 1),
        "rss_mib": round(_rss_mib(), 1),
        "manifest_mib": round(manifest / 2**20, 1),
    }


async def _measure(count: int, copy: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"objects": count}
    settings = FlowSettings(app="bench/memory", dataset="objects", epoch=1)
    with tempfile.TemporaryDirectory(prefix="lifeboat-bench-memory-") as spool:
        tracemalloc.start()
        source = GeneratedStore("r1", count, Path(spool) / "source")
        target = GeneratedStore("r2", count, Path(spool) / "target")
        for store in (source, target):
            store.spool.mkdir()
        for name in ("first", "steady"):
            flow = ObjectFlow(settings, Location("a", source), Location("b", target))
            results[name] = await _pass(flow, target.spool)
            del flow
        if copy:  # an empty destination: every object is copied
            empty = GeneratedStore("r3", 0, Path(spool) / "empty")
            empty.spool.mkdir()
            flow = ObjectFlow(settings, Location("a", source), Location("c", empty))
            results["copy"] = await _pass(flow, empty.spool)
            assert empty.copied == count, empty.copied
        tracemalloc.stop()
    return results


def _one(count: int, copy: bool) -> dict[str, Any]:
    """Measure ``count`` objects in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--one", str(count)] + (["--copy"] if copy else []),
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
        "files, copies read to the end and dropped): `first` records every key and writes",
        "the manifest's pages, `steady` is the next pass from them, `copy` copies every",
        "object into an empty destination. Peak: Python allocations during the pass above",
        "what was allocated before it (`tracemalloc`); RSS: the process's peak resident set",
        "after the pass (it never goes down within a process: one process per size).",
        "",
        "| objects | pass | peak (MiB) | per object (bytes) | RSS (MiB) | seconds "
        "| manifest (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for name in PASSES:
            figures = result.get(name)
            if figures is None:
                continue
            per = figures["peak_mib"] * 2**20 / result["objects"]
            lines.append(
                f"| {result['objects']:,} | {name} | {figures['peak_mib']} | {per:.0f} | "
                f"{figures['rss_mib']} | {figures['seconds']} | {figures['manifest_mib']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--copy-up-to",
        type=int,
        default=COPY_UP_TO,
        help="also measure a pass copying every object, for sizes up to this",
    )
    parser.add_argument("--report", type=Path, default=None, help="write a section here")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--copy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(_measure(args.one, args.copy))))
        return
    results = []
    for count in args.sizes:
        result = _one(count, count <= args.copy_up_to)
        print(json.dumps(result), flush=True)
        results.append(result)
    command = "python -m bench.memory " + " ".join(sys.argv[1:])
    section = _section(results, command.strip())
    print(section)
    if args.report is not None:
        write_section(args.report, "memory", section, title=TITLE)


if __name__ == "__main__":
    main()
