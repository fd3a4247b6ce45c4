"""KubeControlPlane.install_crds with a stand-in kubectl: a CRD created a moment ago may have
no status.conditions yet, and `kubectl wait` then fails at once instead of waiting."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sandbox.kube import KubeControlPlane, KubectlError

CRD = "customresourcedefinition.apiextensions.k8s.io/widgets.example.com"
NO_CONDITIONS = "error: .status.conditions accessor error: <nil> is of the type <nil>"


class Scripted:
    """kubectl answering ``apply`` with the CRD's name and ``wait`` from a script."""

    def __init__(self, waits: list[tuple[int, str]]) -> None:
        self.waits = waits
        self.calls: list[tuple[str, ...]] = []

    def __call__(
        self, *args: str, check: bool = True, **_: object
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        if args[0] == "apply":
            return subprocess.CompletedProcess(["kubectl", *args], 0, f"{CRD}\n", "")
        code, stderr = self.waits.pop(0)
        result = subprocess.CompletedProcess(["kubectl", *args], code, "", stderr)
        if check and code:
            raise KubectlError(code, ["kubectl", *args], "", stderr)
        return result


def plane(kubectl: Scripted, monkeypatch: pytest.MonkeyPatch) -> KubeControlPlane:
    control = KubeControlPlane.__new__(KubeControlPlane)
    monkeypatch.setattr(control, "kubectl", kubectl)
    return control


def test_a_crd_without_conditions_yet_is_waited_for_again(monkeypatch: pytest.MonkeyPatch) -> None:
    kubectl = Scripted([(1, NO_CONDITIONS), (1, NO_CONDITIONS), (0, "")])
    plane(kubectl, monkeypatch).install_crds([Path("crd.yaml")], timeout=10)
    assert [c[0] for c in kubectl.calls] == ["apply", "wait", "wait", "wait"]
    assert all(CRD in c for c in kubectl.calls[1:])


def test_any_other_failure_of_the_wait_is_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    kubectl = Scripted([(1, "error: timed out waiting for the condition")])
    with pytest.raises(KubectlError, match="timed out waiting"):
        plane(kubectl, monkeypatch).install_crds([Path("crd.yaml")], timeout=10)
    assert [c[0] for c in kubectl.calls] == ["apply", "wait"]


def test_conditions_that_never_come_fail_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    kubectl = Scripted([(1, NO_CONDITIONS)] * 100)
    with pytest.raises(KubectlError, match="accessor error"):
        plane(kubectl, monkeypatch).install_crds([Path("crd.yaml")], timeout=0.5)
    assert 2 <= len(kubectl.calls) < 100
