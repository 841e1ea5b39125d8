"""Verification of AWS Signature Version 4 requests with botocore's own signer.

The server rebuilds the request the client says it signed (its ``SignedHeaders`` list, its
``x-amz-date``), lets botocore compute the signature with the caller's secret and compares the two
in constant time. Requests carry the signature in their ``Authorization`` header, or (presigned URLs, as
the hook makes for the images the server serves) in ``X-Amz-*`` query parameters with an expiry.
Nothing here logs or returns a secret, token or signature.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed_headers>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
# The longest a presigned URL may live, as for S3's.
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class SigningKey:
    """What the server knows about an access key id.

    :param account_id: the account the key acts for.
    :param secret_access_key: the secret to verify signatures with.
    :param session_token: the token temporary credentials must present, else None.
    :param expires_at: when temporary credentials stop working (UTC), else None.
    """

    account_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_at: datetime.datetime | None = None


class SignatureError(Exception):
    """The request is not signed by a known, current credential (always a 403).

    :param code: the AWS-style error code, e.g. ``InvalidSignature``.
    :param message: what is wrong, without any secret.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _ClientPathSigV4Auth(SigV4Auth):
    """SigV4 over the path exactly as it travelled, for clients that do not encode it a second time."""

    def _normalize_url_path(self, path: str) -> str:
        return path or "/"


def verify_signature(
    *,
    method: str,
    raw_path: str,
    query_string: str,
    headers: Mapping[str, str],
    body: bytes,
    service: str,
    region: str | None,
    lookup: Callable[[str], SigningKey | None],
    now: datetime.datetime,
    max_skew_seconds: int,
) -> SigningKey:
    """Return the signing key of the caller if the request carries a valid SigV4 signature.

    :param method: HTTP method.
    :param raw_path: the request path as sent (still percent-encoded).
    :param query_string: the raw query string, without ``?``.
    :param headers: request headers with lower-case names.
    :param body: the request body.
    :param service: the service the credential scope must name (``crowd`` or ``sts``).
    :param region: the region the credential scope must name, or None to accept the caller's.
    :param lookup: finds what the server knows about an access key id.
    :param now: the server's current time (UTC, timezone aware).
    :param max_skew_seconds: how far ``x-amz-date`` may be from ``now``.
    :raises SignatureError: for a missing, malformed, unknown, expired or wrong signature.
    """
    authorization = headers.get("authorization")
    if not authorization:
        raise SignatureError("MissingAuthenticationToken", "Request is missing an AWS Signature Version 4 signature.")
    match = _AUTHORIZATION.fullmatch(authorization.strip())
    if not match:
        raise SignatureError("IncompleteSignature", "The Authorization header is not a valid AWS4-HMAC-SHA256 header.")
    access_key_id, scope_region = _credential_scope(match["credential"], service, region)
    amz_date = headers.get("x-amz-date", "")
    signed_at = _signed_at(amz_date, match["credential"])
    if abs((now - signed_at).total_seconds()) > max_skew_seconds:
        raise SignatureError(
            "RequestExpired",
            f"Signature time {amz_date} is more than {max_skew_seconds // 60} minutes from the server time.",
        )
    key = _current_key(lookup, access_key_id, headers.get("x-amz-security-token", ""), now)
    signed_names = _signed_names(match["signed_headers"])
    declared_hash = headers.get("x-amz-content-sha256")
    if "x-amz-content-sha256" in signed_names and declared_hash != hashlib.sha256(body).hexdigest():
        # botocore would trust the declared hash; the body must really match it.
        raise SignatureError("InvalidSignature", "The request body does not match x-amz-content-sha256.")
    request = AWSRequest(
        method=method,
        url=f"http://{headers.get('host', '')}{raw_path}" + (f"?{query_string}" if query_string else ""),
        headers={name: headers.get(name, "") for name in signed_names},
        data=body,
    )
    request.context["timestamp"] = amz_date
    credentials = Credentials(access_key_id, key.secret_access_key)
    signers = [SigV4Auth(credentials, service, scope_region)]
    if "%" in raw_path:
        signers.append(_ClientPathSigV4Auth(credentials, service, scope_region))
    _compare(signers, request, match["signature"])
    return key


def is_presigned(query_string: str) -> bool:
    """Whether a request's query string carries a SigV4 signature (a presigned URL)."""
    return "X-Amz-Signature=" in query_string


