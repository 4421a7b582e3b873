"""boto3 sessions and clients with one retry policy and an endpoint override.

- Retries: botocore's own retry handler, ``standard`` mode with 6 attempts by
  default (``adaptive`` adds client-side rate limiting; pick it with
  ``LLMDEPLOY_AWS_RETRY_MODE=adaptive`` or AWS's ``AWS_RETRY_MODE``);
  ``LLMDEPLOY_AWS_MAX_ATTEMPTS`` / ``AWS_MAX_ATTEMPTS`` change the attempts.
- ``LLMDEPLOY_AWS_ENDPOINT_URL`` sends every call to one endpoint (a moto
  server in tests, LocalStack by hand).
- Clients are cached per thread: a boto3 ``Session`` is not thread-safe, so each
  worker thread of the reaper gets its own session and clients (sharing one
  botocore data loader, so the service models are read once per process).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from llmdeploy.errors import CloudError, MissingDependencyError

ENDPOINT_ENV = "LLMDEPLOY_AWS_ENDPOINT_URL"
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_RETRY_MODE = "standard"

_local = threading.local()


def endpoint_url() -> str | None:
    return os.environ.get(ENDPOINT_ENV) or None


def retry_config() -> dict[str, Any]:
    mode = os.environ.get("LLMDEPLOY_AWS_RETRY_MODE") or os.environ.get("AWS_RETRY_MODE") or DEFAULT_RETRY_MODE
    raw = os.environ.get("LLMDEPLOY_AWS_MAX_ATTEMPTS") or os.environ.get("AWS_MAX_ATTEMPTS") or str(DEFAULT_MAX_ATTEMPTS)
    try:
        attempts = max(1, int(raw))
    except ValueError:
        attempts = DEFAULT_MAX_ATTEMPTS
    if mode not in ("standard", "adaptive", "legacy"):
        mode = DEFAULT_RETRY_MODE
    return {"mode": mode, "max_attempts": attempts}


def new_session(region: str | None = None):
    """A fresh boto3 session (one per thread). Tests wrap this to register botocore event hooks."""
    try:
        import boto3
    except ImportError:  # pragma: no cover - boto3 ships with the infra extra
        raise MissingDependencyError(
            "boto3 is not installed.", hint="Install the AWS extra: pip install 'llmdeploy[infra]'."
        ) from None
    import botocore.session

    core = botocore.session.Session()
    core.register_component("data_loader", _shared_loader())
    return boto3.session.Session(region_name=region, botocore_session=core)


_loader = None
_loader_lock = threading.Lock()


def _shared_loader():
    """One botocore data loader for every session: service models are parsed once per process, not per thread."""
    global _loader
    with _loader_lock:
        if _loader is None:
            import botocore.session

            _loader = botocore.session.Session().get_component("data_loader")
        return _loader


def client(service: str, region: str):
    """A boto3 client for ``service`` in ``region``, cached for this thread."""
    cache: dict[tuple[str, str], Any] = getattr(_local, "clients", None) or {}
    _local.clients = cache
    key = (service, region)
    if key not in cache:
        from botocore.config import Config

        sessions: dict[str, Any] = getattr(_local, "sessions", None) or {}
        _local.sessions = sessions
        if region not in sessions:
            sessions[region] = new_session(region)
        config = Config(retries=retry_config(), connect_timeout=10, read_timeout=60, max_pool_connections=32)
        cache[key] = sessions[region].client(service, region_name=region, endpoint_url=endpoint_url(), config=config)
    return cache[key]


def require_credentials(region: str) -> None:
    """CloudError in one line when boto3 finds no credentials at all (before any call is attempted)."""
    if new_session(region).get_credentials() is None:
        raise CloudError("no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use SSO/OIDC).",
                         hint="Check with: aws sts get-caller-identity.")


def reset() -> None:
    """Forget this thread's sessions and clients (tests switch endpoints between runs)."""
    _local.clients = {}
    _local.sessions = {}


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, '' for anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_throttling(exc: BaseException) -> bool:
    code = error_code(exc)
    return code in THROTTLING_CODES or "Throttl" in code or "TooManyRequests" in code


THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "EC2ThrottledException",
        "RequestThrottled",
        "PriorRequestNotComplete",
    }
)

# Error codes meaning the credentials themselves are missing, malformed, unknown or expired: the fix is new credentials
# (aws sso login, aws configure), not a policy. AWS's "Common Errors" of every API reference (ExpiredTokenException,
# IncompleteSignature, InvalidClientTokenId, MissingAuthenticationToken, and RequestExpired: a clock more than 15
# minutes off the request's date stamp); the JSON-protocol services' UnrecognizedClientException and
# InvalidSignatureException; EC2's AuthFailure; the query protocol's and S3's ExpiredToken and SignatureDoesNotMatch,
# S3's InvalidAccessKeyId. (botocore's service models leave these common errors out; moto's own authorization
# check answers InvalidClientTokenId, SignatureDoesNotMatch, AuthFailure and, for a missing permission, AccessDenied.)
CREDENTIAL_CODES = frozenset({
    "AuthFailure", "ExpiredToken", "ExpiredTokenException", "IncompleteSignature", "InvalidAccessKeyId",
    "InvalidClientTokenId", "InvalidSignatureException", "MissingAuthenticationToken", "RequestExpired",
    "SignatureDoesNotMatch", "UnrecognizedClientException",
})
# Valid credentials without the permission (the Common Errors' AccessDeniedException, S3's AccessDenied, EC2's
# UnauthorizedOperation): the fix is a policy.
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
# botocore exceptions raised before any request when it finds no usable credentials (botocore.exceptions).
MISSING_CREDENTIALS = frozenset({"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"})


def is_credentials_problem(exc: BaseException) -> bool:
    """Missing, rejected or expired credentials: new credentials fix it."""
    return error_code(exc) in CREDENTIAL_CODES or type(exc).__name__ in MISSING_CREDENTIALS


def describe_failure(exc: BaseException) -> str:
    """One line for an AWS failure: the code and message, not a traceback."""
    code = error_code(exc)
    if code:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
        return f"{code}: {message}".rstrip(": ")
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use SSO/OIDC)"
    return f"{name}: {exc}"


def cloud_error(exc: BaseException, doing: str) -> CloudError:
    """Wrap an AWS failure the user must act on in a one-line CloudError."""
    hint = None
    if is_credentials_problem(exc):
        hint = "Check your AWS credentials (aws sts get-caller-identity)."
    return CloudError(f"{doing} failed: {describe_failure(exc)}.", hint=hint)
