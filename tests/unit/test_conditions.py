"""Condition helpers follow the API conventions."""

from __future__ import annotations

from controller.api.conditions import get_condition, parse_rfc3339, rfc3339, set_condition


def test_transition_time_moves_only_when_status_flips() -> None:
    first = set_condition((), "Ready", "False", "Pending", "starting", generation=1, now=100.0)
    same = set_condition(first, "Ready", "False", "Waiting", "still", generation=2, now=200.0)
    flipped = set_condition(same, "Ready", "True", "Serving", "ok", generation=2, now=300.0)
    assert get_condition(same, "Ready").last_transition_time == rfc3339(100.0)  # type: ignore[union-attr]
    assert get_condition(same, "Ready").observed_generation == 2  # type: ignore[union-attr]
    assert get_condition(flipped, "Ready").last_transition_time == rfc3339(300.0)  # type: ignore[union-attr]


def test_other_conditions_are_kept_in_order() -> None:
    conditions = set_condition((), "A", "True", "X", "", generation=1, now=1.0)
    conditions = set_condition(conditions, "B", "True", "X", "", generation=1, now=1.0)
    conditions = set_condition(conditions, "A", "False", "Y", "", generation=1, now=2.0)
    assert [c.type for c in conditions] == ["A", "B"]


def test_rfc3339_round_trip() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1.2345, precise=True) == "1970-01-01T00:00:01.234Z"
    assert parse_rfc3339(rfc3339(1700000000.5, precise=True)) == 1700000000.5
