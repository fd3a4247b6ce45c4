"""Checks every object store makes of a streamed body before it makes the object visible.

Shared by the S3 and Swift stores, so both refuse a body the same way and with the same
words: longer than declared, shorter than declared, or not matching the caller's MD5.
"""

from __future__ import annotations


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
