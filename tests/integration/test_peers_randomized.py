"""A seeded randomized run of the peers on the sandbox's real parts (issue 18, item 6 d):
:mod:`tests.peers_sandbox_chaos`, one run per CI (``make chaos-peers-sandbox`` runs more).

The seed is ``LIFEBOAT_CHAOS_SEED`` (a fixed one by default: the faults are the same in every
CI run, their timing is not), printed with the run's timeline when the run fails;
``python -m tests.peers_sandbox_chaos --seed S --runs 1`` replays its faults.
"""

from __future__ import annotations

import os

import pytest

from sandbox.assets import Assets
from tests import peers_sandbox_chaos as chaos

pytestmark = pytest.mark.integration
FIRST_SEED = 20261207


def test_a_randomized_run_of_faults_on_the_peer_world_breaks_no_invariant(
    kube_assets: Assets,
) -> None:
    seed = int(os.environ.get("LIFEBOAT_CHAOS_SEED") or FIRST_SEED)
    outcome = chaos.run_one(kube_assets, seed, steps=6)
    timeline = "\n".join(f"    {line}" for line in outcome.timeline)
    assert not outcome.violations, (
        f"seed {seed} (replay: python -m tests.peers_sandbox_chaos --seed {seed} --runs 1): "
        f"{'; '.join(outcome.violations)}\n{timeline}"
    )
    assert outcome.rescue is not None and outcome.states >= 2
    print(f"\n{chaos.report([outcome], seed, 6)}")
