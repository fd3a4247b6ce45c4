"""An app's status: composed from the decision core's state, written fenced by the epoch.

The status is the operator's memory: a restarted operator reads it back and resumes. It is
written before an action starts (so the decision survives a crash) and after it ends (so
its completion does); between decisions only when something material changed, plus a
heartbeat, to keep load off the API server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from controller.api.conditions import ConditionType, Status, get_condition, set_condition
from controller.api.events import EventReason
from controller.api.models import Condition, ResilientAppSpec, ResilientAppStatus
from controller.core import decide as core
from controller.core import model as m
from controller.core.status import stated_epoch, status_from_state
from controller.operator.context import AppLog
from controller.operator.kube import NotFound, ObjectRef, StaleEpoch
from controller.operator.peer_status import NoMajority, StatusStore
from controller.operator.providers import spec_error
from controller.replication import volumes as rv

HEARTBEAT_SECONDS = 60.0
# Fields that change every round without meaning anything new; they alone do not
# justify a status write (the heartbeat refreshes them).
_VOLATILE_ZONE_FIELDS = ("lastProbeTime", "lastOkTime", "latencyMs", "message")
_VOLATILE_REPLICATION_FIELDS = ("rpoSeconds", "throughputBytesPerSecond", "lastSyncTime")


class StatusWriter:
    """Holds the status being composed for one app and writes it when it is due."""

    def __init__(self, ref: ObjectRef, log: AppLog, store: StatusStore) -> None:
        self.ref = ref
        self.log = log
        self.store = store
        """Where the status goes: the own cluster, or a majority of the peer clusters."""
        self.no_majority: NoMajority | None = None
        """Why the last write did not count (it reached no majority of the peers)."""
        self.current = ResilientAppStatus()
        self._written: bytes | None = None
        """Digest of what the last write said that matters (:func:`_material`): all
        that is compared, so the last written status is not kept whole beside
        ``current``."""
        self._written_at = 0.0
        self._invalid_generation: int | None = None
        self.unreadable = ""
        """What of the stored status could not be read (empty: all of it could)."""
        self.floor = 0
        """The highest epoch the stored status states, readable or not."""

    def load(self, body: Mapping[str, Any]) -> None:
        """Take the stored status as the starting point (what can be kept of it)."""
        raw = body.get("status") or {}
        self.unreadable = ""
        self.floor = stated_epoch(raw)
        try:
            self.current = ResilientAppStatus.model_validate(raw)
        except ValidationError as error:
            self.current, dropped = _salvage(raw if isinstance(raw, Mapping) else {})
            self.unreadable = f"{', '.join(dropped) or 'status'}: {spec_error(error)}"
            self.log.warning("unreadable status fields dropped (%s)", self.unreadable)

    def compose(
        self,
        decision: m.Decision,
        spec: ResilientAppSpec,
        observations: m.Observations,
        *,
        running: str | None,
        generation: int | None,
        now: float,
    ) -> m.Decision:
        """The status for ``decision`` (its phase recomputed for the state it carries)."""
        decision = replace(decision, phase=core.phase_of(decision.state, spec, observations))
        self.current = status_from_state(
            decision,
            spec,
            self.current,
            observations=observations,
            running=running,
            generation=generation,
            now=now,
        )
        return decision

    def update(self, **fields: Any) -> None:
        self.current = self.current.model_copy(update=fields)

    def condition(self, type_: ConditionType) -> Condition | None:
        return get_condition(self.current.conditions, type_)

    def set_condition(
        self,
        type_: ConditionType,
        status: Status,
        reason: str,
        message: str,
        *,
        generation: int | None,
        now: float,
    ) -> None:
        self.update(
            conditions=set_condition(
                self.current.conditions,
                type_,
                status,
                reason,
                message,
                generation=generation,
                now=now,
            )
        )

    def spec_accepted(self) -> None:
        """The spec is valid again: a later invalid one is reported anew."""
        self._invalid_generation = None

    async def write(self, epoch: int, now: float, *, force: bool = False) -> bool:
        """Write the status if it is due (``force``: now); whether what it holds is on
        record (written now or unchanged since the last write). Raises
        :class:`StaleEpoch` when the stored status holds a newer epoch than ``epoch``."""
        wire = self.current.to_merge_patch()
        material = _digest(_material(wire))
        due = now - self._written_at >= HEARTBEAT_SECONDS
        if not force and not due and material == self._written:
            return True
        if not await self._patch(wire, epoch):
            return False
        self._written, self._written_at = material, now
        return True

    async def _patch(self, wire: dict[str, Any], epoch: int | None) -> bool:
        """Write status, fenced by the epoch; whether it was written. A failure is logged
        and the next round writes again; a newer stored epoch raises :class:`StaleEpoch`
        (another instance failed over meanwhile)."""
        try:
            await self.store.write(self.ref, wire, epoch=epoch)
        except NotFound:
            return False  # deleted under us; the daemon is being stopped
        except NoMajority as error:
            self.no_majority = error
            self._written_at = 0.0  # make the next round write
            self.log.warning("status not on record: %s", error)
            return False
        except StaleEpoch:
            self._written, self._written_at = None, 0.0
            raise
        except Exception as error:
            self._written_at = 0.0  # make the next round write
            self.log.warning("status not written: %s", error)
            return False
        self.no_majority = None
        return True

    async def write_invalid(
        self,
        message: str,
        *,
        generation: int | None,
        epoch: int | None,
        now: float,
        stored_phase: Any = None,
    ) -> bool:
        """Say why the spec is refused, once per generation, and again whenever the stored
        status (``stored_phase``: its phase) no longer says so — a write that failed, or a
        status written over meanwhile; leave everything Lifeboat remembers untouched.
        Whether this generation's refusal was written for the first time now."""
        if self._invalid_generation == generation and stored_phase == "Invalid":
            return False
        if stored_phase == "Invalid" and self._said_before(message, generation):
            # An earlier process wrote this very refusal: a restart says nothing again.
            self._invalid_generation = generation
            return False
        self.set_condition(
            ConditionType.READY,
            "False",
            EventReason.INVALID_SPEC,
            message,
            generation=generation,
            now=now,
        )
        patch = {
            "phase": "Invalid",
            "observedGeneration": generation,
            "conditions": [c.to_wire() for c in self.current.conditions],
        }
        if not await self._patch(patch, epoch):
            return False  # said at the next round, once it can be written
        first = self._invalid_generation != generation
        self._invalid_generation = generation
        return first

    def _said_before(self, message: str, generation: int | None) -> bool:
        """Whether the stored status already holds this refusal for this generation."""
        ready = self.condition(ConditionType.READY)
        return (
            ready is not None
            and ready.status == "False"
            and ready.reason == EventReason.INVALID_SPEC
            and ready.message == message
            and ready.observed_generation == generation
        )


