"""An app's status on a majority of the peer clusters: the epoch no region owns.

With peers, the leader writes each app's status — the epoch of its decision with it — to
the ResilientApp of the same namespace and name in every peer cluster it reaches, each
write fenced in its cluster exactly as in single-cluster mode (a stored newer epoch
refuses it: :class:`~controller.operator.kube.StaleEpoch`, and the worker starts over
from the world). The write counts once a majority of all the peer clusters accepted it;
the worker starts an action only after that, and otherwise holds it (``NoMajority``).
Writes to the other clusters carry on in the background, each under its deadline.

A new leader rebuilds an app from :meth:`PeerStatusWriter.freshest`: the status with the
highest epoch (then the latest decision) among the answers of at least a majority of the
clusters. Any status an action was started under reached a majority, and two majorities
share a cluster, so the new leader starts from an epoch at least as high as the last one
acted on; what the status cannot say (whether the last DNS change landed) comes from the
DNS read-back that precedes every change after a rebuild (:mod:`.dns_readback`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.operator.kube import Kube, NotFound, ObjectRef, StaleEpoch
from controller.providers.kubernetes.client import unreachable

log = logging.getLogger(__name__)

WRITE_SECONDS = 5.0
"""Deadline of a status write or read in one peer cluster."""


class NoMajority(RuntimeError):
    """Fewer than a majority of the peer clusters accepted a status write (or answered a
    read): the decision is not durable, nothing may act on it."""

    def __init__(self, what: str, accepted: Sequence[str], needed: int, total: int) -> None:
        reached = ", ".join(accepted) or "none"
        super().__init__(
            f"{what} reached {len(accepted)} of {total} peer clusters ({reached}); "
            f"needs a majority of {needed}"
        )
        self.accepted = tuple(accepted)
        self.needed = needed
        self.total = total


class StatusStore(Protocol):
    """Where an app's status is kept: its own cluster, or a majority of the peers'."""

    async def write(self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None) -> None:
        """Write, fenced by ``epoch``; raises StaleEpoch, NotFound or NoMajority (or the
        own cluster's error in single-cluster mode)."""
        ...

    async def freshest(self, ref: ObjectRef) -> Mapping[str, Any] | None:
        """The status to rebuild from (None: the one in the object the worker was given)."""
        ...


class StatusClient(Protocol):
    """What the writer needs of one cluster (KubeClient)."""

    async def patch_status(
        self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None = None
    ) -> None: ...

    async def read(self, ref: ObjectRef) -> dict[str, Any]: ...


@dataclass
class PeerStatusWriter:
    """Writes and reads an app's status in every peer cluster; counts a majority.

    ``clusters``: (peer name, client of that cluster), this peer's own first.
    """

    clusters: Sequence[tuple[str, StatusClient]]
    seconds: float = WRITE_SECONDS
    _background: set[asyncio.Task[Any]] = field(default_factory=set, init=False)

    @property
    def majority(self) -> int:
        return len(self.clusters) // 2 + 1

    async def write(self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None) -> None:
        own = self.clusters[0][0]
        tasks = {
            asyncio.create_task(self._bounded(client.patch_status(ref, status, epoch=epoch))): name
            for name, client in self.clusters
        }
        accepted: list[str] = []
        failures: dict[str, str] = {}
        pending = set(tasks)
        try:
            while pending and len(accepted) < self.majority:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    name = tasks[task]
                    error = task.exception()
                    if error is None:
                        accepted.append(name)
                    elif isinstance(error, StaleEpoch):
                        raise error
                    elif isinstance(error, NotFound) and name == own:
                        raise error  # deleted here: the worker is being stopped
                    else:
                        failures[name] = _describe(error)
        finally:
            for task in pending:  # the rest finish on their own, under their deadline
                self._background.add(task)
                task.add_done_callback(self._settled(tasks[task], epoch))
        if len(accepted) < self.majority:
            for name, why in failures.items():
                log.warning("%s: status not written in peer cluster %s: %s", ref.name, name, why)
            raise NoMajority(
                f"status of {ref.namespace}/{ref.name} (epoch {epoch})",
                accepted,
                self.majority,
                len(self.clusters),
            )

    async def freshest(self, ref: ObjectRef) -> Mapping[str, Any] | None:
        answers = await asyncio.gather(
            *(self._bounded(client.read(ref)) for _, client in self.clusters),
            return_exceptions=True,
        )
        statuses: list[tuple[int, Mapping[str, Any]]] = []
        heard: list[str] = []
        for index, ((name, _), answer) in enumerate(zip(self.clusters, answers, strict=True)):
            if isinstance(answer, NotFound):
                heard.append(name)  # an answer: the app is not (yet) there
            elif isinstance(answer, BaseException):
                log.warning(
                    "%s: status not read in peer cluster %s: %s",
                    ref.name,
                    name,
                    _describe(answer),
                )
            else:
                heard.append(name)
                status = answer.get("status")
                if isinstance(status, Mapping):
                    statuses.append((index, status))
        if len(heard) < self.majority:
            raise NoMajority(
                f"status of {ref.namespace}/{ref.name} (read)",
                heard,
                self.majority,
                len(self.clusters),
            )
        if not statuses:
            return {}
        return max(statuses, key=lambda entry: _freshness(entry[1], entry[0]))[1]

    async def _bounded(self, call: Any) -> Any:
        return await asyncio.wait_for(call, self.seconds)

    def _settled(self, name: str, epoch: int | None) -> Any:
        def settled(task: asyncio.Task[Any]) -> None:
            self._background.discard(task)
            if task.cancelled():
                return
            error = task.exception()
            if error is not None:
                log.info(
                    "status (epoch %s) not written in peer cluster %s: %s",
                    epoch,
                    name,
                    _describe(error),
                )

        return settled


def _freshness(status: Mapping[str, Any], index: int) -> tuple[int, str, int]:
    """Highest epoch first, then the latest decision (RFC 3339 sorts as text), then the
    cluster listed first (this peer's own)."""
    epoch = status.get("epoch")
    decision = status.get("lastDecision")
    time = decision.get("time") if isinstance(decision, Mapping) else None
    return (
        epoch if isinstance(epoch, int) else 0,
        time if isinstance(time, str) else "",
        -index,
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return unreachable(error) or f"{type(error).__name__}: {str(error)[:200]}"


@dataclass(frozen=True)
class OwnClusterStatus:
    """Single-cluster mode: the status lives in the own cluster alone, written fenced
    through its API server; nothing fresher to rebuild from than the object given."""

    kube: Kube

    async def write(self, ref: ObjectRef, status: dict[str, Any], *, epoch: int | None) -> None:
        await self.kube.patch_status(ref, status, epoch=epoch)

    async def freshest(self, ref: ObjectRef) -> Mapping[str, Any] | None:
        return None
