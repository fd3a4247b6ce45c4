"""Sharding: every app is served by exactly one shard, every process agrees which, and a
bad --shard is a usage error."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.operator.runner import OperatorConfig
from controller.operator.shards import MAX_SHARDS, Shard

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63)


@given(namespace=names, name=names, count=st.integers(min_value=1, max_value=MAX_SHARDS))
def test_exactly_one_shard_serves_each_app(namespace: str, name: str, count: int) -> None:
    owners = [i for i in range(count) if Shard(i, count).owns(namespace, name)]
    assert owners == [Shard(0, count).of(namespace, name)]


def test_every_process_agrees_on_the_owner() -> None:
    """The owner comes from SHA-256, not Python's salted hash(): another interpreter (with
    another PYTHONHASHSEED) computes the same shards."""
    apps = [("shop", f"web-{i}") for i in range(50)]
    here = [Shard(0, 7).of(ns, name) for ns, name in apps]
    code = (
        "from controller.operator.shards import Shard;"
        f"print([Shard(0, 7).of(ns, n) for ns, n in {apps!r}])"
    )
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    ).stdout
    assert there.strip() == str(here)


def test_apps_spread_over_the_shards() -> None:
    counts = Counter(Shard(0, 4).of("bench", f"app-{i:04d}") for i in range(1000))
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 200  # 250 each on average


def test_one_shard_serves_everything_under_the_old_lease_name() -> None:
    assert Shard().owns("any", "app") and Shard().lease_name == "lifeboat"
    assert Shard(1, 3).lease_name == "lifeboat-shard-1-of-3"
    assert Shard(0, 3).writes_providers and not Shard(1, 3).writes_providers


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("2/2", "shard 2 does not exist: shards are numbered 0..1"),
        ("0/0", "the number of shards must be 1..64, got 0"),
        ("0/65", "the number of shards must be 1..64, got 65"),
        ("1", "a shard is written I/N, e.g. 0/2 (got '1')"),
        ("-1/2", "a shard is written I/N, e.g. 0/2 (got '-1/2')"),
    ],
)
def test_a_bad_shard_is_refused_in_one_line(text: str, error: str) -> None:
    with pytest.raises(ValueError, match="^" + error.replace("(", r"\(").replace(")", r"\)")):
        Shard.parse(text)


def test_shards_and_peers_do_not_combine() -> None:
    with pytest.raises(ValueError, match="do not combine"):
        OperatorConfig(peer_name="use1", shard=Shard(0, 2))
    OperatorConfig(peer_name="use1", shard=Shard())  # one shard: peers as before


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["run", "--shard", "3/2"], "lifeboat run: --shard: shard 3 does not exist"),
        (["run", "--shard", "half"], "lifeboat run: --shard: a shard is written I/N"),
        (
            ["run", "--shard", "0/2", "--peer-name", "use1"],
            "lifeboat run: --shard and --peer-name do not combine yet",
        ),
    ],
)
def test_run_refuses_a_bad_shard_with_a_usage_error(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(said) and err.count("\n") == 1


def test_each_shard_has_a_finalizer_and_kopf_prefix_of_its_own() -> None:
    """kopf takes its finalizer off objects none of its handlers serve: one name for every
    shard made the shards take each other's off and put them back for ever."""
    names = {Shard(i, 3).finalizer for i in range(3)}
    assert len(names) == 3 and "lifeboat.dev/finalizer" not in names
    assert Shard().finalizer == "lifeboat.dev/finalizer"
    assert Shard().kopf_prefix == "lifeboat.dev"
    assert len({Shard(i, 3).kopf_prefix for i in range(3)}) == 3


def test_finalizers_of_another_layout_are_stale_and_others_are_kept() -> None:
    held = [
        "lifeboat.dev/finalizer",  # one operator, before sharding
        "lifeboat.dev/finalizer-shard-1-of-3",  # the layout before
        "lifeboat.dev/finalizer-shard-1-of-2",  # this layout: another shard's (kept)
        "lifeboat.dev/finalizer-shard-0-of-2",  # this shard's own
        "example.com/keep-me",  # somebody else's
    ]
    assert Shard(0, 2).stale_finalizers(held) == [
        "lifeboat.dev/finalizer",
        "lifeboat.dev/finalizer-shard-1-of-3",
    ]
    assert Shard().stale_finalizers(held) == [
        "lifeboat.dev/finalizer-shard-1-of-3",
        "lifeboat.dev/finalizer-shard-1-of-2",
        "lifeboat.dev/finalizer-shard-0-of-2",
    ]
