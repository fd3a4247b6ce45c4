"""Condition helpers follow the API conventions."""

from __future__ import annotations

from controller.api.conditions import (
    ConditionType,
    get_condition,
    parse_rfc3339,
    rfc3339,
    set_condition,
)

READY, A, B = ConditionType.READY, ConditionType.DEGRADED, ConditionType.FAILING_OVER


def test_transition_time_moves_only_when_status_flips() -> None:
    first = set_condition((), READY, "False", "Pending", "starting", generation=1, now=100.0)
    same = set_condition(first, READY, "False", "Waiting", "still", generation=2, now=200.0)
    flipped = set_condition(same, READY, "True", "Serving", "ok", generation=2, now=300.0)
    assert get_condition(same, READY).last_transition_time == rfc3339(100.0)  # type: ignore[union-attr]
    assert get_condition(same, READY).observed_generation == 2  # type: ignore[union-attr]
    assert get_condition(flipped, READY).last_transition_time == rfc3339(300.0)  # type: ignore[union-attr]


def test_other_conditions_are_kept_in_order() -> None:
    conditions = set_condition((), A, "True", "X", "", generation=1, now=1.0)
    conditions = set_condition(conditions, B, "True", "X", "", generation=1, now=1.0)
    conditions = set_condition(conditions, A, "False", "Y", "", generation=1, now=2.0)
    assert [c.type for c in conditions] == ["Degraded", "FailingOver"]


def test_rfc3339_round_trip() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1.2345, precise=True) == "1970-01-01T00:00:01.234Z"
    assert parse_rfc3339(rfc3339(1700000000.5, precise=True)) == 1700000000.5


def test_a_time_before_the_year_1000_keeps_four_digits() -> None:
    """Found by the worker fuzz suite: strftime's %Y wrote year 236 as "236", a time the
    status model refused, so every round that wrote such a status back failed."""
    moment = parse_rfc3339("0236-04-17T23:12:29Z")
    assert rfc3339(moment) == "0236-04-17T23:12:29Z"
    assert rfc3339(moment, precise=True) == "0236-04-17T23:12:29.000Z"
    assert parse_rfc3339("2026-01-01t00:00:00z") == parse_rfc3339("2026-01-01T00:00:00Z")
