"""The OpenStack implementations' pure parts: matching servers, choosing what to delete,
reading Swift's and Cinder's answers, refusing what the services cannot hold."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from controller.api.models import CloudProviderSpec, OpenStackServersTemplate
from controller.api.names import TAG_SITE
from controller.providers.openstack.capacity import (
    NovaServersCapacity,
    ServerTemplate,
    _booted_by,
    capacity_for_site,
    deletion_order,
)
from controller.providers.openstack.connector import OpenStackConnector, classify
from controller.providers.openstack.objects import (
    SwiftBulkError,
    _check_bulk,
    _head_info,
    _listed,
    _meta_headers,
)
from controller.providers.openstack.servers import ServerMatch, is_live
from controller.providers.openstack.volumes import _snapshot, check_tags


def server(name: str, **fields: Any) -> Any:
    defaults: dict[str, Any] = {
        "id": name,
        "name": name,
        "status": "ACTIVE",
        "task_state": None,
        "metadata": {TAG_SITE: "os1"},
        "created_at": "2026-01-01T00:00:00Z",
        "availability_zone": "az-1a",
    }
    return SimpleNamespace(**{**defaults, **fields})


def test_a_sites_servers_need_the_prefix_and_the_site_metadata() -> None:
    match = ServerMatch("web", "os1")
    assert match.name_filter == "^web-"
    assert match.matches(server("web-az-1a-0f3a2b"))
    assert not match.matches(server("webshop-1"))  # the prefix ends at a hyphen
    assert not match.matches(server("web-az-1a-1", metadata={TAG_SITE: "os2"}))
    assert not match.matches(server("web-az-1a-2", metadata={}))
    assert not is_live(server("web-x", task_state="deleting"))
    assert not is_live(server("web-y", status="SOFT_DELETED"))
    for bad in ("Web", "-web", "web-", "w" * 64, "web_1"):
        with pytest.raises(ValueError, match="DNS label"):
            ServerMatch(bad, "os1")


def test_a_shrinking_zone_loses_broken_servers_first_then_the_newest() -> None:
    servers = [
        server("a", created_at="2026-01-01T00:00:01Z"),
        server("b", created_at="2026-01-01T00:00:03Z"),
        server("c", created_at="2026-01-01T00:00:02Z", status="SHUTOFF"),
        server("d", created_at="2026-01-01T00:00:00Z", status="ERROR"),
    ]
    assert [s.name for s in deletion_order(servers)] == ["c", "d", "b", "a"]


def test_servers_booted_by_a_request_are_recognised_by_name() -> None:
    assert _booted_by("web-az-1a-abc123", ["web-az-1a-abc123"])
    assert _booted_by("web-az-1a-abc123-2", ["web-az-1a-abc123"])  # Nova's multi-create
    assert not _booted_by("web-az-1a-abc123-x", ["web-az-1a-abc123"])
    assert not _booted_by("web-az-1a-abc1234", ["web-az-1a-abc123"])


def test_server_templates_and_the_resources_capacity_spec() -> None:
    with pytest.raises(ValueError, match="another site"):
        ServerTemplate("web", "os1", "m1.small", "img", metadata={TAG_SITE: "os2"})
    with pytest.raises(ValueError, match="'auto' or 'none'"):
        ServerTemplate("web", "os1", "m1.small", "img", networks="all")  # type: ignore[arg-type]

    spec = CloudProviderSpec.model_validate(
        {
            "type": "openstack",
            "regions": ["RegionOne"],
            "credentials": {"source": "Secret", "secretRef": {"name": "os"}},
        }
    )
    connector = OpenStackConnector("os", spec, None)
    template = OpenStackServersTemplate(name_prefix="web", flavor="m1.small", image="cirros")
    driver = capacity_for_site(connector, "RegionOne", "os1", template)
    assert isinstance(driver, NovaServersCapacity)
    assert (driver.region, driver.template.site, driver.template.networks) == (
        "RegionOne",
        "os1",
        "auto",
    )


def test_swift_answers_are_read_as_object_infos() -> None:
    head = _head_info(
        "k",
        {
            "Content-Length": "12",
            "Etag": '"abc"',
            "X-Timestamp": "1700000000.12345",
            "X-Object-Meta-Origin": "use1",
            "x-object-meta-SHA256": "f00",
        },
    )
    assert (head.size, head.etag, head.last_modified) == (12, "abc", 1700000000.12345)
    assert head.metadata == {"origin": "use1", "sha256": "f00"}
    listed = _listed(
        {
            "name": "k",
            "bytes": 12,
            "hash": "manifest-md5",
            "slo_etag": '"abc"',
            "last_modified": "2023-11-14T22:13:20.123450",
        }
    )
    assert (listed.etag, listed.last_modified) == ("abc", 1700000000.12345)
    assert _meta_headers({"Sha256": "x"}) == {"X-Object-Meta-Sha256": "x"}
    for key, value in (("a_b", "x"), ("", "x"), ("k", "caf\u00e9"), ("k", "x" * 257)):
        with pytest.raises(ValueError, match="Swift metadata"):
            _meta_headers({key: value})


def test_bulk_delete_reports() -> None:
    _check_bulk({"Response Status": "200 OK", "Errors": []}, "ok")
    _check_bulk({"Response Status": "200 OK", "Errors": [["/c/o", "404 Not Found"]]}, "ok")
    with pytest.raises(SwiftBulkError) as caught:
        _check_bulk({"Response Status": "400 Bad Request", "Errors": [["/c/o", "409"]]}, "x")
    assert caught.value.status_code == 400
    assert classify(caught.value).outcome.value == "client_error"
    with pytest.raises(SwiftBulkError) as caught:
        _check_bulk({"Response Status": "502 Bad Gateway", "Errors": []}, "x")
    assert classify(caught.value).outcome.value == "server_error"


def test_backup_tags_and_states() -> None:
    check_tags({"lifeboat.dev/app": "web", "a b:c_d.e-f": "x" * 255})
    with pytest.raises(ValueError, match="cannot be Cinder metadata"):
        check_tags({"app@web": "x"})
    with pytest.raises(ValueError, match="255"):
        check_tags({"app": "x" * 256})

    def backup(status: str) -> Any:
        return SimpleNamespace(
            id="b",
            volume_id="v",
            status=status,
            created_at="2023-11-14T22:13:20.000000",
            size=8,
            metadata={"app": "web"},
        )

    snap = _snapshot("RegionTwo", backup("creating"))
    assert (snap.state, snap.created_at, snap.size_gb, dict(snap.tags)) == (
        "pending",
        1700000000.0,
        8,
        {"app": "web"},
    )
    assert _snapshot("r", backup("available")).state == "completed"
    assert _snapshot("r", backup("restoring")).state == "completed"
    assert _snapshot("r", backup("error")).state == "error"
