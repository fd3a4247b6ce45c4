"""Which epoch wrote an object: the epoch history of an app, and the stamps on copies.

Every copy Lifeboat makes carries the epoch its source version was written under
(``lifeboat-epoch``). Objects the app wrote itself carry nothing; their epoch is the one in
force when they were written (their modification time), found in the app's epoch
history: which site became active under which epoch, and when. The history travels with
the data (in every replication manifest, see :mod:`controller.replication.manifest`), so
a restarted operator, or a site that becomes the source, still knows it.

Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class EpochStart:
    """Epoch ``epoch`` began at ``since`` (Unix seconds) with ``site`` active."""

    epoch: int
    since: float
    site: str


@dataclass(frozen=True)
class EpochHistory:
    """The epochs an app went through, in order."""

    starts: tuple[EpochStart, ...] = ()

    @staticmethod
    def merge(*histories: Iterable[EpochStart]) -> EpochHistory:
        """One history from several (manifests, the current status): for each epoch the
        earliest start recorded, with its site."""
        best: dict[int, EpochStart] = {}
        for history in histories:
            for start in history:
                known = best.get(start.epoch)
                if known is None or start.since < known.since:
                    best[start.epoch] = start
        return EpochHistory(tuple(sorted(best.values())))

    def __iter__(self) -> Iterator[EpochStart]:
        return iter(self.starts)

    def with_current(self, epoch: int, site: str, since: float | None) -> EpochHistory:
        """This history, knowing that ``epoch`` (the current one) began at ``since`` with
        ``site`` active. An unknown start is taken as the latest start already known (or
        the beginning of time for the first epoch seen), so that nothing written before
        an earlier recorded start is ever attributed to the current epoch."""
        others = tuple(s for s in self.starts if s.epoch != epoch)
        recorded = next((s for s in self.starts if s.epoch == epoch), None)
        if since is None:
            if recorded is not None:
                since = recorded.since
            else:
                earlier = [s.since for s in others if s.epoch < epoch]
                since = max(earlier, default=0.0)
        return EpochHistory(tuple(sorted((*others, EpochStart(epoch, since, site)))))

    def epoch_at(self, moment: float) -> int:
        """The epoch in force at ``moment``: the highest epoch that began at or before it
        (the first epoch known for anything older; 0 with no history at all)."""
        found = 0
        for start in self.starts:
            if start.since <= moment and start.epoch > found:
                found = start.epoch
        if found == 0 and self.starts:
            return min(s.epoch for s in self.starts)
        return found

    def to_wire(self) -> list[list[object]]:
        return [[s.epoch, s.since, s.site] for s in self.starts]

    @staticmethod
    def from_wire(raw: object) -> EpochHistory:
        """A history read back from a manifest; malformed entries are skipped."""
        starts = []
        if isinstance(raw, list):
            for item in raw:
                if (
                    isinstance(item, list)
                    and len(item) == 3
                    and isinstance(item[0], int)
                    and isinstance(item[1], int | float)
                    and isinstance(item[2], str)
                ):
                    starts.append(EpochStart(item[0], float(item[1]), item[2]))
        return EpochHistory.merge(starts)
