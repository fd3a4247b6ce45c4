"""The probe engine against real servers on loopback: HTTP status sets, Host header, body
matches, TLS with a self-signed CA and SNI, TCP connects, timeouts; on asyncio's event loop
and on uvloop (the one ``lifeboat run`` uses)."""

from __future__ import annotations

import asyncio
import socketserver
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller import metrics
from controller.api.models import HealthPolicy, ResilientAppSpec, ZoneEndpoint
from controller.core.health import ProbeOutcome, ProbeResult, ZoneKey
from controller.operator.kube import NotFound
from controller.operator.loop import loop_factory
from controller.operator.probes import HttpProber, Resolver, RoundSchedule, compile_target
from tests.factories import app_spec

T = TypeVar("T")
KEY = ZoneKey("use1", "us-east-1a")
APP_HOST = "app.example.test"


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Runs a coroutine on a fresh event loop of the kind under test."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def runner(coroutine: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as loop:
            return loop.run(coroutine)

    return runner


# ----------------------------------------------------------------------------- servers


async def _handler(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == "ok":
        return web.Response(text='{"status": "ready"}')
    if name == "redirect":
        raise web.HTTPFound("/ok")
    if name == "teapot":
        return web.Response(status=418, text="short and stout")
    if name == "unavailable":
        return web.Response(status=503, text="ready")  # the body alone must not make it healthy
    if name == "host":
        seen = request.headers.get("Host", "")
        return web.Response(status=200 if seen == APP_HOST else 421, text=seen)
    if name == "chunked":
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"warming up, then rea")
        await response.write(b"dy to serve")
        await response.write_eof()
        return response
    if name == "late":  # the word comes after 200 KiB
        return web.Response(body=b"x" * 200_000 + b"ready")
    if name == "hang":
        await asyncio.sleep(30)
    if name == "from":  # healthy only for probes from the address named in the query
        return web.Response(status=200 if request.remote == request.query["source"] else 403)
    raise web.HTTPNotFound()


