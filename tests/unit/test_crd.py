"""CRD generation: structural schemas, and the committed files match the models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from controller.api.crd import KINDS, SchemaError, structural
from controller.cli import generate


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: Any) -> None:
    root = kind.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(root):
        assert "type" in node, f"{kind.kind}{path} has no type"
        for banned in ("$ref", "anyOf", "allOf", "oneOf", "title", "const"):
            assert banned not in node, f"{kind.kind}{path} has {banned}"
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(flag, True) is True, f"{kind.kind}{path}: {flag} must be a flag"


def test_status_has_no_defaults() -> None:
    for kind in KINDS:
        status = kind.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
            "status"
        ]
        assert all("default" not in node for _, node in _nodes(status))


def test_resilientapp_names_and_columns() -> None:
    crd = next(k for k in KINDS if k.kind == "ResilientApp").crd()
    assert crd["spec"]["names"]["shortNames"] == ["rapp"]
    assert crd["spec"]["scope"] == "Namespaced"
    columns = {
        c["name"]: c["jsonPath"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns["Active"] == ".status.activeSite"
    assert columns["State"] == ".status.phase"
    assert columns["Zones"] == ".status.healthyZones"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_unions_are_refused() -> None:
    class Bad(BaseModel):
        value: int | str

    with pytest.raises(SchemaError, match="union"):
        structural(Bad)


def test_committed_generated_files_are_current() -> None:
    stale = generate.stale(generate.repo_root())
    assert not stale, f"run `make manifests`: stale {stale}"
