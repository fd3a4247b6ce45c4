"""What object replication gets from the provider layer: stores and change feeds from the
registry, and S3 event notifications parsed from SQS messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.api.models import ResilientAppSpec
from controller.core.apiplane import ApiPlaneState
from controller.operator.providers import ProviderInfo, ProviderRegistry
from controller.providers.aws.events import SqsChangeFeed, parse_notice
from controller.providers.aws.objects import S3ObjectStore
from controller.providers.errors import CapabilityUnsupported
from controller.providers.openstack.objects import SwiftObjectStore
from controller.providers.protocols import ObjectChange
from tests.factories import app_spec
from tests.unit.test_provider_registry import NoKube

SPECS: dict[str, dict[str, Any]] = {
    "aws": {
        "type": "aws",
        "regions": ["us-east-1", "us-west-2"],
        "credentials": {"source": "Environment"},
    },
    "os": {"type": "openstack", "regions": ["RegionOne"], "credentials": {"source": "Environment"}},
}


def registry(status: dict[str, Any] | None = None) -> ProviderRegistry:
    infos = {n: ProviderInfo(n, "uid", 1, spec, status or {}) for n, spec in SPECS.items()}
    return ProviderRegistry(NoKube(), "lifeboat-system", lookup=infos.get)


async def test_the_registry_builds_stores_and_feeds_per_cloud() -> None:
    providers = registry()
    s3 = await providers.object_store("aws", "us-west-2", "photos")
    assert isinstance(s3, S3ObjectStore) and (s3.region, s3.bucket) == ("us-west-2", "photos")
    assert await providers.object_store("aws", "us-west-2", "photos") is s3  # cached
    feed = await providers.change_feed("aws", "us-east-1", "photos-events")
    assert isinstance(feed, SqsChangeFeed) and feed.region == "us-east-1"

    swift = await providers.object_store("os", "RegionOne", "photos")
    assert isinstance(swift, SwiftObjectStore) and swift.container == "photos"
    with pytest.raises(CapabilityUnsupported, match="offers no change notices") as refused:
        await providers.change_feed("os", "RegionOne", "queue")
    assert refused.value.reason == "EventsUnsupported"

    providers.forget("aws")  # a changed provider: its stores are built anew
    assert await providers.object_store("aws", "us-west-2", "photos") is not s3


def event_queues_at_openstack() -> dict[str, Any]:
    """An app (wire form) whose dataset has an eventQueue at an aws and an openstack site."""
    raw = app_spec()
    raw["sites"][1].update(provider="os", region="RegionOne", zones=["nova"], endpoints=[])
    raw["replication"] = {
        "rpoTargetSeconds": 60,
        "objects": [
            {
                "name": "photos",
                "locations": [
                    {"site": "use1", "bucket": "east", "eventQueue": "east-events"},
                    {"site": "usw2", "bucket": "west", "eventQueue": "west-events"},
                ],
            }
        ],
    }
    raw["traffic"]["provider"] = "aws"
    for site in raw["sites"][:1]:
        site["provider"] = "aws"
    return raw


def test_an_event_queue_at_an_openstack_site_is_a_configuration_problem() -> None:
    spec = ResilientAppSpec.model_validate(event_queues_at_openstack())
    problems = registry().check_references(spec)
    assert problems == [
        (
            "EventsUnsupported",
            "dataset photos at site usw2: change notices (eventQueue) need a CloudProvider of "
            "type aws, CloudProvider os is openstack; its changes are found by the scan alone",
        )
    ]


async def test_region_state_is_read_without_io_from_the_cached_handle() -> None:
    status = {"regions": [{"name": "us-east-1", "apiPlane": "Impaired", "reason": "throttled"}]}
    providers = registry(status)
    assert providers.region_state("aws", "us-east-1") is ApiPlaneState.UNKNOWN  # not built yet
    await providers.handle("aws")
    assert providers.region_state("aws", "us-east-1") is ApiPlaneState.IMPAIRED
    assert providers.region_state("aws", "us-west-2") is ApiPlaneState.UNKNOWN


def record(name: str, key: str, **extra: Any) -> dict[str, Any]:
    return {
        "eventSource": "aws:s3",
        "eventName": name,
        "eventTime": "2026-11-21T10:00:00.500Z",
        "s3": {"bucket": {"name": "photos"}, "object": {"key": key, "size": 3, "eTag": "abc"}},
        **extra,
    }


def test_s3_notices_are_parsed_into_changes() -> None:
    body = json.dumps(
        {
            "Records": [
                record("ObjectCreated:Put", "albums/a+b%2Bc.jpg"),
                record("ObjectRemoved:Delete", "gone"),
                record("ObjectRestore:Post", "ignored"),
                {"eventSource": "aws:sqs"},
            ]
        }
    )
    created, removed = parse_notice(body)
    assert created == ObjectChange("photos", "albums/a b+c.jpg", False, 1795255200.5, "abc", 3)
    assert (removed.key, removed.removed) == ("gone", True)
    # Through SNS: the notice is the message.
    wrapped = json.dumps({"Type": "Notification", "Message": body})
    assert [c.key for c in parse_notice(wrapped)] == ["albums/a b+c.jpg", "gone"]


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "photos"}),
        json.dumps({"Records": "nope"}),
        json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}),
    ],
)
def test_anything_else_on_the_queue_carries_no_change(body: str) -> None:
    assert parse_notice(body) == ()
