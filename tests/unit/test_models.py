"""The resource models: defaults, and every cross-field rule refusing bad input."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.api.models import MAX_EPOCH, CloudProviderSpec, ResilientAppSpec, ResilientAppStatus
from tests.factories import INVALID_APPS, INVALID_BY_SCHEMA, Invalid, app_spec


def test_valid_app_parses_with_defaults() -> None:
    spec = ResilientAppSpec.model_validate(app_spec())
    assert spec.primary.name == "use1"
    assert spec.sites[1].role == "standby"
    assert spec.sites[1].priority == 100
    assert spec.failover.mode == "Automatic"
    assert spec.traffic.record_type == "A"
    assert spec.traffic.ttl == 60
    assert spec.health.success_threshold == 2


@pytest.mark.parametrize("case", INVALID_APPS + INVALID_BY_SCHEMA, ids=lambda c: c.name)
def test_invalid_app_is_refused_with_a_clear_message(case: Invalid) -> None:
    with pytest.raises(ValidationError) as caught:
        ResilientAppSpec.model_validate(case.spec())
    assert case.message in str(caught.value)


def test_wire_form_round_trips() -> None:
    spec = ResilientAppSpec.model_validate(app_spec())
    assert ResilientAppSpec.model_validate(spec.to_wire()) == spec


def test_provider_needs_secret_ref_when_source_is_secret() -> None:
    with pytest.raises(ValidationError, match="secretRef is required"):
        CloudProviderSpec.model_validate(
            {"type": "aws", "regions": ["us-east-1"], "credentials": {"source": "Secret"}}
        )
    spec = CloudProviderSpec.model_validate(
        {"type": "aws", "regions": ["us-east-1"], "credentials": {"source": "Environment"}}
    )
    assert spec.credentials.secret_ref is None


def test_provider_regions_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="regions must be unique"):
        CloudProviderSpec.model_validate(
            {
                "type": "aws",
                "regions": ["us-east-1", "us-east-1"],
                "credentials": {"source": "Environment"},
            }
        )


def test_merge_patch_nulls_unset_object_fields_but_not_list_items() -> None:
    from controller.api.models import ResilientAppStatus, ZoneStatus

    status = ResilientAppStatus(
        active_site="use1", zones=(ZoneStatus(site="use1", zone="a", state="Healthy"),)
    )
    patch = status.to_merge_patch()
    assert patch["lastFailover"] is None  # deletes a stale record
    assert "since" not in patch["zones"][0]  # list items carry no nulls


@pytest.mark.parametrize(
    "time",
    [
        "0236-04-17T23:12:29.000808-05:09:30",  # an offset with seconds
        "2026-01-01T00:00:00",  # no offset: local time of whoever reads it
        "2026-01-01",
        "20260101T000000Z",
        "0001-01-01T00:00:00+14:00",  # before the year 1 in UTC
        "9999-12-31T23:59:59-14:00",  # after the year 9999 in UTC
    ],
)
def test_a_status_time_is_strict_rfc3339(time: str) -> None:
    """Found by the worker fuzz suite: times Python reads but the API server's date-time
    format does not (or that cannot be written back) were taken, and every round that
    wrote them back failed. Now the field is refused, and dropped from a stored status."""
    with pytest.raises(ValidationError, match="is not an RFC 3339 time"):
        ResilientAppStatus.model_validate({"recentFailovers": [time]})


def test_nanosecond_times_as_go_writes_them_are_taken() -> None:
    status = ResilientAppStatus.model_validate(
        {"recentFailovers": ["2026-01-01T00:00:00.123456789Z"]}
    )
    assert status.recent_failovers == ("2026-01-01T00:00:00.123456789Z",)


def test_a_condition_type_twice_is_refused() -> None:
    """Found by the worker fuzz suite: a stored status with the Ready condition twice was
    kept, and every status the worker wrote back was refused (conditions are a map by
    type)."""
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ready["reason"] = "Steady"
    with pytest.raises(ValidationError, match="condition type 'Ready' appears twice"):
        ResilientAppStatus.model_validate({"conditions": [ready, ready]})


@pytest.mark.parametrize("field", ["epoch", "traffic", "lastFailover"])
def test_an_epoch_beyond_64_bits_is_refused(field: str) -> None:
    """Found by the worker fuzz suite: an epoch the API server cannot store was taken and
    every later status write was refused."""
    big = 2**64
    value: object = {
        "epoch": big,
        "traffic": {"epoch": big},
        "lastFailover": {
            "epoch": big,
            "fromSite": "use1",
            "toSite": "usw2",
            "reason": "x",
            "decidedTime": "2026-01-01T00:00:00Z",
        },
    }[field]
    with pytest.raises(ValidationError):
        ResilientAppStatus.model_validate({field: value})
    assert MAX_EPOCH == 2**53 - 1  # the CRD's bound, exact in the API server's float64


def test_observed_generations_stay_within_what_the_api_server_reads_exactly() -> None:
    """The fuzz suite's last defect: an observedGeneration beyond 2**53 - 1 (the API
    server reads JSON numbers as float64) was kept from a stored status and written back,
    and the API server refused every later status write of the app."""
    import pydantic

    from controller.api.models import MAX_EPOCH, Condition, ProviderStatus, ResilientAppStatus

    too_big = MAX_EPOCH + 1
    condition = {
        "type": "Ready",
        "status": "True",
        "observedGeneration": too_big,
        "lastTransitionTime": "2026-12-06T00:00:00Z",
        "reason": "Ok",
        "message": "",
    }
    for model, value in (
        (Condition, condition),
        (ResilientAppStatus, {"observedGeneration": too_big}),
        (ProviderStatus, {"observedGeneration": too_big}),
    ):
        with pytest.raises(pydantic.ValidationError):
            model.model_validate(value)
    assert Condition.model_validate({**condition, "observedGeneration": MAX_EPOCH})
