"""What the provider monitor exports of a CloudProvider it cannot use: credentials not
ready, and whether the reason is an invalid spec (the two alerts that follow differ)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from controller import metrics
from controller.api.events import EventReason
from controller.operator.kube import Kube, ObjectRef
from controller.operator.provider_monitor import ProviderMonitor
from controller.operator.providers import ProviderInfo, ProviderRegistry
from controller.providers.backend import Cloud
from controller.providers.errors import ProviderUnavailable


class Unusable:
    """A registry whose every CloudProvider is unavailable for ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def handle(self, name: str) -> Cloud:
        raise ProviderUnavailable(self.reason, f"CloudProvider {name}: {self.reason}")


class Recorder:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []

    async def patch_status(self, ref: ObjectRef, patch: dict[str, Any]) -> None:
        self.patches.append(patch)

    async def event(self, ref: ObjectRef, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason))


def check(reason: str, name: str) -> Recorder:
    kube = Recorder()
    monitor = ProviderMonitor(cast(ProviderRegistry, Unusable(reason)), cast(Kube, kube))
    info = ProviderInfo(name, f"uid-{name}", 1, {}, {})
    asyncio.run(monitor.check(info))
    return kube


def sample(metric: str, provider: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(metric, {"provider": provider})


@pytest.mark.parametrize(
    ("reason", "valid"),
    [
        (EventReason.SECRET_NOT_FOUND, 1.0),
        (EventReason.CREDENTIALS_INCOMPLETE, 1.0),
        (EventReason.INVALID_PROVIDER, 0.0),
    ],
)
def test_an_unusable_provider_is_not_ready_and_invalid_only_for_an_invalid_spec(
    reason: str, valid: float
) -> None:
    name = f"monitor-{reason.lower()}"
    kube = check(reason, name)
    assert sample("lifeboat_provider_ready", name) == 0.0
    assert sample("lifeboat_provider_configuration_valid", name) == valid
    assert kube.events == [("Warning", reason)]
    ready = next(c for c in kube.patches[0]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    metrics.forget_provider(name)
    assert sample("lifeboat_provider_configuration_valid", name) is None
