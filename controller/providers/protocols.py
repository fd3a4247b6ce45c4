"""The small Protocols the operator and the replication engine talk to.

Each cloud implements them (``providers/aws`` with boto3, ``providers/openstack`` with
openstacksdk; ``providers/kubernetes`` for capacity on Kubernetes clusters). Only the
providers know an SDK; everything above sees these types. Every implementation sends its
calls through its provider's :class:`~controller.providers.calls.CloudCalls`, so region
gates, retry budgets and outcome accounting apply to all of them alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from controller.core.apiplane import CallOutcome

# --------------------------------------------------------------------------- traffic (DNS)


@dataclass(frozen=True)
class SiteRecord:
    """One site's share of a DNS name."""

    site: str
    values: tuple[str, ...]
    weight: int
    health_check_url: str | None = None
    """Failover routing: a URL the DNS service itself checks (static stability: DNS
    answers the secondary even if Lifeboat and every control plane are down)."""


@dataclass(frozen=True)
class DnsRecord:
    """A DNS name in a hosted zone (given by ID, or by name when there is no ID)."""

    hosted_zone_id: str | None
    hosted_zone_name: str | None
    name: str
    type: str
    ttl: int


Routing = Literal["Weighted", "Failover"]

OWNER_PREFIX = "_lifeboat"
"""The owner record of a DNS name ``N`` is the TXT record ``_lifeboat.N`` (an underscore
label, as DNS uses for records about a name; it can sit beside a CNAME)."""
_HERITAGE = "heritage=lifeboat"


def owner_name(name: str) -> str:
    """The name of ``name``'s owner record (both fully qualified, with the final dot)."""
    fqdn = name if name.endswith(".") else f"{name}."
    return f"{OWNER_PREFIX}.{fqdn}"


@dataclass(frozen=True)
class DnsOwner:
    """What Lifeboat keeps in a DNS name's owner record (as external-dns's TXT registry
    does): who owns the name (``namespace/name`` of the app), and the epoch, active site and
    desired-state fingerprint of the last change it made. The DNS change of a failover
    replaces this record conditionally, so a writer holding an older epoch is refused."""

    owner: str
    epoch: int
    active_site: str
    fingerprint: str

    def text(self) -> str:
        """The TXT value (without quotes)."""
        return (
            f"{_HERITAGE},owner={self.owner},epoch={self.epoch},site={self.active_site},"
            f"fp={self.fingerprint}"
        )

    @classmethod
    def parse(cls, text: str) -> DnsOwner | None:
        """The owner record ``text`` holds (quotes allowed), None if it is not Lifeboat's
        or cannot be read."""
        fields = dict(
            part.split("=", 1) for part in text.strip().strip('"').split(",") if "=" in part
        )
        if f"heritage={fields.get('heritage')}" != _HERITAGE:
            return None
        try:
            return cls(fields["owner"], int(fields["epoch"]), fields["site"], fields["fp"])
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class DnsReading:
    """What a DNS name holds, read back: its owner record (None: none) and, when it has
    none that Lifeboat can read, what at the name is someone else's (an owner record
    Lifeboat did not write, record sets of sites the plan does not have; None: nothing)."""

    owner: DnsOwner | None
    foreign: str | None = None


@dataclass(frozen=True)
class TrafficPlan:
    """The DNS state to reach.

    ``Weighted``: one record set per site, the active site weighted 100, the others 0.
    ``Failover``: the active site (weight 100) is the primary record, the best standby
    (the highest weight among the rest, by plan order) the secondary, each with a DNS
    health check when ``health_check_url`` is given; other sites get no record.

    Record sets of ``record`` for sites not in ``records`` are removed in the same atomic
    change (a removed site must not keep a weight), and so are all of ``retire``'s (the
    name the app was published under before it was renamed).
    """

    record: DnsRecord
    records: tuple[SiteRecord, ...]
    retire: DnsRecord | None = None
    comment: str = ""
    routing: Routing = "Weighted"
    owner: DnsOwner | None = None
    """The owner record the change writes (replacing the name's current one, which must
    name the same owner and no newer epoch). None only for a name Lifeboat does not own
    (tests of the raw record mechanics)."""


@dataclass(frozen=True)
class TrafficChange:
    """A DNS change as submitted; ``in_sync`` once the provider reports it propagated."""

    change_id: str
    in_sync: bool
    submitted_at: float
    synced_at: float | None


