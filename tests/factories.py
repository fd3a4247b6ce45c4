"""Valid resources to start tests from, and the invalid variants every layer must refuse."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions


def app_spec(**overrides: Any) -> dict[str, Any]:
    """A valid ResilientApp spec (wire form): two AWS sites, three and two zones."""
    spec: dict[str, Any] = {
        "sites": [
            {
                "name": "use1",
                "provider": "aws-sandbox",
                "region": "us-east-1",
                "role": "primary",
                "zones": ["us-east-1a", "us-east-1b", "us-east-1c"],
                "endpoints": [
                    {"zone": z, "url": f"http://127.0.1.{i + 1}:8080/healthz"}
                    for i, z in enumerate(["us-east-1a", "us-east-1b", "us-east-1c"])
                ],
                "trafficTargets": ["192.0.2.10"],
            },
            {
                "name": "usw2",
                "provider": "aws-sandbox",
                "region": "us-west-2",
                "zones": ["us-west-2a", "us-west-2b"],
                "endpoints": [
                    {"zone": z, "url": f"http://127.0.2.{i + 1}:8080/healthz"}
                    for i, z in enumerate(["us-west-2a", "us-west-2b"])
                ],
                "trafficTargets": ["198.51.100.20"],
            },
        ],
        "health": {"intervalSeconds": 1, "timeoutSeconds": 0.5, "failureThreshold": 3},
        "traffic": {
            "provider": "aws-sandbox",
            "hostedZoneName": "example.test.",
            "recordName": "web.example.test.",
        },
    }
    # Tests exercise the acting operator: Automatic unless they say otherwise (the CRD's
    # default is Observe), also when they override other failover fields.
    failover = overrides.pop("failover", {})
    spec["failover"] = {"mode": "Automatic", **failover}
    spec.update(overrides)
    return spec


def app(name: str = "web", namespace: str = "shop", **overrides: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lifeboat.dev/v1alpha1",
        "kind": "ResilientApp",
        "metadata": {"name": name, "namespace": namespace},
        "spec": app_spec(**overrides),
    }


@dataclass(frozen=True)
class Invalid:
    """A broken variant of :func:`app_spec` and the words the refusal must contain."""

    name: str
    mutate: Callable[[dict[str, Any]], None]
    message: str

    def spec(self) -> dict[str, Any]:
        spec = copy.deepcopy(app_spec())
        self.mutate(spec)
        return spec


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return mutate


def _cname_with_two_targets(spec: dict[str, Any]) -> None:
    spec["traffic"]["recordType"] = "CNAME"
    spec["sites"][0]["trafficTargets"] = ["a.example.", "b.example."]


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    """A botocore ClientError as the SDK raises it for an AWS error answer."""
    response: Any = {
        "Error": {"Code": code, "Message": "test"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return botocore.exceptions.ClientError(response, "Operation")


INVALID_APPS: tuple[Invalid, ...] = (
    Invalid(
        "two primaries", _set("sites.1.role", "primary"), "exactly one site must have role primary"
    ),
    Invalid(
        "no primary", _set("sites.0.role", "standby"), "exactly one site must have role primary"
    ),
    Invalid("duplicate site", _set("sites.1.name", "use1"), "site names must be unique"),
    Invalid("site without zones", _set("sites.1.zones", []), "a site must list at least one zone"),
    Invalid(
        "duplicate zone",
        _set("sites.1.zones", ["us-west-2a", "us-west-2a"]),
        "zone names must be unique within a site",
    ),
    Invalid(
        "endpoint in undeclared zone",
        _set("sites.1.endpoints.0.zone", "us-west-2z"),
        "every endpoint must name one of the site's zones",
    ),
    Invalid(
        "timeout longer than interval",
        _set("health", {"intervalSeconds": 1, "timeoutSeconds": 5}),
        "health.timeoutSeconds must not exceed health.intervalSeconds",
    ),
    Invalid(
        "suspect interval longer than interval",
        _set("health", {"intervalSeconds": 2, "timeoutSeconds": 1, "suspectIntervalSeconds": 3}),
        "health.suspectIntervalSeconds must not exceed health.intervalSeconds",
    ),
    Invalid(
        "no hosted zone",
        _delete("traffic.hostedZoneName"),
        "traffic needs hostedZoneId or hostedZoneName",
    ),
    Invalid(
        "CNAME with two targets",
        _cname_with_two_targets,
        "a CNAME record takes exactly one traffic target per site and no zoneTargets",
    ),
)

# Refused by the schema itself (types, enums, patterns), not by a cross-field rule.
INVALID_BY_SCHEMA: tuple[Invalid, ...] = (
    Invalid("zones is not a list", _set("sites.0.zones", "us-east-1a"), "zones"),
    Invalid("unknown role", _set("sites.0.role", "leader"), "role"),
    Invalid(
        "interval is a string", _set("health", {"intervalSeconds": "often"}), "intervalSeconds"
    ),
)


INVALID_APPS += (
    Invalid(
        "host name in an A record",
        _set("sites.0.trafficTargets", ["lb.example.com"]),
        "an A record takes IPv4 addresses as traffic targets",
    ),
    Invalid(
        "malformed endpoint host",
        _set("sites.1.endpoints.0.url", "http://usw2-az3..example.test/healthz"),
        "url",
    ),
)


def _with_dataset(*locations: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        spec["replication"] = {
            "rpoTargetSeconds": 60,
            "objects": [{"name": "photos", "locations": list(locations)}],
        }

    return mutate


INVALID_APPS += (
    Invalid(
        "two locations at one site",
        _with_dataset({"site": "use1", "bucket": "a"}, {"site": "use1", "bucket": "b"}),
        "a dataset may have only one location per site",
    ),
    Invalid(
        "location at an undeclared site",
        _with_dataset({"site": "use1", "bucket": "a"}, {"site": "euw1", "bucket": "b"}),
        "every replication location must name one of the app's sites",
    ),
    Invalid(
        "FIFO event queue by URL",
        _with_dataset(
            {
                "site": "use1",
                "bucket": "a",
                "eventQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/photos.fifo",
            },
            {"site": "usw2", "bucket": "b"},
        ),
        "eventQueue must be a standard queue: S3 sends no event notifications to FIFO queues",
    ),
)

INVALID_APPS += (
    Invalid(
        "FIFO event queue by name",
        _with_dataset(
            {"site": "use1", "bucket": "a", "eventQueue": "photos.fifo"},
            {"site": "usw2", "bucket": "b"},
        ),
        "eventQueue must be a standard queue: S3 sends no event notifications to FIFO queues",
    ),
)


def _member_cluster_named_by_the_app(spec: dict[str, Any]) -> None:
    spec["sites"][1]["capacity"] = {
        "perZone": 1,
        "kubernetesDeployments": {
            "selector": {"app": "web"},
            "kubeconfigSecretRef": {"name": "aws-sandbox-credentials"},
        },
    }


INVALID_APPS += (
    Invalid(
        "an app names a kubeconfig Secret",
        _member_cluster_named_by_the_app,
        "kubernetesDeployments.kubeconfigSecretRef is no longer accepted: list the member "
        "cluster (with its kubeconfig Secret) under the CloudProvider's spec.clusters",
    ),
)


def provider_spec(**overrides: Any) -> dict[str, Any]:
    """A valid CloudProvider spec (wire form) that admits the namespace shop."""
    spec: dict[str, Any] = {
        "type": "aws",
        "regions": ["us-east-1", "us-west-2"],
        "credentials": {"source": "Environment"},
        "tenancy": {"namespaces": ["shop"]},
    }
    # Tests exercise the acting operator: Automatic unless they say otherwise (the CRD's
    # default is Observe), also when they override other failover fields.
    failover = overrides.pop("failover", {})
    spec["failover"] = {"mode": "Automatic", **failover}
    spec.update(overrides)
    return spec


@dataclass(frozen=True)
class InvalidProvider(Invalid):
    """A broken variant of :func:`provider_spec`."""

    def spec(self) -> dict[str, Any]:
        spec = copy.deepcopy(provider_spec())
        self.mutate(spec)
        return spec


def _selector(requirement: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return _set("tenancy.namespaceSelector", {"matchExpressions": [requirement]})


INVALID_PROVIDERS: tuple[Invalid, ...] = (
    InvalidProvider(
        "every namespace and more",
        _set("tenancy.namespaces", ["*", "shop"]),
        "tenancy.namespaces: '*' (every namespace) must be the only entry",
    ),
    InvalidProvider(
        "capacity in every namespace and more",
        _set("tenancy.capacityNamespaces", ["payments", "*"]),
        "tenancy.capacityNamespaces: '*' (every namespace) must be the only entry",
    ),
    InvalidProvider(
        "an empty namespace selector",
        _set("tenancy.namespaceSelector", {}),
        "tenancy.namespaceSelector selects nothing in particular (an empty selector would "
        "admit every namespace)",
    ),
    InvalidProvider(
        "In without values",
        _selector({"key": "team", "operator": "In"}),
        "a selector requirement with operator In or NotIn needs values",
    ),
    InvalidProvider(
        "Exists with values",
        _selector({"key": "team", "operator": "Exists", "values": ["a"]}),
        "Exists and DoesNotExist take none",
    ),
    InvalidProvider("a namespace glob", _set("tenancy.namespaces", ["team-*"]), "namespaces"),
)

# Probe settings (issue 21): each refused by the API server (CEL or schema) and by the models.
INVALID_APPS += (
    Invalid(
        "http settings on a tcp endpoint",
        _set(
            "sites.0.endpoints.0", {"zone": "us-east-1a", "url": "tcp://10.0.0.1:5432", "http": {}}
        ),
        "a tcp:// endpoint takes no http or tls settings",
    ),
    Invalid(
        "tls settings on plain http",
        _set("sites.0.endpoints.0.tls", {"serverName": "app.example.com"}),
        "tls settings need an https:// endpoint",
    ),
    Invalid(
        "status range upside down",
        _set("health.http", {"expectedStatus": ["299-200"]}),
        "a status range must run from low to high (e.g. 200-299)",
    ),
    Invalid(
        "body match with both kinds",
        _set("health.http", {"body": {"contains": "ok", "regex": "ok"}}),
        "a body match needs exactly one of contains, regex",
    ),
)

INVALID_BY_SCHEMA += (
    Invalid(
        "status code out of range",
        _set("health.http", {"expectedStatus": ["600"]}),
        "expectedStatus",
    ),
    Invalid("tcp endpoint without port", _set("sites.0.endpoints.0.url", "tcp://10.0.0.1"), "url"),
    Invalid(
        "CA bundle without a name", _set("health.tls", {"caBundle": {"key": "ca.crt"}}), "name"
    ),
)


INVALID_APPS += (
    Invalid(
        "a write fence of two kinds",
        _set(
            "failover.planned",
            {"writeFence": {"webhook": {"url": "http://fence.example.test/"}, "none": {}}},
        ),
        "failover.planned.writeFence needs exactly one of webhook or none",
    ),
    Invalid(
        "a write fence of no kind",
        _set("failover.planned", {"writeFence": {}}),
        "failover.planned.writeFence needs exactly one of webhook or none",
    ),
)
