"""The ``rfc2136`` traffic provider against a real BIND 9 (Debian's package, run by the
sandbox on loopback: :class:`sandbox.bind.BindServer`). Nothing is emulated here: named
checks the TSIG signatures and the updates' prerequisites itself.

The same DNS contract as Route 53's and Designate's (tests/integration/
test_provider_contracts.py): a change moves the name atomically, a renamed record is
retired in the same update, a name has one owner and an older epoch is refused, a change
DNS already holds is not sent again, records Lifeboat did not write are someone else's —
and, as on Route 53, the server itself refuses a writer whose read of the owner record is
stale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import dns.tsig
import pytest

from controller.api.models import CloudProviderSpec
from controller.core.apiplane import CallOutcome
from controller.providers import registry
from controller.providers.errors import DnsFenced, DnsOwnedByOther, DnsZoneNotFound
from controller.providers.outcomes import Classified
from controller.providers.protocols import (
    DnsOwner,
    DnsReading,
    DnsRecord,
    SiteRecord,
    TrafficPlan,
)
from controller.providers.rfc2136.cloud import Rfc2136Cloud
from controller.providers.rfc2136.connector import DnsAnswerError
from controller.providers.rfc2136.dns import Rfc2136Traffic
from sandbox.bind import BindServer

pytestmark = pytest.mark.integration

ZONE = "lifeboat.test"
ADDRESSES = {"use1": "127.0.0.1", "usw2": "127.0.0.2", "euc1": "127.0.0.3"}


@pytest.fixture(scope="module")
def bind() -> Iterator[BindServer]:
    with BindServer([ZONE, "other.test"]) as server:
        yield server


def provider_spec(bind: BindServer, zones: tuple[str, ...] = (ZONE,)) -> CloudProviderSpec:
    return CloudProviderSpec.model_validate(
        {
            "type": "rfc2136",
            "regions": ["dc1"],
            "credentials": {"secretRef": {"name": "tsig"}},
            "rfc2136": {
                "server": bind.host,
                "port": bind.port,
                "zones": list(zones),
                "tsigKeyName": bind.key_name,
                "timeoutSeconds": 2,
            },
        }
    )


@dataclasses.dataclass
class Calls:
    seen: list[tuple[str, CallOutcome]] = dataclasses.field(default_factory=list)

    def __call__(
        self, region: str, service: str, operation: str, verdict: Classified, latency: float
    ) -> None:
        self.seen.append((operation, verdict.outcome))

    def updates(self) -> int:
        return sum(1 for operation, _ in self.seen if operation == "Update")


@pytest.fixture
async def cloud(bind: BindServer) -> AsyncIterator[tuple[Rfc2136Cloud, Calls]]:
    calls = Calls()
    connected = registry.connect("dns", provider_spec(bind), {"tsig_secret": bind.secret}, calls)
    assert isinstance(connected, Rfc2136Cloud)
    yield connected, calls
    connected.close()


def answer(bind: BindServer, name: str, rdtype: str = "A") -> tuple[str, ...]:
    """What named answers anyone for ``name`` (an unsigned query, as resolvers ask)."""
    query = dns.message.make_query(f"{name}.", rdtype)
    reply = dns.query.tcp(query, bind.host, port=bind.port, timeout=3)
    kind = dns.rdatatype.from_text(rdtype)
    return tuple(
        sorted(r.to_text() for rrset in reply.answer if rrset.rdtype == kind for r in rrset)
    )


def plan(record: DnsRecord, *sites: tuple[str, int]) -> TrafficPlan:
    return TrafficPlan(
        record=record,
        records=tuple(SiteRecord(site, (ADDRESSES[site],), weight) for site, weight in sites),
        comment="rfc2136 test",
    )


def owned(base: TrafficPlan, owner: str, epoch: int) -> TrafficPlan:
    active = max(base.records, key=lambda r: r.weight).site
    return dataclasses.replace(base, owner=DnsOwner(owner, epoch, active, f"fp-{epoch}"))


def record(name: str) -> DnsRecord:
    return DnsRecord(None, ZONE, f"{name}.{ZONE}", "A", 30)


# --------------------------------------------------------------------------- the contract


async def test_traffic_moves_in_one_update_and_a_renamed_record_is_retired(
    bind: BindServer, cloud: tuple[Rfc2136Cloud, Calls]
) -> None:
    connected, calls = cloud
    traffic = connected.traffic("dc1")
    web = record("web")
    first = owned(plan(web, ("use1", 100), ("usw2", 0)), "shop/web", 1)
    change = await traffic.apply(first)
    assert change.in_sync and change.synced_at is not None
    assert change.change_id.startswith(f"{ZONE}.@")  # the zone's serial after the update
    assert answer(bind, web.name) == (ADDRESSES["use1"],)
    assert await traffic.weights(first) == {"use1": 100, "usw2": 0}

    moved = owned(plan(web, ("usw2", 100), ("euc1", 0)), "shop/web", 2)
    await traffic.apply(moved)
    assert answer(bind, web.name) == (ADDRESSES["usw2"],)
    assert await traffic.weights(moved) == {"usw2": 100, "euc1": 0}
    assert calls.updates() == 2  # one update per change

    renamed = record("www")
    await traffic.apply(dataclasses.replace(moved, record=renamed, retire=web))
    assert calls.updates() == 3  # the retirement went in the same update
    assert answer(bind, web.name) == ()
    assert answer(bind, f"_lifeboat.{web.name}", "TXT") == ()
    assert answer(bind, renamed.name) == (ADDRESSES["usw2"],)


async def test_a_name_has_one_owner_and_an_older_epoch_is_refused(
    bind: BindServer, cloud: tuple[Rfc2136Cloud, Calls]
) -> None:
    traffic = cloud[0].traffic("dc1")
    name = record("owned")
    base = plan(name, ("use1", 100), ("usw2", 0))
    assert await traffic.read(base) == DnsReading(None)
    await traffic.apply(owned(base, "shop/web", 1))
    assert await traffic.read(base) == DnsReading(DnsOwner("shop/web", 1, "use1", "fp-1"))
    await traffic.apply(owned(plan(name, ("use1", 0), ("usw2", 100)), "shop/web", 2))

    with pytest.raises(DnsFenced) as fenced:  # a deposed writer, late
        await traffic.apply(owned(base, "shop/web", 1))
    assert (fenced.value.stored, fenced.value.mine) == (2, 1)
    with pytest.raises(DnsOwnedByOther) as taken:  # another app, same name
        await traffic.apply(owned(base, "other/app", 9))
    assert taken.value.owner == "shop/web"
    assert answer(bind, name.name) == (ADDRESSES["usw2"],)
    assert (await traffic.read(base)).owner == DnsOwner("shop/web", 2, "usw2", "fp-2")


async def test_a_change_dns_already_holds_is_not_sent_again(
    cloud: tuple[Rfc2136Cloud, Calls],
) -> None:
    connected, calls = cloud
    traffic = connected.traffic("dc1")
    change = owned(plan(record("again"), ("use1", 100), ("usw2", 0)), "a/b", 3)
    await traffic.apply(change)
    before = calls.updates()
    again = await traffic.apply(change)
    assert again.in_sync and again.change_id.endswith("@in-place")
    assert calls.updates() == before


async def test_records_lifeboat_did_not_write_are_someone_elses(
    bind: BindServer, cloud: tuple[Rfc2136Cloud, Calls]
) -> None:
    traffic = cloud[0].traffic("dc1")
    theirs = record("theirs")
    await traffic.apply(plan(theirs, ("euc1", 100)))  # no owner record: not Lifeboat's
    mine = plan(theirs, ("use1", 100), ("usw2", 0))
    reading = await traffic.read(mine)
    assert reading.owner is None and reading.foreign is not None
    with pytest.raises(DnsOwnedByOther):
        await traffic.apply(owned(mine, "shop/web", 1))
    assert answer(bind, theirs.name) == (ADDRESSES["euc1"],)
    legacy = record("legacy")  # this app's own sites' values only: taken over
    await traffic.apply(plan(legacy, ("use1", 100), ("usw2", 0)))
    adopted = plan(legacy, ("use1", 0), ("usw2", 100))
    assert await traffic.read(adopted) == DnsReading(None)
    await traffic.apply(owned(adopted, "shop/web", 2))
    assert answer(bind, legacy.name) == (ADDRESSES["usw2"],)


async def test_named_refuses_an_update_whose_owner_record_moved_meanwhile(
    bind: BindServer, cloud: tuple[Rfc2136Cloud, Calls], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a read-check-write cannot close: the owner record changes between this
    writer's read and its update. named checks the update's prerequisite (the owner
    record exactly as read) and refuses it whole (YXRRSET/NXRRSET): nothing changes."""
    traffic = cloud[0].traffic("dc1")
    name = record("race")
    await traffic.apply(owned(plan(name, ("use1", 100), ("usw2", 0)), "shop/web", 1))
    stale = await traffic._state(name)
    await traffic.apply(owned(plan(name, ("use1", 0), ("usw2", 100)), "shop/web", 2))
    real_state = Rfc2136Traffic._state
    reads = 0

    async def first_read_is_stale(self: Rfc2136Traffic, which: DnsRecord) -> Any:
        nonlocal reads
        reads += 1
        return stale if reads == 1 else await real_state(self, which)

    monkeypatch.setattr(Rfc2136Traffic, "_state", first_read_is_stale)
    late = owned(plan(name, ("euc1", 100), ("use1", 0)), "shop/web", 1)
    with pytest.raises(DnsFenced) as fenced:  # what it read allows it; named does not
        await traffic.apply(late)
    assert fenced.value.stored == 2
    assert answer(bind, name.name) == (ADDRESSES["usw2"],)


