"""Generate the CustomResourceDefinitions from the Python models.

Pydantic emits JSON Schema (draft 2020-12, with ``$ref``/``$defs`` and ``anyOf`` for
optional fields); Kubernetes wants a *structural* OpenAPI v3 schema: everything inlined,
every node typed, no ``anyOf`` with ``null``. :func:`structural` performs that translation
and refuses what it cannot translate faithfully, so a model change that would produce a
non-structural schema fails loudly at generation time instead of at ``kubectl apply``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from controller.api import models

# Keys that carry no meaning for the API server (or that we translate away).
_DROP = frozenset({"title", "$defs", "discriminator", "examples"})


class SchemaError(ValueError):
    """The model cannot be expressed as a structural schema."""


def structural(model: type[BaseModel], *, defaults: bool = True) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (camelCase field names).

    With ``defaults``, the models' defaults become schema defaults (the API server fills
    them in, so ``kubectl get -o yaml`` shows the effective settings). Without, no
    defaults at all (status is written by the controller only).
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _Translator(raw.get("$defs", {}), defaults).node(raw, path=model.__name__)


@dataclass
class _Translator:
    defs: dict[str, Any]
    defaults: bool
    _stack: list[str] = field(default_factory=list)

    def node(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        schema = self._resolve(schema, path)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _DROP or key.startswith("$"):
                continue
            if key == "properties":
                out[key] = {name: self.node(sub, f"{path}.{name}") for name, sub in value.items()}
            elif key == "items":
                out[key] = self.node(value, f"{path}[]")
            elif key == "additionalProperties" and isinstance(value, dict):
                out[key] = self.node(value, f"{path}{{}}")
            elif key == "const":
                out["enum"] = [value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                # JSON Schema 2020-12 gives the bound; OpenAPI v3.0 wants a flag on it.
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            elif key == "default" and (value is None or not self.defaults):
                continue
            elif key == "default":
                out[key] = _without_nulls(value)
            else:
                out[key] = value
        if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            raise SchemaError(f"{path}: no type (not a structural schema)")
        return out

    def _resolve(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        """Inline ``$ref``, flatten single ``allOf`` and optional ``anyOf [X, null]``."""
        schema = dict(schema)
        if "$ref" in schema:
            name = schema.pop("$ref").rsplit("/", 1)[-1]
            if name in self._stack:
                raise SchemaError(f"{path}: recursive model {name} cannot be structural")
            self._stack.append(name)
            target = self._resolve(self.defs[name], path)
            self._stack.pop()
            schema = {**target, **schema}  # the field's own description/default win
        if "allOf" in schema:
            parts = schema.pop("allOf")
            if len(parts) != 1:
                raise SchemaError(f"{path}: allOf with {len(parts)} parts")
            schema = {**self._resolve(parts[0], path), **schema}
        if "anyOf" in schema:
            branches = [b for b in schema.pop("anyOf") if b.get("type") != "null"]
            if len(branches) != 1:
                raise SchemaError(f"{path}: a union of {len(branches)} types")
            schema = {**self._resolve(branches[0], path), **schema}
        return schema


def _without_nulls(value: Any) -> Any:
    """A default without ``null`` members (the API server would refuse them)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0

    def as_dict(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class Kind:
    """One custom resource kind and how it is served."""

    kind: str
    plural: str
    scope: str
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    short_names: tuple[str, ...] = ()
    columns: tuple[PrinterColumn, ...] = ()

    def crd(self) -> dict[str, Any]:
        """The full CustomResourceDefinition object."""
        spec_schema = structural(self.spec)
        status_schema = structural(self.status, defaults=False)
        root = {
            "type": "object",
            "description": self.description,
            "required": ["spec"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": spec_schema,
                "status": status_schema,
            },
        }
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {
                "name": f"{self.plural}.{models.GROUP}",
                "labels": {"app.kubernetes.io/part-of": "lifeboat"},
            },
            "spec": {
                "group": models.GROUP,
                "names": {
                    "kind": self.kind,
                    "listKind": f"{self.kind}List",
                    "plural": self.plural,
                    "singular": self.kind.lower(),
                    "shortNames": list(self.short_names),
                    "categories": ["lifeboat"],
                },
                "scope": self.scope,
                "versions": [
                    {
                        "name": models.VERSION,
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "additionalPrinterColumns": [c.as_dict() for c in self.columns],
                        "schema": {"openAPIV3Schema": root},
                    }
                ],
            },
        }


_READY = '.status.conditions[?(@.type=="Ready")].status'
_AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation.")

CLOUD_PROVIDER = Kind(
    kind="CloudProvider",
    plural="cloudproviders",
    scope="Cluster",
    spec=models.CloudProviderSpec,
    status=models.ProviderStatus,
    description="A cloud account or project Lifeboat can act in: credentials and endpoints.",
    short_names=("cprov",),
    columns=(
        PrinterColumn("Type", "string", ".spec.type", "Cloud type."),
        PrinterColumn("Ready", "string", _READY, "Credentials verified."),
        PrinterColumn("Account", "string", ".status.account", "Account or project."),
        _AGE,
    ),
)

RESILIENT_APP = Kind(
    kind="ResilientApp",
    plural="resilientapps",
    scope="Namespaced",
    spec=models.ResilientAppSpec,
    status=models.ResilientAppStatus,
    description="An application spread over zones, regions and providers, kept available "
    "by Lifeboat.",
    short_names=("rapp",),
    columns=(
        PrinterColumn("Active", "string", ".status.activeSite", "Site taking traffic."),
        PrinterColumn("State", "string", ".status.phase", "Overall state."),
        PrinterColumn("Zones", "string", ".status.healthyZones", "Healthy zones / all zones."),
        PrinterColumn("Epoch", "integer", ".status.epoch", "Fencing epoch.", priority=1),
        PrinterColumn("Mode", "string", ".spec.failover.mode", "Failover mode.", priority=1),
        _AGE,
    ),
)

KINDS: tuple[Kind, ...] = (CLOUD_PROVIDER, RESILIENT_APP)
