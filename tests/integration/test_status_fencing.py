"""Status writes are fenced by the epoch, on the real API server: a writer holding an older
epoch (an outgoing leader, say) can never write it over a newer one."""

from __future__ import annotations

import asyncio

import pytest

from controller.operator.kube import KubeClient, ObjectRef, StaleEpoch
from tests.fixtures.world import Apps

pytestmark = pytest.mark.integration

PLURAL = "resilientapps"


def test_an_older_epoch_never_overwrites_a_newer_one(app_harness: Apps) -> None:
    namespace, name = app_harness.create()
    stored = app_harness.get(namespace, name)
    ref = ObjectRef("ResilientApp", PLURAL, name, namespace, stored["metadata"]["uid"])
    client = app_harness.sandbox.kube.api_client()
    try:
        kube = KubeClient(client)

        async def writes() -> None:
            await kube.patch_status(ref, {"epoch": 3, "activeSite": "usw2"}, epoch=3)
            await kube.patch_status(ref, {"healthyZones": "3/6"}, epoch=3)  # same epoch: fine
            with pytest.raises(StaleEpoch) as refused:
                await kube.patch_status(ref, {"epoch": 2, "activeSite": "use1"}, epoch=2)
            assert refused.value.stored == 3
            await kube.patch_status(ref, {"epoch": 4, "activeSite": "use1"}, epoch=4)

        asyncio.run(writes())
    finally:
        client.close()  # type: ignore[no-untyped-call]
    status = app_harness.get(namespace, name)["status"]
    assert (status["epoch"], status["activeSite"], status["healthyZones"]) == (4, "use1", "3/6")
