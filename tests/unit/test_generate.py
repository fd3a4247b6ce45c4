"""What `make manifests` generates: the CRD reference and the chart's RBAC from manifests/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from hack import generate
from hack.crd import KINDS, Kind

ROOT = generate.repo_root()


def _paths(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _paths(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _paths(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _paths(schema["additionalProperties"], f"{path}.*")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_the_reference_lists_every_field_and_rule(kind: Kind) -> None:
    reference = generate.crd_reference(KINDS)
    section = reference.split(f"\n## {kind.kind}\n", 1)[1].split("\n## ", 1)[0]
    root = kind.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rows = {
        line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `")
    }
    for part in ("spec", "status"):
        for path, node in _paths(root["properties"][part], part):
            row = next((r for key, r in rows.items() if key.startswith(f"`{path}`")), None)
            assert row is not None, f"{kind.kind}: no row for {path}"
            if "default" in node:
                assert "`" in row.split("|")[3], f"{path}: default missing"
            for value in node.get("enum", []):
                assert f"`{value}`" in row, f"{path}: enum value {value} missing"
            if "description" in node:
                assert " ".join(node["description"].split()).replace("|", "\\|") in row
            for rule in node.get("x-kubernetes-validations", []):
                assert rule["message"] in section
                assert rule["rule"].split()[0] in section


def test_table_cells_escape_pipes_and_flatten_lines() -> None:
    assert generate._cell("a | b\n  c") == "a \\| b c"
    assert generate._type({"type": "array", "items": {"type": "string"}}) == "[]string"
    assert (
        generate._type({"type": "object", "additionalProperties": {"type": "string"}})
        == "map[string]string"
    )
    assert generate._type({"type": "string", "format": "date-time"}) == "string (date-time)"
    assert generate._constraints({"minimum": 0, "exclusiveMinimum": True, "maximum": 5}) == (
        "> 0; <= 5"
    )


@pytest.mark.parametrize("name", ["clusterrole.yaml", "role.yaml"])
def test_the_chart_rbac_rules_are_the_manifests_rules(name: str) -> None:
    """The chart's templates carry exactly the rules of manifests/rbac (one source); the
    Role also names each shard's Lease when the chart's ``shards`` asks for more than one
    (the lines of template directives, dropped here, are what one shard renders)."""
    template = (ROOT / "charts" / "lifeboat" / "templates" / name).read_text(encoding="utf-8")
    rules_text = template.split("\nrules:\n", 1)[1].rsplit("{{- end }}", 1)[0]
    if name == "role.yaml":
        assert "- lifeboat-shard-{{ $shard }}-of-{{ $.Values.shards }}" in rules_text
    rules_text = "".join(line for line in rules_text.splitlines(keepends=True) if "{{" not in line)
    source = yaml.safe_load((ROOT / "manifests" / "rbac" / name).read_text(encoding="utf-8"))
    assert yaml.safe_load("rules:\n" + rules_text)["rules"] == source["rules"]
    assert template.count("{{- if .Values.rbac.create }}") == 1


def test_the_install_bundle_holds_every_manifest() -> None:
    bundle = list(yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text("utf-8")))
    names = {(d["kind"], d["metadata"]["name"]) for d in bundle if d}
    for directory in ("rbac", "deploy", "crds"):
        for path in (ROOT / "manifests" / directory).glob("*.yaml"):
            for document in yaml.safe_load_all(path.read_text("utf-8")):
                assert (document["kind"], document["metadata"]["name"]) in names, path.name
