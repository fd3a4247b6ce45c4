"""The operator's image sets glibc malloc's settings (fewer arenas, fixed trim and mmap
thresholds: 162 against 174 MiB RSS at 100 apps, bench/RESULTS.md), and the fleet
benchmark runs its operators with the same ones, so that what it measures is what
production runs."""

from __future__ import annotations

import io
from pathlib import Path

from dockerfile_parse import DockerfileParser

from bench.failover import MALLOC_ENV

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def test_the_image_sets_the_malloc_settings_the_benchmark_measures() -> None:
    parser = DockerfileParser(fileobj=io.StringIO(DOCKERFILE.read_text("utf-8")))
    image_env = parser.envs  # the final stage's, as the operator's container starts
    assert {name: image_env.get(name) for name in MALLOC_ENV} == MALLOC_ENV
    assert MALLOC_ENV["MALLOC_ARENA_MAX"] == "2"
