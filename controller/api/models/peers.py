"""The LifeboatPeers kind: the peer clusters one Lifeboat peer knows (spec) and what this
peer currently sees of every app (status), published for the other peers to read.

One object named ``lifeboat`` in every peer cluster (cluster-scoped). Its spec lists every
peer, this one included, by name; each *other* peer is reached through a kubeconfig held in
a Secret of the controller's namespace. Each peer writes only the status of the object in
its own cluster; the others read it with a GET (ADR 0009).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from controller.api.models.common import (
    DNS_LABEL,
    Conditions,
    Model,
    SecretKeyRef,
    Timestamp,
    list_map,
    with_rules,
)
from controller.api.rules import Rule, unique

PeerName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]

PEERS_OBJECT = "lifeboat"
"""The name of the one LifeboatPeers object Lifeboat reads in each peer cluster."""


class Peer(Model):
    """One peer: a Lifeboat instance in its own cluster."""

    name: PeerName = Field(
        description="Peer name, as given to its `lifeboat run --peer-name`. Usually named "
        "after the region or provider the peer's cluster runs in."
    )
    kubeconfig_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="A Secret in the controller's namespace whose key holds a kubeconfig "
        "reaching this peer's cluster. Needed for every peer but the one reading it (a "
        "peer reaches its own cluster in-cluster).",
    )


class LifeboatPeersSpec(Model):
    """The peers that together run Lifeboat, each in its own cluster."""

    peers: tuple[Peer, ...] = Field(
        min_length=1,
        max_length=9,
        description="Every peer, this one included. Decisions need a majority of them: "
        "three peers survive the loss of any one, five of any two.",
        json_schema_extra=list_map("name"),
    )
    heartbeat_seconds: float = Field(
        default=2.0,
        ge=0.5,
        le=60,
        description="How often each peer publishes what it sees and reads the others. A "
        "peer counts as heard while its published sequence rose within the last three "
        "heartbeats.",
    )
    allow_solo: bool = Field(
        default=False,
        description="Let a lone peer decide and act on its own view when it cannot reach a "
        "majority. Off by default: a peer cut off from the others cannot tell their "
        "loss from its own isolation.",
    )

    rules, model_config = with_rules(
        Rule(
            cel="self.peers.all(p, self.peers.exists_one(q, q.name == p.name))",
            message="peers: names must be unique",
            check=lambda s: unique([p.name for p in s.peers]),
        ),
    )


class PublishedZone(Model):
    """One zone as this peer sees it (its own probes, its own thresholds)."""

    site: str = Field(max_length=63, description="Site name.")
    zone: str = Field(max_length=63, description="Zone name.")
    state: str = Field(max_length=16, description="Healthy, Suspect, Down, Recovering or Unknown.")


class AppVantage(Model):
    """What this peer sees of one app."""

    app: str = Field(max_length=317, description="namespace/name of the ResilientApp.")
    spec_digest: str = Field(
        max_length=64,
        description="SHA-256 of the app's spec as this peer reads it: peers whose digests "
        "differ read different specs (spec drift).",
    )
    zones: tuple[PublishedZone, ...] = Field(default=(), max_length=256)


class LifeboatPeersStatus(Model):
    """Published by the peer whose cluster this is, read by the others."""

    peer: str | None = Field(default=None, description="The peer that publishes here.")
    sequence: int = Field(
        default=0,
        ge=0,
        description="Rises with every publication: readers judge liveness by its rising "
        "on their own clock, never by comparing timestamps across hosts.",
    )
    published_at: Timestamp | None = Field(default=None, description="Last publication.")
    leader: PeerName | None = Field(
        default=None,
        description="The peer this peer sees leading: itself while it leads, else the heard "
        "peer whose own publication says it leads (informative: leadership is the Leases).",
    )
    leading: bool = Field(
        default=False,
        description="Whether this peer acts now: it holds the lifeboat Lease in a majority "
        "of the peer clusters (or alone, with allowSolo).",
    )
    leases_held: tuple[PeerName, ...] = Field(
        default=(),
        max_length=64,
        description="The peer clusters whose lifeboat Lease this peer holds now, by peer.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    apps: tuple[AppVantage, ...] = Field(
        default=(),
        max_length=5000,
        description="One entry per app, by app name. Written whole by the one peer that "
        "publishes here (an atomic list: the API server keeps no per-app field ownership, "
        "which would cost it work on every heartbeat).",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    conditions: Conditions
