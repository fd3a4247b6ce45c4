"""The provider registry: handles built from CloudProviders, verdicts kept over restarts."""

from __future__ import annotations

from typing import Any

import pytest

from controller.core.apiplane import ApiPlaneState
from controller.operator.kube import NotFound
from controller.operator.providers import ProviderInfo, ProviderRegistry
from controller.providers.errors import ProviderUnavailable

SPEC = {
    "type": "aws",
    "regions": ["us-east-1", "us-west-2"],
    "credentials": {"source": "Environment"},
}


class NoKube:
    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str]:
        raise AssertionError("Environment credentials read no Secret")

    async def patch_status(
        self, ref: Any, status: dict[str, Any], *, epoch: int | None = None
    ) -> None:
        raise AssertionError

    async def event(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError


def registry(status: dict[str, Any]) -> ProviderRegistry:
    info = ProviderInfo("aws", "uid", 1, SPEC, status)
    return ProviderRegistry(
        NoKube(), "lifeboat-system", lookup=lambda n: info if n == "aws" else None
    )


async def test_a_restarted_operator_keeps_the_last_verdicts() -> None:
    status = {
        "regions": [
            {
                "name": "us-east-1",
                "apiPlane": "Impaired",
                "since": "2026-11-21T10:00:00Z",
                "reason": "throttle share 80% >= 30%",
            },
            {"name": "us-west-2", "apiPlane": "Healthy"},
        ]
    }
    providers = registry(status)
    assert await providers.api_plane("aws", "us-east-1") is ApiPlaneState.IMPAIRED
    assert await providers.api_plane("aws", "us-west-2") is ApiPlaneState.HEALTHY
    handle = await providers.handle("aws")
    assert "as last judged" in handle.connector.calls.gate("us-east-1").health.reason
    assert await providers.traffic_plane("aws", None) is ApiPlaneState.UNKNOWN  # Route 53: global


async def test_unknown_provider_is_reported_not_raised_for_verdicts() -> None:
    providers = registry({})
    assert await providers.api_plane("nope", "us-east-1") is ApiPlaneState.UNKNOWN
    with pytest.raises(ProviderUnavailable, match="CloudProvider nope not found"):
        await providers.handle("nope")


SECRET_SPEC = {**SPEC, "credentials": {"source": "Secret", "secretRef": {"name": "aws-keys"}}}


class Secrets(NoKube):
    """The controller namespace's Secrets: data and resourceVersion by name."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[dict[str, str], str]] = {}
        self.reads = 0

    def put(self, key: str, version: str) -> None:
        self.held["aws-keys"] = (
            {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": key},
            version,
        )

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str]:
        self.reads += 1
        if name not in self.held:
            raise NotFound(name)
        return self.held[name]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rotating() -> tuple[ProviderRegistry, Secrets, Clock, dict[str, ProviderInfo]]:
    secrets, clock = Secrets(), Clock()
    secrets.put("first-secret-key", "1")
    infos = {"aws": ProviderInfo("aws", "uid-1", 1, SECRET_SPEC, {})}
    providers = ProviderRegistry(
        secrets, "lifeboat-system", lookup=infos.get, secret_ttl=60, clock=clock
    )
    return providers, secrets, clock, infos


def closings(handle: Any) -> list[str]:
    closed: list[str] = []
    original = handle.close

    def close() -> None:
        closed.append("closed")
        original()

    handle.close = close
    return closed


async def test_a_rotated_secret_makes_a_new_revision_and_the_old_one_lives_a_while() -> None:
    providers, secrets, clock, _ = rotating()
    first = await providers.revision("aws")
    old = await providers.handle("aws")
    closed = closings(old)
    assert await providers.revision("aws") == first  # within the TTL: not even read again
    assert secrets.reads == 1
    await providers.recheck()  # read again, unchanged: the same connection
    assert (secrets.reads, await providers.revision("aws")) == (2, first)

    secrets.put("second-secret-key", "2")
    await providers.recheck()
    second = await providers.revision("aws")
    assert second != first and await providers.handle("aws") is not old
    assert closed == []  # still held by flows that have not restarted yet
    clock.now += providers.retire_seconds
    await providers.recheck()
    assert closed == ["closed"]


async def test_a_cloudprovider_made_again_under_its_name_is_a_new_connection() -> None:
    """Regression: the cache compared generations only, so a CloudProvider deleted and made
    again (generation 1 again, another uid) kept the old one's connection."""
    providers, _, _, infos = rotating()
    first = await providers.revision("aws")
    infos["aws"] = ProviderInfo("aws", "uid-2", 1, SECRET_SPEC, {})
    assert await providers.revision("aws") != first


@pytest.mark.parametrize("withdraw", ["provider", "secret"])
async def test_a_withdrawn_provider_is_closed_at_once(withdraw: str) -> None:
    providers, secrets, _, infos = rotating()
    await providers.revision("aws")
    closed = closings(await providers.handle("aws"))
    if withdraw == "provider":
        del infos["aws"]
    else:
        del secrets.held["aws-keys"]
    await providers.recheck()
    assert closed == ["closed"]
    reason = "ProviderNotFound" if withdraw == "provider" else "SecretNotFound"
    with pytest.raises(ProviderUnavailable) as caught:
        await providers.revision("aws")
    assert caught.value.reason == reason
    assert providers.cached("aws") is None
