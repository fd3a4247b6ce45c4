"""One Swift container as an :class:`~controller.providers.protocols.ObjectStore`.

The same guarantees as :class:`~controller.providers.aws.objects.S3ObjectStore`, the
Swift way (object-store API v1, through the SDK's session so that the catalog, the token
and the region's gate apply):

* ``list`` pages through ``GET <container>?format=json`` with ``limit`` and ``marker``,
  one call per page, fetched as iteration reaches it; keys come in Swift's order
  (byte-wise, as S3's).
* ``head`` reads size, ETag, time and user metadata (``X-Object-Meta-*``, keys
  lower-cased without the prefix).
* ``get`` streams the body ``chunk_size`` bytes at a time, each read in a worker thread;
  the reads are the data of the one GET call, not calls of their own. A Static Large
  Object's GET is followed by one of its manifest (``?multipart-manifest=get``), and each
  segment read is checked against the manifest's size and MD5
  (:class:`~controller.providers.integrity.SegmentCheck`): a corrupt read raises at the
  end of its segment, before a caller can commit it. (A simple object's bytes are checked
  by whoever knows its MD5, its ETag; SLOs of ranges or of other SLOs are not checked.)
* ``put`` sends objects up to ``large_object_threshold`` bytes in one PUT (buffered, so
  at most the threshold in memory) with their ``ETag``, which Swift checks against what
  it received (422 otherwise). Larger ones become a **Static Large Object**: segments of
  ``segment_size`` bytes (at most one in memory; bigger when the object would need more
  than Swift's 1000 segments) are uploaded, each with its ETag, to
  ``<container>_segments`` as ``<key>/slo/<upload>/<n>`` while the body is read; the
  manifest, which makes the object visible, is PUT last, with the ETag Swift must find
  for the whole. Nothing partial is ever visible: on any failure (the caller's digest
  not matching included) the uploaded segments are deleted, unless the manifest may have
  landed (its answer lost), in which case they are kept, as the visible object needs
  them. ``md5_hex``, when given, is checked against the whole stream before the object is
  made visible.
* An object that replaces a Static Large Object (by any new body) and ``delete`` remove
  the old object's segments: after the new object is in place, respectively with
  ``?multipart-manifest=delete``. ``delete`` is idempotent.

Segments are deleted with Swift's bulk delete (one request per 1000), or one by one where
the cloud does not offer it. Clean-ups are best effort: segments whose deletion fails
(the region's API plane impaired, say) stay, invisible, in the segments container.

Swift's limits apply to metadata: keys are letters, digits and hyphens (Swift's WSGI
server drops header names with underscores, so they are refused here rather than lost),
at most 128 characters, case-insensitive; values printable ASCII, at most 256 characters.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import functools
import hashlib
import json
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import quote

import openstack.exceptions

from controller.providers.integrity import IntegrityError, SegmentCheck, check_digest, check_size
from controller.providers.openstack.connector import CLEANUP_ERRORS, OpenStackConnector
from controller.providers.protocols import ObjectInfo, OpenedObject, read_through

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MAX_SEGMENTS = 1000  # Swift's default max_manifest_segments
MAX_PAGE = 10_000  # Swift's default container_listing_limit
BULK_DELETE_BATCH = 1000
META_PREFIX = "x-object-meta-"
_META_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$")
_META_VALUE = re.compile(r"^[\x20-\x7e]{0,256}$")
_MD5_HEX = re.compile(r"^[0-9A-Fa-f]{32}$")


class SwiftBulkError(openstack.exceptions.SDKException):
    """A bulk or multipart delete that Swift answered 200 but reported failed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message=message)
        self.status_code = status


def _path(container: str, key: str | None = None) -> str:
    """The URL path of a container or object, relative to the account endpoint."""
    path = "/" + quote(container, safe="")
    return path if key is None else f"{path}/{quote(key)}"


def _meta_headers(metadata: Mapping[str, str]) -> dict[str, str]:
    headers = {}
    for key, value in metadata.items():
        if not _META_KEY.match(key):
            raise ValueError(
                f"Swift metadata key {key!r}: letters, digits and hyphens only, at most 128"
            )
        if not _META_VALUE.match(value):
            raise ValueError(
                f"Swift metadata value of {key!r}: printable ASCII only, at most 256 characters"
            )
        headers[f"X-Object-Meta-{key}"] = value
    return headers


