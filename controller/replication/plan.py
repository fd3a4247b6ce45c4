"""Object replication, decided: from two listings to copies, deletes and conflicts.

Pure: no I/O, no clock. The engine (:mod:`controller.replication.objects`) lists the
source and the destination in key order, pairs them up with :func:`pair_listings`, asks
:func:`plan_key` what each key needs, reads an object's metadata (HEAD) only where the
answer depends on it, and asks again.

**What each end holds.** A listing gives size and ETag, not metadata. What Lifeboat knows
beyond that comes from the site's manifest (:class:`Entry`: the object's ETag and size
when Lifeboat last saw it, the epoch that wrote it, and, for its copies, the source ETag
they were made from) or, failing that, from the object's stamps read with HEAD:

=========================  ===================================================
``lifeboat-epoch``         epoch the source version was written under
``lifeboat-source-etag``   ETag of the source version the copy was made from
``lifeboat-source-site``   site it was copied from
``lifeboat-md5``           MD5 of the content, when known before the copy
``lifeboat-mtime``         when the original version was written (Unix seconds)
=========================  ===================================================

An object without stamps was written by the app: its epoch is the one in force at its
modification time (:meth:`~controller.replication.epochs.EpochHistory.epoch_at`).

**Rules, per key** (under the location's prefix, ``.lifeboat/`` excluded):

* the same content at both ends (equal size, and equal ETags, or the destination is our
  copy of this very source version, or the source our copy of the destination's, or both
  copies of one version, or equal known MD5s) → nothing to move; the destination's
  manifest entry is recorded;
* missing at the destination → copy;
* different content → copy, unless the destination's version was written under a newer
  epoch than the source's: then it is a **conflict**, refused and reported (an older-epoch
  copy never overwrites a newer-epoch object);
* missing at the source, and known to have been there under the current epoch (this
  flow found or copied that very version there, or the source's manifest — written while
  the source was a destination, before the epoch began — lists it) → the app deleted it
  at the source: deleted with ``Propagate``, kept with ``Keep``;
* missing at the source, written (or copied here) under an older epoch, and not known to
  have reached the source → **unreplicated**: after a failover, the old primary's writes
  that never made it to the new one. Kept whatever the delete policy, reported
  (:class:`Unreplicated`), and left for a person to merge into the active site or discard;
* missing at the source, written here under the current epoch → with ``Propagate`` deleted
  if it is a Lifeboat copy (its source version was written under the current epoch, so the
  source had it); an object the app wrote at the destination under the current epoch is a
  conflict, never deleted.

An object's epoch is known from its stamp or manifest entry; failing those, the epoch in
force when it was last modified *at the destination* is an upper bound (a copy is made
after its source version was written), enough to know an object is of an older epoch
without reading its metadata.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from controller.providers.protocols import ObjectInfo
from controller.replication.epochs import EpochHistory

RESERVED = ".lifeboat/"
"""Keys under ``<prefix>.lifeboat/`` are Lifeboat's own (manifests): never replicated."""

STAMP_PREFIX = "lifeboat-"
STAMP_EPOCH = "lifeboat-epoch"
STAMP_SOURCE_ETAG = "lifeboat-source-etag"
STAMP_SOURCE_SITE = "lifeboat-source-site"
STAMP_MD5 = "lifeboat-md5"
STAMP_MTIME = "lifeboat-mtime"


class ListingOrderError(RuntimeError):
    """A store listed keys out of order: pairing them up would be wrong, so nothing is done."""


@dataclass(frozen=True)
class Entry:
    """What a site's manifest says of one of its objects."""

    etag: str
    size: int
    epoch: int | None = None
    """Epoch the version was written under (None: not known)."""
    source_etag: str | None = None
    """For a Lifeboat copy (or an object found equal to the source): the source version's
    ETag. None for an object the app wrote there."""
    md5: str | None = None
    """The content's MD5, when known."""
    held: int | None = None
    """The epoch of the flow that last found this very version at its source, or copied it
    from there (None: not known to have been at any source). A key absent at the source
    whose version was held there under the current epoch was deleted there."""

    def matches(self, info: ObjectInfo) -> bool:
        """Whether the entry still describes the object listed as ``info``."""
        return self.etag == info.etag and self.size == info.size


@dataclass(frozen=True)
class Side:
    """One end of a key: the object there (None: absent), its manifest entry, and whether
    ``info`` came from HEAD (so its metadata is complete) rather than a listing."""

    info: ObjectInfo | None
    entry: Entry | None = None
    headed: bool = False


