"""What every resource model shares: the base :class:`Model` (camelCase on the wire,
immutable, cross-field rules), the patterns and constrained strings fields are built
from, and the Kubernetes-style :class:`Condition`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from controller.api.rules import Rule, enforce, schema_extra

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
CLOUD_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
DNS_NAME = (
    r"^(\*\.)?([A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?\.?$"
)
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = f"^({_OCTET}[.]){{3}}{_OCTET}$"
IPV6 = "^[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}$"
_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
HTTP_URL = (
    rf"^https?://({_LABEL}(\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(:[0-9]{{1,5}})?([/?#][^\s]*)?$"
)

MAX_EPOCH = 2**53 - 1
"""The highest epoch, the CRDs' bound: the API server reads a schema's bounds as float64, so
a bound must be exactly representable there (2**63 - 1 is not: it made every status write
refused, "Maximum boundary value must be of type integer"). Far beyond any real epoch."""

SiteName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME)]
CloudName = Annotated[str, Field(min_length=1, max_length=63, pattern=CLOUD_NAME)]


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(text: str) -> str:
    """An RFC 3339 time, as the status records them (a status edited by hand, or written by
    something else, is refused field by field rather than failing every round later): the
    syntax the API server's ``date-time`` format takes (an offset is required), a real
    date, and an instant that can be written back (its UTC year within 1..9999)."""
    try:
        if not _RFC3339.match(text):
            raise ValueError
        moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is not an RFC 3339 time") from None
    return text


Timestamp = Annotated[
    str, AfterValidator(_rfc3339), Field(json_schema_extra={"format": "date-time"})
]


def list_map(*keys: str) -> dict[str, Any]:
    """Schema of a list merged by ``keys`` (server-side apply, strategic merges)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class Model(BaseModel):
    """Base: camelCase on the wire, immutable in Python, unknown fields ignored.

    The API server prunes unknown fields, so ignoring them here only matters for documents
    parsed offline; immutability lets the decision core share models safely.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _enforce_rules(self) -> Model:
        enforce(type(self).rules, self)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict as the API server stores it (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_merge_patch(self) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) that makes the stored object equal to this one.

        Unset fields of objects become ``null`` (which deletes them); lists are replaced
        whole, so their items carry no nulls.
        """
        return _patch_value(self.model_dump(mode="json", by_alias=True))  # type: ignore[no-any-return]


def _patch_value(value: Any, in_list: bool = False) -> Any:
    if isinstance(value, dict):
        return {
            k: _patch_value(v, in_list) for k, v in value.items() if not (in_list and v is None)
        }
    if isinstance(value, list):
        return [_patch_value(v, in_list=True) for v in value]
    return value


def with_rules(*rules: Rule) -> tuple[tuple[Rule, ...], ConfigDict]:
    """Rules for a model plus the ``model_config`` that publishes them as CEL."""
    return rules, ConfigDict(json_schema_extra=schema_extra(rules))


class Condition(Model):
    """Shaped like metav1.Condition."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        le=MAX_EPOCH,
        description="The .metadata.generation the condition was set for.",
    )
    last_transition_time: Timestamp = Field(description="When status last changed.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase machine-readable reason.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")


class SecretKeyRef(Model):
    """A key of a Secret in the controller's namespace."""

    name: ObjectName = Field(description="Secret name.")
    key: str = Field(default="kubeconfig", max_length=253, description="Key in the Secret.")


LabelKey = Annotated[str, Field(min_length=1, max_length=317)]
LabelValue = Annotated[str, Field(max_length=63)]


class LabelSelectorRequirement(Model):
    """One requirement of a label selector (as metav1.LabelSelectorRequirement)."""

    key: LabelKey = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: tuple[LabelValue, ...] = Field(
        default=(),
        max_length=64,
        description="Values for In and NotIn (at least one); none for Exists and DoesNotExist.",
    )

    rules, model_config = with_rules(
        Rule(
            cel="self.operator in ['In', 'NotIn'] ? self.values.size() > 0 : "
            "self.values.size() == 0",
            message="a selector requirement with operator In or NotIn needs values; "
            "Exists and DoesNotExist take none",
            check=lambda r: (len(r.values) > 0) == (r.operator in ("In", "NotIn")),
        ),
    )


class LabelSelector(Model):
    """A label selector (as metav1.LabelSelector): every matchLabels pair and every
    matchExpressions requirement must hold."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=64, description="Labels that must have these values."
    )
    match_expressions: tuple[LabelSelectorRequirement, ...] = Field(
        default=(), max_length=32, description="Requirements that must all hold."
    )

    @property
    def empty(self) -> bool:
        """Whether it has no requirement at all (an empty selector selects everything)."""
        return not self.match_labels and not self.match_expressions


def _one_per_type(conditions: tuple[Condition, ...]) -> tuple[Condition, ...]:
    """Conditions are a map keyed by type: the API server refuses a list with a type twice
    (so a stored status that has one is refused field by field, not written back)."""
    seen: set[str] = set()
    for condition in conditions:
        if condition.type in seen:
            raise ValueError(f"condition type {condition.type!r} appears twice")
        seen.add(condition.type)
    return conditions


Conditions = Annotated[
    tuple[Condition, ...],
    Field(
        default=(),
        max_length=16,
        description="Kubernetes-style conditions.",
        json_schema_extra=list_map("type"),
    ),
    AfterValidator(_one_per_type),
]
