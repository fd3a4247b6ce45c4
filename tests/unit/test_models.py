"""The resource models: defaults, and every cross-field rule refusing bad input."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.api.models import CloudProviderSpec, ResilientAppSpec
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