@asynccontextmanager
async def http_server(tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1; yields its base URL."""
    app = web.Application()
    app.router.add_get("/{name}", _handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def endpoint(url: str, **settings: Any) -> ZoneEndpoint:
    return ZoneEndpoint.model_validate({"zone": KEY.zone, "url": url, **settings})


async def probe(
    url: str,
    *,
    limit: float = 2.0,
    prober: HttpProber | None = None,
    namespace: str = "shop",
    health: Mapping[str, Any] | None = None,
    **settings: Any,
) -> ProbeResult:
    """One probe of ``url`` as an app's only endpoint would be probed."""
    spec = _spec(endpoint(url, **settings), health or {})
    results = await (prober or HttpProber()).probe_app(spec, namespace, app="test")
    assert len(results) == 1
    return results[0]


def _spec(one: ZoneEndpoint, health: Mapping[str, Any]) -> ResilientAppSpec:
    raw = app_spec()
    raw["sites"][0]["endpoints"] = [one.model_dump(by_alias=True, exclude_none=True)]
    raw["sites"][1]["endpoints"] = []
    raw["health"] = {"intervalSeconds": 5, "timeoutSeconds": 2.0, **health}
    return ResilientAppSpec.model_validate(raw)


# ----------------------------------------------------------------------------- HTTP


def test_only_2xx_is_healthy_by_default_and_redirects_are_not_followed(run: Any) -> None:
    async def main() -> list[ProbeResult]:
        async with http_server() as base:
            return [await probe(f"{base}/{name}") for name in ("ok", "redirect", "teapot")]

    ok, redirect, teapot = run(main())
    assert (ok.outcome, ok.detail) == (ProbeOutcome.OK, "HTTP 200")
    assert ok.key == KEY and ok.latency > 0
    assert (redirect.outcome, redirect.detail) == (ProbeOutcome.FAIL, "HTTP 302, expected 200-299")
    assert teapot.outcome is ProbeOutcome.FAIL


def test_expected_status_codes_and_ranges(run: Any) -> None:
    async def main() -> list[ProbeResult]:
        async with http_server() as base:
            wanted: dict[str, Any] = {"http": {"expectedStatus": ["200-399", "418"]}}
            return [
                await probe(f"{base}/redirect", **wanted),
                await probe(f"{base}/teapot", **wanted),
                await probe(f"{base}/unavailable", **wanted),
                # the app's default applies to endpoints without settings of their own
                await probe(f"{base}/teapot", health={"http": {"expectedStatus": ["418"]}}),
            ]

    redirect, teapot, unavailable, by_default = run(main())
    assert redirect.ok and teapot.ok and by_default.ok
    assert unavailable.detail == "HTTP 503, expected 200-399,418"


def test_endpoints_expecting_the_same_statuses_share_one_set() -> None:
    """Every compiled target keeps its accepted status codes; a fleet of apps expecting
    the default 200-299 (or the same ranges) keeps one set, not one per endpoint."""
    health = HealthPolicy.model_validate({})
    first, second = (
        compile_target(KEY, ZoneEndpoint.model_validate({"zone": "a", "url": url}), health)
        for url in ("http://127.0.0.1:1/", "http://127.0.0.2:2/healthz")
    )
    assert first.statuses is second.statuses
    assert first.statuses == frozenset(range(200, 300))
    ranged = {"expectedStatus": ["200-399", "418"]}
    one, other = (
        compile_target(
            KEY,
            ZoneEndpoint.model_validate({"zone": "a", "url": "http://h/", "http": ranged}),
            health,
        ).statuses
        for _ in range(2)
    )
    assert one is other and one == frozenset([*range(200, 400), 418])


def test_host_header_is_sent(run: Any) -> None:
    async def main() -> tuple[ProbeResult, ProbeResult]:
        async with http_server() as base:
            return (
                await probe(f"{base}/host", http={"host": APP_HOST}),
                await probe(f"{base}/host"),
            )

    virtual, plain = run(main())
    assert virtual.ok
    assert plain.detail == "HTTP 421, expected 200-299"


def test_body_must_contain_or_match_within_the_bytes_read(run: Any) -> None:
    async def main() -> list[ProbeResult]:
        async with http_server() as base:
            return [
                await probe(f"{base}/ok", http={"body": {"contains": '"ready"'}}),
                await probe(f"{base}/ok", http={"body": {"regex": r"status.:\s*.(ready|up)"}}),
                await probe(f"{base}/ok", http={"body": {"contains": "down"}}),
                await probe(f"{base}/chunked", http={"body": {"contains": "ready"}}),
                await probe(f"{base}/late", http={"body": {"contains": "ready"}}),
                await probe(
                    f"{base}/late",
                    http={"body": {"contains": "ready"}, "maxBodyBytes": 300_000},
                ),
                await probe(f"{base}/unavailable", http={"body": {"contains": "ready"}}),
            ]

    contains, regex, missing, chunked, beyond, within, unavailable = run(main())
    assert contains.ok and regex.ok
    assert missing.detail == "HTTP 200, body does not match"
    assert chunked.ok  # the match spans two chunks, read without their framing
    assert not beyond.ok and within.ok  # only maxBodyBytes are read
    assert unavailable.detail == "HTTP 503, expected 200-299"


def test_refused_connection_and_no_answer(run: Any) -> None:
    async def main() -> tuple[ProbeResult, ProbeResult, float]:
        async with http_server() as base:
            hung = await probe(f"{base}/hang", limit=0.3, health={"timeoutSeconds": 0.3})
        refused = await probe(base + "/ok")  # the server is gone
        started = asyncio.get_running_loop().time()
        await probe(f"{base}/ok", health={"timeoutSeconds": 0.2})
        return hung, refused, asyncio.get_running_loop().time() - started

    hung, refused, _ = run(main())
    assert (hung.outcome, hung.detail) == (ProbeOutcome.TIMEOUT, "no answer in 0.3s")
    assert 0.25 <= hung.latency < 1.0
    assert (refused.outcome, refused.detail) == (
        ProbeOutcome.FAIL,
        "connection failed: Connection refused",
    )


@contextmanager
def threaded_server() -> Iterator[str]:
    """A loopback HTTP server on a thread of its own: it answers at once even while the
    event loop under test is blocked."""

    class Answer(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(4096)
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            )

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Answer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ok"
    finally:
        server.shutdown()
        server.server_close()


def _stalled_round(url: str) -> tuple[tuple[ProbeResult, ...], float]:
    """One round of one endpoint (timeout 0.3 s) while the loop is blocked for 0.8 s."""
    spec = _spec(endpoint(url), {"timeoutSeconds": 0.3})
    counter = metrics.PROBES_INCONCLUSIVE._value

    async def main() -> tuple[ProbeResult, ...]:
        prober = HttpProber()
        await prober.probe_app(spec, "shop", app="warm")  # the lag monitor runs
        asyncio.get_running_loop().call_soon(time.sleep, 0.8)  # once the probe is in flight
        return await prober.probe_app(spec, "shop", app="test")

    before = counter.get()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
        results = loop.run(main())
    return results, counter.get() - before


def test_a_probe_timed_while_the_operator_stalled_is_no_evidence() -> None:
    """The answer was in the socket in time; the loop was not there to read it. The probe
    is left out of the round (the zone keeps its state) and counted, not a timeout: a
    100-app fleet's start-up timed out healthy zones by the hundred and failed an app
    over."""
    with threaded_server() as url:
        results, inconclusive = _stalled_round(url)
    assert results == ()
    assert inconclusive == 1


def test_a_refused_connection_counts_however_late_the_loop_is() -> None:
    with threaded_server() as url:
        pass  # gone: connections are refused
    results, inconclusive = _stalled_round(url)
    assert [r.outcome for r in results] == [ProbeOutcome.FAIL]
    assert inconclusive == 0


def test_a_hung_endpoint_times_out_while_the_loop_is_on_time(run: Any) -> None:
    async def main() -> tuple[ProbeResult, ...]:
        async with http_server() as base:
            spec = _spec(endpoint(f"{base}/hang"), {"timeoutSeconds": 0.3})
            prober = HttpProber()
            await prober.probe_app(spec, "shop", app="warm")
            return await prober.probe_app(spec, "shop", app="test")

    assert [r.outcome for r in run(main())] == [ProbeOutcome.TIMEOUT]


def test_a_round_probes_every_endpoint_concurrently(run: Any) -> None:
    async def main() -> tuple[tuple[ProbeResult, ...], float]:
        async with http_server() as base:
            raw = app_spec()
            raw["health"] = {"intervalSeconds": 5, "timeoutSeconds": 0.5}
            for site in raw["sites"]:
                for one in site["endpoints"]:
                    one["url"] = f"{base}/hang"
            raw["sites"][0]["endpoints"][0]["url"] = f"{base}/ok"
            spec = ResilientAppSpec.model_validate(raw)
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await HttpProber().probe_app(spec)
            return results, loop.time() - started

    results, took = run(main())
    assert [r.outcome for r in results] == [ProbeOutcome.OK] + [ProbeOutcome.TIMEOUT] * 4
    assert took < 1.5  # five probes, 0.5 s each, side by side


def test_a_probe_cancelled_from_outside_is_cancelled_not_timed_out(run: Any) -> None:
    async def main() -> bool:
        async with http_server() as base:
            task = asyncio.ensure_future(probe(f"{base}/hang", health={"timeoutSeconds": 2}))
            await asyncio.sleep(0.2)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return True
            return False

    assert run(main())


def test_names_are_resolved_once_per_ttl_and_failures_are_probe_failures(run: Any) -> None:
    class Counting(Resolver):
        lookups = 0

        async def lookup(self, host: str, port: int) -> list[tuple[str, int]]:
            self.lookups += 1
            return await super().lookup(host, port)

    async def main() -> tuple[list[ProbeResult], ProbeResult, int]:
        resolver = Counting(ttl=60)
        prober = HttpProber(resolver=resolver)
        async with http_server() as base:
            named = base.replace("127.0.0.1", "localhost")
            results = list(
                await asyncio.gather(*[probe(f"{named}/ok", prober=prober) for _ in range(5)])
            )
            results.append(await probe(f"{named}/ok", prober=prober))
        unknown = await probe("http://no-such-name.invalid/ok", prober=prober)
        return results, unknown, resolver.lookups

    results, unknown, lookups = run(main())
    assert all(r.ok for r in results), [r.detail for r in results]
    assert lookups == 2  # localhost once for six probes (five at once), then the unknown name
    assert unknown.outcome is ProbeOutcome.FAIL
    assert unknown.detail.startswith("name does not resolve")


# ----------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Pki:
    ca_pem: str
    other_ca_pem: str
    server: ssl.SSLContext
    names_seen: list[str | None]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: Any, *, ca: bool
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(APP_HOST), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A self-signed CA, a server certificate it signs (app.example.test and 127.0.0.1),
    and an unrelated CA."""
    ca_key, other_key, server_key = _key(), _key(), _key()
    ca = _cert("Test CA", ca_key, "Test CA", ca_key, ca=True)
    other = _cert("Other CA", other_key, "Other CA", other_key, ca=True)
    server = _cert(APP_HOST, server_key, "Test CA", ca_key, ca=False)
    directory: Path = tmp_path_factory.mktemp("pki")
    (directory / "server.crt").write_text(_pem(server) + _pem(ca))
    (directory / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "server.crt", directory / "server.key")
    seen: list[str | None] = []

    def record(_: Any, name: str | None, __: Any) -> None:
        seen.append(name)

    context.sni_callback = record
    return Pki(_pem(ca), _pem(other), context, seen)


def config_maps(data: Mapping[str, Mapping[str, str]]) -> Callable[[str, str], Awaitable[Any]]:
    """A ConfigMap reader over ``{"namespace/name": data}``."""

    async def read(namespace: str, name: str) -> Mapping[str, str]:
        found = data.get(f"{namespace}/{name}")
        if found is None:
            raise NotFound(f"ConfigMap {namespace}/{name} not found")
        return found

    return read


def test_tls_with_a_ca_bundle_from_a_config_map_and_sni(run: Any, pki: Pki) -> None:
    prober = HttpProber(
        read_config_map=config_maps(
            {"shop/probe-ca": {"ca.crt": pki.ca_pem}, "shop/wrong-ca": {"ca.crt": pki.other_ca_pem}}
        )
    )
    bundle = {"caBundle": {"name": "probe-ca"}}

    async def main() -> list[ProbeResult]:
        async with http_server(pki.server) as base:
            return [
                await probe(f"{base}/ok", prober=prober, tls=bundle),
                await probe(f"{base}/host", prober=prober, tls=bundle, http={"host": APP_HOST}),
                await probe(
                    f"{base}/ok", prober=prober, tls={**bundle, "serverName": "other.example"}
                ),
                await probe(f"{base}/ok", prober=prober, tls={"caBundle": {"name": "wrong-ca"}}),
                await probe(f"{base}/ok", prober=prober),  # the system's trust store
            ]

    by_ip, by_host, wrong_name, wrong_ca, system = run(main())
    assert by_ip.ok, by_ip.detail
    assert by_host.ok, by_host.detail
    assert pki.names_seen[-5:-3] == [None, APP_HOST]  # no SNI for an IP; http.host's name
    assert wrong_name.outcome is ProbeOutcome.FAIL
    assert wrong_name.detail.startswith("TLS: certificate not accepted")
    assert "other.example" in wrong_name.detail
    assert wrong_ca.detail.startswith("TLS: certificate not accepted")
    assert system.detail.startswith("TLS: certificate not accepted")


def test_a_missing_or_broken_ca_bundle_fails_its_probes_and_is_reported_without_content(
    run: Any, pki: Pki
) -> None:
    broken_pem = (
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    )
    stored = {"shop/broken": {"ca.crt": broken_pem}, "shop/empty": {"other": pki.ca_pem}}
    prober = HttpProber(read_config_map=config_maps(stored))

    async def main() -> list[ProbeResult]:
        async with http_server(pki.server) as base:
            return [
                await probe(f"{base}/ok", prober=prober, tls={"caBundle": {"name": name}})
                for name in ("absent", "broken", "empty")
            ]

    absent, broken, empty = run(main())
    assert absent.detail == "CA bundle ConfigMap shop/absent: not found"
    assert (
        broken.detail
        == "CA bundle ConfigMap shop/broken: key ca.crt holds no usable PEM certificate"
    )
    assert empty.detail == "CA bundle ConfigMap shop/empty: has no key ca.crt"
    assert all(r.outcome is ProbeOutcome.FAIL for r in (absent, broken, empty))
    problems = prober.problems("shop")
    assert len(problems) == 3 and prober.problems("elsewhere") == []
    assert not any("bm90IGEg" in p or "BEGIN" in p for p in [*problems, broken.detail])


def test_a_bundle_that_breaks_later_keeps_its_last_good_certificates(run: Any, pki: Pki) -> None:
    stored: dict[str, dict[str, str]] = {"shop/probe-ca": {"ca.crt": pki.ca_pem}}
    prober = HttpProber(read_config_map=config_maps(stored))
    prober.trust._refresh = 0.0  # read it again every time

    async def main() -> tuple[ProbeResult, ProbeResult]:
        async with http_server(pki.server) as base:
            first = await probe(f"{base}/ok", prober=prober, tls={"caBundle": {"name": "probe-ca"}})
            del stored["shop/probe-ca"]
            prober.forget("test")
            later = await probe(f"{base}/ok", prober=prober, tls={"caBundle": {"name": "probe-ca"}})
            return first, later

    first, later = run(main())
    assert first.ok and later.ok
    assert prober.problems("shop") == ["CA bundle ConfigMap shop/probe-ca: not found"]


# ----------------------------------------------------------------------------- TCP


def test_tcp_connect(run: Any) -> None:
    async def main() -> tuple[ProbeResult, ProbeResult]:
        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            listening = await probe(f"tcp://127.0.0.1:{port}")
        server.close()
        await server.wait_closed()
        closed = await probe(f"tcp://127.0.0.1:{port}")
        return listening, closed

    listening, closed = run(main())
    assert (listening.outcome, listening.detail) == (ProbeOutcome.OK, "connected")
    assert (closed.outcome, closed.detail) == (
        ProbeOutcome.FAIL,
        "connection failed: Connection refused",
    )


# ----------------------------------------------------------------------------- source address


def test_probes_connect_from_the_source_address_given(run: Any) -> None:
    """Peers sharing a host probe from their own addresses: the zone sees which one asks."""
    source = "127.20.0.7"

    async def main() -> tuple[ProbeResult, ProbeResult, ProbeResult, list[str]]:
        seen: list[str] = []

        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("peername")[0])
            writer.close()

        bound = HttpProber(source_address=source)
        async with http_server() as base:
            from_source = await probe(f"{base}/from?source={source}", prober=bound)
            unbound = await probe(f"{base}/from?source={source}")
        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            tcp = await probe(f"tcp://127.0.0.1:{port}", prober=bound)
        return from_source, unbound, tcp, seen

    from_source, unbound, tcp, seen = run(main())
    assert from_source.outcome is ProbeOutcome.OK
    assert (unbound.outcome, unbound.detail) == (ProbeOutcome.FAIL, "HTTP 403, expected 200-299")
    assert tcp.outcome is ProbeOutcome.OK
    assert seen == [source]


def test_a_source_address_of_another_family_or_not_on_this_host_fails_the_probe(
    run: Any,
) -> None:
    async def main() -> tuple[ProbeResult, ProbeResult]:
        async with http_server() as base:
            other_family = await probe(f"{base}/ok", prober=HttpProber(source_address="::1"))
            absent = await probe(f"{base}/ok", prober=HttpProber(source_address="192.0.2.1"))
        return other_family, absent

    other_family, absent = run(main())
    assert (other_family.outcome, other_family.detail) == (
        ProbeOutcome.FAIL,
        "connection failed: 127.0.0.1 has no IPv6 address to probe from ::1",
    )
    assert (absent.outcome, absent.detail) == (
        ProbeOutcome.FAIL,
        "connection failed: Cannot assign requested address",
    )


def test_a_source_address_must_be_an_ip_address() -> None:
    with pytest.raises(ValueError, match="'zone-a' is not an IP address"):
        HttpProber(source_address="zone-a")


# ----------------------------------------------------------------------------- compiling


def test_an_endpoint_is_compiled_once_into_its_request() -> None:
    health = HealthPolicy()
    target = compile_target(
        KEY,
        endpoint(
            "https://[::1]:8443/healthz?deep=1",
            http={"host": "app.example.test:8443", "expectedStatus": ["204", "300-302"]},
        ),
        health,
    )
    assert (target.host, target.port, target.server_name) == ("::1", 8443, "app.example.test")
    assert target.request.startswith(
        b"GET /healthz?deep=1 HTTP/1.1\r\nHost: app.example.test:8443\r\n"
    )
    assert target.statuses == {204, 300, 301, 302}
    plain = compile_target(KEY, endpoint("http://zone-a.internal"), health)
    assert (plain.host, plain.port, plain.tls, plain.server_name) == (
        "zone-a.internal",
        80,
        None,
        None,
    )
    assert b"Host: zone-a.internal\r\n" in plain.request and b"Connection: close" in plain.request


# ----------------------------------------------------------------------------- when


def test_rounds_fall_on_a_fixed_grid_at_each_apps_own_phase() -> None:
    schedule = RoundSchedule(clock=lambda: 100.0)
    apps = [f"shop/app-{i}" for i in range(1000)]
    phases = [schedule.phase(app, 1.0) for app in apps]
    assert all(0 <= p < 1 for p in phases)
    # spread over the interval: every tenth of it holds about a tenth of the apps
    assert all(60 < sum(1 for p in phases if k / 10 <= p < (k + 1) / 10) < 140 for k in range(10))
    assert schedule.phase("shop/web", 10.0) == schedule.phase("shop/web", 10.0)

    first = schedule.after("shop/web", 10.0, 100.0)
    assert 100.0 < first <= 110.0
    assert schedule.after("shop/web", 10.0, first) == pytest.approx(first + 10.0)
    # a round that started late does not move the grid
    assert schedule.after("shop/web", 10.0, first + 3.0) == pytest.approx(first + 10.0)
    assert schedule.after("shop/web", 10.0, first + 25.0) == pytest.approx(first + 30.0)


def test_the_event_loop_is_uvloop_unless_asked_otherwise() -> None:
    assert loop_factory("asyncio") is None
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
