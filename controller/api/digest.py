"""A digest of a resource's spec that is the same in every cluster that holds the same spec.

Lifeboat peers read the same ResilientApps from their own clusters (applied to each by
GitOps) and publish a digest of each app's spec beside their view of its zones: peers whose
digests differ read different specs (spec drift). The digest must therefore not depend on
anything a cluster adds or orders on its own:

* only the spec is hashed (never metadata, status, or the annotations kopf and users set);
* the spec is hashed as Lifeboat's model reads it (``to_wire``): defaults filled in, numbers
  in their field's type (``2`` and ``2.0`` of a float field are the same), unknown fields
  dropped — so a spec written with or without its defaults, or by a client that orders keys
  differently, has one digest;
* the JSON is canonical: keys sorted, no whitespace, ASCII only, no NaN.

List order is kept: it is part of the spec (sites are tried in their order).

Peers running different Lifeboat versions whose models fill in different defaults digest
the same document differently; during a rolling upgrade of the peers that shows as spec
drift until every peer runs the same version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from controller.api.models.common import Model


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no whitespace, ASCII only, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def spec_digest(spec: Model) -> str:
    """SHA-256 (64 hex digits) of the canonical JSON of a validated spec's wire form."""
    return hashlib.sha256(canonical_json(spec.to_wire()).encode("ascii")).hexdigest()
