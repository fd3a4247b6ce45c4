"""Classify the outcome of every cloud API call.

API-plane health is judged from these outcomes, and the retry policy retries only the
transient ones. The tables are data so that they can be read, reviewed and extended in one
place.
"""

from __future__ import annotations

from dataclasses import dataclass

import botocore.exceptions

from controller.core.apiplane import CallOutcome

AWS_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "EC2ThrottledException",
        "BandwidthLimitExceeded",
        "SlowDown",
        "PriorRequestNotComplete",
        "ProvisionedThroughputExceededException",
    }
)
AWS_CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientCapacityException",
        "ResourceLimitExceeded",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
    }
)
AWS_AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)
AWS_SERVER_CODES = frozenset(
    {"InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable", "Unavailable"}
)


@dataclass(frozen=True)
class Classified:
    outcome: CallOutcome
    code: str
    """The provider's own error code (or exception name); empty on success."""


def classify(error: BaseException | None) -> Classified:
    """The outcome of a call that raised ``error`` (``None``: it succeeded)."""
    if error is None:
        return Classified(CallOutcome.OK, "")
    if isinstance(error, botocore.exceptions.ClientError):
        return _classify_client_error(error)
    if isinstance(error, botocore.exceptions.ConnectTimeoutError | TimeoutError):
        return Classified(CallOutcome.TIMEOUT, type(error).__name__)
    if isinstance(error, botocore.exceptions.ReadTimeoutError):
        return Classified(CallOutcome.TIMEOUT, type(error).__name__)
    if isinstance(
        error,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | ConnectionError,
    ):
        return Classified(CallOutcome.UNREACHABLE, type(error).__name__)
    if isinstance(
        error, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return Classified(CallOutcome.AUTH_ERROR, type(error).__name__)
    if isinstance(error, botocore.exceptions.HTTPClientError):
        return Classified(CallOutcome.UNREACHABLE, type(error).__name__)
    return Classified(CallOutcome.CLIENT_ERROR, type(error).__name__)


def _classify_client_error(error: botocore.exceptions.ClientError) -> Classified:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if status == 503 and code in ("", "503") and error.operation_name.startswith("Head"):
        # S3 answers HEAD without a body: a bare 503 there is S3 saying SlowDown.
        return Classified(CallOutcome.THROTTLED, "SlowDown")
    if code in AWS_THROTTLING_CODES or status == 429:
        return Classified(CallOutcome.THROTTLED, code or str(status))
    if code in AWS_CAPACITY_CODES:
        return Classified(CallOutcome.CAPACITY_ERROR, code)
    if code in AWS_AUTH_CODES or status in (401, 403):
        return Classified(CallOutcome.AUTH_ERROR, code or str(status))
    if code in AWS_SERVER_CODES or status >= 500:
        return Classified(CallOutcome.SERVER_ERROR, code or str(status))
    return Classified(CallOutcome.CLIENT_ERROR, code or str(status))


def describe(error: BaseException) -> str:
    """The outcome of a failed call in words, with the provider's own message if any.

    Provider messages name resources and rules, not credentials; callers still pass the
    text through their connector's ``redact`` before it leaves the process.
    """
    verdict = classify(error)
    text = f"{verdict.outcome.value} ({verdict.code})"
    if isinstance(error, botocore.exceptions.ClientError):
        message = str(error.response.get("Error", {}).get("Message", "")).strip()
        if message:
            text += f": {message[:300]}"
    return text
