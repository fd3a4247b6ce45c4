"""Unit tests of sandbox.assets: no Go toolchain, no network."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import controller
from sandbox import assets
from sandbox.assets import (
    ETCD_VERSION,
    K8S_VERSION,
    AssetsError,
    built_assets_dir,
    cache_root,
    ensure_assets,
    kubernetes_replacements,
    render_kubernetes_gomod,
    staging_version,
    version_ldflags,
)

# Shaped like the real go.mod of k8s.io/kubernetes (comments, blocks, godebug).
KUBERNETES_GOMOD = """\
// This is a generated file. Do not edit directly.

module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

require (
	github.com/spf13/cobra v1.10.2
	k8s.io/api v0.0.0
	k8s.io/client-go v0.0.0 // indirect
)

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/client-go => ./staging/src/k8s.io/client-go // the client
	github.com/example/fork v1.0.0 => github.com/example/fork v1.0.1
)

replace k8s.io/kubectl => ./staging/src/k8s.io/kubectl
"""


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $KUBEBUILDER_ASSETS; the cache in a temporary directory (returned)."""
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_binaries(directory: Path, names: tuple[str, ...] = assets.BINARIES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(0o755)
    return directory


# --- go.mod generation -----------------------------------------------------------


def test_staging_version_maps_v1_to_v0() -> None:
    assert staging_version("v1.36.3") == "v0.36.3"
    assert staging_version("v1.37.0-rc.1") == "v0.37.0-rc.1"


@pytest.mark.parametrize("version", ["1.36.3", "v2.0.0", "v1.36"])
def test_staging_version_rejects_unexpected_versions(version: str) -> None:
    with pytest.raises(AssetsError, match="unsupported Kubernetes version"):
        staging_version(version)


def test_replacements_publish_staging_modules_and_keep_version_pins() -> None:
    assert kubernetes_replacements(KUBERNETES_GOMOD, "v1.36.3") == [
        "k8s.io/api => k8s.io/api v0.36.3",
        "k8s.io/client-go => k8s.io/client-go v0.36.3",
        "github.com/example/fork v1.0.0 => github.com/example/fork v1.0.1",
        "k8s.io/kubectl => k8s.io/kubectl v0.36.3",
    ]


def test_rendered_gomod_requires_kubernetes_with_published_staging() -> None:
    assert render_kubernetes_gomod(KUBERNETES_GOMOD, "v1.36.3") == (
        "module lifeboat.local/envtest/kubernetes\n"
        "\n"
        "go 1.26.0\n"
        "\n"
        "require k8s.io/kubernetes v1.36.3\n"
        "\n"
        "replace (\n"
        "\tk8s.io/api => k8s.io/api v0.36.3\n"
        "\tk8s.io/client-go => k8s.io/client-go v0.36.3\n"
        "\tgithub.com/example/fork v1.0.0 => github.com/example/fork v1.0.1\n"
        "\tk8s.io/kubectl => k8s.io/kubectl v0.36.3\n"
        ")\n"
    )


def test_local_replacement_outside_staging_is_refused() -> None:
    gomod = "module k8s.io/kubernetes\n\ngo 1.26.0\n\nreplace example.com/x => ../x\n"
    with pytest.raises(AssetsError, match=r"example\.com/x with the local path \.\./x"):
        kubernetes_replacements(gomod, "v1.36.3")


def test_gomod_without_go_directive_is_refused() -> None:
    with pytest.raises(AssetsError, match="no go directive"):
        render_kubernetes_gomod("module k8s.io/kubernetes\n", "v1.36.3")


def test_ldflags_stamp_both_version_packages() -> None:
    flags = version_ldflags("v1.36.3", "2026-07-22T18:07:38Z").split(" ")
    assert flags[:2] == ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for stamp in (
            "gitVersion=v1.36.3",
            "gitMajor=1",
            "gitMinor=36",
            "buildDate=2026-07-22T18:07:38Z",
        ):
            assert f"{package}.{stamp}" in flags


# --- cache location ------------------------------------------------------------


def test_cache_root_prefers_lifeboat_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "explicit"


def test_cache_root_falls_back_to_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIFEBOAT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "lifeboat"


def test_cache_root_defaults_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIFEBOAT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "lifeboat"


def test_cache_root_is_never_inside_the_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    source_tree = Path(controller.__file__).resolve().parents[1]
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(source_tree / ".cache"))
    with pytest.raises(AssetsError, match="inside the source tree"):
        cache_root()


def test_built_assets_are_versioned(isolated: Path) -> None:
    assert built_assets_dir() == (
        isolated / "envtest" / f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}" / "bin"
    )


# --- KUBEBUILDER_ASSETS ----------------------------------------------------------


def test_kubebuilder_assets_are_used_as_given(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = _fake_binaries(tmp_path / "assets")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(directory))
    found = ensure_assets()
    assert found == assets.Assets(
        kube_apiserver=directory / "kube-apiserver",
        etcd=directory / "etcd",
        kubectl=directory / "kubectl",
        source="KUBEBUILDER_ASSETS",
    )
    assert not isolated.exists()


def test_kubebuilder_assets_missing_binary_is_named(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = _fake_binaries(tmp_path / "assets", ("kube-apiserver", "etcd"))
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(directory))
    with pytest.raises(
        AssetsError, match=rf"KUBEBUILDER_ASSETS directory {directory} lacks executable kubectl"
    ):
        ensure_assets()


def test_kubebuilder_assets_non_executable_counts_as_missing(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = _fake_binaries(tmp_path / "assets")
    (directory / "etcd").chmod(0o644)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(directory))
    with pytest.raises(AssetsError, match="lacks executable etcd"):
        ensure_assets()


# --- building and reuse ------------------------------------------------------------


def test_built_assets_are_reused_without_go(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_binaries(built_assets_dir())
    monkeypatch.setenv("PATH", "")
    found = ensure_assets()
    assert found.source == "built"
    assert found.kube_apiserver == built_assets_dir() / "kube-apiserver"


def test_missing_go_explains_kubebuilder_assets(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(AssetsError, match=r"'go'\) is not on PATH.*set \$KUBEBUILDER_ASSETS"):
        ensure_assets()


def test_concurrent_callers_build_once(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    building = threading.Event()
    release = threading.Event()
    builds: list[Path] = []

    def fake_build(bin_dir: Path, log: assets.Log) -> None:
        builds.append(bin_dir)
        building.set()
        release.wait(timeout=10)
        _fake_binaries(bin_dir)

    monkeypatch.setattr(assets, "_build", fake_build)
    messages: list[str] = []
    results: list[assets.Assets] = []
    callers = [
        threading.Thread(target=lambda: results.append(ensure_assets(messages.append)))
        for _ in range(2)
    ]

    callers[0].start()
    assert building.wait(timeout=10)
    callers[1].start()
    deadline = time.monotonic() + 10
    while not any("waiting" in message for message in messages) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for caller in callers:
        caller.join(timeout=10)

    assert builds == [built_assets_dir()]
    assert any("another process is building" in message for message in messages)
    assert len(results) == 2
    assert results[0] == results[1]