async def test_an_update_whose_answer_was_lost_is_found_done(
    bind: BindServer, cloud: tuple[Rfc2136Cloud, Calls], monkeypatch: pytest.MonkeyPatch
) -> None:
    """named applied the update but its answer never came: the retried update is refused
    by its own prerequisite (the owner record it changed) and, DNS holding this very
    change, counts as done; asked again later (after a crash), nothing is sent."""
    connected, calls = cloud
    traffic = connected.traffic("dc1")
    name = record("lost")
    connector = connected.connector
    real_update = type(connector).update
    lost = 0

    def first_answer_lost(self: Any, message: Any) -> Any:
        nonlocal lost
        answer = real_update(self, message)
        if not lost:
            lost += 1
            raise dns.exception.Timeout
        return answer

    monkeypatch.setattr(type(connector), "update", first_answer_lost)
    change = owned(plan(name, ("use1", 100), ("usw2", 0)), "shop/web", 4)
    done = await traffic.apply(change)
    assert done.in_sync
    assert [o for op, o in calls.seen if op == "Update"] == [CallOutcome.TIMEOUT, CallOutcome.OK]
    assert answer(bind, name.name) == (ADDRESSES["use1"],)
    sent = calls.updates()
    again = await traffic.apply(change)
    assert again.in_sync and calls.updates() == sent


