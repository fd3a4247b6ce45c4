"""A few seeded randomized runs of the peers' leadership in every test run (the longer
ones: ``make chaos-quorum``); a failure names its seed, which replays it.

Safety (never two leaders) does not depend on how busy the machine is; the time a leader
may be missing is doubled here, as these runs share the machine with the rest of the
suite (``make chaos-quorum`` holds the tighter bound)."""

from __future__ import annotations

import asyncio
import os

from tests.quorum_chaos import SETTLE, run_one

FIRST_SEED = int(os.environ.get("LIFEBOAT_CHAOS_SEED", "20261206"))


async def test_seeded_fault_runs_keep_one_leader_at_most_and_always_find_one() -> None:
    seeds = range(FIRST_SEED, FIRST_SEED + 3)
    outcomes = await asyncio.gather(
        *(run_one(seed, peers=3, steps=5, settle=2 * SETTLE) for seed in seeds)
    )
    for outcome in outcomes:
        assert not outcome.violations, (
            f"seed {outcome.seed} (replay: python -m tests.quorum_chaos --runs 1 --steps 5 "
            f"--seed {outcome.seed}): {outcome.violations}\n" + "\n".join(outcome.timeline)
        )
