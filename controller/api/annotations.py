"""The annotations of a ResilientApp: how users ask the operator for manual operations.

``lifeboat failover|failback|approve|pin|unpin`` (and anyone with ``kubectl annotate``)
write them; the operator reads them every round and answers in the status:

* ``lifeboat.dev/request``: ``{"id": ..., "op": "failover"|"failback", "force": false,
  "site": ..., "planned": false, "drill": false}``, answered once (``status.lastRequest``);
  ``planned``
  asks for a switchover without loss (writes stopped, replication drained, then moved);
  ``{"op": "evacuate"|"restore", "site": ..., "zone": ..., "drill": true,
  "leaseSeconds": ...}`` takes one zone of the active site out of traffic and puts it back
  (made by ``ZoneEvacuation`` drills only, docs/drills.md);
* ``lifeboat.dev/approve``: the ID of the recommendation to carry out (Manual mode);
* ``lifeboat.dev/pin``: a site name; while set, nothing moves the app automatically;
* ``lifeboat.dev/unreplicated``: ``{"id": ..., "action": "merge"|"discard", "dataset": ...}``
  (``lifeboat replication unreplicated --merge|--discard``): what to do with the objects of
  an older epoch that never reached the active site, answered once
  (``status.unreplicatedRequest``).

:class:`ManualOperations` is the typed form of the three, read (:meth:`~ManualOperations.
from_annotations`) by the operator and written (:meth:`~ManualOperations.merge_patch`) by
the CLI, so both sides share one parser and one serialiser. kopf keeps its own
bookkeeping under the same prefix (:data:`KOPF_PREFIX`). Pure, and light enough for the
CLI: no resource models are imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from controller.api.names import GROUP

REQUEST: Final = f"{GROUP}/request"
APPROVE: Final = f"{GROUP}/approve"
PIN: Final = f"{GROUP}/pin"
UNREPLICATED: Final = f"{GROUP}/unreplicated"

KOPF_PREFIX: Final = GROUP
"""Prefix of the annotations kopf keeps its handlers' progress in."""
LAST_HANDLED_CONFIGURATION: Final = "last-handled-configuration"
"""Key (under :data:`KOPF_PREFIX`) of kopf's copy of the last spec it handled."""


class RequestOp(StrEnum):
    FAILOVER = "failover"
    FAILBACK = "failback"
    EVACUATE = "evacuate"
    """Take ``zone`` of the active site out of traffic (a ``ZoneEvacuation`` drill)."""
    RESTORE = "restore"
    """Put the zone a drill took out back into traffic."""


@dataclass(frozen=True)
class Request:
    """A user's one-shot request (``lifeboat failover APP --to SITE``, ``failback``)."""

    id: str
    op: RequestOp
    site: str | None = None
    force: bool = False
    planned: bool = False
    """A planned switchover (``lifeboat failover --planned``, a ``Switchover`` drill): the
    old site's writes are stopped and replication drained before the move, for an RPO of 0."""
    drill: bool = False
    """Made by a ``FailoverDrill``: the move passes the same safety checks as any request
    (dwell and budget included), but it starts no dwell and spends no budget, so a drill
    never stands in the way of a real failover (docs/adr/0014-failover-drills.md)."""
    zone: str | None = None
    """``evacuate``/``restore``: the zone of ``site``."""
    lease_seconds: float | None = None
    """``evacuate``: the longest the drill may keep the zone out; after it, the automatic
    rules take the zone back (a drill that vanished never leaves a zone out for good)."""

    @classmethod
    def parse(cls, raw: str) -> Request:
        """The request an annotation value states; ValueError when it states none."""
        try:
            data = json.loads(raw)
            return cls(
                id=str(data["id"]),
                op=RequestOp(data["op"]),
                site=data.get("site"),
                force=bool(data.get("force", False)),
                planned=bool(data.get("planned", False)),
                drill=bool(data.get("drill", False)),
                zone=str(data["zone"]) if data.get("zone") else None,
                lease_seconds=(
                    float(data["leaseSeconds"]) if data.get("leaseSeconds") is not None else None
                ),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"unreadable {REQUEST} annotation: {error}") from None

    def serialise(self) -> str:
        """The annotation value (the inverse of :meth:`parse`)."""
        body: dict[str, str | bool | float] = {
            "id": self.id,
            "op": self.op.value,
            "force": self.force,
        }
        if self.site:
            body["site"] = self.site
        if self.planned:
            body["planned"] = True
        if self.drill:
            body["drill"] = True
        if self.zone:
            body["zone"] = self.zone
        if self.lease_seconds is not None:
            body["leaseSeconds"] = self.lease_seconds
        return json.dumps(body)


class TailAction(StrEnum):
    MERGE = "merge"
    """Copy them to the active site (the new primary)."""
    DISCARD = "discard"
    """Delete them where they are (the old primary)."""


@dataclass(frozen=True)
class UnreplicatedRequest:
    """What to do with the unreplicated objects of an older epoch (of every dataset, or of
    ``dataset`` only)."""

    id: str
    action: TailAction
    dataset: str | None = None

    @classmethod
    def parse(cls, raw: str) -> UnreplicatedRequest:
        try:
            data = json.loads(raw)
            dataset = data.get("dataset")
            return cls(
                id=str(data["id"]),
                action=TailAction(data["action"]),
                dataset=str(dataset) if dataset else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"unreadable {UNREPLICATED} annotation: {error}") from None

    def serialise(self) -> str:
        body = {"id": self.id, "action": self.action.value}
        if self.dataset:
            body["dataset"] = self.dataset
        return json.dumps(body)


@dataclass(frozen=True)
class ManualOperations:
    """What a user has asked for through the app's annotations."""

    request: Request | None = None
    approval: str | None = None
    """ID of the recommendation approved (Manual mode)."""
    pin: str | None = None
    """Site the app is pinned to: no automatic failover or failback away from it."""
    unreplicated: UnreplicatedRequest | None = None
    """What to do with the unreplicated objects of an older epoch."""
    unreadable: tuple[str, ...] = ()
    """Annotations present but unreadable (ignored; never written back)."""

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> ManualOperations:
        """The operations ``annotations`` (an object's ``metadata.annotations``) ask for;
        an empty value counts as absent."""
        annotations = annotations or {}
        request, unreadable = None, []
        if raw := annotations.get(REQUEST):
            try:
                request = Request.parse(raw)
            except ValueError:
                unreadable.append(REQUEST)
        tail = None
        if raw := annotations.get(UNREPLICATED):
            try:
                tail = UnreplicatedRequest.parse(raw)
            except ValueError:
                unreadable.append(UNREPLICATED)
        return cls(
            request=request,
            approval=annotations.get(APPROVE) or None,
            pin=annotations.get(PIN) or None,
            unreplicated=tail,
            unreadable=tuple(unreadable),
        )

    def merge_patch(self, before: ManualOperations | None = None) -> dict[str, str | None]:
        """The ``metadata.annotations`` merge patch that turns ``before`` (default: none
        asked for) into these operations: changed ones set, cleared ones removed (null),
        the others left alone for whoever else writes them meanwhile."""
        before = before or ManualOperations()
        patch: dict[str, str | None] = {}
        if self.request != before.request:
            patch[REQUEST] = self.request.serialise() if self.request else None
        if self.approval != before.approval:
            patch[APPROVE] = self.approval
        if self.pin != before.pin:
            patch[PIN] = self.pin
        if self.unreplicated != before.unreplicated:
            patch[UNREPLICATED] = self.unreplicated.serialise() if self.unreplicated else None
        return patch
