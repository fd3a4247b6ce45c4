"""manifests/monitoring (PrometheusRule, ServiceMonitor, dashboard ConfigMap) is accepted by
a real API server that has the Prometheus Operator's CRDs (server-side dry run: the CRDs'
schemas check every field)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.kube import KubeControlPlane
from sandbox.world import CONTROLLER_NAMESPACE, manifests_dir

pytestmark = pytest.mark.integration


def test_monitoring_manifests_apply_cleanly(
    kube: KubeControlPlane, monitoring_crds: list[Path]
) -> None:
    kube.install_crds(monitoring_crds)
    kube.kubectl("create", "namespace", CONTROLLER_NAMESPACE, check=False)
    directory = manifests_dir() / "monitoring"
    result = kube.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=lifeboat-test",
        "--output=name",
        f"--filename={directory}",
    )
    applied = set(result.stdout.split())
    assert applied == {
        "prometheusrule.monitoring.coreos.com/lifeboat-alerts",
        "servicemonitor.monitoring.coreos.com/lifeboat",
        "configmap/lifeboat-dashboard",
    }
