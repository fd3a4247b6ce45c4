"""Several vantages, one verdict: how the zone states other Lifeboat peers publish enter a
decision (pure: no I/O, no clock).

In multi-peer mode every peer probes every zone and publishes its own view (each zone's
state after its own thresholds); a peer is *heard* while its publication keeps rising on
the reader's clock. One peer's view alone never moves an app:

* the peers' views count only when a majority of *all* peers is heard (this one included):
  a peer that hears fewer cannot tell the others' loss from its own isolation, so its zone
  evidence is *unconfirmed* and nothing is evacuated, failed over, failed back or restored
  on it, unless ``allowSolo`` lets it decide on the views it hears;
* a zone is **Down** for decisions when a majority of the heard peers see it Down, and
  **Healthy** when a majority of them see it Healthy;
* otherwise its state is this peer's own, except that a Down or Healthy verdict the others
  do not confirm counts as **Suspect** (neither Down nor Healthy: nothing moves on it);
* a zone that some heard peers, but not a majority of them, see Down is a *disagreement*:
  reported (which zone, which peers), never acted on.

With a single vantage (single-cluster mode), and whenever every peer is heard and agrees,
the states for decisions are exactly this peer's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controller.core.health import ZoneKey, ZoneState

THIS_PEER = "this peer"
"""How this peer is named in reports when its own name is not known."""


@dataclass(frozen=True)
class PeerView:
    """What one other peer last published of one app's zones."""

    peer: str
    heard: bool
    """Its publication rose within the last three heartbeats (on the reader's clock)."""
    zones: Mapping[ZoneKey, ZoneState] = field(default_factory=dict)
    """Zone states as that peer sees them; a zone missing here is Unknown to it."""


@dataclass(frozen=True)
class Vantage:
    """The other peers' views of one app for one round (``Observations.vantage``)."""

    peers: tuple[PeerView, ...]
    """Every other peer named in the peer list, heard or not."""
    total: int
    """Every peer, this one included."""
    allow_solo: bool = False
    """A lone peer may decide on its own view (LifeboatPeers ``spec.allowSolo``)."""
    peer: str = ""
    """This peer's name (``lifeboat run --peer-name``), for reports."""


def majority(total: int) -> int:
    """The smallest majority of ``total`` peers (2 of 3, 3 of 5)."""
    return total // 2 + 1


@dataclass(frozen=True)
class Disagreement:
    """A zone some heard peers, but not a majority of them, see Down."""

    zone: ZoneKey
    down: tuple[str, ...]
    """The peers that see it Down (a minority of those heard)."""
    others: tuple[str, ...]
    """The heard peers that do not."""

    def __str__(self) -> str:
        return (
            f"{self.zone} Down for {', '.join(self.down)} only "
            f"({len(self.down)} of {len(self.down) + len(self.others)} heard)"
        )


@dataclass(frozen=True)
class Consensus:
    """The zone states a round decides on, and how the peers' views led to them."""

    zones: Mapping[ZoneKey, ZoneState]
    """State of every zone asked about, for decisions."""
    heard: tuple[str, ...] = ()
    """Peers heard this round, this one first (empty: single-cluster mode)."""
    total: int = 1
    """Every peer, this one included."""
    allow_solo: bool = False
    disagreements: tuple[Disagreement, ...] = ()
    unconfirmed: tuple[ZoneKey, ...] = ()
    """Zones this peer sees Down or Healthy that count as Suspect: the other peers do not
    confirm it, or too few peers are heard to confirm anything."""

    @property
    def single(self) -> bool:
        """One vantage: single-cluster mode."""
        return not self.heard

    @property
    def quorate(self) -> bool:
        """A majority of all peers is heard (always, with one vantage)."""
        return self.single or len(self.heard) >= majority(self.total)

    @property
    def in_doubt(self) -> tuple[ZoneKey, ...]:
        """Zones whose state the next rounds may settle: seen Down or Healthy here, not yet
        confirmed by the heard peers (a majority heard). Without a majority heard nothing
        is in doubt this way: the next rounds would not settle it."""
        return self.unconfirmed if self.decides else ()

    @property
    def decides(self) -> bool:
        """Zone evidence may move the app: a majority is heard, or ``allowSolo``."""
        return self.quorate or self.allow_solo

    def why_not(self) -> str | None:
        """Why zone evidence may not move the app this round (None: it may)."""
        if self.decides:
            return None
        return (
            f"only {len(self.heard)} of {self.total} peers heard ({', '.join(self.heard)}); "
            f"zone evidence needs a majority of the peers ({majority(self.total)}) and "
            "allowSolo is off"
        )

    def summary(self) -> str:
        """The vantage fact of a decision's trace."""
        heard = f"{len(self.heard)}/{self.total} peers heard ({', '.join(self.heard)})"
        if self.quorate:
            return f"{heard}; a zone is Down for decisions when a majority of them see it Down"
        if self.allow_solo:
            return f"{heard}; fewer than a majority, allowSolo: deciding on the heard views"
        return f"{heard}; fewer than a majority ({majority(self.total)}): zone evidence unconfirmed"


def consensus(
    own: Mapping[ZoneKey, ZoneState],
    vantage: Vantage | None,
    zones: Iterable[ZoneKey],
) -> Consensus:
    """The state of each of ``zones`` for decisions, from this peer's own states (``own``;
    missing: Unknown) and the other peers' views (``vantage``; None: single-cluster mode,
    where the states are ``own`` unchanged)."""
    keys = tuple(dict.fromkeys(zones))
    if vantage is None:
        return Consensus({k: own.get(k, ZoneState.UNKNOWN) for k in keys})
    me = vantage.peer or THIS_PEER
    heard = [(me, own)] + [(p.peer, p.zones) for p in vantage.peers if p.heard]
    total = max(vantage.total, len(vantage.peers) + 1)
    names = tuple(name for name, _ in heard)
    decides = len(heard) >= majority(total) or vantage.allow_solo
    states: dict[ZoneKey, ZoneState] = {}
    disagreements: list[Disagreement] = []
    unconfirmed: list[ZoneKey] = []
    for key in keys:
        mine = own.get(key, ZoneState.UNKNOWN)
        seen = [(name, view.get(key, ZoneState.UNKNOWN)) for name, view in heard]
        down = tuple(name for name, state in seen if state is ZoneState.DOWN)
        healthy = sum(1 for _, state in seen if state is ZoneState.HEALTHY)
        if decides and 2 * len(down) > len(seen):
            state = ZoneState.DOWN
        elif decides and 2 * healthy > len(seen):
            state = ZoneState.HEALTHY
        elif mine in (ZoneState.DOWN, ZoneState.HEALTHY):
            state = ZoneState.SUSPECT
            unconfirmed.append(key)
        else:
            state = mine
        states[key] = state
        if down and 2 * len(down) <= len(seen):
            others = tuple(name for name in names if name not in down)
            disagreements.append(Disagreement(key, down, others))
    return Consensus(
        states,
        names,
        total,
        vantage.allow_solo,
        tuple(disagreements),
        tuple(unconfirmed),
    )
