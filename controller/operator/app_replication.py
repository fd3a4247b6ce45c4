"""The replication engines of one app, run beside its worker: kept in step with the
spec, the active site and the epoch, and reported in the app's status."""

from __future__ import annotations

from collections.abc import Mapping

from controller.api.annotations import UnreplicatedRequest
from controller.api.conditions import ConditionType, get_condition
from controller.api.events import EventReason
from controller.api.models import ReplicationStatus, ResilientAppSpec
from controller.core import model as m
from controller.operator.context import (
    AppLog,
    FollowsAppState,
    ObservesRestoredVolumes,
    ReplicationFactory,
    ReplicationSource,
    ResolvesUnreplicated,
)
from controller.operator.kube import Kube, ObjectRef
from controller.operator.status_writer import StatusWriter
from controller.replication.figures import (
    describe_rpo,
    flow_progress,
    replication_conditions,
    replication_lag,
)


class AppReplication:
    """Every replication source of one app (built on first use)."""

    def __init__(
        self, ref: ObjectRef, factories: tuple[ReplicationFactory, ...], kube: Kube, log: AppLog
    ) -> None:
        self.ref = ref
        self.factories = factories
        self.kube = kube
        self.log = log
        self._sources: list[ReplicationSource] | None = None

    async def sync(self, spec: ResilientAppSpec, state: m.AppState) -> None:
        """Keep every replication source in step with the spec, active site and epoch."""
        if self._sources is None:
            self._sources = [factory(self.ref) for factory in self.factories]
        record = state.last_failover
        since = record.decided_at if record and record.epoch == state.epoch else None
        for source in self._sources:
            try:
                if isinstance(source, FollowsAppState):
                    source.follow(state)
                await source.sync(spec, state.active_site, state.epoch, since)
            except Exception:  # one engine's trouble must not stop the app's loop
                self.log.exception("replication sync failed")

    def resolve(self, request: UnreplicatedRequest | None, answered: str | None) -> None:
        """Hand a request to merge or discard unreplicated objects to the sources that can
        (``answered``: the ID of the last one answered, from the status)."""
        if request is None:
            return
        for source in self._sources or ():
            if isinstance(source, ResolvesUnreplicated):
                try:
                    source.resolve(request, answered)
                except Exception:
                    self.log.exception("unreplicated objects: request not started")

    async def close(self) -> None:
        for source in self._sources or ():
            try:
                await source.close()
            except Exception:
                self.log.exception("replication did not stop")

    def figures(self) -> tuple[ReplicationStatus, ...]:
        """Every source's entries, by dataset and destination (the list's map keys)."""
        entries: dict[tuple[str, str], ReplicationStatus] = {}
        for source in self._sources or ():
            try:
                figures = source.figures()
            except Exception:
                self.log.exception("replication figures")
                continue
            for entry in figures:
                entries.setdefault((entry.dataset, entry.destination), entry)
        return tuple(entries[k] for k in sorted(entries))

    def lag(self, spec: ResilientAppSpec) -> Mapping[str, float | None]:
        """Seconds of data each destination lacks (empty: the app replicates nothing)."""
        return replication_lag(self.figures()) if spec.replication else {}

    def flows(self, spec: ResilientAppSpec) -> tuple[m.FlowProgress, ...]:
        """Every flow's progress (a planned switchover's drain reads it)."""
        return flow_progress(self.figures()) if spec.replication else ()

    def report_restored_volumes(self, status: StatusWriter, earlier: Mapping[str, str]) -> None:
        """Put the restored volumes' states into the status being written: as the sources
        saw them, or else as the previous status had them (``earlier``: a restarted
        operator keeps showing them until it looks again)."""
        states = dict(earlier)
        for source in self._sources or ():
            if isinstance(source, ObservesRestoredVolumes):
                states.update(source.volume_states())
        restores = status.current.volume_restores
        if not states or not restores:
            return
        status.update(
            volume_restores=tuple(
                r.model_copy(
                    update={
                        "volumes": tuple(
                            v.model_copy(update={"state": states[v.volume_id]})
                            if v.volume_id in states
                            else v
                            for v in r.volumes
                        )
                    }
                )
                for r in restores
            )
        )

    async def report(
        self, status: StatusWriter, spec: ResilientAppSpec, generation: int | None, now: float
    ) -> None:
        """Put the replication figures and conditions into the status being written."""
        for source in self._sources or ():
            if isinstance(source, ResolvesUnreplicated) and (answer := source.resolution()):
                status.update(unreplicated_request=answer)
        figures = self.figures()
        had = get_condition(status.current.conditions, ConditionType.RPO_BREACHED)
        if spec.replication is None and had is None:
            status.update(replication=figures)
            return
        target = float(spec.replication.rpo_target_seconds) if spec.replication else 0.0
        replicating, breached = replication_conditions(figures, target)
        status.update(replication=figures)
        for type_, (value, reason, message) in (
            (ConditionType.REPLICATING, replicating),
            (ConditionType.RPO_BREACHED, breached),
        ):
            status.set_condition(type_, value, reason, message, generation=generation, now=now)
        was = had.status if had is not None else "False"
        if breached[0] == "True" and was != "True":
            message = describe_rpo(figures, target)
            self.log.warning("RPO breached: %s", message)
            await self.kube.event(self.ref, "Warning", EventReason.RPO_BREACHED, message)
        elif breached[0] == "False" and was == "True":
            message = describe_rpo(figures, target)
            await self.kube.event(self.ref, "Normal", EventReason.RPO_RECOVERED, message)