def _time(headers: Mapping[str, str]) -> float:
    stamp = headers.get("X-Timestamp")
    if stamp:
        return float(stamp)
    modified = headers.get("Last-Modified")
    return parsedate_to_datetime(modified).timestamp() if modified else 0.0


def _head_info(key: str, headers: Mapping[str, str]) -> ObjectInfo:
    etag = headers.get("Etag", "").strip('"')
    # A large object's ETag is derived from its segments; a simple object's is its MD5.
    manifest = _is_large_object(headers) or "X-Object-Manifest" in headers
    return ObjectInfo(
        key=key,
        size=int(headers.get("Content-Length", 0)),
        etag=etag,
        md5=None if manifest or not _MD5_HEX.match(etag) else etag.lower(),
        last_modified=_time(headers),
        metadata={
            name[len(META_PREFIX) :].lower(): value
            for name, value in headers.items()
            if name.lower().startswith(META_PREFIX)
        },
    )


def _listed(item: Mapping[str, Any]) -> ObjectInfo:
    modified = str(item.get("last_modified", ""))
    stamp = datetime.fromisoformat(modified).replace(tzinfo=UTC).timestamp() if modified else 0.0
    # A Static Large Object is listed with its manifest's hash and, apart, the ETag HEAD and
    # GET give it ("slo_etag").
    etag = str(item.get("slo_etag") or item.get("hash", "")).strip('"')
    return ObjectInfo(
        key=str(item["name"]), size=int(item["bytes"]), etag=etag, last_modified=stamp
    )


class _Deleted(Exception):
    """The object was deleted between its GET and the GET of its manifest."""


class _Absent(enum.Enum):
    ABSENT = "absent"


_ABSENT: Final = _Absent.ABSENT
"""What :meth:`SwiftObjectStore._manifest` finds at a key holding nothing."""


def _is_large_object(headers: Mapping[str, str]) -> bool:
    return headers.get("X-Static-Large-Object", "").lower() in ("true", "1", "yes", "on")


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class _Stored:
    """A simple object as Swift stored it: the content's MD5 and the PUT's answer."""

    digest: str
    headers: Mapping[str, str]


