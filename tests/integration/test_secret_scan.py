"""No secret reaches what Lifeboat writes: a full run on the sandbox with planted secrets,
then every log line, Event, status object and the /metrics text is scanned for them.

Planted: the AWS secret access key of a CloudProvider (rotated mid-run to a second one,
both planted), the OpenStack password of the sandbox's clouds.yaml, the secret of an
application credential made in the sandbox's Keystone for a second OpenStack
CloudProvider, and the operator's own kubeconfig token. The run: an AWS app and an
OpenStack app, each replicating objects (S3, Swift) and failing over to their other site
(replication reverses); S3 calls refused for a while (errors in status and Events); the
AWS credentials Secret rotated (the provider reconnects, the flows restart).

The operator runs in-process, its loggers (``controller`` at DEBUG, everything else at
INFO, as ``lifeboat run --log-level info`` would show) captured with tracebacks. Each
secret is looked for as it is and in the encodings a leak could take (base64, URL
quoting); the scanner is shown to find a planted value in a control text first, so a
scan that finds nothing means something.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import yaml
from prometheus_client import generate_latest

from controller import metrics
from controller.operator.runner import in_background
from sandbox.faults import FaultSpec
from sandbox.world import CONTROLLER_NAMESPACE, EXAMPLES, OPENSTACK_EXAMPLES, Sandbox
from tests.fixtures.world import Apps, wait_for
from tests.integration.test_replication_objects import (
    Buckets,
    combine,
    entry,
    replication,
)

pytestmark = [pytest.mark.integration, pytest.mark.openstack]

SLOW = 120.0
"""Seconds to wait for each step (the machine may be busy)."""
AWS_PROVIDER = "aws-secret-scan"
APPCRED_PROVIDER = "openstack-appcred-scan"


# ----------------------------------------------------------------------------- the scanner


def encodings(value: str) -> set[str]:
    """The forms a leaked ``value`` could take in text: as is, base64 (standard and URL
    alphabet, with and without padding), URL-quoted."""
    raw = value.encode()
    forms = {value, quote(value, safe=""), quote_plus(value)}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode()
        forms |= {text, text.rstrip("=")}
    return forms


def scan(texts: Mapping[str, str], planted: Mapping[str, str]) -> list[tuple[str, str]]:
    """(where, which secret) for every planted secret found in any text, in any form."""
    found = []
    for where, text in texts.items():
        for label, value in planted.items():
            if any(form in text for form in encodings(value)):
                found.append((where, label))
    return found


def test_the_scanner_finds_what_is_planted() -> None:
    """The control: a scan that can find nothing proves nothing."""
    planted = {"aws": "AwsPlanted/Secret+Key=0123456789"}
    secret = planted["aws"]
    assert scan({"clean": "nothing to see"}, planted) == []
    for text in (
        f"error: signature {secret} rejected",
        json.dumps({"data": base64.b64encode(secret.encode()).decode()}),
        f"GET /?key={quote_plus(secret)}",
        f"url {base64.urlsafe_b64encode(secret.encode()).decode().rstrip('=')}",
    ):
        assert scan({"control": text}, planted) == [("control", "aws")], text


# ----------------------------------------------------------------------------- the run


class LogCapture(logging.Handler):
    """Every record, formatted as the operator's text log would be (with tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured_logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    root, ours = logging.getLogger(), logging.getLogger("controller")
    levels = (root.level, ours.level)
    root.addHandler(capture)
    root.setLevel(logging.INFO)
    ours.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(levels[0])
        ours.setLevel(levels[1])