class TrafficManager(Protocol):
    """Moves users between sites through DNS (Route 53, Designate)."""

    async def apply(self, plan: TrafficPlan) -> TrafficChange:
        """Make DNS match ``plan`` in one atomic change and wait until it is in sync."""
        ...

    async def weights(self, plan: TrafficPlan) -> dict[str, int]:
        """The weights DNS holds now for the plan's record, by site."""
        ...

    async def read(self, plan: TrafficPlan) -> DnsReading:
        """What the plan's record name holds now: its owner record and its record sets."""
        ...


# --------------------------------------------------------------------------- identity


class IdentityChecker(Protocol):
    """Verifies that a provider's credentials work."""

    async def whoami(self) -> str:
        """The account (or project) the credentials belong to."""
        ...


# --------------------------------------------------------------------------- API plane


@dataclass(frozen=True)
class ProbeReport:
    """One API-plane probe of a region: how the cheap read call went, and what it said."""

    region: str
    outcome: CallOutcome
    latency: float
    zones: tuple[tuple[str, str], ...] = ()
    """(zone, provider-reported state), e.g. ("us-east-1a", "available")."""
    detail: str = ""


class ApiPlaneProbe(Protocol):
    """A cheap, read-only call against a region's management API (EC2
    DescribeAvailabilityZones; Keystone token + Nova availability zones). It goes through
    the region's gate as a probe, so it is sent even when the region is Impaired."""

    async def probe(self, region: str) -> ProbeReport: ...


# --------------------------------------------------------------------------- capacity


@dataclass(frozen=True)
class ZoneCapacity:
    zone: str
    desired: int
    """What the site is asked to run in the zone."""
    running: int
    """What runs and is ready there now."""


@dataclass(frozen=True)
class CapacityState:
    zones: tuple[ZoneCapacity, ...]
    minimum: int = 0
    maximum: int = 0
    failures: tuple[str, ...] = ()
    """Recent scale-ups of the site that failed, in the cloud's words (failed Auto Scaling
    activities, Nova servers in ERROR): each newly seen one that failed for capacity is also
    counted against the region's API plane."""
    headroom: int | None = None
    """Instances more the cloud's quota allows (None: the cloud does not say)."""
    max_size: int | None = None
    """The capacity's own bound where it has one (an Auto Scaling group's MaxSize)."""
    unit: str = "instances Ready"
    """What ``running`` counts, in words (``instances InService``, ``servers ACTIVE``)."""

    @property
    def desired(self) -> int:
        return sum(z.desired for z in self.zones)

    def zone(self, name: str) -> ZoneCapacity:
        return next((z for z in self.zones if z.zone == name), ZoneCapacity(name, 0, 0))


class CapacityDriver(Protocol):
    """Reads and changes a site's running capacity per zone (Auto Scaling group, OpenStack
    servers from a template, Kubernetes Deployments per zone)."""

    region: str
    """The region whose API plane the driver calls ("" for Kubernetes)."""

    async def observe(self) -> CapacityState: ...

    async def set_zones(self, desired: Mapping[str, int]) -> None:
        """Ask for ``desired[zone]`` instances in each zone; zones left out get none.

        Idempotent. Implementations that cannot place per zone exactly (an Auto Scaling
        group balances across its enabled zones) enable exactly the zones with a positive
        count and ask for the total.
        """
        ...


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    """Provider's content tag: MD5 for simple uploads; multipart/SLO tags differ."""
    last_modified: float
    metadata: Mapping[str, str] = field(default_factory=dict)
    """User metadata (keys lower-case, without the provider's prefix). Listings may not
    carry it; ``head`` always does."""
    md5: str | None = None
    """The content's MD5 (hex) when the store vouches for it: ``head`` of a simple object
    (an S3 single-part upload without KMS or customer keys; a Swift object that is no large
    object manifest). None when unknown (multipart, SLO/DLO, listings)."""


@dataclass(frozen=True)
class OpenedObject:
    """An object being read: what its GET's answer says about it (as ``head`` would), and
    its bytes. Read ``chunks`` at most once, and ``aclose`` it however the reading ends."""

    info: ObjectInfo
    chunks: AsyncIterator[bytes]
    release: Callable[[], None]
    """Drops the response, read or not (idempotent)."""

    async def aclose(self) -> None:
        close = getattr(self.chunks, "aclose", None)
        try:
            if close is not None:
                await close()
        finally:
            self.release()


async def read_through(opened: OpenedObject | None, key: str) -> AsyncIterator[bytes]:
    """An opened object's bytes, closed however the reading ends; KeyError for None (no
    such object): ``get`` in terms of ``open``."""
    if opened is None:
        raise KeyError(key)
    try:
        async for chunk in opened.chunks:
            yield chunk
    finally:
        await opened.aclose()