# --------------------------------------------------------------------------- keys, zones


async def test_a_wrong_tsig_secret_is_an_authentication_error(bind: BindServer) -> None:
    wrong = registry.connect(
        "dns", provider_spec(bind), {"tsig_secret": "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA=="}
    )
    try:
        with pytest.raises((dns.tsig.PeerError, DnsAnswerError)):
            await wrong.identity.whoami()
        report = await wrong.probe.probe("dc1")
        assert report.outcome is CallOutcome.AUTH_ERROR
        assert "d3Jvbmc" not in report.detail  # the secret is never quoted
        traffic = wrong.traffic("dc1")
        with pytest.raises((dns.tsig.PeerError, DnsAnswerError)):
            await traffic.apply(owned(plan(record("nokey"), ("use1", 100)), "a/b", 1))
        assert answer(bind, f"nokey.{ZONE}") == ()
    finally:
        wrong.close()


async def test_the_probe_and_identity_read_the_zones(bind: BindServer) -> None:
    connected = registry.connect("dns", provider_spec(bind), {"tsig_secret": bind.secret})
    try:
        report = await connected.probe.probe("dc1")
        assert report.outcome is CallOutcome.OK
        assert f"zone {ZONE} serial" in report.detail
        assert await connected.identity.whoami() == (
            f"TSIG key {bind.key_name} at {bind.host}:{bind.port}"
        )
    finally:
        connected.close()
    unserved = registry.connect(
        "dns", provider_spec(bind, (ZONE, "elsewhere.test")), {"tsig_secret": bind.secret}
    )
    try:
        with pytest.raises(DnsZoneNotFound):
            await unserved.identity.whoami()
        traffic = unserved.traffic("dc1")
        with pytest.raises(DnsZoneNotFound, match="does not serve"):
            await traffic.apply(
                plan(DnsRecord(None, "elsewhere.test", "a.elsewhere.test", "A", 30), ("use1", 1))
            )
        with pytest.raises(DnsZoneNotFound, match=r"rfc2136\.zones"):
            await traffic.apply(
                plan(DnsRecord(None, "other.test", "a.other.test", "A", 30), ("use1", 1))
            )
    finally:
        unserved.close()


async def test_an_unreachable_server_is_reported_by_the_probe(bind: BindServer) -> None:
    spec = provider_spec(bind).model_copy(
        update={"rfc2136": provider_spec(bind).rfc2136.model_copy(update={"port": 9})}  # type: ignore[union-attr]
    )
    connected = registry.connect("dns", spec, {"tsig_secret": bind.secret})
    try:
        report = await connected.probe.probe("dc1")
        assert report.outcome in (CallOutcome.UNREACHABLE, CallOutcome.TIMEOUT)
    finally:
        connected.close()
