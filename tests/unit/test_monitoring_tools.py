"""promtool, Prometheus and Alertmanager from Debian's packages (pinned, checksummed) and the
dashboard linter from its Go module, with stand-in ``go``, ``apt-get``, ``apt-cache``,
``dpkg`` and ``dpkg-deb`` commands that record what they are asked."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sandbox import tools
from sandbox.cli import main

FAKE_GO = r"""#!/bin/sh
# Record each call (args, and go.sum when resolving); "build -o OUT" makes a runnable OUT.
printf '%s\n' "$*" >> "$CALLS"
case "$1" in
  get) cat go.sum > "$CALLS.gosum" 2>/dev/null || true ;;
  build)
    while [ "$#" -gt 0 ]; do
      if [ "$1" = "-o" ]; then printf '#!/bin/sh\nexit 0\n' > "$2"; chmod +x "$2"; fi
      shift
    done ;;
esac
exit 0
"""

FAKE_APT_CACHE = r"""#!/bin/sh
printf 'apt-cache %s\n' "$*" >> "$CALLS"
if [ -f "$STATE/updated" ] || [ -z "$NEEDS_UPDATE" ]; then
  printf 'prometheus:\n  Installed: (none)\n  Candidate: 2.42.0+ds-5\n'
else
  printf 'prometheus:\n  Installed: (none)\n  Candidate: (none)\n'
fi
"""

FAKE_APT_GET = r"""#!/bin/sh
printf 'apt-get %s\n' "$*" >> "$CALLS"
case "$1" in
  update) touch "$STATE/updated" ;;
  download)
    if [ -n "$NEEDS_UPDATE" ] && [ ! -f "$STATE/updated" ]; then
      echo "E: Can't find a source to download version" >&2; exit 100
    fi
    name=$(printf '%s' "$2" | sed 's/=/_/')
    printf '%s' "${DEB_CONTENT:-deb}" > "${name}_amd64.deb" ;;
esac
"""

FAKE_DPKG = r"""#!/bin/sh
printf 'dpkg %s\n' "$*" >> "$CALLS"
echo "${ARCH:-amd64}"
"""

FAKE_DPKG_DEB = r"""#!/bin/sh
printf 'dpkg-deb %s\n' "$*" >> "$CALLS"
mkdir -p "$3/usr/bin" "$3/usr/share/doc"
for tool in promtool prometheus prometheus-alertmanager; do
  printf '#!/bin/sh\necho "%s, version 2.42.0+ds"\n' "$tool" > "$3/usr/bin/$tool"
  chmod +x "$3/usr/bin/$tool"