class SwiftObjectStore:
    """One container in one region; see the module docstring."""

    def __init__(
        self,
        connector: OpenStackConnector,
        region: str,
        container: str,
        *,
        large_object_threshold: int = 8 * MiB,
        segment_size: int = 8 * MiB,
        chunk_size: int = 1 * MiB,
        page_size: int = 1000,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE or chunk_size < 1 or segment_size < 1:
            raise ValueError(f"page_size must be 1..{MAX_PAGE}, chunk and segment sizes positive")
        if large_object_threshold < 0:
            raise ValueError("large_object_threshold must be >= 0")
        if not container or "/" in container:
            raise ValueError(f"not a Swift container name: {container!r}")
        self.connector = connector
        self.region = region
        self.container = container
        self.segment_container = f"{container}_segments"
        self.large_object_threshold = large_object_threshold
        self.segment_size = segment_size
        self.chunk_size = chunk_size
        self.page_size = page_size
        self._segment_container_ready = False

    def __repr__(self) -> str:
        return f"SwiftObjectStore({self.region}/{self.container})"

    async def _call(self, operation: str, fn: Any, *, mutating: bool) -> Any:
        return await self.connector.call(
            self.region, "object-store", operation, fn, mutating=mutating
        )

    # ------------------------------------------------------------------ reading

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``; pages are fetched as iteration reaches them."""
        marker = ""
        while True:
            page = await self._page(prefix, marker)
            for item in page:
                if "name" in item:  # no delimiter is sent, so there are no "subdir" entries
                    yield _listed(item)
            if len(page) < self.page_size:
                return
            marker = str(page[-1]["name"])

    async def _page(self, prefix: str, marker: str) -> Sequence[Mapping[str, Any]]:
        params = {"format": "json", "limit": str(self.page_size)}
        if prefix:
            params["prefix"] = prefix
        if marker:
            params["marker"] = marker
        path = _path(self.container)

        def page(conn: Any) -> list[dict[str, Any]]:
            response = conn.object_store.get(path, params=params)
            openstack.exceptions.raise_from_response(response)
            found: list[dict[str, Any]] = response.json() if response.content else []
            return found

        listed: Sequence[Mapping[str, Any]] = await self._call("ListObjects", page, mutating=False)
        return listed

    async def _head(self, key: str) -> Mapping[str, str] | None:
        path = _path(self.container, key)

        def head(conn: Any) -> Mapping[str, str] | None:
            response = conn.object_store.head(path)
            if response.status_code == 404:
                return None
            openstack.exceptions.raise_from_response(response)
            headers: Mapping[str, str] = response.headers
            return headers

        found: Mapping[str, str] | None = await self._call("HeadObject", head, mutating=False)
        return found

    async def head(self, key: str) -> ObjectInfo | None:
        headers = await self._head(key)
        return _head_info(key, headers) if headers is not None else None

    async def open(self, key: str) -> OpenedObject | None:
        path = _path(self.container, key)

        def get(conn: Any) -> Any:
            response = conn.object_store.get(path, stream=True)
            if response.status_code == 404:
                response.close()
                return None
            if response.status_code >= 400:
                response.close()
                openstack.exceptions.raise_from_response(response)
            return response

        response = await self._call("GetObject", get, mutating=False)
        if response is None:
            return None
        # A GET's headers are a HEAD's (an SLO's ETag, size and metadata included).
        info = _head_info(key, response.headers)
        check: SegmentCheck | None = None
        if _is_large_object(response.headers):
            try:
                segments = await self._segment_digests(key, info.etag)
            except _Deleted:
                response.close()
                return None  # deleted since the GET: as if the GET had found nothing
            except BaseException:
                response.close()
                raise
            if segments is not None:
                check = SegmentCheck(f"large object {key}", segments)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                parts: Iterator[bytes] = response.iter_content(self.chunk_size)
                read = functools.partial(next, parts, None)
                while (chunk := await self.connector.calls.blocking(self.region, read)) is not None:
                    if chunk:
                        if check is not None:
                            check.update(chunk)
                        yield chunk
                if check is not None:
                    check.finish()
            finally:
                response.close()

        return OpenedObject(info, chunks(), response.close)

    async def _segment_digests(self, key: str, etag: str) -> Sequence[tuple[int, str]] | None:
        """The (size, MD5) of each segment of the Static Large Object at ``key`` whose ETag
        is ``etag``, to check its content against; None when it cannot be checked so (its
        segments are ranges or large objects themselves).

        An SLO's ETag is the MD5 of its segments' ETags (of an inline data segment: its
        data's MD5), so a manifest whose segments do not give ``etag`` is that of another
        version: the object was replaced while it was read, and :class:`IntegrityError`
        makes the caller read it again later; deleted meanwhile: :class:`_Deleted`."""
        changed = IntegrityError(f"large object {key} changed while it was read")
        found = await self._manifest(key)
        if found is _ABSENT:
            raise _Deleted(key)
        if found is None:  # replaced by a simple object
            raise changed
        if any(entry.get("sub_slo") or entry.get("range") for entry in found):
            return None
        segments: list[tuple[int, str]] = []
        for entry in found:
            if "data" in entry:  # inline data, base64 in the manifest
                raw = base64.b64decode(entry["data"])
                segments.append((len(raw), _md5(raw)))
            else:
                segments.append((int(entry["bytes"]), str(entry["hash"]).strip('"')))
        if _md5("".join(digest for _, digest in segments).encode()) != etag.lower():
            raise changed
        return segments

    async def get(self, key: str) -> AsyncIterator[bytes]:
        async for chunk in read_through(await self.open(key), key):
            yield chunk

    # ------------------------------------------------------------------ writing

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
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        headers = _meta_headers(metadata)
        replaced = await self._segments_of(key) if replacing else []
        if size <= self.large_object_threshold:
            answer = await self._put_single(key, chunks, size, headers, md5_hex)
        else:
            await self._put_large(key, chunks, size, headers, md5_hex)
            answer = None
        if replaced:
            await asyncio.shield(self._cleanup(replaced, f"segments of the replaced {key}"))
        if answer is not None:  # Swift's answer to a simple PUT describes the object
            return ObjectInfo(
                key=key,
                size=size,
                etag=answer.digest,
                md5=answer.digest,
                last_modified=_time(answer.headers) or time.time(),
                metadata={k.lower(): v for k, v in metadata.items()},
            )
        info = await self.head(key)
        if info is None:  # Swift is read-after-write consistent here: deleted meanwhile
            raise KeyError(key)
        return info

    async def _segments_of(self, key: str) -> Sequence[str]:
        """The segment paths of the Static Large Object stored at ``key`` now, if it is one."""
        found = await self._manifest(key, raw=True)
        if found is None or found is _ABSENT:
            return []
        return [str(entry["path"]) for entry in found if "path" in entry]

    async def _manifest(
        self, key: str, *, raw: bool = False
    ) -> Sequence[Mapping[str, Any]] | _Absent | None:
        """The manifest of the Static Large Object at ``key`` (``raw``: as it was PUT,
        with segment paths; else as stored, with names, sizes and hashes); None when
        ``key`` holds a simple object (whose body is not read), ``_ABSENT`` when nothing."""
        path = _path(self.container, key)
        params = {"multipart-manifest": "get", **({"format": "raw"} if raw else {})}

        def manifest(conn: Any) -> list[dict[str, Any]] | _Absent | None:
            response = conn.object_store.get(path, params=params, stream=True)
            try:
                if response.status_code == 404:
                    return _ABSENT
                openstack.exceptions.raise_from_response(response)
                if not _is_large_object(response.headers):
                    return None
                entries: list[dict[str, Any]] = response.json()
                return entries
            finally:
                response.close()

        found: Sequence[Mapping[str, Any]] | _Absent | None = await self._call(
            "GetObjectManifest", manifest, mutating=False
        )
        return found

    async def _put_single(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        size: int,
        headers: Mapping[str, str],
        md5_hex: str | None,
    ) -> _Stored:
        body = bytearray()
        async for chunk in chunks:
            body += chunk
            check_size(len(body), size, complete=False)
        check_size(len(body), size, complete=True)
        data = bytes(body)
        digest = _md5(data)
        check_digest(digest, md5_hex)
        # Swift checks the body against the ETag sent and refuses (422) a mismatch.
        answer = await self._put_object(self.container, key, data, {**headers, "ETag": digest})
        return _Stored(digest, answer)

    async def _put_object(
        self, container: str, key: str, data: bytes, headers: Mapping[str, str]
    ) -> Mapping[str, str]:
        path = _path(container, key)

        def put(conn: Any) -> Mapping[str, str]:
            response = conn.object_store.put(path, data=data, headers=dict(headers))
            openstack.exceptions.raise_from_response(response)
            answer: Mapping[str, str] = response.headers
            return answer

        stored: Mapping[str, str] = await self._call("PutObject", put, mutating=True)
        return stored

    async def _put_large(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        size: int,
        headers: Mapping[str, str],
        md5_hex: str | None,
    ) -> None:
        await self._ensure_segment_container()
        segment_size = max(self.segment_size, math.ceil(size / MAX_SEGMENTS))
        upload = f"{key}/slo/{time.time_ns()}-{secrets.token_hex(4)}"
        segments: list[dict[str, Any]] = []
        try:
            digest = hashlib.md5(usedforsecurity=False)
            received = 0
            buffer = bytearray()
            async for chunk in chunks:
                received += len(chunk)
                check_size(received, size, complete=False)
                digest.update(chunk)
                buffer += chunk
                while len(buffer) >= segment_size:
                    part = bytes(buffer[:segment_size])
                    del buffer[:segment_size]
                    segments.append(await self._put_segment(upload, len(segments) + 1, part))
            check_size(received, size, complete=True)
            if buffer:
                segments.append(await self._put_segment(upload, len(segments) + 1, bytes(buffer)))
            check_digest(digest.hexdigest(), md5_hex)
        except BaseException:
            await asyncio.shield(self._cleanup([s["path"] for s in segments], f"upload {upload}"))
            raise
        # What Swift reports as the object's ETag: the MD5 of the segments' ETags.
        whole = _md5("".join(s["etag"] for s in segments).encode())
        try:
            await self._put_manifest(key, segments, {**headers, "ETag": whole})
        except BaseException:
            if await asyncio.shield(self._manifest_absent(key, whole)):
                await asyncio.shield(
                    self._cleanup([s["path"] for s in segments], f"upload {upload}")
                )
            raise

    async def _ensure_segment_container(self) -> None:
        if self._segment_container_ready:
            return
        path = _path(self.segment_container)

        def create(conn: Any) -> None:
            response = conn.object_store.put(path, headers={"Content-Length": "0"})
            openstack.exceptions.raise_from_response(response)

        await self._call("CreateContainer", create, mutating=True)
        self._segment_container_ready = True

    async def _put_segment(self, upload: str, number: int, data: bytes) -> dict[str, Any]:
        name = f"{upload}/{number:08d}"
        digest = _md5(data)
        await self._put_object(self.segment_container, name, data, {"ETag": digest})
        return {
            "path": f"/{self.segment_container}/{name}",
            "etag": digest,
            "size_bytes": len(data),
        }

    async def _put_manifest(
        self, key: str, segments: Sequence[Mapping[str, Any]], headers: Mapping[str, str]
    ) -> None:
        path = _path(self.container, key)
        body = json.dumps(list(segments)).encode()
        request_headers = {**headers, "Content-Type": "application/octet-stream"}

        def put(conn: Any) -> None:
            response = conn.object_store.put(
                path,
                params={"multipart-manifest": "put"},
                data=body,
                headers=request_headers,
            )
            openstack.exceptions.raise_from_response(response)

        await self._call("PutObjectManifest", put, mutating=True)

    async def _manifest_absent(self, key: str, etag: str) -> bool:
        """Whether the manifest certainly did not land (so its segments may go)."""
        try:
            headers = await self._head(key)
        except CLEANUP_ERRORS as error:
            log.warning(
                "%s: cannot tell whether the manifest of %s landed (%s); keeping its segments",
                self,
                key,
                self.connector.explain(error),
            )
            return False
        return headers is None or headers.get("Etag", "").strip('"') != etag

    # ------------------------------------------------------------------ deleting

    async def delete(self, key: str) -> None:
        headers = await self._head(key)
        if headers is None:
            return
        path = _path(self.container, key)
        if not _is_large_object(headers):

            def delete(conn: Any) -> None:
                response = conn.object_store.delete(path)
                if response.status_code != 404:
                    openstack.exceptions.raise_from_response(response)

            await self._call("DeleteObject", delete, mutating=True)
            return

        def delete_large(conn: Any) -> None:
            response = conn.object_store.delete(
                path,
                params={"multipart-manifest": "delete"},
                headers={"Accept": "application/json"},
            )
            if response.status_code == 404:
                return
            openstack.exceptions.raise_from_response(response)
            _check_bulk(response.json(), f"delete of {key}")

        await self._call("DeleteObject", delete_large, mutating=True)

    async def _cleanup(self, paths: Sequence[str], what: str) -> None:
        """Delete segments, best effort: a failure is logged, the segments stay invisible."""
        if not paths:
            return
        try:
            await self._delete_segments(paths)
        except CLEANUP_ERRORS as error:
            log.warning(
                "%s: %d segment(s) of %s not deleted: %s",
                self,
                len(paths),
                what,
                self.connector.explain(error),
            )

    async def _delete_segments(self, paths: Sequence[str]) -> None:
        """Delete objects given as ``/container/object`` paths: in bulk where possible."""
        for start in range(0, len(paths), BULK_DELETE_BATCH):
            batch = paths[start : start + BULK_DELETE_BATCH]
            body = "\n".join(quote(path) for path in batch).encode()
            bulk = functools.partial(_bulk_delete, body=body)
            if not await self._call("DeleteObjects", bulk, mutating=True):
                for path in batch:
                    await self._delete_path(path)

    async def _delete_path(self, path: str) -> None:
        container, _, name = path.lstrip("/").partition("/")
        url = _path(container, name)

        def delete(conn: Any) -> None:
            response = conn.object_store.delete(url)
            if response.status_code != 404:
                openstack.exceptions.raise_from_response(response)

        await self._call("DeleteObject", delete, mutating=True)


def _bulk_delete(conn: Any, *, body: bytes) -> bool:
    """One bulk-delete request; False when the cloud has no bulk delete middleware (then
    the account POST did something else, and answered 204)."""
    response = conn.object_store.post(
        "",
        params={"bulk-delete": ""},
        data=body,
        headers={"Accept": "application/json", "Content-Type": "text/plain"},
    )
    if response.status_code != 200 or "json" not in response.headers.get("Content-Type", ""):
        return False
    _check_bulk(response.json(), "bulk delete")
    return True


def _check_bulk(report: Mapping[str, Any], what: str) -> None:
    """Raise for a bulk (or multipart) delete that Swift reports failed; missing is fine."""
    status = str(report.get("Response Status", "200 OK"))
    code = int(status.split()[0]) if status[:3].isdigit() else 500
    errors = [e for e in report.get("Errors", []) if not str(e[-1]).startswith("404")]
    if errors or (code >= 400 and code != 404):
        shown = "; ".join(f"{name}: {error}" for name, error in errors[:3])
        raise SwiftBulkError(code if code >= 400 else 500, f"{what}: {status}; {shown}")
