"""Verification of AWS Signature Version 4 requests with botocore's own signer.

The server rebuilds the request the client says it signed (its ``SignedHeaders`` list, its
``x-amz-date``), lets botocore compute the signature with the caller's secret and compares the two
in constant time. Nothing here logs or returns a secret, token or signature.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed_headers>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


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
    scope = match["credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise SignatureError(
            "IncompleteSignature", "The credential scope must be KEY/DATE/REGION/SERVICE/aws4_request."
        )
    access_key_id, scope_date, scope_region, scope_service, _ = scope
    if scope_service != service:
        raise SignatureError("InvalidSignature", f"Credential should be scoped to service {service!r}.")
    if region is not None and scope_region != region:
        raise SignatureError("InvalidSignature", f"Credential should be scoped to region {region!r}.")

    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.datetime.strptime(amz_date, _AMZ_DATE_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise SignatureError(
            "IncompleteSignature", "The x-amz-date header is missing or not YYYYMMDDTHHMMSSZ."
        ) from None
    if scope_date != amz_date[:8]:
        raise SignatureError("InvalidSignature", "The credential scope date does not match x-amz-date.")
    if abs((now - signed_at).total_seconds()) > max_skew_seconds:
        raise SignatureError(
            "RequestExpired",
            f"Signature time {amz_date} is more than {max_skew_seconds // 60} minutes from the server time.",
        )

    key = lookup(access_key_id)
    if key is None:
        raise SignatureError("UnrecognizedClient", f"The access key id {access_key_id!r} is not known.")
    if key.session_token is not None:
        presented = headers.get("x-amz-security-token", "")
        if not hmac.compare_digest(presented.encode(), key.session_token.encode()):
            raise SignatureError("InvalidToken", "The security token included in the request is invalid.")
        if key.expires_at is not None and now >= key.expires_at:
            raise SignatureError("ExpiredToken", "The security token included in the request is expired.")

    signed_names = match["signed_headers"].split(";")
    if "host" not in signed_names:
        raise SignatureError("InvalidSignature", "SignedHeaders must include host.")
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
    signers = [SigV4Auth(credentials, scope_service, scope_region)]
    if "%" in raw_path:
        signers.append(_ClientPathSigV4Auth(credentials, scope_service, scope_region))
    for signer in signers:
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if hmac.compare_digest(expected.encode(), match["signature"].encode()):
            return key
    raise SignatureError(
        "InvalidSignature",
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS secret access key and signing method.",
    )