class ObjectStore(Protocol):
    """One bucket (S3) or container (Swift) in one region.

    Bodies stream in both directions: no implementation holds a whole object in memory.
    ``put`` makes the object visible only when it is complete (multipart upload / SLO),
    and verifies what the store received against the caller's digest when given; what it
    returns may come from the write's answer (no extra HEAD), so ``last_modified`` may have
    that answer's one-second resolution.
    """

    region: str

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``, in key order (paginated underneath)."""
        ...

    async def head(self, key: str) -> ObjectInfo | None: ...

    def get(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks (raises KeyError when it does not exist)."""
        ...

    async def open(self, key: str) -> OpenedObject | None:
        """Start reading ``key`` with one GET, whose answer tells what a HEAD would (so a
        copy needs no HEAD before it); None when there is no such object."""
        ...

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
        """Store ``key``; ``replacing=False`` says the caller has just seen no object at
        ``key`` (a listing), so a store may skip looking for one it would have to clean up
        after (Swift: the segments of a large object). A wrong hint costs storage, never
        data: an object written meanwhile by someone else leaves its segments behind."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone."""
        ...


@dataclass(frozen=True)
class ObjectChange:
    """A store's notice that an object was written or removed (S3 event notifications)."""

    bucket: str
    key: str
    removed: bool
    time: float
    """When the change happened (the event's time), seconds since the epoch."""
    etag: str = ""
    size: int = 0


@dataclass(frozen=True)
class ChangeMessage:
    """One delivery from a change feed: its changes, and what acknowledges it."""

    receipt: str
    changes: tuple[ObjectChange, ...]


class ObjectChangeFeed(Protocol):
    """Change notices of a bucket (S3 event notifications delivered to an SQS queue).

    Notices only speed replication up: they may come late, twice or never, so the
    periodic scan stays the source of truth. A message is acknowledged once handled;
    unacknowledged ones come back after the queue's visibility timeout.
    """

    region: str

    async def receive(self, max_messages: int = 10) -> list[ChangeMessage]:
        """What is waiting now (possibly nothing); does not block for long."""
        ...

    async def ack(self, receipts: Sequence[str]) -> None:
        """Remove handled messages from the feed."""
        ...


# --------------------------------------------------------------------------- volumes


@dataclass(frozen=True)
class Snapshot:
    id: str
    volume_id: str
    region: str
    state: Literal["pending", "completed", "error"]
    created_at: float
    size_gb: int
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeInfo:
    """A block volume (one made by :meth:`VolumeSnapshots.restore`, found again by tags)."""

    id: str
    zone: str
    state: str
    """The provider's word: creating, available, in-use, error, ..."""
    snapshot_id: str
    """The snapshot it was made from ("" when none, or when the provider does not say:
    Cinder does not report the backup a volume was restored from)."""
    tags: Mapping[str, str] = field(default_factory=dict)


class VolumeSnapshots(Protocol):
    """Point-in-time copies of block volumes, and their copies in other regions (EBS
    snapshots + CopySnapshot; Cinder backups exported/imported across regions)."""

    region: str

    async def create(self, volume_id: str, tags: Mapping[str, str]) -> Snapshot: ...

    async def copy_from(self, snapshot: Snapshot, tags: Mapping[str, str]) -> Snapshot:
        """Copy ``snapshot`` (from another region) into this region; called on the
        destination. EBS CopySnapshot needs no call to the source region; Cinder reads it
        (the backup's record is exported there), so copies are made ahead of a failover.
        Restoring a copy never needs the source region's API; a Cinder copy's data stay in
        the backup store the source region wrote to, which the restoring region's backup
        service must reach."""
        ...

    async def volumes(self, tags: Mapping[str, str]) -> list[VolumeInfo]:
        """Volumes in this region carrying all of ``tags`` (those being deleted left out),
        so that a restore interrupted after its volume was made finds it again."""
        ...

    async def volumes_by_id(self, volume_ids: Sequence[str]) -> list[VolumeInfo]:
        """Those of the volumes that exist in this region, in any state (``deleting``
        included); unknown IDs are left out, not an error."""
        ...

    async def list(self, tags: Mapping[str, str]) -> list[Snapshot]:
        """Snapshots in this region carrying all of ``tags``, newest first."""
        ...

    async def get(self, snapshot_id: str) -> Snapshot | None: ...

    async def delete(self, snapshot_id: str) -> None: ...

    async def restore(
        self, snapshot_id: str, zone: str, tags: Mapping[str, str], *, key: str
    ) -> str:
        """Create a volume from the snapshot in ``zone``; its ID. ``key`` names the volume
        wanted: a provider whose restored volumes may lose their tags (Cinder puts the
        backed-up volume's metadata in place of the new volume's own) returns the volume an
        earlier call with the same key made instead of making another."""
        ...
