"""Spec digests: the same spec gives the same digest wherever it is read; a change does not."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from controller.api.digest import canonical_json, spec_digest
from controller.api.models import ResilientAppSpec
from tests.factories import app_spec


def digest_of(raw: dict[str, Any]) -> str:
    return spec_digest(ResilientAppSpec.model_validate(raw))


def reordered(value: Any) -> Any:
    """The same document with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def test_canonical_json_is_pinned() -> None:
    """The form every peer hashes: changing it makes peers of different versions disagree."""
    assert canonical_json({"b": [2, 1.5, "é"], "a": {"d": None, "c": True}}) == (
        '{"a":{"c":true,"d":null},"b":[2,1.5,"\\u00e9"]}'
    )


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        canonical_json({"a": float("nan")})


def test_digest_is_sha256_hex() -> None:
    digest = digest_of(app_spec())
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_key_order_does_not_matter() -> None:
    raw = app_spec()
    assert list(reordered(raw)) != list(raw)
    assert digest_of(reordered(raw)) == digest_of(raw)


def test_defaults_written_out_or_left_out_give_one_digest() -> None:
    """A cluster whose client wrote the defaults out and one that left them out agree."""
    raw = app_spec()
    spelled = ResilientAppSpec.model_validate(raw).to_wire()
    assert spelled != raw  # the model filled in defaults
    assert digest_of(json.loads(json.dumps(spelled))) == digest_of(raw)


def test_a_number_of_a_float_field_is_one_value() -> None:
    raw = app_spec()
    as_float = copy.deepcopy(raw)
    raw["health"]["intervalSeconds"] = 2
    as_float["health"]["intervalSeconds"] = 2.0
    assert digest_of(raw) == digest_of(as_float)


def test_unknown_fields_are_left_out() -> None:
    """The API server prunes them; a document read offline may still carry them."""
    raw = app_spec()
    assert digest_of({**raw, "somethingElse": 1}) == digest_of(raw)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["health"].update(failureThreshold=5),
        lambda s: s["sites"][1]["endpoints"][0].update(url="http://127.0.2.9:8080/healthz"),
        lambda s: s["sites"].reverse(),
        lambda s: s["traffic"].update(ttl=30),
    ],
    ids=["threshold", "endpoint", "site order", "ttl"],
)
def test_a_change_changes_the_digest(change: Any) -> None:
    raw = app_spec()
    changed = copy.deepcopy(raw)
    change(changed)
    assert digest_of(changed) != digest_of(raw)