done
"""
PIN = tools.DebianPin("prometheus", "2.42.0+ds-5", {"amd64": hashlib.sha256(b"deb").hexdigest()})


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-in commands on PATH, the cache in tmp_path; the file recording the calls."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, script in (
        ("go", FAKE_GO),
        ("apt-cache", FAKE_APT_CACHE),
        ("apt-get", FAKE_APT_GET),
        ("dpkg", FAKE_DPKG),
        ("dpkg-deb", FAKE_DPKG_DEB),
    ):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("STATE", str(state))
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    for variable in ("PROMTOOL", "PROMETHEUS", "ALERTMANAGER", "NEEDS_UPDATE", "DEB_CONTENT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(tools, "PROMETHEUS_PIN", PIN)
    return calls


def calls_of(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def test_pinned_sums_are_in_go_sum_before_the_module_is_resolved(world: Path) -> None:
    sums = ("example.com/x v1.0.0 h1:abc=", "example.com/x v1.0.0/go.mod h1:def=")
    path = tools.ensure_go_tool("example.com/x/cmd/x", "v1.0.0", "x", check=(), sums=sums)
    assert os.access(path, os.X_OK)
    assert Path(f"{world}.gosum").read_text().splitlines() == list(sums)
    assert [c.split()[0] for c in calls_of(world)] == ["mod", "get", "build"]


def test_the_dashboard_linter_is_built_once_from_its_pinned_module(world: Path) -> None:
    first = tools.ensure_dashboard_linter()
    assert first.name == "dashboard-linter"
    assert f"get {tools.DASHBOARD_LINTER_PACKAGE}@{tools.DASHBOARD_LINTER_VERSION}" in calls_of(
        world
    )
    assert Path(f"{world}.gosum").read_text().splitlines() == list(tools.DASHBOARD_LINTER_SUMS)
    built = len(calls_of(world))
    assert tools.ensure_dashboard_linter() == first
    assert len(calls_of(world)) == built  # cached: go is not run again


def test_promtool_and_prometheus_come_from_the_pinned_package_once(world: Path) -> None:
    path = tools.ensure_promtool()
    root = tools.tools_dir() / "prometheus-2.42.0+ds-5"
    assert path == root / "usr" / "bin" / "promtool"
    assert os.access(path, os.X_OK)
    assert "apt-get download prometheus=2.42.0+ds-5" in calls_of(world)
    downloads = sum("download" in c for c in calls_of(world))
    assert tools.ensure_promtool() == path
    assert tools.ensure_prometheus() == root / "usr" / "bin" / "prometheus"
    assert sum("download" in c for c in calls_of(world)) == downloads  # one package, once


def test_a_deb_of_another_checksum_is_refused(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEB_CONTENT", "tampered")
    with pytest.raises(tools.ToolError, match="not the pinned"):
        tools.ensure_prometheus()
    assert not (tools.tools_dir() / PIN.folder).exists()
    assert not any("dpkg-deb" in c for c in calls_of(world))  # never unpacked


def test_an_architecture_without_a_pin_is_refused(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCH", "arm64")
    with pytest.raises(tools.ToolError, match="not arm64"):
        tools.ensure_promtool()
    assert not any("download" in c for c in calls_of(world))


def test_alertmanager_is_pinned_like_prometheus(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tools.ALERTMANAGER_PIN.package == "prometheus-alertmanager"
    assert set(tools.ALERTMANAGER_PIN.sha256) == set(tools.PROMETHEUS_PIN.sha256) == {"amd64"}
    pin = tools.DebianPin(
        "prometheus-alertmanager", "0.25.0-1", {"amd64": hashlib.sha256(b"deb").hexdigest()}
    )
    monkeypatch.setattr(tools, "ALERTMANAGER_PIN", pin)
    path = tools.ensure_alertmanager()
    assert path == tools.tools_dir() / pin.folder / "usr" / "bin" / "prometheus-alertmanager"
    assert "apt-get download prometheus-alertmanager=0.25.0-1" in calls_of(world)


def test_without_package_lists_apt_is_updated_first(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEEDS_UPDATE", "1")
    assert tools.ensure_promtool().is_file()
    assert "apt-get update -qq" in calls_of(world)


def test_promtool_from_the_environment_wins(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "my-promtool"
    mine.write_text("#!/bin/sh\n")
    mine.chmod(0o755)
    monkeypatch.setenv("PROMTOOL", str(mine))
    assert tools.ensure_promtool() == mine
    assert calls_of(world) == []
    monkeypatch.setenv("PROMTOOL", str(tmp_path / "nothing"))
    with pytest.raises(tools.ToolError, match="not an executable"):
        tools.ensure_promtool()


@pytest.mark.parametrize(
    ("policy", "version"),
    [
        (
            "prometheus:\n  Installed: (none)\n  Candidate: 2.42.0+ds-5+deb12u1\n",
            "2.42.0+ds-5+deb12u1",
        ),
        ("prometheus:\n  Installed: 1:2.0\n  Candidate: 1:2.1\n", "1:2.1"),
        ("prometheus:\n  Installed: (none)\n  Candidate: (none)\n", None),
        ("", None),
    ],
)
def test_debian_candidate_version(policy: str, version: str | None) -> None:
    assert tools.debian_candidate_version(policy) == version


def test_lifeboat_sandbox_tools_prints_where_they_are(
    world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        tools,
        "ALERTMANAGER_PIN",
        tools.DebianPin("prometheus-alertmanager", "0.25.0-1", PIN.sha256),
    )
    assert main(["tools"]) == 0
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert set(printed) == {"promtool", "prometheus", "alertmanager", "dashboard-linter"}
    assert all(os.access(p, os.X_OK) for p in printed.values())


def test_an_architecture_independent_pin_serves_every_architecture(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCH", "arm64")
    pin = tools.DebianPin("libjs-demo", "1.0-1", {"all": hashlib.sha256(b"deb").hexdigest()})
    root = tools.ensure_pinned_debian_package(pin, ())
    assert root == tools.tools_dir() / "libjs-demo-1.0-1"
    assert "apt-get download libjs-demo=1.0-1" in calls_of(world)
    assert tools.ensure_pinned_debian_package(pin, ()) == root
    assert sum("download" in c for c in calls_of(world)) == 1


def test_the_libraries_of_prometheus_pages_are_pinned_for_every_architecture() -> None:
    names = [pin.package for pin in tools.PROMETHEUS_WEB_PINS]
    assert len(names) == len(set(names))
    assert {"libjs-jquery", "libjs-bootstrap4", "libjs-popper.js"} <= set(names)
    for pin in (*tools.PROMETHEUS_WEB_PINS, tools.PROMETHEUS_PIN, tools.ALERTMANAGER_PIN):
        assert pin.sha256, pin.package
        assert all(len(sha) == 64 and int(sha, 16) >= 0 for sha in pin.sha256.values())
    assert all(set(pin.sha256) == {"all"} for pin in tools.PROMETHEUS_WEB_PINS)


def test_an_unpinned_debian_tool_takes_the_candidate_version_once(
    world: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ensure_debian_tool (the benchmarks' blackbox_exporter and rclone): apt's candidate,
    package lists fetched first when there are none, the binary alone kept."""
    monkeypatch.setenv("NEEDS_UPDATE", "1")
    path = tools.ensure_debian_tool("prometheus", "promtool", "NO_SUCH_VARIABLE")
    assert path == tools.tools_dir() / "promtool-2.42.0+ds-5" / "promtool"
    assert list(path.parent.iterdir()) == [path]
    assert "apt-get update -qq" in calls_of(world)
    assert "apt-get download prometheus=2.42.0+ds-5" in calls_of(world)
    downloads = sum("download" in c for c in calls_of(world))
    assert tools.ensure_debian_tool("prometheus", "promtool", "NO_SUCH_VARIABLE") == path
    assert sum("download" in c for c in calls_of(world)) == downloads
