"""The provider registry: handles built from CloudProviders, verdicts kept over restarts."""

from __future__ import annotations

from typing import Any

import pytest

from controller.core.apiplane import ApiPlaneState
from controller.operator.providers import ProviderInfo, ProviderRegistry, ProviderUnavailable

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
