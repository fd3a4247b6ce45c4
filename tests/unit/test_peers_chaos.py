"""Seeded randomized runs of the peers, whole, in every test run (the longer ones:
``make chaos-peers``): three (and, in one run, five) peers' electors, peer links, status
writers and app workers over in-memory peer clusters, DNS and probes, under random faults
and then a region loss; a failure names its seed, which replays it (tests/peers_chaos.py
says what is checked)."""

from __future__ import annotations

import asyncio
import os

from tests.peers_chaos import run_one

FIRST_SEED = int(os.environ.get("LIFEBOAT_CHAOS_SEED", "20261206"))


async def test_seeded_fault_runs_keep_dns_fenced_and_move_traffic_only_on_a_majority() -> None:
    runs = [(FIRST_SEED, 3), (FIRST_SEED + 1, 3), (FIRST_SEED + 2, 5)]
    outcomes = await asyncio.gather(*(run_one(s, steps=6, peers=n) for s, n in runs))
    for outcome, (_, peers) in zip(outcomes, runs, strict=True):
        assert not outcome.violations, (
            f"seed {outcome.seed} (replay: python -m tests.peers_chaos --runs 1 --steps 6 "
            f"--peers {peers} --seed {outcome.seed}): {outcome.violations}\n"
            + "\n".join(outcome.timeline)
        )
        assert outcome.rescue is not None  # the region loss moved traffic
