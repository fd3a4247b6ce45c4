"""The sandbox control plane: a real kube-apiserver + etcd with RBAC enforced."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import kubernetes.client
import pytest

from sandbox.assets import K8S_VERSION, Assets
from sandbox.kube import ADMIN_GROUP, ADMIN_USER, KubeControlPlane

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

SECRET_READER = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secret-reader, namespace: rbac-probe}
rules:
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: secret-reader, namespace: rbac-probe}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secret-reader}
subjects:
  - {kind: ServiceAccount, name: reader, namespace: rbac-probe}
"""

WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.sandbox.lifeboat.test}
spec:
  group: sandbox.lifeboat.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
"""

# Starts a control plane in a child process and reports its working directory.
CHILD_SCRIPT = """\
import sys, time
from pathlib import Path
from sandbox.assets import Assets
from sandbox.kube import KubeControlPlane
apiserver, etcd, kubectl = map(Path, sys.argv[1:4])
kube = KubeControlPlane(Assets(apiserver, etcd, kubectl, source="test")).start()
print(kube.workdir, flush=True)
time.sleep(600)
"""


def _eventually(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _processes_using(directory: Path) -> list[int]:
    """PIDs of processes whose command line mentions ``directory``."""
    needle = str(directory).encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


def test_version_is_the_pinned_release(kube: KubeControlPlane) -> None:
    assert kube.version == K8S_VERSION
    with kube.api_client() as client:
        assert kubernetes.client.VersionApi(client).get_code().git_version == K8S_VERSION


def test_kubectl_reaches_the_sandbox_as_admin(kube: KubeControlPlane) -> None:
    versions = json.loads(kube.kubectl("version", "--output=json").stdout)
    assert versions["clientVersion"]["gitVersion"] == K8S_VERSION
    assert versions["serverVersion"]["gitVersion"] == K8S_VERSION

    identity = json.loads(kube.kubectl("auth", "whoami", "--output=json").stdout)
    assert identity["status"]["userInfo"]["username"] == ADMIN_USER
    assert ADMIN_GROUP in identity["status"]["userInfo"]["groups"]


def test_rbac_is_enforced_for_service_accounts(kube: KubeControlPlane, tmp_path: Path) -> None:
    config = kube.service_account_kubeconfig("rbac-probe", "reader", tmp_path / "reader.kubeconfig")

    identity = json.loads(kube.kubectl("auth", "whoami", "--output=json", kubeconfig=config).stdout)
    assert identity["status"]["userInfo"]["username"] == "system:serviceaccount:rbac-probe:reader"

    def can_list_secrets(namespace: str) -> bool:
        listing = kube.kubectl(
            "get", "secrets", f"--namespace={namespace}", kubeconfig=config, check=False
        )
        assert listing.returncode == 0 or "forbidden" in listing.stderr, listing.stderr
        return listing.returncode == 0

    assert not can_list_secrets("rbac-probe")
    kube.kubectl("apply", "--filename=-", input=SECRET_READER)
    assert _eventually(lambda: can_list_secrets("rbac-probe"))
    assert not can_list_secrets("default")


def test_service_account_kubeconfig_is_repeatable(kube: KubeControlPlane, tmp_path: Path) -> None:
    for attempt in range(2):
        config = kube.service_account_kubeconfig(
            "repeat", "bot", tmp_path / f"{attempt}.kubeconfig"
        )
        assert kube.kubectl("auth", "whoami", kubeconfig=config).returncode == 0


def test_install_crds_waits_until_established(kube: KubeControlPlane, tmp_path: Path) -> None:
    crd = tmp_path / "widgets.yaml"
    crd.write_text(WIDGET_CRD)
    kube.install_crds([crd])
    kube.install_crds([crd])  # re-applying is harmless

    kube.kubectl(
        "apply",
        "--filename=-",
        input="apiVersion: sandbox.lifeboat.test/v1\nkind: Widget\n"
        "metadata: {name: w1, namespace: default}\nspec: {size: 3}\n",
    )
    widget = json.loads(kube.kubectl("get", "widget", "w1", "--output=json").stdout)
    assert widget["spec"] == {"size": 3}


def test_stop_ends_the_processes_and_removes_the_workdir(kube_assets: Assets) -> None:
    with KubeControlPlane(kube_assets) as kube:
        workdir = kube.workdir
        assert len(_processes_using(workdir)) == 2
    assert _processes_using(workdir) == []
    assert not workdir.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_processes_die_with_their_parent(kube_assets: Assets) -> None:
    binaries = [str(kube_assets.kube_apiserver), str(kube_assets.etcd), str(kube_assets.kubectl)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, *binaries],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    workdir: Path | None = None
    try:
        reported = Path(child.stdout.readline().strip())
        assert reported.name.startswith("lifeboat-kube-"), (
            "the child failed to start a control plane"
        )
        workdir = reported
        assert len(_processes_using(workdir)) == 2
        os.kill(child.pid, signal.SIGKILL)  # no atexit, no stop(): only the kernel can help
        child.wait()
        assert _eventually(lambda: _processes_using(reported) == [])
    finally:
        child.kill()
        child.wait()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
