"""Queries and updates to one RFC 2136 server, signed with the CloudProvider's TSIG key,
through the CloudProvider's gates (:class:`~controller.providers.calls.CloudCalls`).

Every message goes over TCP (answers are never truncated, and a reset or a refused
connection says plainly that the server is unreachable). Every query and update is signed:
a server that knows the key answers signed, and dnspython checks the answer's signature,
so a wrong key or secret is an authentication error, never a silent success.
"""

from __future__ import annotations

import base64
import binascii
import socket
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update

from controller.api.models import CloudProviderSpec, Rfc2136Settings
from controller.core.apiplane import CallOutcome
from controller.providers.calls import CloudCalls, OutcomeHook
from controller.providers.errors import CredentialsError
from controller.providers.outcomes import Classified
from controller.providers.retry import DEFAULT_POLICY, RetryPolicy
from controller.providers.secrets import redact

T = TypeVar("T")

TSIG_SECRET_KEY = "tsig_secret"  # noqa: S105 - the name of a key, not a secret
"""The credentials Secret's key holding the TSIG secret (base64)."""

PREREQUISITE_FAILED = frozenset(
    {dns.rcode.YXDOMAIN, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.NXRRSET}
)
"""Answers to an update whose prerequisites did not hold: nothing was changed."""


class DnsAnswerError(RuntimeError):
    """The server answered with an error code (REFUSED, NOTAUTH, SERVFAIL, ...)."""

    def __init__(self, operation: str, rcode: dns.rcode.Rcode) -> None:
        super().__init__(f"{operation}: the server answered {dns.rcode.to_text(rcode)}")
        self.rcode = rcode


def classify(error: BaseException | None) -> Classified:
    """The outcome of a query or update."""
    if error is None:
        return Classified(CallOutcome.OK, "")
    name = type(error).__name__
    if isinstance(error, dns.exception.Timeout | TimeoutError):
        return Classified(CallOutcome.TIMEOUT, name)
    if isinstance(error, ConnectionError | EOFError | socket.gaierror | OSError):
        return Classified(CallOutcome.UNREACHABLE, name)
    if isinstance(error, dns.tsig.PeerError | dns.tsig.BadSignature | dns.tsig.BadTime):
        return Classified(CallOutcome.AUTH_ERROR, name)
    if isinstance(error, DnsAnswerError):
        code = dns.rcode.to_text(error.rcode)
        if error.rcode in (dns.rcode.SERVFAIL,):
            return Classified(CallOutcome.SERVER_ERROR, code)
        if error.rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.BADSIG):
            return Classified(CallOutcome.AUTH_ERROR, code)
        return Classified(CallOutcome.CLIENT_ERROR, code)
    return Classified(CallOutcome.CLIENT_ERROR, name)


class Rfc2136Connector:
    """One RFC 2136 server and its TSIG key, for one CloudProvider."""

    def __init__(
        self,
        name: str,
        spec: CloudProviderSpec,
        secret: Mapping[str, str],
        *,
        retry_policy: RetryPolicy = DEFAULT_POLICY,
        on_outcome: OutcomeHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if spec.rfc2136 is None:  # the model's rules require it for the type
            raise CredentialsError(f"CloudProvider {name} has no rfc2136 settings")
        self.name = name
        self.spec = spec
        self.settings: Rfc2136Settings = spec.rfc2136
        encoded = secret.get(TSIG_SECRET_KEY, "").strip()
        if not encoded:
            raise CredentialsError(f"the credentials Secret has no {TSIG_SECRET_KEY} key")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise CredentialsError(f"{TSIG_SECRET_KEY} is not base64") from None
        if not raw:
            raise CredentialsError(f"{TSIG_SECRET_KEY} is empty")
        self._secret_values = (encoded,)
        self.key = dns.tsig.Key(
            dns.name.from_text(self.settings.tsig_key_name),
            raw,
            dns.name.from_text(self.settings.tsig_algorithm),
        )
        self.calls = CloudCalls.from_spec(
            name, spec, classify, retry_policy=retry_policy, on_outcome=on_outcome
        )

    def __repr__(self) -> str:
        return f"Rfc2136Connector({self.name!r})"

    def redact(self, text: str) -> str:
        return redact(text, self._secret_values)

    def explain(self, error: BaseException) -> str:
        detail = str(error) or type(error).__name__
        return self.redact(f"{type(error).__name__}: {detail}"[:400])

    def close(self) -> None:
        self.calls.close()

    # ------------------------------------------------------------------ messages

    def _address(self) -> str:
        """The server's address (a host name is resolved at every message: DNS servers
        move rarely, and a stale address would outlive the move)."""
        host = self.settings.server
        family = socket.AF_INET6 if ":" in host else socket.AF_UNSPEC
        found = socket.getaddrinfo(host, self.settings.port, family, socket.SOCK_STREAM)
        return str(found[0][4][0])

    def exchange(self, operation: str, message: dns.message.Message) -> dns.message.Message:
        """Send a signed message over TCP and return the (signature-checked) answer;
        raises DnsAnswerError for an error code other than NXDOMAIN and a failed
        update prerequisite (the caller reads those)."""
        message.use_tsig(self.key)
        answer = dns.query.tcp(
            message, self._address(), timeout=self.settings.timeout_seconds, port=self.settings.port
        )
        rcode = answer.rcode()
        if rcode != dns.rcode.NOERROR and rcode not in PREREQUISITE_FAILED:
            raise DnsAnswerError(operation, rcode)
        return answer

    async def call(
        self,
        region: str,
        operation: str,
        fn: Callable[[], T],
        *,
        mutating: bool,
        probe: bool = False,
    ) -> T:
        return await self.calls.call(region, "dns", operation, fn, mutating=mutating, probe=probe)

    def query(self, name: str, rdtype: str) -> tuple[dns.rrset.RRset | None, dns.rcode.Rcode]:
        """The RRset of ``name`` and ``rdtype`` the server holds (None: none, or the
        server is not authoritative for the name and answered REFUSED), and the answer's
        code."""
        qname = dns.name.from_text(name)
        kind = dns.rdatatype.from_text(rdtype)
        try:
            answer = self.exchange(f"Query{rdtype}", dns.message.make_query(qname, kind))
        except DnsAnswerError as error:
            if error.rcode == dns.rcode.REFUSED:  # not authoritative for the name
                return None, error.rcode
            raise
        for rrset in answer.answer:
            if rrset.name == qname and rrset.rdtype == kind:
                return rrset, answer.rcode()
        return None, answer.rcode()

    def update(self, message: dns.update.UpdateMessage) -> dns.rcode.Rcode:
        """Send an update; its answer's code (NOERROR, or a failed prerequisite's)."""
        return self.exchange("Update", message).rcode()
