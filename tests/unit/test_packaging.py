"""The product is what ships: the lifeboat wheel holds the controller package (and its
manifests) only, never the test world (sandbox/) or the repository tooling (hack/).

The wheel is built from this checkout with uv (the one the sandbox distribution brings
into the development environment), in a temporary directory; uv reuses its cached
hatchling, so the build needs no network once the cache holds it.
"""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from uv import find_uv_bin

from controller.cli.main import parser

ROOT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = ("sandbox", "hack", "tests", "bench")
SANDBOX_DEPENDENCIES = {"moto", "cryptography", "uv", "lifeboat-sandbox"}
GENERATION_ONLY = (
    "controller/cli/generate.py",
    "controller/cli/monitoring.py",
    "controller/api/crd.py",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    out = tmp_path_factory.mktemp("dist")
    environment = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
    built = subprocess.run(
        [find_uv_bin(), "build", "--wheel", "--out-dir", str(out), "--python", sys.executable],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("lifeboat-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode("utf-8")


def _metadata(wheel: zipfile.ZipFile) -> Message:
    return Parser().parsestr(_dist_info(wheel, "METADATA"))


def test_the_wheel_holds_the_controller_package_and_its_manifests_only(
    wheel: zipfile.ZipFile,
) -> None:
    names = wheel.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"controller", next(t for t in tops if t.endswith(".dist-info"))}
    assert not [n for n in names if n.split("/", 1)[0] in NOT_SHIPPED]
    assert not [n for n in names if n.startswith("controller/sandbox")]
    assert not set(GENERATION_ONLY) & set(names)
    assert "controller/cli/main.py" in names
    assert "controller/operator/runner.py" in names
    assert "controller/_manifests/crds/lifeboat.dev_resilientapps.yaml" in names
    # The trimmed EC2 model the AWS connector loads (controller/providers/aws/ec2_model.py).
    assert [n for n in names if n.startswith("controller/providers/aws/botocore_data/ec2/")]


def test_no_module_in_the_wheel_imports_the_sandbox_or_the_tooling(
    wheel: zipfile.ZipFile,
) -> None:
    offenders = []
    for name in wheel.namelist():
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(wheel.read(name), filename=name)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            offenders += [f"{name}: {m}" for m in modules if m.split(".")[0] in NOT_SHIPPED]
    assert offenders == []


def test_the_wheel_installs_the_lifeboat_commands_only(wheel: zipfile.ZipFile) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_dist_info(wheel, "entry_points.txt"))
    assert entry_points.sections() == ["console_scripts"]
    assert dict(entry_points["console_scripts"]) == {
        "lifeboat": "controller.cli.main:main",
        "kubectl-lifeboat": "controller.cli.main:main",
    }


def test_the_wheel_requires_nothing_of_the_sandbox(wheel: zipfile.ZipFile) -> None:
    metadata = _metadata(wheel)
    required = {
        canonicalize_name(Requirement(line).name)
        for line in metadata.get_all("Requires-Dist") or []
    }
    assert "kopf" in required and "boto3" in required
    assert not required & SANDBOX_DEPENDENCIES
    assert metadata.get_all("Provides-Extra") is None


@pytest.mark.parametrize("command", ["demo", "sandbox", "dev"])
def test_the_product_cli_has_no_developer_commands(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser("lifeboat").parse_args([command])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
