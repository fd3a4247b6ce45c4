"""The world read back: what DNS holds for an app, compared with what its status says.

The status is the operator's memory, but users reach whatever DNS holds. So the worker
reads the app's DNS name back — when its state was (re)built from a status, every
``READ_BACK_SECONDS`` after that, and at once after a DNS change was refused — and hands
what it found to the decision core as an observation: the core follows DNS toward the
higher epoch, records a change DNS already holds instead of making it again, and sets
DNS again when it was changed behind Lifeboat's back. What was found is reported in the
``DNSInSync`` condition, ``lifeboat_dns_divergences_total`` / ``lifeboat_dns_conflict``,
and Events (a name held by another app is said on both apps).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controller import metrics
from controller.api.conditions import ConditionType, Status
from controller.api.events import EventReason
from controller.api.models import MAX_EPOCH, ResilientAppSpec
from controller.api.names import RESILIENT_APP
from controller.core import decide as core
from controller.core import model as m
from controller.operator.actions import traffic_plan
from controller.operator.context import AppLog, Providers
from controller.operator.kube import Kube, ObjectRef
from controller.operator.status_writer import StatusWriter
from controller.providers.errors import DnsZoneNotFound, ProviderUnavailable
from controller.providers.protocols import DnsReading

READ_BACK_SECONDS = 60.0
"""How often DNS is read back while nothing calls for it sooner (one list call per app:
Route 53 allows five a second per account)."""
RETRY_SECONDS = 10.0
"""How soon a read that failed is tried again."""


def observation(reading: DnsReading, me: str) -> m.DnsObservation:
    """What the core needs to know of a reading, for the app ``me`` (``namespace/name``)."""
    if reading.owner is None:
        if reading.foreign is not None:
            return m.DnsObservation(m.Ownership.OTHER, owner=reading.foreign)
        return m.DnsObservation(m.Ownership.NONE)
    owner = reading.owner
    if not 1 <= owner.epoch <= MAX_EPOCH:
        # Not an epoch Lifeboat could have written (nor record in a status): whoever
        # wrote it, it is no record of this app's to follow or to overwrite.
        return m.DnsObservation(
            m.Ownership.OTHER, owner=f"an owner record with epoch {owner.epoch} out of range"
        )
    if owner.owner != me:
        return m.DnsObservation(
            m.Ownership.OTHER, owner.epoch, owner.active_site, owner.fingerprint, owner.owner
        )
    return m.DnsObservation(m.Ownership.OURS, owner.epoch, owner.active_site, owner.fingerprint)


class DnsReadBack:
    """Reads one app's DNS name back when due, and reports what was found."""

    def __init__(
        self,
        ref: ObjectRef,
        providers: Providers,
        kube: Kube,
        log: AppLog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ref = ref
        self.providers = providers
        self.kube = kube
        self.log = log
        self.clock = clock
        self.me = f"{ref.namespace or ''}/{ref.name}"
        self._due = 0.0
        self._problem = ""

    def soon(self) -> None:
        """Read at the next round (the state was rebuilt, or a DNS change was refused)."""
        self._due = 0.0

    async def observe(self, spec: ResilientAppSpec, state: m.AppState) -> m.DnsObservation | None:
        """DNS as it is now, when a read is due (None otherwise)."""
        if self.clock() < self._due:
            return None
        self._due = self.clock() + READ_BACK_SECONDS
        plan = traffic_plan(core.desired_traffic(state, spec), self.ref)
        try:
            traffic = await self.providers.traffic(spec.traffic.provider, spec.traffic.region)
            reading = await traffic.read(plan)
        except Exception as error:
            self._due = self.clock() + RETRY_SECONDS
            reason: str = EventReason.DNS_UNREADABLE
            if isinstance(error, DnsZoneNotFound):
                reason, self._problem = EventReason.HOSTED_ZONE_NOT_FOUND, str(error)
            elif isinstance(error, ProviderUnavailable):
                reason, self._problem = error.reason, str(error)
            else:
                self._problem = self.providers.explain(spec.traffic.provider, error)
            message = f"DNS {plan.record.name} not read back: {self._problem}; retrying"
            self.log.warning("%s", message)
            await self.kube.event(self.ref, "Warning", reason, message)
            return m.DnsObservation(m.Ownership.UNKNOWN)
        return observation(reading, self.me)

    async def report(
        self,
        status: StatusWriter,
        found: m.DnsObservation | None,
        decision: m.Decision,
        spec: ResilientAppSpec,
        *,
        generation: int | None,
        now: float,
    ) -> None:
        """The ``DNSInSync`` condition, the metrics and, for a name held by another app,
        an Event on that app too."""
        labels = (self.ref.namespace or "", self.ref.name)
        diverged = [n for n in decision.notes if n.kind is m.NoteKind.DNS_DIVERGED]
        if diverged:
            metrics.DNS_DIVERGENCES.labels(*labels).inc(len(diverged))
        metrics.DNS_CONFLICT.labels(*labels).set(1 if decision.state.dns_conflict else 0)
        if any(n.kind is m.NoteKind.DNS_CONFLICT for n in decision.notes):
            await self._tell_owner(decision.state.dns_conflict, spec)
        if found is None:
            return
        name, state = spec.traffic.record_name, decision.state
        status.set_condition(
            ConditionType.DNS_IN_SYNC,
            *self._verdict(found, diverged, name, state),
            generation=generation,
            now=now,
        )

    def _verdict(
        self, found: m.DnsObservation, diverged: list[m.Note], name: str, state: m.AppState
    ) -> tuple[Status, str, str]:
        if found.ownership is m.Ownership.UNKNOWN:
            return "Unknown", "NotReadBack", f"DNS {name} could not be read: {self._problem}"
        if found.ownership is m.Ownership.OTHER:
            return (
                "False",
                "OwnedByAnother",
                f"DNS {name} is held by {found.owner}; Lifeboat changes nothing there",
            )
        if diverged:
            return "False", "Diverged", diverged[-1].message
        recorded = f"epoch {state.epoch}, site {state.active_site}"
        if found.ownership is m.Ownership.NONE:
            return (
                "False",
                "NotPublished",
                f"DNS {name} holds no owner record of Lifeboat's yet; recorded: {recorded}, "
                "published by the app's next traffic change",
            )
        return (
            "True",
            "InSync",
            f"DNS {name} holds epoch {found.epoch}, site {found.active_site}; recorded: {recorded}",
        )

    async def _tell_owner(self, owner: str | None, spec: ResilientAppSpec) -> None:
        """A DNS name two apps want is said on both: this app got the core's note; the app
        that holds it (when it is a ResilientApp) gets an Event too."""
        if owner is None or owner.count("/") != 1 or " " in owner:
            return
        namespace, name = owner.split("/")
        other = ObjectRef(RESILIENT_APP.kind, RESILIENT_APP.plural, name, namespace, "")
        await self.kube.event(
            other,
            "Warning",
            EventReason.DNS_OWNERSHIP_CONFLICT,
            f"ResilientApp {self.me} also names DNS {spec.traffic.record_name}, which this "
            "app holds: it leaves the name alone; give one of them another recordName",
        )
