"""Checks every object store makes of a streamed body before it makes the object visible.

Shared by the S3 and Swift stores, so both refuse a body the same way and with the same
words: longer than declared, shorter than declared, or not matching the caller's MD5.
:class:`SegmentCheck` checks what a store reads against the segments it is made of.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


class IntegrityError(ValueError):
    """The streamed body did not match its declared size or digest; nothing was stored."""


def check_size(received: int, size: int, *, complete: bool) -> None:
    """Raise when ``received`` bytes exceed ``size``, or (``complete``) differ from it."""
    if received > size:
        raise IntegrityError(f"body is longer than the {size} bytes declared")
    if complete and received != size:
        raise IntegrityError(f"body has {received} bytes, {size} were declared")


def check_digest(actual: str, expected: str | None) -> None:
    """Raise when the body's MD5 (hex) is not the ``expected`` one (if any was given)."""
    if expected is not None and actual.lower() != expected.lower():
        raise IntegrityError(f"body MD5 {actual} does not match the expected {expected}")


class SegmentCheck:
    """Checks a stream, as it is read, against the sizes and MD5s of the consecutive
    segments it is made of (a Swift Static Large Object's manifest): raises
    :class:`IntegrityError` at the end of the first segment that does not match, so a
    caller that commits only after the stream ended never commits a corrupt read.
    ``finish`` once the stream ended: it raises if the stream was short."""

    def __init__(self, what: str, segments: Sequence[tuple[int, str]]) -> None:
        self.what = what
        self._segments = tuple(segments)
        self._index = 0
        self._filled = 0
        self._digest = hashlib.md5(usedforsecurity=False)
        self._settle()

    def update(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self._index >= len(self._segments):
                raise IntegrityError(f"{self.what}: body is longer than its segments")
            size = self._segments[self._index][0]
            take = min(size - self._filled, len(view))
            self._digest.update(view[:take])
            self._filled += take
            view = view[take:]
            self._settle()

    def finish(self) -> None:
        if self._index < len(self._segments):
            raise IntegrityError(
                f"{self.what}: body ended in segment {self._index + 1} of {len(self._segments)}"
            )

    def _settle(self) -> None:
        """Check and leave every segment read to its end (empty ones included)."""
        while self._index < len(self._segments):
            size, expected = self._segments[self._index]
            if self._filled < size:
                return
            actual = self._digest.hexdigest()
            if actual.lower() != expected.lower():
                raise IntegrityError(
                    f"{self.what}: segment {self._index + 1} MD5 {actual} does not match"
                    f" the manifest's {expected}"
                )
            self._index += 1
            self._filled = 0
            self._digest = hashlib.md5(usedforsecurity=False)
