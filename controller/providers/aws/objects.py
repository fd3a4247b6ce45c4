"""One S3 bucket as an :class:`~controller.providers.protocols.ObjectStore`.

Bodies stream both ways and are never held whole in memory:

* ``get`` reads the GetObject body ``chunk_size`` bytes at a time, each read in a worker
  thread. The reads are data transfer of the one GetObject call, which went through the
  region's gate; they are not calls of their own (a failed read is not retried: the
  stream's position would be lost) and a broken stream raises to the caller. The GET
  asks for the object's checksum (``ChecksumMode=ENABLED``): when S3 holds a whole-object
  one (CRC32, CRC32C, CRC64NVME — S3's default for new objects, multipart ones included —
  SHA-1 or SHA-256), botocore checks the stream against it and raises
  ``FlexibleChecksumError`` at its end, before a caller can commit what it read. This is
  what verifies the objects whose ETag is no MD5 (multipart, KMS); only composite
  checksums (``...-N``) cannot be checked this way.
* ``put`` sends objects up to ``multipart_threshold`` bytes in one PutObject (buffered,
  so at most the threshold in memory) and larger ones as a multipart upload whose parts
  (``part_size`` bytes, at most one in memory) are uploaded as they are read. S3 shows a
  multipart object only once CompleteMultipartUpload succeeds; on any failure, the
  caller's digest not matching included, the upload is aborted, so nothing partial is
  ever visible. Every request carries Content-MD5, so S3 checks each body it receives;
  ``md5_hex``, when given, is checked against the whole stream before the object is made
  visible. A multipart upload asks for a whole-object CRC64NVME checksum (each part
  carries its own, S3 combines them), so every read of the object is checked (above).

An upload whose abort fails (the region's API plane impaired, say) stays invisible but
keeps its parts until removed; a bucket lifecycle rule ``AbortIncompleteMultipartUpload``
is the backstop.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import hashlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import botocore.exceptions

from controller.providers.aws.connector import AwsConnector
from controller.providers.calls import RegionImpaired
from controller.providers.integrity import IntegrityError
from controller.providers.integrity import check_digest as _check_digest
from controller.providers.integrity import check_size as _check_size
from controller.providers.outcomes import describe
from controller.providers.protocols import ObjectInfo, OpenedObject, read_through

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import (
        CompletedPartTypeDef,
        ListObjectsV2OutputTypeDef,
        ListObjectsV2RequestTypeDef,
        ObjectTypeDef,
    )

__all__ = ["IntegrityError", "S3ObjectStore"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_MD5 = re.compile(r"^[0-9A-Fa-f]{32}$")
CHECKSUM_ALGORITHM: Final = "CRC64NVME"
"""The whole-object checksum multipart uploads ask for (S3's default for new objects)."""


def _answered_at(answer: Mapping[str, Any]) -> float:
    """When S3 answered (its Date header: the object's Last-Modified, to the second)."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return time.time()


def _content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _missing(error: botocore.exceptions.ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code", "")) in _MISSING_CODES


def _etag(value: str) -> str:
    return value.strip('"')


def _listed(item: ObjectTypeDef) -> ObjectInfo:
    return ObjectInfo(
        key=item.get("Key", ""),
        size=item.get("Size", 0),
        etag=_etag(item.get("ETag", "")),
        last_modified=item["LastModified"].timestamp() if "LastModified" in item else 0.0,
    )


def _described(key: str, answer: Mapping[str, Any]) -> ObjectInfo:
    """What a HeadObject or GetObject answer tells about the object."""
    etag = _etag(answer["ETag"])
    # The ETag is the content's MD5 for single-part uploads stored without KMS or
    # customer-provided keys; multipart ETags carry "-<parts>".
    encryption = str(answer.get("ServerSideEncryption", ""))
    plain = (
        "-" not in etag
        and not encryption.startswith("aws:kms")
        and "SSECustomerAlgorithm" not in answer
    )
    return ObjectInfo(
        key=key,
        size=int(answer["ContentLength"]),
        etag=etag,
        last_modified=answer["LastModified"].timestamp(),
        metadata={str(k).lower(): str(v) for k, v in answer.get("Metadata", {}).items()},
        md5=etag.lower() if plain and _MD5.match(etag) else None,
    )


class S3ObjectStore:
    """One bucket in one region; see the module docstring for how bodies stream."""

    def __init__(
        self,
        connector: AwsConnector,
        region: str,
        bucket: str,
        *,
        multipart_threshold: int = 8 * MiB,
        part_size: int = 8 * MiB,
        chunk_size: int = 1 * MiB,
        page_size: int = 1000,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        if not 1 <= page_size <= 1000 or chunk_size < 1 or multipart_threshold < 0:
            raise ValueError("page_size must be 1..1000, chunk_size and the threshold positive")
        self.connector = connector
        self.region = region
        self.bucket = bucket
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.chunk_size = chunk_size
        self.page_size = page_size

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.region}/{self.bucket})"

    def _client(self) -> S3Client:
        client: S3Client = self.connector.client("s3", self.region)
        return client

    # ------------------------------------------------------------------ reading

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``; pages are fetched as iteration reaches them."""
        page = await self._page(prefix, None)
        while True:
            for item in page.get("Contents", []):
                yield _listed(item)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            page = await self._page(prefix, token)

    async def _page(self, prefix: str, token: str | None) -> ListObjectsV2OutputTypeDef:
        request: ListObjectsV2RequestTypeDef = {
            "Bucket": self.bucket,
            "Prefix": prefix,
            "MaxKeys": self.page_size,
        }
        if token:
            request["ContinuationToken"] = token
        return await self.connector.call(
            self.region,
            "s3",
            "ListObjectsV2",
            functools.partial(self._client().list_objects_v2, **request),
            mutating=False,
        )

    async def head(self, key: str) -> ObjectInfo | None:
        client = self._client()
        try:
            answer = await self.connector.call(
                self.region,
                "s3",
                "HeadObject",
                functools.partial(client.head_object, Bucket=self.bucket, Key=key),
                mutating=False,
            )
        except botocore.exceptions.ClientError as error:
            if _missing(error):
                return None
            raise
        return _described(key, answer)

    async def open(self, key: str) -> OpenedObject | None:
        client = self._client()
        try:
            answer = await self.connector.call(
                self.region,
                "s3",
                "GetObject",
                functools.partial(
                    client.get_object, Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
                ),
                mutating=False,
            )
        except botocore.exceptions.ClientError as error:
            if _missing(error):
                return None
            raise
        body = answer["Body"]

        async def chunks() -> AsyncIterator[bytes]:
            try:
                read = functools.partial(body.read, self.chunk_size)
                while chunk := await self.connector.calls.blocking(self.region, read):
                    yield chunk
            finally:
                body.close()

        return OpenedObject(_described(key, answer), chunks(), body.close)

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
        del replacing  # a PUT or completed upload replaces the whole object: nothing to clean
        if size <= self.multipart_threshold:
            answer, md5 = await self._put_single(key, chunks, size, metadata, md5_hex)
        else:
            answer, md5 = await self._put_multipart(key, chunks, size, metadata, md5_hex)
        # What S3 answered describes the stored object: no HEAD needed to learn it.
        etag = _etag(answer["ETag"])
        return ObjectInfo(
            key=key,
            size=size,
            etag=etag,
            last_modified=_answered_at(answer),
            metadata={k.lower(): v for k, v in metadata.items()},
            md5=md5 if md5 is not None and etag.lower() == md5 else None,
        )

    async def _put_single(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        size: int,
        metadata: Mapping[str, str],
        md5_hex: str | None,
    ) -> tuple[Mapping[str, Any], str | None]:
        body = bytearray()
        async for chunk in chunks:
            body += chunk
            _check_size(len(body), size, complete=False)
        _check_size(len(body), size, complete=True)
        data = bytes(body)
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        _check_digest(digest, md5_hex)
        client = self._client()
        answer = await self.connector.call(
            self.region,
            "s3",
            "PutObject",
            functools.partial(
                client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentLength=size,
                ContentMD5=_content_md5(data),
                Metadata=dict(metadata),
            ),
            mutating=True,
        )
        return answer, digest

    async def _put_multipart(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        size: int,
        metadata: Mapping[str, str],
        md5_hex: str | None,
    ) -> tuple[Mapping[str, Any], str | None]:
        client = self._client()
        part_size = max(self.part_size, math.ceil(size / MAX_PARTS))
        created = await self.connector.call(
            self.region,
            "s3",
            "CreateMultipartUpload",
            functools.partial(
                client.create_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                Metadata=dict(metadata),
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                ChecksumType="FULL_OBJECT",
            ),
            mutating=True,
        )
        upload_id = created["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            digest = hashlib.md5(usedforsecurity=False)
            received = 0
            buffer = bytearray()
            async for chunk in chunks:
                received += len(chunk)
                _check_size(received, size, complete=False)
                digest.update(chunk)
                buffer += chunk
                while len(buffer) >= part_size:
                    part = bytes(buffer[:part_size])
                    del buffer[:part_size]
                    parts.append(await self._upload_part(key, upload_id, len(parts) + 1, part))
            _check_size(received, size, complete=True)
            if buffer or not parts:
                parts.append(await self._upload_part(key, upload_id, len(parts) + 1, bytes(buffer)))
            _check_digest(digest.hexdigest(), md5_hex)
            answer = await self.connector.call(
                self.region,
                "s3",
                "CompleteMultipartUpload",
                functools.partial(
                    client.complete_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
                mutating=True,
            )
        except BaseException:
            await asyncio.shield(self._abort(key, upload_id))
            raise
        return answer, None  # a multipart ETag is no MD5 of the content

    async def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytes
    ) -> CompletedPartTypeDef:
        client = self._client()
        answer = await self.connector.call(
            self.region,
            "s3",
            "UploadPart",
            functools.partial(
                client.upload_part,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ContentLength=len(data),
                ContentMD5=_content_md5(data),
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            ),
            mutating=True,
        )
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": answer["ETag"]}
        if "ChecksumCRC64NVME" in answer:
            part["ChecksumCRC64NVME"] = answer["ChecksumCRC64NVME"]
        return part

    async def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload (best effort: the object is invisible either way)."""
        client = self._client()
        try:
            await self.connector.call(
                self.region,
                "s3",
                "AbortMultipartUpload",
                functools.partial(
                    client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                ),
                mutating=True,
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            log.warning(
                "multipart upload %s of s3://%s/%s not aborted: %s",
                upload_id,
                self.bucket,
                key,
                self.connector.redact(describe(error)),
            )
        except RegionImpaired as error:
            log.warning("multipart upload %s not aborted: %s", upload_id, error)

    async def delete(self, key: str) -> None:
        client = self._client()
        await self.connector.call(
            self.region,
            "s3",
            "DeleteObject",
            functools.partial(client.delete_object, Bucket=self.bucket, Key=key),
            mutating=True,
        )