def verify_presigned_url(
    *,
    method: str,
    raw_path: str,
    query_string: str,
    headers: Mapping[str, str],
    service: str,
    region: str | None,
    lookup: Callable[[str], SigningKey | None],
    now: datetime.datetime,
    max_skew_seconds: int,
) -> SigningKey:
    """Return the signing key of a presigned URL's signer while the URL is valid (botocore's ``SigV4QueryAuth``).

    :param method: HTTP method.
    :param raw_path: the request path as sent (still percent-encoded).
    :param query_string: the raw query string, without ``?``: the ``X-Amz-*`` parameters and any others.
    :param headers: request headers with lower-case names.
    :param service: the service the credential scope must name.
    :param region: the region the credential scope must name, or None to accept the signer's.
    :param lookup: finds what the server knows about an access key id.
    :param now: the server's current time (UTC, timezone aware).
    :param max_skew_seconds: how far in the future ``X-Amz-Date`` may be.
    :raises SignatureError: for a missing, malformed, unknown, expired or wrong signature.
    """
    parts = query_string.split("&")
    params = dict(parse_qsl(query_string, keep_blank_values=True))
    if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or not _SIGNATURE.fullmatch(
        params.get("X-Amz-Signature", "")
    ):
        raise SignatureError(
            "AuthorizationQueryParametersError", "The URL is not a valid AWS4-HMAC-SHA256 presigned URL."
        )
    credential = params.get("X-Amz-Credential", "")
    access_key_id, scope_region = _credential_scope(credential, service, region)
    amz_date = params.get("X-Amz-Date", "")
    signed_at = _signed_at(amz_date, credential)
    expires = params.get("X-Amz-Expires", "")
    if not (
        expires.isascii() and expires.isdigit() and len(expires) <= 7 and 1 <= int(expires) <= MAX_PRESIGNED_SECONDS
    ):
        raise SignatureError(
            "AuthorizationQueryParametersError", f"X-Amz-Expires must be 1 to {MAX_PRESIGNED_SECONDS} seconds."
        )
    if (signed_at - now).total_seconds() > max_skew_seconds:
        raise SignatureError("RequestExpired", f"Signature time {amz_date} is in the future.")
    if now >= signed_at + datetime.timedelta(seconds=int(expires)):
        raise SignatureError("RequestExpired", "The presigned URL has expired.")
    key = _current_key(lookup, access_key_id, params.get("X-Amz-Security-Token", ""), now)
    signed_names = _signed_names(params.get("X-Amz-SignedHeaders", ""))
    # The canonical query string is every parameter but the signature, as it travelled (botocore re-sorts it).
    unsigned_query = "&".join(part for part in parts if not part.startswith("X-Amz-Signature="))
    request = AWSRequest(
        method=method,
        url=f"http://{headers.get('host', '')}{raw_path}?{unsigned_query}",
        headers={name: headers.get(name, "") for name in signed_names},
    )
    request.context["timestamp"] = amz_date
    credentials = Credentials(access_key_id, key.secret_access_key)
    _compare(
        [SigV4QueryAuth(credentials, service, scope_region, expires=int(expires))], request, params["X-Amz-Signature"]
    )
    return key


def _credential_scope(credential: str, service: str, region: str | None) -> tuple[str, str]:
    """The access key id and region of ``KEY/DATE/REGION/SERVICE/aws4_request``, checked against what is expected."""
    scope = credential.split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise SignatureError(
            "IncompleteSignature", "The credential scope must be KEY/DATE/REGION/SERVICE/aws4_request."
        )
    access_key_id, _, scope_region, scope_service, _ = scope
    if scope_service != service:
        raise SignatureError("InvalidSignature", f"Credential should be scoped to service {service!r}.")
    if region is not None and scope_region != region:
        raise SignatureError("InvalidSignature", f"Credential should be scoped to region {region!r}.")
    return access_key_id, scope_region


def _signed_at(amz_date: str, credential: str) -> datetime.datetime:
    """When the request was signed (its ``x-amz-date``), which the credential scope's date must match."""
    try:
        signed_at = datetime.datetime.strptime(amz_date, _AMZ_DATE_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise SignatureError(
            "IncompleteSignature", "The x-amz-date header is missing or not YYYYMMDDTHHMMSSZ."
        ) from None
    if credential.split("/")[1] != amz_date[:8]:
        raise SignatureError("InvalidSignature", "The credential scope date does not match x-amz-date.")
    return signed_at


def _current_key(
    lookup: Callable[[str], SigningKey | None], access_key_id: str, presented_token: str, now: datetime.datetime
) -> SigningKey:
    """The known key of ``access_key_id``, with its session token presented and not yet expired."""
    key = lookup(access_key_id)
    if key is None:
        raise SignatureError("UnrecognizedClient", f"The access key id {access_key_id!r} is not known.")
    if key.session_token is not None:
        if not hmac.compare_digest(presented_token.encode(), key.session_token.encode()):
            raise SignatureError("InvalidToken", "The security token included in the request is invalid.")
        if key.expires_at is not None and now >= key.expires_at:
            raise SignatureError("ExpiredToken", "The security token included in the request is expired.")
    return key


def _signed_names(signed_headers: str) -> list[str]:
    signed_names = signed_headers.split(";")
    if "host" not in signed_names:
        raise SignatureError("InvalidSignature", "SignedHeaders must include host.")
    return signed_names


def _compare(signers: list[SigV4Auth], request: AWSRequest, signature: str) -> None:
    """Accept the request if one of ``signers`` computes ``signature`` for it (compared in constant time)."""
    for signer in signers:
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if hmac.compare_digest(expected.encode(), signature.encode()):
            return
    raise SignatureError(
        "InvalidSignature",
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS secret access key and signing method.",
    )
