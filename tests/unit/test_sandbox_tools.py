"""Go tools and module files in the cache: reused without Go, clear errors without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import tools


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no go here
    return tmp_path / "cache"


def test_a_cached_tool_is_used_without_go(cache: Path) -> None:
    path = tools.tool_path("example.com/x/cmd/x", "v1.2.3", "x", ("-X main.v=1",))
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    found = tools.ensure_go_tool("example.com/x/cmd/x", "v1.2.3", "x", ldflags=("-X main.v=1",))
    assert found == path
    assert found.is_relative_to(cache / "tools")


def test_versions_and_flags_get_their_own_slots(cache: Path) -> None:
    slots = {
        tools.tool_path("example.com/x/cmd/x", "v1.2.3", "x"),
        tools.tool_path("example.com/x/cmd/x", "v1.2.4", "x"),
        tools.tool_path("example.com/x/cmd/x", "v1.2.3", "x", ("-X main.v=1",)),
        tools.tool_path("example.com/y/cmd/x", "v1.2.3", "x"),
    }
    assert len(slots) == 4
    assert all(p.name == "x" and "v1.2." in p.parent.name for p in slots)


def test_without_go_the_error_says_what_to_install(cache: Path) -> None:
    with pytest.raises(tools.ToolError, match=r"Go toolchain \('go'\) is not on PATH.*x v1\.0\.0"):
        tools.ensure_go_tool("example.com/x/cmd/x", "v1.0.0", "x")
    assert not tools.tool_path("example.com/x/cmd/x", "v1.0.0", "x").exists()


def test_cached_module_files_are_used_without_go(cache: Path) -> None:
    directory = cache / "modules" / "thing-v0.1.0"
    directory.mkdir(parents=True)
    (directory / "a.yaml").write_text("a: 1\n")
    found = tools.ensure_go_module_files("example.com/org/thing", "v0.1.0", ["deep/dir/a.yaml"])
    assert found == directory
    with pytest.raises(tools.ToolError, match="not on PATH"):
        tools.ensure_go_module_files("example.com/org/thing", "v0.1.0", ["b.yaml"])
    assert os.listdir(directory) == ["a.yaml"]
