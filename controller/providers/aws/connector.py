"""boto3 clients for one CloudProvider: credentials, endpoints, TLS, bounded concurrency.

boto3 is synchronous; every call runs in a worker thread, at most ``max_concurrency``
at a time per region, under the one retry policy (:mod:`controller.providers.retry`).
botocore's own retries are off so that retries are decided in one place.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.config
import botocore.session
from pydantic import SecretStr

from controller import __version__
from controller.api.models import CloudProviderSpec
from controller.providers.aws.ec2_model import DATA_PATH
from controller.providers.calls import (
    CloudCalls,
    OutcomeHook,
    resolve_endpoint,
)
from controller.providers.errors import CredentialsError
from controller.providers.outcomes import classify, describe
from controller.providers.retry import DEFAULT_POLICY, RetryPolicy
from controller.providers.secrets import redact

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_sts import STSClient

T = TypeVar("T")
log = logging.getLogger(__name__)

# Route 53 is a global service signed in us-east-1; its calls are accounted as "global".
GLOBAL = "global"
ROUTE53_SIGNING_REGION = "us-east-1"

# Keys accepted in a credentials Secret (lower-case as in ~/.aws/credentials, or env style).
_KEY_ALIASES = {
    "access_key_id": ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
    "secret_access_key": ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    "session_token": ("aws_session_token", "AWS_SESSION_TOKEN"),
}


@dataclass(frozen=True)
class AwsCredentials:
    """Static AWS credentials. Secret parts are SecretStr: they print as '**********'."""

    access_key_id: str
    secret_access_key: SecretStr
    session_token: SecretStr | None = None

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> AwsCredentials:
        """From a Secret's decoded ``data``; raises naming the missing keys, not values."""
        found = {
            field: next((data[k] for k in keys if data.get(k)), None)
            for field, keys in _KEY_ALIASES.items()
        }
        missing = [
            _KEY_ALIASES[f][0] for f in ("access_key_id", "secret_access_key") if not found[f]
        ]
        if missing:
            raise CredentialsError(f"credentials Secret lacks key(s): {', '.join(missing)}")
        token = found["session_token"]
        return cls(
            access_key_id=str(found["access_key_id"]),
            secret_access_key=SecretStr(str(found["secret_access_key"])),
            session_token=SecretStr(token) if token else None,
        )


class AwsConnector:
    """Creates and caches boto3 clients for one CloudProvider and runs calls off the loop."""

    def __init__(
        self,
        name: str,
        spec: CloudProviderSpec,
        credentials: AwsCredentials | None,
        *,
        max_concurrency: int = 4,
        timeout_seconds: float = 10.0,
        retry_policy: RetryPolicy = DEFAULT_POLICY,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self._credentials = credentials
        self._max_concurrency = max_concurrency
        self._timeout = timeout_seconds
        self.calls = CloudCalls.from_spec(
            name,
            spec,
            classify,
            max_concurrency=max_concurrency,
            retry_policy=retry_policy,
            on_outcome=on_outcome,
        )
        self._session = self._make_session()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._verify = self._tls_verify()

    def __repr__(self) -> str:
        return f"AwsConnector({self.name!r})"

    def redact(self, text: str) -> str:
        """``text`` with every secret this connector holds replaced by stars."""
        if self._credentials is None:
            return text
        held = (self._credentials.secret_access_key, self._credentials.session_token)
        return redact(text, [s.get_secret_value() for s in held if s is not None])

    def explain(self, error: BaseException) -> str:
        """A failed call in words (the provider's message included), with no secret."""
        return self.redact(describe(error))

    def close(self) -> None:
        """Release the worker threads and what the connector holds on disk (the CA bundle)."""
        self.calls.close()
        if isinstance(self._verify, str):
            Path(self._verify).unlink(missing_ok=True)

    def _make_session(self) -> boto3.session.Session:
        core = botocore.session.Session()
        # EC2's model trimmed to the operations we call, 15 MiB less (ec2_model.py); any
        # data path of the environment's (AWS_DATA_PATH) is still searched after it.
        paths = [str(DATA_PATH), core.get_config_variable("data_path")]
        core.set_config_variable("data_path", os.pathsep.join(p for p in paths if p))
        if self._credentials is None:
            # The standard chain: IRSA, instance role, env.
            return boto3.session.Session(botocore_session=core)
        token = self._credentials.session_token
        return boto3.session.Session(
            aws_access_key_id=self._credentials.access_key_id,
            aws_secret_access_key=self._credentials.secret_access_key.get_secret_value(),
            aws_session_token=token.get_secret_value() if token else None,
            botocore_session=core,
        )

    def _tls_verify(self) -> bool | str:
        if self.spec.tls.insecure_skip_verify:
            return False
        if self.spec.tls.ca_bundle:
            bundle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as we do
                "w", suffix=".pem", prefix="lifeboat-ca-", delete=False
            )
            with bundle:
                bundle.write(self.spec.tls.ca_bundle)
            return str(Path(bundle.name))
        return True

    def client(self, service: str, region: str) -> Any:
        """A cached boto3 client for ``service`` in ``region`` (thread-safe)."""
        key = (service, region)
        with self._lock:
            if key not in self._clients:
                signing_region = ROUTE53_SIGNING_REGION if region == GLOBAL else region
                config = botocore.config.Config(
                    region_name=signing_region,
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self._timeout,
                    read_timeout=self._timeout,
                    user_agent_extra=f"lifeboat/{__version__}",
                    max_pool_connections=self._max_concurrency,
                )
                self._clients[key] = self._session.client(
                    service,  # type: ignore[call-overload]
                    endpoint_url=resolve_endpoint(self.spec.endpoint_overrides, service, region),
                    config=config,
                    verify=self._verify,
                )
            return self._clients[key]

    def route53(self) -> Route53Client:
        client: Route53Client = self.client("route53", GLOBAL)
        return client

    def sts(self, region: str) -> STSClient:
        client: STSClient = self.client("sts", region)
        return client

    async def call(
        self,
        region: str,
        service: str,
        operation: str,
        fn: Callable[[], T],
        *,
        mutating: bool | None = None,
        probe: bool = False,
    ) -> T:
        """Run the blocking SDK call ``fn`` off the event loop, through the region's gate."""
        return await self.calls.call(region, service, operation, fn, mutating=mutating, probe=probe)
