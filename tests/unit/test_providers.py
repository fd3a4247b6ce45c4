"""Provider plumbing without servers: endpoints, credentials, outcome classification."""

from __future__ import annotations

import botocore.exceptions
import pytest

from controller.api.models import EndpointOverride
from controller.core.apiplane import CallOutcome
from controller.providers.aws.connector import AwsCredentials
from controller.providers.calls import resolve_endpoint
from controller.providers.errors import CredentialsError
from controller.providers.outcomes import classify
from tests.factories import client_error


def override(url: str, service: str | None = None, region: str | None = None) -> EndpointOverride:
    return EndpointOverride(url=url, service=service, region=region)


OVERRIDES = (
    override("http://any"),
    override("http://use1", region="us-east-1"),
    override("http://r53", service="route53"),
    override("http://ec2-use1", service="ec2", region="us-east-1"),
)


@pytest.mark.parametrize(
    ("service", "region", "expected"),
    [
        ("ec2", "us-east-1", "http://ec2-use1"),
        ("route53", "us-east-1", "http://r53"),
        ("sts", "us-east-1", "http://use1"),
        ("sts", "eu-west-1", "http://any"),
    ],
)
def test_most_specific_endpoint_wins(service: str, region: str, expected: str) -> None:
    assert resolve_endpoint(OVERRIDES, service, region) == expected


def test_no_override_means_the_public_endpoint() -> None:
    assert resolve_endpoint((override("http://x", region="us-west-2"),), "ec2", "us-east-1") is None


def test_credentials_accept_both_key_styles_and_hide_secrets() -> None:
    secret_value = "wJalrXUtnFEMI-planted-secret"
    for data in (
        {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": secret_value},
        {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": secret_value},
    ):
        creds = AwsCredentials.from_secret_data(data)
        assert creds.secret_access_key.get_secret_value() == secret_value
        assert secret_value not in repr(creds) and secret_value not in str(creds)


def test_missing_keys_are_named_without_values() -> None:
    with pytest.raises(CredentialsError) as caught:
        AwsCredentials.from_secret_data({"aws_access_key_id": "AKIDEXAMPLE"})
    assert "aws_secret_access_key" in str(caught.value)
    assert "AKIDEXAMPLE" not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, CallOutcome.OK),
        (client_error("RequestLimitExceeded", 503), CallOutcome.THROTTLED),
        (client_error("Throttling", 400), CallOutcome.THROTTLED),
        (client_error("SlowDown", 503), CallOutcome.THROTTLED),
        (client_error("InsufficientInstanceCapacity", 500), CallOutcome.CAPACITY_ERROR),
        (client_error("AuthFailure", 401), CallOutcome.AUTH_ERROR),
        (client_error("InvalidClientTokenId", 403), CallOutcome.AUTH_ERROR),
        (client_error("InternalError", 500), CallOutcome.SERVER_ERROR),
        (client_error("Whatever", 502), CallOutcome.SERVER_ERROR),
        (client_error("NoSuchHostedZone", 404), CallOutcome.CLIENT_ERROR),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), CallOutcome.TIMEOUT),
        (
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
            CallOutcome.UNREACHABLE,
        ),
        (botocore.exceptions.NoCredentialsError(), CallOutcome.AUTH_ERROR),
    ],
)
def test_classification(error: BaseException | None, outcome: CallOutcome) -> None:
    assert classify(error).outcome is outcome


def test_only_transient_outcomes_are_retried() -> None:
    assert {o for o in CallOutcome if o.transient} == {
        CallOutcome.THROTTLED,
        CallOutcome.SERVER_ERROR,
        CallOutcome.TIMEOUT,
        CallOutcome.UNREACHABLE,
    }
