"""An ``external-dns`` CloudProvider, connected: DNSEndpoint objects in one namespace of a
Kubernetes cluster (Lifeboat's own, or the one of a kubeconfig Secret).

Its "API plane" is that cluster's API server: probed with a one-item list of the
namespace's DNSEndpoints, judged from every call like any cloud's. The identity check
asks the API server who the credentials are (SelfSubjectReview).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from controller.api.models import CloudProviderSpec, ExternalDnsSettings
from controller.core.apiplane import CallOutcome
from controller.providers.backend import Cloud
from controller.providers.calls import CloudCalls, OutcomeHook
from controller.providers.errors import CredentialsError
from controller.providers.externaldns.endpoints import GROUP, PLURAL, VERSION, DnsEndpoints
from controller.providers.kubernetes.capacity import KubeconfigError, client_from_kubeconfig
from controller.providers.kubernetes.client import api_client
from controller.providers.outcomes import Classified
from controller.providers.protocols import ProbeReport

KUBECONFIG_KEY = "kubeconfig"


def classify(error: BaseException | None) -> Classified:
    """The outcome of a Kubernetes API call."""
    if error is None:
        return Classified(CallOutcome.OK, "")
    name = type(error).__name__
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        code = f"{status} {error.reason or ''}".strip()
        if status == 429:
            return Classified(CallOutcome.THROTTLED, code)
        if status in (401, 403):
            return Classified(CallOutcome.AUTH_ERROR, code)
        if status >= 500:
            return Classified(CallOutcome.SERVER_ERROR, code)
        return Classified(CallOutcome.CLIENT_ERROR, code)
    if isinstance(error, urllib3.exceptions.TimeoutError | TimeoutError):
        return Classified(CallOutcome.TIMEOUT, name)
    if isinstance(error, urllib3.exceptions.HTTPError | ConnectionError):
        return Classified(CallOutcome.UNREACHABLE, name)
    return Classified(CallOutcome.CLIENT_ERROR, name)


class ExternalDnsConnector:
    """The API client and the calls of one external-dns CloudProvider."""

    def __init__(
        self,
        name: str,
        spec: CloudProviderSpec,
        secret: Mapping[str, str] | None,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        if spec.external_dns is None:  # the model's rules require it for the type
            raise CredentialsError(f"CloudProvider {name} has no externalDNS settings")
        self.name = name
        self.spec = spec
        self.settings: ExternalDnsSettings = spec.external_dns
        self.api = _client(secret)
        self.calls = CloudCalls.from_spec(name, spec, classify, on_outcome=on_outcome)

    def __repr__(self) -> str:
        return f"ExternalDnsConnector({self.name!r})"

    def redact(self, text: str) -> str:
        return text  # the kubeconfig is never quoted: nothing of it reaches a message

    def explain(self, error: BaseException) -> str:
        if isinstance(error, ApiException):
            return f"API server answered {error.status} {error.reason}"
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"

    def close(self) -> None:
        self.calls.close()
        self.api.close()  # type: ignore[no-untyped-call]


def _client(secret: Mapping[str, str] | None) -> kubernetes.client.ApiClient:
    """The cluster of the Secret's kubeconfig, or (no Secret) Lifeboat's own: in-cluster
    configuration in a pod, else the kubeconfig the operator was started with."""
    if secret is not None:
        text = secret.get(KUBECONFIG_KEY)
        if not text:
            raise CredentialsError(f"the credentials Secret has no {KUBECONFIG_KEY} key")
        try:
            return client_from_kubeconfig(text)
        except KubeconfigError as error:
            raise CredentialsError(str(error)) from None
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return api_client(configuration)


@dataclass
class DnsEndpointsProbe:
    connector: ExternalDnsConnector

    async def probe(self, region: str) -> ProbeReport:
        namespace = self.connector.settings.namespace
        objects = kubernetes.client.CustomObjectsApi(self.connector.api)
        started = time.monotonic()
        try:
            await self.connector.calls.call(
                region,
                "dnsendpoints",
                "ListDNSEndpoints",
                lambda: objects.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, limit=1
                ),
                mutating=False,
                probe=True,
            )
        except Exception as error:
            return ProbeReport(
                region,
                classify(error).outcome,
                time.monotonic() - started,
                (),
                self.connector.explain(error),
            )
        return ProbeReport(region, CallOutcome.OK, time.monotonic() - started)


@dataclass
class SelfSubjectIdentity:
    connector: ExternalDnsConnector
    region: str

    async def whoami(self) -> str:
        api = kubernetes.client.AuthenticationV1Api(self.connector.api)
        review = await self.connector.calls.call(
            self.region,
            "authentication",
            "CreateSelfSubjectReview",
            lambda: api.create_self_subject_review(
                kubernetes.client.V1SelfSubjectReview(
                    api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"
                )
            ),
            mutating=False,
        )
        info = review.status.user_info if review.status else None
        user = info.username if info is not None else None
        return f"{user or 'unknown user'} (DNSEndpoints in {self.connector.settings.namespace})"


class ExternalDnsCloud(Cloud):
    connector: ExternalDnsConnector

    def __init__(self, connector: ExternalDnsConnector) -> None:
        super().__init__(
            connector.name,
            connector.spec,
            connector,
            DnsEndpointsProbe(connector),
            SelfSubjectIdentity(connector, connector.spec.regions[0]),
        )
        self._traffic: dict[str, DnsEndpoints] = {}

    def traffic(self, region: str) -> DnsEndpoints:
        settings = self.connector.settings
        return self._traffic.setdefault(
            region, DnsEndpoints(self.connector.api, self.connector.calls, settings, region)
        )


def connect(
    name: str,
    spec: CloudProviderSpec,
    secret: Mapping[str, str] | None,
    on_outcome: OutcomeHook | None,
) -> ExternalDnsCloud:
    return ExternalDnsCloud(ExternalDnsConnector(name, spec, secret, on_outcome))
