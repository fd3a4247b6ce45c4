"""Leader election on a ``coordination.k8s.io/v1`` Lease, as Kubernetes controllers do.

Only the holder of the Lease runs handlers, so two Lifeboat instances (a second replica,
a workstation ``lifeboat run`` next to the in-cluster Deployment) never both decide and
move traffic. The holder renews the Lease every ``renew_seconds``; if it cannot renew
within ``lease_seconds`` it has lost leadership and must stop acting at once (the caller
exits and is restarted). A clean shutdown releases the Lease so that a standby takes over
without waiting for it to expire.

Writes use the Lease's resourceVersion (optimistic concurrency): two candidates racing
for an expired Lease cannot both win.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import kubernetes.client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(tz=UTC)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it is set."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


class LeadershipLost(RuntimeError):
    """The Lease could not be renewed in time; stop acting."""


@dataclass
class LeaseElector:
    api: kubernetes.client.CoordinationV1Api
    namespace: str
    name: str = "lifeboat"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}")
    lease_seconds: float = 15.0
    renew_seconds: float = 5.0
    retry_seconds: float = 2.0

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Wait until this instance holds the Lease (True) or ``stopping`` is set (False)."""
        announced = False
        while not stopping.is_set():
            holder = await asyncio.to_thread(self._try_acquire)
            if holder == self.identity:
                log.info("leader election: %s holds lease %s/%s", holder, self.namespace, self.name)
                return True
            if not announced:
                log.info(
                    "leader election: waiting; lease %s/%s is held by %s",
                    self.namespace,
                    self.name,
                    holder,
                )
                announced = True
            await _wait(stopping, self.retry_seconds)
        return False

    async def keep(self, stopping: asyncio.Event) -> None:
        """Renew until ``stopping`` is set, then release; raise LeadershipLost on failure.

        Leadership counts as lost when another instance holds the Lease, or when it could
        not be renewed for two thirds of its duration: before anyone else may take it.
        """
        deadline = self.lease_seconds * 2 / 3
        renewed = time.monotonic()
        while not await _wait(stopping, self.renew_seconds):
            # The Lease is stamped before the request goes out: count from then, not from
            # the answer, or a slow renewal would stretch the deadline past the real one.
            attempt = time.monotonic()
            try:
                holder: str | None = await asyncio.to_thread(self._try_acquire)
            except Exception as error:
                log.warning("leader election: renewing the lease failed: %s", error)
                holder = None
            if holder == self.identity:
                renewed = attempt
            elif holder is not None or time.monotonic() - renewed >= deadline:
                raise LeadershipLost(
                    f"lost lease {self.namespace}/{self.name}"
                    + (f" to {holder}" if holder else ": it could not be renewed in time")
                )
        await asyncio.to_thread(self._release)

    # ------------------------------------------------------------------ blocking calls

    def _try_acquire(self) -> str:
        """Take or renew the Lease if free, expired or ours; the holder afterwards."""
        now = _now()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return self._create(now)
        spec = lease.spec or kubernetes.client.V1LeaseSpec()
        holder = spec.holder_identity or ""
        if holder and holder != self.identity and not self._expired(spec, now):
            return holder
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        lease.spec = kubernetes.client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.lease_seconds),
            acquire_time=spec.acquire_time if holder == self.identity else now,
            renew_time=now,
            lease_transitions=transitions,
        )
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            if error.status == 409:  # someone else wrote first
                return holder or "another candidate"
            raise
        return self.identity

    def _create(self, now: datetime) -> str:
        lease = kubernetes.client.V1Lease(
            metadata=kubernetes.client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=kubernetes.client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=int(self.lease_seconds),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self.api.create_namespaced_lease(self.namespace, lease)
        except ApiException as error:
            if error.status == 409:
                return "another candidate"
            raise
        return self.identity

    @staticmethod
    def _expired(spec: kubernetes.client.V1LeaseSpec, now: datetime) -> bool:
        renewed = spec.renew_time or spec.acquire_time
        if renewed is None:
            return True
        return (now - renewed).total_seconds() > (spec.lease_duration_seconds or 0)

    def _release(self) -> None:
        """Give the Lease up (a clean shutdown): the next candidate need not wait."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            log.info("leader election: released lease %s/%s", self.namespace, self.name)
        except Exception as error:
            log.warning("leader election: could not release the lease: %s", error)