def _salvage(raw: Mapping[str, Any]) -> tuple[ResilientAppStatus, tuple[str, ...]]:
    """What can be kept of a status that does not parse, field by field, and the fields
    dropped. What is lost is rebuilt from what the world says (DNS is read back before
    anything moves), never defaulted: the epoch cannot go back."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in raw.items():
        try:
            ResilientAppStatus.model_validate({**kept, key: value})
        except ValidationError:
            dropped.append(key)
        else:
            kept[key] = value
    return ResilientAppStatus.model_validate(kept), tuple(dropped)


def _digest(material: Any) -> bytes:
    """A digest of a status's material fields (JSON, keys sorted)."""
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _material(wire: Mapping[str, Any]) -> Any:
    """The status without the fields that change every round."""
    zones = [
        {k: v for k, v in zone.items() if k not in _VOLATILE_ZONE_FIELDS}
        for zone in wire.get("zones", ())
    ]
    replication = [
        {k: v for k, v in entry.items() if k not in _VOLATILE_REPLICATION_FIELDS}
        | {"rpoKnown": entry.get("rpoSeconds") is not None}
        for entry in wire.get("replication", ())
    ]
    restores = [
        {
            **record,
            "volumes": [
                {**v, "state": _readiness(v.get("state"))} for v in record.get("volumes", ())
            ],
        }
        for record in wire.get("volumeRestores", ())
    ]
    return {**wire, "zones": zones, "replication": replication, "volumeRestores": restores}


def _readiness(state: str | None) -> str | None:
    """What matters of a restored volume's state: a volume going from ``available`` to
    ``backing-up`` and back at every snapshot is not worth a status write of its own."""
    if state is None or rv.volume_failed(state):
        return state
    return "ready" if rv.volume_ready(state) else "being made"