@dataclass(frozen=True)
class Policy:
    """The flow's rules: its epoch, the app's epoch history, the delete policy."""

    epoch: int
    history: EpochHistory
    propagate_deletes: bool = False


@dataclass(frozen=True)
class Record:
    """The destination already holds the source's version: remember it (no transfer)."""

    key: str
    entry: Entry


@dataclass(frozen=True)
class Copy:
    """Copy the source version to the destination.

    ``resolved``: both ends' epochs are known and compared. An unresolved copy needs the
    metadata (HEAD) of the ends whose epoch is unknown, then :func:`plan_key` again.
    """

    key: str
    source: ObjectInfo
    target: ObjectInfo | None
    since: float
    """When the change was made at the source (for the RPO)."""
    source_epoch: int | None
    resolved: bool


@dataclass(frozen=True)
class Delete:
    """Delete the destination's object (delete policy Propagate)."""

    key: str
    target: ObjectInfo
    resolved: bool


@dataclass(frozen=True)
class Conflict:
    """A transfer refused by the epoch rule; reported, never carried out."""

    key: str
    source_etag: str
    """Empty for a refused delete (the key is absent at the source)."""
    target_etag: str
    source_epoch: int | None
    target_epoch: int
    reason: str


@dataclass(frozen=True)
class Unreplicated:
    """An object of an older epoch at the destination that never reached the source (the
    active site): kept, whatever the delete policy, and reported."""

    key: str
    target: ObjectInfo
    epoch: int
    """The epoch it was written under (at most: the epoch in force when it was written at
    the destination, when its stamps were not read)."""


Step = Record | Copy | Delete | Conflict | Unreplicated


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _entry(side: Side) -> Entry | None:
    """The side's manifest entry, if it still describes the object there."""
    if side.info is None or side.entry is None or not side.entry.matches(side.info):
        return None
    return side.entry


def origin(side: Side, history: EpochHistory) -> tuple[bool | None, int | None]:
    """(whether the object is a Lifeboat copy, the epoch that wrote it); None: not known
    without reading its metadata."""
    info = side.info
    if info is None:
        return None, None
    if side.headed:
        stamp = _int(info.metadata.get(STAMP_EPOCH))
        if stamp is not None:
            return STAMP_SOURCE_ETAG in info.metadata, stamp
        return False, history.epoch_at(info.last_modified)
    entry = _entry(side)
    if entry is not None:
        return entry.source_etag is not None, entry.epoch
    return None, None


def content_md5(side: Side) -> str | None:
    """The MD5 of the object's content, if anything vouches for it."""
    info = side.info
    if info is None:
        return None
    entry = _entry(side)
    if entry is not None and entry.md5:
        return entry.md5.lower()
    if info.md5:
        return info.md5.lower()
    if side.headed and info.metadata.get(STAMP_MD5):
        return info.metadata[STAMP_MD5].lower()
    return None


def same_content(source: Side, target: Side) -> bool:
    """Whether both ends hold the same content, as far as is known without reading it."""
    s, d = source.info, target.info
    if s is None or d is None or s.size != d.size:
        return False
    if s.etag == d.etag:
        return True
    s_entry, d_entry = _entry(source), _entry(target)
    if d_entry is not None and d_entry.source_etag == s.etag:
        return True  # the destination is our copy of this very version
    if s_entry is not None and s_entry.source_etag is not None:
        if s_entry.source_etag == d.etag:
            return True  # the source is our copy of the destination's version
        if d_entry is not None and d_entry.source_etag == s_entry.source_etag:
            return True  # both are copies of one version
    if target.headed and d.metadata.get(STAMP_SOURCE_ETAG) == s.etag:
        return True
    if source.headed and s.metadata.get(STAMP_SOURCE_ETAG) == d.etag:
        return True
    s_md5, d_md5 = content_md5(source), content_md5(target)
    return s_md5 is not None and s_md5 == d_md5


