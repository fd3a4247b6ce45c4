"""manifests/ installs cleanly on a real API server, the way a user applies it."""

from __future__ import annotations

import pytest

from sandbox.world import Sandbox, manifests_dir

pytestmark = pytest.mark.integration


def test_install_bundle_applies_server_side(sandbox: Sandbox) -> None:
    result = sandbox.kube.kubectl(
        "apply", "--server-side", "--force-conflicts", "--filename", str(manifests_dir())
    )
    applied = result.stdout
    for name in (
        "namespace/lifeboat-system",
        "customresourcedefinition.apiextensions.k8s.io/resilientapps.lifeboat.dev",
        "customresourcedefinition.apiextensions.k8s.io/cloudproviders.lifeboat.dev",
        "customresourcedefinition.apiextensions.k8s.io/failoverdrills.lifeboat.dev",
        "serviceaccount/lifeboat",
        "clusterrole.rbac.authorization.k8s.io/lifeboat",
        "clusterrolebinding.rbac.authorization.k8s.io/lifeboat",
        "role.rbac.authorization.k8s.io/lifeboat",
        "rolebinding.rbac.authorization.k8s.io/lifeboat",
        "deployment.apps/lifeboat",
    ):
        assert name in applied
    deployment = sandbox.kube.kubectl(
        "get", "deployment", "lifeboat", "-n", "lifeboat-system", "-o", "jsonpath={.spec}"
    ).stdout
    assert '"readOnlyRootFilesystem":true' in deployment
    assert '"runAsNonRoot":true' in deployment


@pytest.mark.parametrize(
    ("cloud", "expected"),
    [
        pytest.param(
            "aws",
            [
                "secret/aws-prod-credentials",
                "cloudprovider.lifeboat.dev/aws-prod",
                "cloudprovider.lifeboat.dev/aws-prod-irsa",
                "resilientapp.lifeboat.dev/checkout",
            ],
            id="aws",
        ),
        pytest.param(
            "openstack",
            [
                "secret/openstack-prod-credentials",
                "secret/openstack-clouds-yaml",
                "cloudprovider.lifeboat.dev/openstack-prod",
                "cloudprovider.lifeboat.dev/openstack-clouds-yaml",
                "resilientapp.lifeboat.dev/shop",
            ],
            id="openstack",
        ),
    ],
)
def test_real_cloud_examples_validate(sandbox: Sandbox, cloud: str, expected: list[str]) -> None:
    sandbox.kube.kubectl("create", "namespace", "default", check=False)
    result = sandbox.kube.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--filename",
        str(manifests_dir() / "examples" / cloud),
    )
    for name in expected:
        assert f"{name} serverside-applied (server dry run)" in result.stdout


def test_operator_service_account_has_only_what_it_needs(sandbox: Sandbox) -> None:
    def can(verb: str, resource: str, namespace: str | None = None, sub: str = "") -> bool:
        args = [
            "auth",
            "can-i",
            verb,
            resource,
            "--as=system:serviceaccount:lifeboat-system:lifeboat",
        ]
        if namespace:
            args += ["-n", namespace]
        if sub:
            args += [f"--subresource={sub}"]
        return sandbox.kube.kubectl(*args, check=False).stdout.strip() == "yes"

    assert can("watch", "resilientapps.lifeboat.dev")
    assert can("patch", "resilientapps.lifeboat.dev", "shop", sub="status")
    assert can("create", "events", "shop")
    assert can("get", "secrets", "lifeboat-system")
    assert not can("get", "secrets", "shop")
    assert not can("list", "secrets", "lifeboat-system")
    assert not can("delete", "resilientapps.lifeboat.dev")
    # FailoverDrills: watched, their status written; never created or deleted.
    assert can("watch", "failoverdrills.lifeboat.dev")
    assert can("patch", "failoverdrills.lifeboat.dev", "shop", sub="status")
    assert not can("create", "failoverdrills.lifeboat.dev", "shop")
    assert not can("delete", "failoverdrills.lifeboat.dev", "shop")
    assert not can("create", "pods", "shop")
    # Capacity of Deployment sites: list them, change nothing but their scale.
    assert can("list", "deployments.apps", "shop")
    assert can("patch", "deployments.apps", "shop", sub="scale")
    assert not can("patch", "deployments.apps", "shop")
    assert not can("delete", "deployments.apps", "shop")
    # Leader election: its own Lease only.
    assert can("update", "leases.coordination.k8s.io/lifeboat", "lifeboat-system")
    assert not can("update", "leases.coordination.k8s.io/someone-else", "lifeboat-system")
    assert not can("create", "events.events.k8s.io", "shop")
