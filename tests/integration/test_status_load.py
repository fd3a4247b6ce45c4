"""What steady apps cost the API server, counted by the API server itself: a status
write only when something changed (plus a heartbeat a minute), and no read per round."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.world import Sandbox
from tests.fixtures.world import Apps

pytestmark = pytest.mark.integration


def requests(sandbox: Sandbox) -> dict[tuple[str, str], float]:
    """The API server's own count of ResilientApp requests, by (verb, subresource)."""
    body = sandbox.kube.kubectl("get", "--raw", "/metrics").stdout
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "apiserver_request_total"
                and labels.get("resource") == "resilientapps"
            ):
                key = (labels.get("verb", ""), labels.get("subresource", ""))
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def test_steady_apps_write_status_on_change_only_and_read_nothing_per_round(
    apps: Apps, sandbox: Sandbox
) -> None:
    """Reproduced: every 1 s round made one GET of the app and one PATCH of its status
    (599 patches a minute for 10 steady apps)."""
    created = [apps.create() for _ in range(3)]
    for namespace, name in created:
        apps.wait_serving(namespace, name, 60)
    time.sleep(3)  # the last completions written
    before = requests(sandbox)
    window = 30.0
    time.sleep(window)  # nothing changes; the harness reads nothing meanwhile
    after = requests(sandbox)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    patches = delta.get(("PATCH", "status"), 0.0)
    reads = delta.get(("GET", ""), 0.0) + delta.get(("GET", "status"), 0.0)
    rounds = len(created) * window  # one round a second each
    print(
        f"\n{len(created)} steady apps, {window:.0f}s: {patches:.0f} status writes, "
        f"{reads:.0f} reads, over {rounds:.0f} rounds"
    )
    assert patches <= len(created) * 1 + 1  # at most one heartbeat each in 30 s
    assert reads == 0