def plan_key(key: str, source: Side, target: Side, policy: Policy) -> Step | None:
    """What ``key`` needs (None: nothing)."""
    s, d = source.info, target.info
    if s is None and d is None:
        return None
    if s is None:
        assert d is not None
        return _absent_at_source(key, source, target, policy)
    if d is None:
        _, epoch = origin(source, policy.history)
        return Copy(key, s, None, s.last_modified, epoch, resolved=True)
    if same_content(source, target):
        known = _entry(target)
        if known is not None:
            if known.held == policy.epoch:
                return None
            return Record(key, replace(known, held=policy.epoch))
        _, s_epoch = origin(source, policy.history)
        _, d_epoch = origin(target, policy.history)
        md5 = content_md5(target) or content_md5(source)
        epoch = d_epoch if d_epoch is not None else s_epoch
        return Record(key, Entry(d.etag, d.size, epoch, s.etag, md5, policy.epoch))
    _, s_epoch = origin(source, policy.history)
    _, d_epoch = origin(target, policy.history)
    if s_epoch is None or d_epoch is None:
        return Copy(key, s, d, s.last_modified, s_epoch, resolved=False)
    if d_epoch > s_epoch:
        reason = (
            f"the destination's version was written under epoch {d_epoch}, "
            f"the source's under epoch {s_epoch}"
        )
        return Conflict(key, s.etag, d.etag, s_epoch, d_epoch, reason)
    return Copy(key, s, d, s.last_modified, s_epoch, resolved=True)


def held_at_source(source: Side, target: Side, policy: Policy) -> bool:
    """Whether the destination's version of a key is known to have been at the source under
    the current epoch: this flow found or copied it there (the destination's manifest entry
    says so), or the source's manifest, written while the source was a destination before
    this epoch, lists that very version (``source.entry``)."""
    d = target.info
    if d is None:
        return False
    known = _entry(target)
    if known is not None and known.held is not None and known.held >= policy.epoch:
        return True
    was = source.entry
    if was is None:
        return False
    listed = ObjectInfo(d.key, was.size, was.etag, 0.0, {}, was.md5)
    return same_content(Side(listed, was), target)


def _absent_at_source(key: str, source: Side, target: Side, policy: Policy) -> Step | None:
    d = target.info
    assert d is not None
    if held_at_source(source, target, policy):  # deleted at the source
        return Delete(key, d, resolved=True) if policy.propagate_deletes else None
    copy, epoch = origin(target, policy.history)
    newest = epoch if epoch is not None else policy.history.epoch_at(d.last_modified)
    if newest < policy.epoch:
        return Unreplicated(key, d, newest)
    if not policy.propagate_deletes:
        return None
    if copy is True and epoch is not None:
        return Delete(key, d, resolved=True)
    if copy is None or epoch is None:
        return Delete(key, d, resolved=False)
    reason = (
        f"absent at the source, but written at the destination under epoch {epoch} "
        f"(the current epoch is {policy.epoch}): not deleted"
    )
    return Conflict(key, "", d.etag, None, epoch, reason)


# --------------------------------------------------------------------------- listings


def relative(key: str, prefix: str) -> str | None:
    """``key`` relative to a location's ``prefix``; None when outside it or reserved."""
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    if not rest or rest.startswith(RESERVED):
        return None
    return rest


async def ordered(listing: AsyncIterator[ObjectInfo], prefix: str) -> AsyncIterator[ObjectInfo]:
    """The listing's objects under ``prefix`` with relative keys, checked to be in strictly
    increasing key order (raises :class:`ListingOrderError` otherwise).

    Key order is Python's string order (by code point), which is the byte order of the
    keys' UTF-8: the order S3's ListObjectsV2 and Swift's container listings both use, and
    the order of the manifests' pages. Keys a store can hold are valid UTF-8 (no lone
    surrogates), for which the two orders agree. A store listing in another order (UTF-16
    code units, a collation) is refused here, never paired wrongly."""
    previous: str | None = None
    async for info in listing:
        if previous is not None and info.key <= previous:
            raise ListingOrderError(f"listing out of order: {info.key!r} after {previous!r}")
        previous = info.key
        key = relative(info.key, prefix)
        if key is not None:
            yield ObjectInfo(key, info.size, info.etag, info.last_modified, info.metadata, info.md5)


async def pair_listings(
    source: AsyncIterator[ObjectInfo], target: AsyncIterator[ObjectInfo]
) -> AsyncIterator[tuple[str, ObjectInfo | None, ObjectInfo | None]]:
    """Merge two listings in key order into (key, source object, destination object)."""
    s = await anext(source, None)
    d = await anext(target, None)
    while s is not None or d is not None:
        if d is None or (s is not None and s.key < d.key):
            assert s is not None
            yield s.key, s, None
            s = await anext(source, None)
        elif s is None or d.key < s.key:
            yield d.key, None, d
            d = await anext(target, None)
        else:
            yield s.key, s, d
            s = await anext(source, None)
            d = await anext(target, None)