def kubectl_json(sandbox: Sandbox, *args: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(sandbox.kube.kubectl(*args, "-o", "json").stdout)
    return answer


def apply(sandbox: Sandbox, *documents: Mapping[str, Any]) -> None:
    text = "---\n".join(yaml.safe_dump(dict(d), sort_keys=False) for d in documents)
    sandbox.kube.kubectl("apply", "--server-side", "--force-conflicts", "--filename=-", input=text)


def aws_secret(key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{AWS_PROVIDER}-credentials", "namespace": CONTROLLER_NAMESPACE},
        "type": "Opaque",
        "stringData": {"aws_access_key_id": "AKIDSECRETSCAN", "aws_secret_access_key": key},
    }


def aws_provider(sandbox: Sandbox) -> dict[str, Any]:
    """The sandbox's AWS CloudProvider under a name (and Secret) of this test's."""
    document = next(d for d in sandbox.example_documents(EXAMPLES) if d["kind"] == "CloudProvider")
    provider = copy.deepcopy(document)
    provider["metadata"] = {"name": AWS_PROVIDER}
    provider["spec"]["credentials"]["secretRef"]["name"] = f"{AWS_PROVIDER}-credentials"
    return provider


def appcred_provider(sandbox: Sandbox, secret: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An application credential with the planted ``secret`` in the sandbox's Keystone,
    and a CloudProvider (with its clouds.yaml Secret) that authenticates with it."""
    world = sandbox.openstack_world
    assert world is not None
    connection = world.direct_connection()
    made = connection.identity.create_application_credential(
        user=connection.current_user_id, name=f"lifeboat-scan-{uuid.uuid4().hex[:8]}", secret=secret
    )
    clouds = {
        "clouds": {
            "lifeboat": {
                "auth_type": "v3applicationcredential",
                "auth": {
                    "auth_url": world.credentials.auth_url,
                    "application_credential_id": made.id,
                    "application_credential_secret": secret,
                },
                "identity_api_version": 3,
                "interface": "public",
            }
        }
    }
    document = next(
        d for d in sandbox.example_documents(OPENSTACK_EXAMPLES) if d["kind"] == "CloudProvider"
    )
    provider = copy.deepcopy(document)
    provider["metadata"] = {"name": APPCRED_PROVIDER}
    provider["spec"]["credentials"]["secretRef"]["name"] = f"{APPCRED_PROVIDER}-credentials"
    secret_document = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{APPCRED_PROVIDER}-credentials", "namespace": CONTROLLER_NAMESPACE},
        "type": "Opaque",
        "stringData": {"clouds.yaml": yaml.safe_dump(clouds)},
    }
    return secret_document, provider


def kubeconfig_token(sandbox: Sandbox) -> str:
    config = yaml.safe_load(sandbox.operator_kubeconfig.read_text(encoding="utf-8"))
    token = str(config["users"][0]["user"]["token"])
    assert len(token) > 20
    return token


def uses(provider: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        for site in body["spec"]["sites"]:
            site["provider"] = provider
        body["spec"]["traffic"]["provider"] = provider

    return mutate


def provider_ready(apps: Apps, name: str) -> dict[str, Any] | None:
    status = apps.provider(name).get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
    return status if ready is not None and ready["status"] == "True" else None


def test_no_planted_secret_reaches_logs_events_status_or_metrics(
    openstack_sandbox: Sandbox, captured_logs: LogCapture
) -> None:
    sandbox = openstack_sandbox
    world = sandbox.openstack_world
    assert world is not None
    planted = {
        "AWS secret access key": f"AwsScan/{uuid.uuid4().hex}+Planted",
        "AWS secret access key, rotated": f"AwsScanRotated/{uuid.uuid4().hex}+Planted",
        "OpenStack password": world.credentials.password,
        "application credential secret": f"appcred-{uuid.uuid4().hex}-planted",
        "kubeconfig token": kubeconfig_token(sandbox),
    }
    appcred_secret, appcred = appcred_provider(sandbox, planted["application credential secret"])
    apply(sandbox, aws_secret(planted["AWS secret access key"]), aws_provider(sandbox))
    apply(sandbox, appcred_secret, appcred)

    aws_apps = Apps(sandbox, examples=EXAMPLES)
    zone_name = f"scan-{uuid.uuid4().hex[:8]}.test."
    dns = world.direct_connection().dns
    zone = dns.create_zone(name=zone_name, email="ops@lifeboat.test", ttl=300)
    wait_for(lambda: dns.get_zone(zone.id).status == "ACTIVE", 30, f"zone {zone_name} active")
    os_apps = Apps(sandbox, examples=OPENSTACK_EXAMPLES, zone=zone_name)
    buckets = Buckets(sandbox)
    buckets.put("use1", "albums/1.jpg", b"from use1")
    containers = {site: f"scan-{site}-{uuid.uuid4().hex[:8]}" for site in ("os1", "os2")}
    swift = {
        site: world.direct_connection(r).object_store
        for site, r in (("os1", "RegionOne"), ("os2", "RegionTwo"))
    }
    for site, store in swift.items():
        store.create_container(containers[site])
    swift["os1"].upload_object(containers["os1"], "albums/1.jpg", data=b"from os1")

    config = sandbox.operator_config(secret_recheck_seconds=5.0)
    with in_background(config):
        try:
            events, objects, exported = run(
                sandbox, aws_apps, os_apps, buckets, containers, swift, zone_name, planted
            )
        finally:  # deleted while the operator runs: it releases their finalizers
            for endpoint in sandbox.zones.endpoints:
                endpoint.serve()
            for proxy in sandbox.proxies.values():
                proxy.clear_faults()
            for harness in (aws_apps, os_apps):
                harness.delete_all()
            for name in (AWS_PROVIDER, APPCRED_PROVIDER):
                sandbox.kube.kubectl("delete", "cloudprovider", name, "--ignore-not-found")
            dns.delete_zone(zone, ignore_missing=True)

    assert len(events["items"]) > 10 and captured_logs.lines  # a real run (and see below)
    reasons = {e.get("reason") for e in events["items"]}
    assert {"FailoverStarted", "TrafficShifted"} <= reasons
    texts = {
        "operator logs": "\n".join(captured_logs.lines),
        "Events": json.dumps(events),
        "metrics": exported,
        **{f"{kind} (status and all)": json.dumps(body) for kind, body in objects.items()},
    }
    # The in-run control: the AWS app's namespace or its CloudProvider's name is in every
    # place scanned, and the scan finds it there (each text is the real thing, not empty).
    control = {"the AWS app's namespace": aws_apps.created[0][0], "its provider": AWS_PROVIDER}
    assert {where for where, _ in scan(texts, control)} == set(texts)
    assert scan(texts, planted) == []


def run(
    sandbox: Sandbox,
    aws_apps: Apps,
    os_apps: Apps,
    buckets: Buckets,
    containers: Mapping[str, str],
    swift: Mapping[str, Any],
    zone_name: str,
    planted: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], str]:
    """Both apps replicate, meet refused calls, a rotation and a failover; then the Events,
    the Lifeboat objects and the metrics text as they are."""
    aws_ns, aws_name = aws_apps.create(combine(uses(AWS_PROVIDER), replication(buckets.names)))
    os_ns, os_name = os_apps.create(
        combine(
            lambda body: body["spec"]["traffic"].update(hostedZoneName=zone_name),
            replication(containers),
        )
    )
    for harness, ns, name in ((aws_apps, aws_ns, aws_name), (os_apps, os_ns, os_name)):
        try:
            harness.wait_serving(ns, name, timeout=SLOW)
        except AssertionError as error:
            status = harness.status(ns, name)
            shown = {k: status.get(k) for k in ("conditions", "healthyZones", "actions")}
            raise AssertionError(f"{error}: {json.dumps(shown)[:3000]}") from None
    wait_for(lambda: provider_ready(aws_apps, APPCRED_PROVIDER), SLOW, "the app-credential one")
    wait_for(lambda: buckets.get("usw2", "albums/1.jpg"), SLOW, "the S3 copy")

    def aws_entry() -> dict[str, Any]:
        return entry(aws_apps.status(aws_ns, aws_name), "usw2")

    # Refused S3 calls: errors in the status, the metrics and Events.
    for region in ("us-east-1", "us-west-2"):
        sandbox.proxies[region].set_faults(FaultSpec(service="s3", auth=1.0))
    buckets.put("use1", "albums/2.jpg", b"refused for a while")
    wait_for(lambda: aws_entry().get("lastError"), SLOW, "a replication error in the status")
    for region in ("us-east-1", "us-west-2"):
        sandbox.proxies[region].clear_faults()

    # A rotation: the provider reconnects with the new key, the flows restart.
    apply(sandbox, aws_secret(planted["AWS secret access key, rotated"]))
    buckets.put("use1", "albums/3.jpg", b"after the rotation")
    wait_for(lambda: buckets.get("usw2", "albums/3.jpg"), SLOW, "a copy after the rotation")

    # Both apps fail over; replication reverses.
    for site in ("use1", "os1"):
        for endpoint in sandbox.zones.site_endpoints(site):
            endpoint.down()
    wait_for(lambda: aws_apps.status(aws_ns, aws_name).get("epoch") == 2, SLOW, "AWS failover")
    wait_for(lambda: os_apps.status(os_ns, os_name).get("epoch") == 2, SLOW, "OpenStack failover")
    buckets.put("usw2", "albums/4.jpg", b"from usw2")
    swift["os2"].upload_object(containers["os2"], "albums/4.jpg", data=b"from os2")
    wait_for(lambda: buckets.get("use1", "albums/4.jpg"), SLOW, "the S3 copy back")

    def swift_back() -> bool:
        try:
            swift["os1"].get_object_metadata("albums/4.jpg", container=containers["os1"])
        except Exception:
            return False
        return True

    wait_for(swift_back, SLOW, "the Swift copy back")
    events = kubectl_json(sandbox, "get", "events", "--all-namespaces")
    objects = {
        kind: kubectl_json(sandbox, "get", kind, "--all-namespaces")
        for kind in ("resilientapps.lifeboat.dev", "cloudproviders.lifeboat.dev")
    }
    return events, objects, generate_latest(metrics.REGISTRY).decode()
