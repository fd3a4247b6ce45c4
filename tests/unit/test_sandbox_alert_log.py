"""What the demo prints of the alerts (sandbox.alert_log)."""

from __future__ import annotations

import pytest

from hack.generate import repo_root
from hack.monitoring import AlertSettings
from sandbox.alert_log import AlertLog, format_alert, rule_facts, seconds
from sandbox.alerting import Notification

T0 = 1_800_000_000.0
CASCADE = {
    "alertname": "LifeboatCascadeDetected",
    "namespace": "shop",
    "app": "web",
    "rule": "site-down",
    "severity": "critical",
}
ZONE = {
    "alertname": "LifeboatZoneDown",
    "namespace": "shop",
    "app": "web",
    "site": "use1",
    "zone": "us-east-1a",
    "state": "Down",
    "provider": "aws-sandbox",
    "region": "us-east-1",
    "severity": "warning",
}


def test_a_line_has_the_time_from_the_outage_the_status_and_what_tells_the_alert_apart() -> None:
    assert format_alert(4.06, "firing", CASCADE) == (
        "   +4.1s FIRING   LifeboatCascadeDetected shop/web rule=site-down [critical]"
    )
    assert format_alert(62, "resolved", ZONE, "note") == (
        "  +62.0s RESOLVED LifeboatZoneDown shop/web site=use1 state=Down zone=us-east-1a "
        "[warning] (note)"
    )
    # A region's alert has no app: its provider and region are what tell it apart.
    impaired = {"alertname": "LifeboatApiPlaneImpaired", "provider": "aws", "region": "x"}
    assert format_alert(-1.25, "pending", impaired) == (
        "   -1.2s PENDING  LifeboatApiPlaneImpaired provider=aws region=x"
    )


def test_the_log_keeps_arrivals_in_order_and_knows_what_still_fires() -> None:
    log = AlertLog()
    log.notified(Notification("firing", ZONE, {}), at=T0 + 64)
    log.notified(Notification("firing", CASCADE, {}), at=T0 + 4)
    log.notified(Notification("resolved", ZONE, {}), at=T0 + 65)
    assert [s.line(T0) for s in log.seen()] == [
        format_alert(4, "firing", CASCADE),
        format_alert(64, "firing", ZONE),
        format_alert(65, "resolved", ZONE),
    ]
    assert [s.labels["alertname"] for s in log.firing()] == ["LifeboatCascadeDetected"]
    assert log.notified_names() == {"LifeboatCascadeDetected", "LifeboatZoneDown"}


def test_a_pending_alert_is_logged_once_and_never_counts_as_notified() -> None:
    log = AlertLog()
    assert log.pending(ZONE, T0 + 3) is not None
    assert log.pending(ZONE, T0 + 3) is None
    assert log.firing() == []
    assert log.notified_names() == set()
    log.notified(Notification("firing", CASCADE, {}), at=T0 + 4)
    assert log.pending(CASCADE, T0 + 4) is None  # already notified
    assert [s.status for s in log.seen()] == ["pending", "firing"]


def test_durations_in_seconds() -> None:
    assert seconds("1m30s") == 90
    assert seconds("10m") == 600
    assert seconds("500ms") == 0.5
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        seconds("10 minutes")


def test_rule_facts_are_the_charts_for_and_look_back_window() -> None:
    facts = rule_facts(repo_root())
    assert facts["LifeboatZoneDown"].pending_for == "1m"
    assert facts["LifeboatZoneDown"].lookback is None
    assert facts["LifeboatCascadeDetected"].pending_for is None
    assert facts["LifeboatCascadeDetected"].lookback == "10m"
    assert facts["LifeboatFailoverStarted"].lookback == "15m"
    assert "resolves about 10m after" in facts["LifeboatCascadeDetected"].why_still_firing()
    assert facts["LifeboatZoneDown"].why_pending() == "for: 1m, as the chart ships it"
    shortened = rule_facts(repo_root(), AlertSettings(pending_for="2s"))
    assert shortened["LifeboatZoneDown"].why_pending() == "for: 2s, shortened for the sandbox"
