"""The OpenStack connector without servers: credentials forms and outcome classification."""

from __future__ import annotations

from pathlib import Path

import keystoneauth1.exceptions
import openstack.exceptions
import pytest
import requests

from controller.api.models import CloudProviderSpec
from controller.core.apiplane import CallOutcome
from controller.providers.openstack.connector import (
    CapacityError,
    CredentialsError,
    OpenStackConnector,
    OpenStackCredentials,
    classify,
)

PLANTED = "s3cr3t-planted-value"
CLOUDS = f"""
clouds:
  lifeboat:
    auth_type: password
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: lifeboat
      password: {PLANTED}
      project_name: lifeboat
    region_name: RegionOne
    interface: public
"""


def test_clouds_yaml_entry_is_used_and_its_password_hidden() -> None:
    creds = OpenStackCredentials.from_secret_data({"clouds.yaml": CLOUDS}, "lifeboat")
    assert creds.auth_type == "password"
    assert creds.auth["username"] == "lifeboat"
    assert "password" not in creds.auth
    assert creds.sdk_auth()["password"] == PLANTED
    assert PLANTED not in repr(creds)
    assert "region_name" not in creds.extra  # Lifeboat picks the region


def test_application_credentials_and_passwords() -> None:
    app = OpenStackCredentials.from_secret_data(
        {
            "auth_url": "http://k/v3",
            "application_credential_id": "abc",
            "application_credential_secret": PLANTED,
        },
        "lifeboat",
    )
    assert app.auth_type == "v3applicationcredential"
    pw = OpenStackCredentials.from_secret_data(
        {"auth_url": "http://k/v3", "username": "u", "password": PLANTED, "project_name": "p"},
        "lifeboat",
    )
    assert pw.auth["user_domain_name"] == "Default"
    assert PLANTED not in repr(app) + repr(pw)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "neither clouds.yaml"),
        ({"username": "u", "auth_url": "x"}, r"lacks key\(s\): project_name, password"),
        ({"clouds.yaml": CLOUDS.replace("lifeboat:", "other:", 1)}, "no cloud 'lifeboat'"),
        ({"clouds.yaml": "::: not yaml"}, "no cloud 'lifeboat'"),
    ],
)
def test_unusable_credentials_are_named_not_quoted(data: dict[str, str], message: str) -> None:
    with pytest.raises(CredentialsError, match=message) as caught:
        OpenStackCredentials.from_secret_data(data, "lifeboat")
    assert PLANTED not in str(caught.value)


def http(status: int, text: str = "") -> openstack.exceptions.HttpException:
    response = requests.Response()
    response.status_code = status
    return openstack.exceptions.HttpException(message=text, response=response)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, CallOutcome.OK),
        (http(429), CallOutcome.THROTTLED),
        (http(413, '{"overLimit": {}}'), CallOutcome.THROTTLED),
        (http(498, "Slow down"), CallOutcome.THROTTLED),
        (
            http(413, '{"overLimit": {"message": "Requested volume exceeds allowed quota"}}'),
            CallOutcome.CAPACITY_ERROR,
        ),
        (http(403, "Quota exceeded for instances: Requested 1"), CallOutcome.CAPACITY_ERROR),
        (http(503), CallOutcome.SERVER_ERROR),
        (http(401), CallOutcome.AUTH_ERROR),
        (http(404), CallOutcome.CLIENT_ERROR),
        (http(500, "No valid host was found."), CallOutcome.CAPACITY_ERROR),
        (CapacityError("No valid host"), CallOutcome.CAPACITY_ERROR),
        (keystoneauth1.exceptions.ConnectFailure(), CallOutcome.UNREACHABLE),
        (keystoneauth1.exceptions.ConnectTimeout(), CallOutcome.TIMEOUT),
        (requests.exceptions.ReadTimeout(), CallOutcome.TIMEOUT),
        (keystoneauth1.exceptions.http.TooManyRequests(), CallOutcome.THROTTLED),
        (keystoneauth1.exceptions.http.Unauthorized(), CallOutcome.AUTH_ERROR),
        (keystoneauth1.exceptions.http.ServiceUnavailable(), CallOutcome.SERVER_ERROR),
    ],
)
def test_classification(error: BaseException | None, outcome: CallOutcome) -> None:
    assert classify(error).outcome is outcome


def test_redaction_and_overrides() -> None:
    spec = CloudProviderSpec.model_validate(
        {
            "type": "openstack",
            "regions": ["RegionOne"],
            "credentials": {"source": "Secret", "secretRef": {"name": "os"}},
            "endpointOverrides": [
                {"service": "compute", "region": "RegionOne", "url": "http://127.0.0.1:8774/v2.1"},
                {"service": "identity", "url": "http://127.0.0.1:5000/v3"},
            ],
        }
    )
    creds = OpenStackCredentials.from_secret_data({"clouds.yaml": CLOUDS}, "lifeboat")
    connector = OpenStackConnector("os", spec, creds)
    assert connector.redact(f"error near {PLANTED}") == "error near **********"
    assert connector._overrides("RegionOne") == {
        "compute_endpoint_override": "http://127.0.0.1:8774/v2.1"
    }
    assert connector._identity_override("RegionTwo") == "http://127.0.0.1:5000/v3"


def test_tls_settings_and_the_ca_bundle_file() -> None:
    def connector(tls: dict[str, object]) -> OpenStackConnector:
        spec = CloudProviderSpec.model_validate(
            {
                "type": "openstack",
                "regions": ["RegionOne"],
                "credentials": {"source": "Secret", "secretRef": {"name": "os"}},
                "tls": tls,
            }
        )
        return OpenStackConnector("os", spec, None)

    assert connector({})._tls() == {"verify": True}
    assert connector({"insecureSkipVerify": True})._tls() == {"verify": False}
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    with_ca = connector({"caBundle": pem})
    settings = with_ca._tls()
    assert settings["verify"] is True
    path = Path(str(settings["cacert"]))
    assert path.read_text() == pem
    assert with_ca._tls() == settings  # written once
    with_ca.close()
    assert not path.exists()
