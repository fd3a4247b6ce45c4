"""What one app's worker says about the other peers' views (multi-peer mode only).

Each round the decision core weighs this peer's zone states with the views the other
peers publish (:mod:`controller.core.vantage`); this reporter turns the result into:

* the condition ``VantageAgreement``: True (``VantageAgreed``) when the heard peers, a
  majority of all, see every zone alike; False (``VantageDisagreement``) while a minority of
  them sees a zone Down, naming the zones and those peers; Unknown (``PeersUnheard``) while
  fewer than a majority of the peers are heard;
* the condition ``PeerSpecDrift``: True while some heard peer publishes a different spec
  digest for the app (``PeerSpecDrift``, naming them), else False (``PeerSpecsAgree``);
* an Event when either changes (a Warning for bad news, Normal when it clears; never
  round after round), and the metrics ``lifeboat_vantage_disagreement`` (per zone),
  ``lifeboat_vantage_peers_heard``, ``lifeboat_vantage_quorum`` and
  ``lifeboat_peer_spec_drift``.

Messages name zones and peers only, nothing that changes while the picture does not (such
as how many peers are heard), so that an Event means a change. Whether something changed
is read from the condition in the status, so a restarted worker does not say it again.
In single-cluster mode none of this exists: the conditions are dropped and the series
removed, should an earlier multi-peer run have left them.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Gauge

from controller import metrics
from controller.api.conditions import ConditionType, Status
from controller.api.events import EventReason
from controller.core.health import ZoneKey
from controller.core.vantage import Consensus
from controller.operator.context import AppLog
from controller.operator.kube import Kube, ObjectRef
from controller.operator.status_writer import StatusWriter

_CONDITIONS = (ConditionType.VANTAGE_AGREEMENT, ConditionType.PEER_SPEC_DRIFT)


class VantageReport:
    """Reports how the peers' views of one app compare (see the module)."""

    def __init__(self, ref: ObjectRef, kube: Kube, log: AppLog) -> None:
        self.ref = ref
        self.kube = kube
        self.log = log
        self.labels = (ref.namespace or "", ref.name)
        self._zones: set[ZoneKey] = set()
        """Zones whose disagreement series are exported."""
        self._peered = False

    async def report(
        self,
        status: StatusWriter,
        weighed: Consensus | None,
        drift: tuple[str, ...],
        *,
        generation: int | None,
        now: float,
    ) -> None:
        """Report this round's weighing (None: single-cluster mode) and the heard peers
        that read a different spec (``drift``)."""
        if weighed is None:
            self._single(status)
            return
        self._peered = True
        flag, reason, message = agreement(weighed)
        await self._set(
            status,
            ConditionType.VANTAGE_AGREEMENT,
            flag,
            reason,
            message,
            generation=generation,
            now=now,
        )
        flag, reason, message = spec_drift(drift)
        await self._set(
            status,
            ConditionType.PEER_SPEC_DRIFT,
            flag,
            reason,
            message,
            generation=generation,
            now=now,
        )
        self._export(weighed, drift)

    async def _set(
        self,
        status: StatusWriter,
        type_: ConditionType,
        flag: Status,
        reason: EventReason,
        message: str,
        *,
        generation: int | None,
        now: float,
    ) -> None:
        """Set the condition; post an Event when it changed: bad news whenever its reason
        or message changes, good news when it clears (not when it starts out good)."""
        previous = status.condition(type_)
        status.set_condition(type_, flag, reason, message, generation=generation, now=now)
        bad = reason not in (EventReason.VANTAGE_AGREED, EventReason.PEER_SPECS_AGREE)
        if previous is not None and (previous.reason, previous.message) == (reason, message):
            return
        if bad:
            self.log.warning("%s", message)
            await self.kube.event(self.ref, "Warning", reason, message)
        elif previous is not None and previous.reason != reason:
            self.log.info("%s", message)
            await self.kube.event(self.ref, "Normal", reason, message)

    def _export(self, weighed: Consensus, drift: tuple[str, ...]) -> None:
        namespace, app = self.labels
        dissent = {d.zone: len(d.down) for d in weighed.disagreements}
        zones = set(weighed.zones)
        for gone in self._zones - zones:
            _remove(metrics.VANTAGE_DISAGREEMENT, namespace, app, gone.site, gone.zone)
        for key in sorted(zones):
            metrics.VANTAGE_DISAGREEMENT.labels(namespace, app, key.site, key.zone).set(
                dissent.get(key, 0)
            )
        self._zones = zones
        metrics.VANTAGE_PEERS_HEARD.labels(namespace, app).set(len(weighed.heard))
        metrics.VANTAGE_QUORUM.labels(namespace, app).set(1 if weighed.quorate else 0)
        metrics.PEER_SPEC_DRIFT.labels(namespace, app).set(len(drift))

    def _single(self, status: StatusWriter) -> None:
        """Single-cluster mode: no peer conditions, no peer series."""
        kept = tuple(c for c in status.current.conditions if c.type not in _CONDITIONS)
        if len(kept) != len(status.current.conditions):
            status.update(conditions=kept)
        if not self._peered:
            return
        namespace, app = self.labels
        for key in self._zones:
            _remove(metrics.VANTAGE_DISAGREEMENT, namespace, app, key.site, key.zone)
        for gauge in (metrics.VANTAGE_PEERS_HEARD, metrics.VANTAGE_QUORUM, metrics.PEER_SPEC_DRIFT):
            _remove(gauge, namespace, app)
        self._zones, self._peered = set(), False


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never exported
        gauge.remove(*labels)


def agreement(weighed: Consensus) -> tuple[Status, EventReason, str]:
    """The ``VantageAgreement`` condition for ``weighed``: status, reason, message."""
    why = weighed.why_not()
    if not weighed.quorate:
        unheard = why or (
            f"only {len(weighed.heard)} of {weighed.total} peers heard; allowSolo: deciding on "
            "the heard peers' views"
        )
        return "Unknown", EventReason.PEERS_UNHEARD, unheard
    if weighed.disagreements:
        zones = "; ".join(
            f"{d.zone} is Down for {', '.join(d.down)} only" for d in weighed.disagreements
        )
        return (
            "False",
            EventReason.VANTAGE_DISAGREEMENT,
            f"peers disagree: {zones}. A zone a minority of the peers sees Down is not Down "
            "for decisions: nothing is evacuated or failed over on it",
        )
    return (
        "True",
        EventReason.VANTAGE_AGREED,
        "the heard peers, a majority of all, see every zone alike",
    )


def spec_drift(drift: tuple[str, ...]) -> tuple[Status, EventReason, str]:
    """The ``PeerSpecDrift`` condition for the heard peers reading another spec."""
    if drift:
        return (
            "True",
            EventReason.PEER_SPEC_DRIFT,
            f"peer(s) {', '.join(sorted(drift))} read a different spec of this app: apply "
            "the same spec to every peer cluster",
        )
    return "False", EventReason.PEER_SPECS_AGREE, "every heard peer reads the same spec"
