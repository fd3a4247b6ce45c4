"""CRD generation: structural schemas, and the committed files match the models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from hack import generate
from hack.crd import KINDS, SchemaError, structural


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
        # x-kubernetes-int-or-string stands for its type (the API server forbids both).
        typed = "type" in node or node.get("x-kubernetes-int-or-string") is True
        assert typed, f"{kind.kind}{path} has no type"
        for banned in ("$ref", "anyOf", "allOf", "oneOf", "title", "const"):
            assert banned not in node, f"{kind.kind}{path} has {banned}"
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(flag, True) is True, f"{kind.kind}{path}: {flag} must be a flag"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_integer_bounds_survive_the_api_servers_float64(kind: Any) -> None:
    """Reproduced: ``maximum: 9223372036854775807`` (2**63 - 1) on the status epochs made
    the API server refuse every status write ("Maximum boundary value must be of type
    integer"): it reads the bound as a float64, where 2**63 - 1 becomes 2**63, no int64."""
    root = kind.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(root):
        for bound in ("minimum", "maximum"):
            if node.get("type") == "integer" and bound in node:
                value = node[bound]
                assert int(float(value)) == value, f"{kind.kind}{path}: {bound} {value}"
                assert -(2**63) <= int(float(value)) < 2**63, f"{kind.kind}{path}: {bound}"


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


def test_every_schema_key_is_one_the_api_server_declares() -> None:
    """Server-side apply refuses a CRD whose schema holds a key JSONSchemaProps lacks
    (JSON Schema's propertyNames, from a dict with constrained keys, broke every CRD
    install once): the generator translates or refuses such keys."""
    import kubernetes.client

    declared = set(kubernetes.client.V1JSONSchemaProps.attribute_map.values())

    def walk(node: object, path: str) -> None:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in ("properties",):
                for name, sub in value.items():
                    walk(sub, f"{path}.{name}")
                continue
            assert key in declared, f"{path}: {key}"
            if key in ("items", "additionalProperties"):
                walk(value, f"{path}.{key}")

    for kind in KINDS:
        for version in kind.crd()["spec"]["versions"]:
            walk(version["schema"]["openAPIV3Schema"], kind.kind)


def test_constrained_map_keys_become_cel_rules() -> None:
    from typing import Annotated

    from pydantic import Field

    class Labelled(BaseModel):
        labels: dict[Annotated[str, Field(min_length=1, max_length=5)], str]

    schema = structural(Labelled)["properties"]["labels"]
    assert "propertyNames" not in schema
    assert sorted(r["rule"] for r in schema["x-kubernetes-validations"]) == [
        "self.all(k, size(k) <= 5)",
        "self.all(k, size(k) >= 1)",
    ]

    class Undeclared(BaseModel):
        labels: dict[str, str] = Field(json_schema_extra={"unevaluatedProperties": False})

    with pytest.raises(SchemaError, match="unevaluatedProperties has no place"):
        structural(Undeclared)
