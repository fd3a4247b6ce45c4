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

import kubernetes.client
from pydantic import BaseModel

from controller.api import models, names
from controller.api.conditions import ConditionType
from controller.api.names import CATEGORY, GROUP, PART_OF, PART_OF_LABEL, VERSION, Resource

# Keys that carry no meaning for the API server (or that we translate away).
_DROP = frozenset({"title", "$defs", "discriminator", "examples"})
# What an OpenAPI schema of a CRD may hold: the API server's JSONSchemaProps (server-side
# apply refuses any other key, "field not declared in schema").
_DECLARED = frozenset(kubernetes.client.V1JSONSchemaProps.attribute_map.values())


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
            elif key == "propertyNames":
                out.setdefault("x-kubernetes-validations", []).extend(_key_rules(value, path))
            elif key not in _DECLARED:
                raise SchemaError(f"{path}: {key} has no place in a CRD's schema")
            else:
                out[key] = value
        if (
            "type" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
            and not out.get("x-kubernetes-int-or-string")
        ):
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


def _key_rules(names: dict[str, Any], path: str) -> list[dict[str, str]]:
    """A map's key constraints (JSON Schema ``propertyNames``, which CRD schemas lack) as
    CEL rules on the map."""
    rules = []
    for key, value in names.items():
        if key == "maxLength":
            rules.append(
                {
                    "rule": f"self.all(k, size(k) <= {int(value)})",
                    "message": f"keys must be at most {int(value)} characters long",
                }
            )
        elif key == "minLength":
            rules.append(
                {
                    "rule": f"self.all(k, size(k) >= {int(value)})",
                    "message": f"keys must be at least {int(value)} characters long",
                }
            )
        elif key != "type":
            raise SchemaError(f"{path}: propertyNames.{key} cannot be expressed in a CRD")
    return rules


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

    resource: Resource
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: tuple[PrinterColumn, ...] = ()

    @property
    def kind(self) -> str:
        return self.resource.kind

    @property
    def plural(self) -> str:
        return self.resource.plural

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
                "name": self.resource.crd_name,
                "labels": {PART_OF_LABEL: PART_OF},
            },
            "spec": {
                "group": GROUP,
                "names": {
                    "kind": self.kind,
                    "listKind": f"{self.kind}List",
                    "plural": self.plural,
                    "singular": self.resource.singular,
                    "shortNames": list(self.resource.short_names),
                    "categories": [CATEGORY],
                },
                "scope": self.resource.scope,
                "versions": [
                    {
                        "name": VERSION,
                        "served": True,
                        "storage": True,
                        "subresources": {"status": {}},
                        "additionalPrinterColumns": [c.as_dict() for c in self.columns],
                        "schema": {"openAPIV3Schema": root},
                    }
                ],
            },
        }


_READY = f'.status.conditions[?(@.type=="{ConditionType.READY}")].status'
_AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation.")

CLOUD_PROVIDER = Kind(
    resource=names.CLOUD_PROVIDER,
    spec=models.CloudProviderSpec,
    status=models.ProviderStatus,
    description="A cloud account or project Lifeboat can act in: credentials and endpoints.",
    columns=(
        PrinterColumn("Type", "string", ".spec.type", "Cloud type."),
        PrinterColumn("Ready", "string", _READY, "Credentials verified."),
        PrinterColumn("Account", "string", ".status.account", "Account or project."),
        _AGE,
    ),
)

RESILIENT_APP = Kind(
    resource=names.RESILIENT_APP,
    spec=models.ResilientAppSpec,
    status=models.ResilientAppStatus,
    description="An application spread over zones, regions and providers, kept available "
    "by Lifeboat.",
    columns=(
        PrinterColumn("Active", "string", ".status.activeSite", "Site taking traffic."),
        PrinterColumn("State", "string", ".status.phase", "Overall state."),
        PrinterColumn("Zones", "string", ".status.healthyZones", "Healthy zones / all zones."),
        PrinterColumn("Epoch", "integer", ".status.epoch", "Fencing epoch.", priority=1),
        PrinterColumn("Mode", "string", ".spec.failover.mode", "Failover mode.", priority=1),
        _AGE,
    ),
)

LIFEBOAT_PEERS = Kind(
    resource=names.LIFEBOAT_PEERS,
    spec=models.LifeboatPeersSpec,
    status=models.LifeboatPeersStatus,
    description="The Lifeboat peers, each in its own cluster (spec), and what the peer "
    "of this cluster sees of every app (status, published for the other peers).",
    columns=(
        PrinterColumn("Peers", "string", ".spec.peers[*].name", "Every peer."),
        PrinterColumn("Leader", "string", ".status.leader", "Leader as this peer sees it."),
        PrinterColumn("Sequence", "integer", ".status.sequence", "Publications so far."),
        _AGE,
    ),
)

FAILOVER_DRILL = Kind(
    resource=names.FAILOVER_DRILL,
    spec=models.FailoverDrillSpec,
    status=models.FailoverDrillStatus,
    description="A practice failover of a ResilientApp, on a schedule, with a report of "
    "each run: steps, measured RTO, RPO at the switch, data checks and the result.",
    columns=(
        PrinterColumn("App", "string", ".spec.app", "The ResilientApp drilled."),
        PrinterColumn("Kind", "string", ".spec.kind", "Kind of drill."),
        PrinterColumn("Phase", "string", ".status.phase", "Last run's result, or Running."),
        PrinterColumn("RTO", "number", ".status.rtoSeconds", "Measured RTO of the last run."),
        PrinterColumn("Next", "date", ".status.nextRunTime", "Next run."),
        PrinterColumn(
            "Reason", "string", ".status.abortReason", "Why the last run aborted.", priority=1
        ),
        _AGE,
    ),
)

KINDS: tuple[Kind, ...] = (CLOUD_PROVIDER, RESILIENT_APP, LIFEBOAT_PEERS, FAILOVER_DRILL)
