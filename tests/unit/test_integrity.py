"""SegmentCheck: a stream read in any chunking passes exactly when it is its segments."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.providers.integrity import IntegrityError, SegmentCheck


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _manifest(segments: list[bytes]) -> list[tuple[int, str]]:
    return [(len(segment), _md5(segment)) for segment in segments]


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def _read(check: SegmentCheck, chunks: list[bytes]) -> None:
    for chunk in chunks:
        check.update(chunk)
    check.finish()


segments_st = st.lists(st.binary(max_size=64), min_size=1, max_size=6)
cuts_st = st.lists(st.integers(min_value=0, max_value=10_000), max_size=8)


@given(segments_st, cuts_st)
def test_the_segments_read_in_any_chunking_pass(segments: list[bytes], cuts: list[int]) -> None:
    _read(SegmentCheck("obj", _manifest(segments)), _chunked(b"".join(segments), cuts))


@given(segments_st, cuts_st, st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_found(
    segments: list[bytes], cuts: list[int], where: int, bit: int
) -> None:
    body = bytearray(b"".join(segments))
    if not body:
        return
    index = where % len(body)
    body[index] ^= 1 << bit
    found = SegmentCheck("obj", _manifest(segments))
    with pytest.raises(IntegrityError, match=r"obj: segment \d+ MD5 .* does not match"):
        _read(found, _chunked(bytes(body), cuts))


@given(segments_st, cuts_st, st.integers(min_value=1))
def test_a_short_body_is_found_at_its_end(
    segments: list[bytes], cuts: list[int], missing: int
) -> None:
    body = b"".join(segments)
    if not body:
        return
    short = body[: len(body) - 1 - (missing - 1) % len(body)]
    check = SegmentCheck("obj", _manifest(segments))
    for chunk in _chunked(short, cuts):
        check.update(chunk)
    with pytest.raises(IntegrityError, match="obj: body ended in segment"):
        check.finish()


@given(segments_st, st.binary(min_size=1, max_size=16))
def test_a_longer_body_is_refused(segments: list[bytes], extra: bytes) -> None:
    check = SegmentCheck("obj", _manifest(segments))
    with pytest.raises(IntegrityError, match="obj: body is longer than its segments"):
        check.update(b"".join(segments) + extra)


def test_a_bad_segment_is_named_as_soon_as_it_ends() -> None:
    check = SegmentCheck("large object k", [(3, _md5(b"abc")), (3, _md5(b"def"))])
    check.update(b"ab")
    with pytest.raises(IntegrityError, match=r"segment 1 MD5 .* the manifest's"):
        check.update(b"X")


def test_empty_segments_are_settled_without_reading() -> None:
    check = SegmentCheck("obj", [(0, _md5(b"")), (2, _md5(b"hi")), (0, _md5(b""))])
    check.update(b"hi")
    check.finish()
    SegmentCheck("obj", [(0, _md5(b""))]).finish()
