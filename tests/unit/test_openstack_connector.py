"""The OpenStack connector without servers: credentials forms and outcome classification."""

from __future__ import annotations

from pathlib import Path

import keystoneauth1.exceptions
import openstack.exceptions
import pytest
import requests

from controller.api.models import CloudProviderSpec
from controller.core.apiplane import CallOutcome
from controller.providers.errors import CredentialsError
from controller.providers.openstack.connector import (
    CapacityError,
    OpenStackConnector,
    OpenStackCredentials,
    classify,
)
from controller.providers.secrets import is_secret_key, redact, secret_values

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


@pytest.mark.parametrize(
    "key",
    ["password", "application_credential_secret", "client_secret", "token", "access_token"],
)
def test_every_secret_bearing_clouds_yaml_key_is_hidden(key: str) -> None:
    """Regression: only ``password`` and ``application_credential_secret`` were kept out of
    the auth settings and redacted; ``client_secret`` (OIDC) and ``token`` were not."""
    document = f"""
clouds:
  lifeboat:
    auth_type: v3oidcpassword
    auth:
      auth_url: http://127.0.0.1:5000/v3
      application_credential_id: not-a-secret-id
      {key}: {PLANTED}-{key}
    interface: public
"""
    creds = OpenStackCredentials.from_secret_data({"clouds.yaml": document}, "lifeboat")
    assert key not in creds.auth
    assert creds.auth["application_credential_id"] == "not-a-secret-id"
    assert creds.sdk_auth()[key] == f"{PLANTED}-{key}"
    assert PLANTED not in repr(creds)
    spec = CloudProviderSpec.model_validate(
        {
            "type": "openstack",
            "regions": ["RegionOne"],
            "credentials": {"source": "Secret", "secretRef": {"name": "os"}},
        }
    )
    connector = OpenStackConnector("os", spec, creds)
    assert PLANTED not in connector.redact(f"Keystone said: bad {key} {PLANTED}-{key}!")
    assert "not-a-secret-id" in connector.redact("id not-a-secret-id")


def test_secret_settings_outside_auth_are_hidden_and_still_used() -> None:
    document = f"""
clouds:
  lifeboat:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: u
      password: {PLANTED}
      project_name: p
    api_key: {PLANTED}-api
    interface: internal
"""
    creds = OpenStackCredentials.from_secret_data({"clouds.yaml": document}, "lifeboat")
    assert creds.sdk_extra() == {"interface": "internal", "api_key": f"{PLANTED}-api"}
    assert PLANTED not in repr(creds)
    assert f"{PLANTED}-api" in creds.secret_values()


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("application_credential_secret", True),
        ("client_secret", True),
        ("token", True),
        ("aws_secret_access_key", True),
        ("AWS_SESSION_TOKEN", True),
        ("private-key", True),
        ("access_key_id", False),
        ("application_credential_id", False),
        ("username", False),
        ("auth_url", False),
        ("project_name", False),
    ],
)
def test_one_rule_names_secret_keys(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redaction_stars_longest_values_first_and_ignores_tiny_ones() -> None:
    assert redact("a abcd abcdef", ["abcd", "abcdef", "a"]) == "a ********** **********"
    assert secret_values({"auth": {"password": "pw12", "user": "u"}, "token": ["t1234"]}) == [
        "pw12",
        "t1234",
    ]
