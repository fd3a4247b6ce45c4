"""The worker fuzz suite (tests/worker_fuzz.py) at a size for every test run: mutated
specs and statuses through the real worker, no crash, no epoch regression, no status write
the API server would refuse, every invalid input reported. ``make fuzz`` runs 10,000
cases and prints the figures."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.worker_fuzz import Case, Journal, Mutation, Values, cases, check, seeds

EXAMPLES = 150


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(cases())
def test_the_worker_survives_mutated_specs_and_statuses(case: Case) -> None:
    outcome = check(case)
    assert outcome.ok, "\n".join(outcome.lines())


def test_the_starting_points_are_what_their_names_say() -> None:
    """The seeds are written by the worker itself: they must be the situations the
    mutations start from, or the suite fuzzes less than it claims."""
    found = {s.name: s.status for s in seeds()}
    assert (found["steady"]["activeSite"], found["steady"]["epoch"]) == ("use1", 1)
    assert (found["failed-over"]["activeSite"], found["failed-over"]["epoch"]) == ("usw2", 2)
    assert (found["failed-back"]["activeSite"], found["failed-back"]["epoch"]) == ("use1", 3)
    assert any(not z["inTraffic"] for z in found["evacuated"]["zones"])
    assert found["recommended"]["recommendation"]["response"] == "region-failover"
    assert found["observed"]["epoch"] == 1 and found["observed"]["recommendation"]


def test_the_journal_catches_a_regression() -> None:
    """The oracle itself: an epoch written below one seen is a regression, a restart
    forgets what the stopped worker saw."""
    journal = Journal()
    journal.add("seen", 5)
    journal.add("status write", 5)
    journal.add("DNS change", 4, "to use1")
    journal.add("restart", 0)
    journal.add("status write", 1)
    assert journal.regressions() == ["DNS change to use1 under epoch 4 after seeing epoch 5"]


def test_a_mutation_lands_where_it_says() -> None:
    values = Values(any=None, time="soon", number=-1, site=7, key="extra")
    status = {"epoch": 3, "traffic": {"epoch": 3, "appliedTime": "2026-01-01T00:00:00Z"}}
    hot = (("traffic", "appliedTime"), ("epoch",))
    assert Mutation("hot", 0, values).apply(status, hot)["traffic"]["appliedTime"] == "soon"
    assert Mutation("hot", 1, values).apply(status, hot)["epoch"] == -1
    assert "epoch" not in Mutation("delete", 1, values).apply(status)
    assert Mutation("extra", 0, values).apply(status)["extra"] is None
    assert status["epoch"] == 3  # the original is left alone
