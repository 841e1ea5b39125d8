"""The ``imagecontains`` connection: its settings, the credentials requests are signed with, and STS.

Like the Amazon provider's connection wrapper and ``base_aws.py``, and kept apart from the transport
(``hooks/base_crowd.py``) and the public API (``hooks/imagecontains.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from airflow.providers.common.compat.sdk import mask_secret
from botocore.config import Config
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

from airflow_provider_imagecontains.exceptions import AccessDeniedError, ServiceError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

DEFAULT_ENDPOINT_URL = "https://crowd.us-east-1.amazonaws.com"
DEFAULT_REGION_NAME = "us-east-1"
ROLE_SESSION_NAME = "airflow-imagecontains"
# botocore logs signed request headers, canonical requests and AssumeRole response bodies at DEBUG.
BOTOCORE_SECRET_BEARING_LOGGERS = ("botocore.endpoint", "botocore.auth", "botocore.parsers")

_T = TypeVar("_T")


@dataclass(frozen=True)
class CrowdConnectionConfig:
    """The settings of an ``imagecontains`` connection, read once per hook.

    :param endpoint_url: base URL of the crowd API.
    :param region_name: region the requests are signed for.
    :param sts_endpoint_url: STS endpoint for GetCallerIdentity and AssumeRole (None: boto3's own, which
        honours ``AWS_ENDPOINT_URL_STS``); never derived from ``endpoint_url``.
    :param account_id: 12-digit account id of the task URLs (None: learned through STS).
    :param role_arn: role to assume through STS, refreshed before its credentials expire.
    :param profile_name: boto3 profile that supplies the credentials when no keys are given.
    :param access_key_id: AWS access key id (connection login).
    :param secret_access_key: AWS secret access key (connection password); never in ``repr``.
    :param session_token: session token of temporary keys; never in ``repr``.
    :param verify: check the service's TLS certificate (``True``), not (``False``), or against this CA bundle
        file or directory, as ``HttpHook``'s ``verify`` extra.
    :param proxies: ``{"https": url, "http": url, "all": url}`` proxies of both clients (None: see ``trust_env``).
    :param trust_env: with no ``proxies`` and ``verify=True``, take proxies (``HTTPS_PROXY``, ``NO_PROXY``, ...)
        and the CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) from the environment, as requests does.
    """

    endpoint_url: str = DEFAULT_ENDPOINT_URL
    region_name: str = DEFAULT_REGION_NAME
    sts_endpoint_url: str | None = None
    account_id: str | None = None
    role_arn: str | None = None
    profile_name: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    verify: bool | str = True
    proxies: Mapping[str, str] | None = field(default=None, repr=False)  # proxy URLs may hold credentials
    trust_env: bool = True

    @classmethod
    def from_connection(cls, conn: Connection) -> CrowdConnectionConfig:
        """Read and check the connection's login, password and extras (named like the Amazon provider's)."""
        extra = conn.extra_dejson
        endpoint_url = extra.get("endpoint_url")
        # The crowd endpoint is not an STS endpoint: STS uses its own setting, else boto3's (which reads
        # AWS_ENDPOINT_URL_STS and the profile's services section).
        sts_endpoint_url = ((extra.get("service_config") or {}).get("sts") or {}).get("endpoint_url")
        account_id = extra.get("account_id")
        if account_id is not None:
            account_id = str(account_id)
            if not (len(account_id) == 12 and account_id.isdigit()):
                raise ValueError(
                    f"Invalid account_id {account_id!r} in connection {conn.conn_id!r}: expected 12 digits."
                )
        if endpoint_url is not None and not str(endpoint_url).startswith(("https://", "http://")):
            raise ValueError(
                f"Invalid endpoint_url {endpoint_url!r} in connection {conn.conn_id!r}: expected an http(s) URL."
            )
        if bool(conn.login) != bool(conn.password):
            raise ValueError(
                f"Connection {conn.conn_id!r} needs both the AWS access key id (login) and the secret access key "
                "(password), or neither to use boto3's default credential chain."
            )
        verify = extra.get("verify", True)
        if isinstance(verify, str) and verify.strip().lower() in ("true", "false"):  # from a form's text field
            verify = verify.strip().lower() == "true"
        if not isinstance(verify, (bool, str)) or verify == "":
            raise ValueError(
                f"Invalid verify {verify!r} in connection {conn.conn_id!r}: expected true, false or a CA bundle path."
            )
        proxies = extra.get("proxies")
        if proxies is not None and not (
            isinstance(proxies, dict) and all(isinstance(v, str) for v in proxies.values())
        ):
            raise ValueError(
                f"Invalid proxies in connection {conn.conn_id!r}: expected an object such as "
                '{"https": "http://proxy.example.com:3128"}.'
            )
        return cls(
            endpoint_url=str(endpoint_url or DEFAULT_ENDPOINT_URL).rstrip("/"),
            region_name=extra.get("region_name") or DEFAULT_REGION_NAME,
            sts_endpoint_url=sts_endpoint_url,
            account_id=account_id,
            role_arn=extra.get("role_arn"),
            profile_name=extra.get("profile_name"),
            access_key_id=conn.login or None,
            secret_access_key=conn.password or None,
            session_token=extra.get("aws_session_token"),
            verify=verify,
            proxies=proxies,
            trust_env=_boolean(extra.get("trust_env", True), "trust_env", conn.conn_id),
        )


def _boolean(value: Any, name: str, conn_id: str) -> bool:
    """A boolean extra, given as JSON ``true``/``false`` or as the text a form field stores ("false")."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {name} {value!r} in connection {conn_id!r}: expected true or false.")
    return value


def resolve_credentials(config: CrowdConnectionConfig, conn_id: str, sts_config: Config) -> Credentials:
    """Credentials the requests are signed with; refreshed by botocore before they expire.

    :param sts_config: timeouts and retries of the STS client that assumes ``role_arn``.
    """
    for secret in (config.secret_access_key, config.session_token):
        if secret:
            mask_secret(secret)
    if config.access_key_id and config.secret_access_key and not config.role_arn:
        # Keys given and nothing to assume: no boto3 session needed (building one costs 5-20 ms of CPU,
        # once per trigger in a triggerer, in threads that hold the GIL against its event loop).
        return Credentials(config.access_key_id, config.secret_access_key, config.session_token, method="explicit")
    session = boto3.session.Session(
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        aws_session_token=config.session_token,
        region_name=config.region_name,
        profile_name=None if config.access_key_id else config.profile_name,
    )
    credentials = session.get_credentials()
    if credentials is None:
        raise AccessDeniedError(
            f"No AWS credentials for connection {conn_id!r}: set the access key id (login) "
            "and secret access key (password), or configure boto3's default chain (environment, profile, role)."
        )
    if config.role_arn:
        return _assume_role(config, conn_id, session, sts_config)
    return credentials


def caller_account_id(config: CrowdConnectionConfig, credentials: Credentials, conn_id: str, sts_config: Config) -> str:
    """The account id of the task URLs: from the connection, else STS GetCallerIdentity.

    :param sts_config: timeouts and retries of the STS client.
    """
    if config.account_id:
        return config.account_id
    frozen = credentials.get_frozen_credentials()
    sts = boto3.client(
        "sts",
        region_name=config.region_name,
        endpoint_url=config.sts_endpoint_url,
        config=sts_config,
        aws_access_key_id=frozen.access_key,
        aws_secret_access_key=frozen.secret_key,
        aws_session_token=frozen.token,
    )
    identity = _call_sts(conn_id, "GetCallerIdentity", sts.get_caller_identity)
    return str(identity["Account"])


def _call_sts(conn_id: str, operation: str, call: Callable[..., _T], **kwargs: Any) -> _T:
    try:
        with _botocore_silencer.silence():
            return call(**kwargs)
    except ClientError as err:
        details = err.response.get("Error", {})
        raise AccessDeniedError(
            f"STS {operation} failed for connection {conn_id!r} "
            f"({details.get('Code')}: {details.get('Message')}): check the credentials, role_arn and the STS "
            "endpoint (extra service_config.sts.endpoint_url), or set account_id in the connection extra.",
            code=details.get("Code"),
        ) from None
    except BotoCoreError as err:
        raise ServiceError(f"STS {operation} failed for connection {conn_id!r}: {err}") from None


def _assume_role(
    config: CrowdConnectionConfig, conn_id: str, session: boto3.session.Session, sts_config: Config
) -> RefreshableCredentials:
    sts = session.client("sts", region_name=config.region_name, endpoint_url=config.sts_endpoint_url, config=sts_config)
    role_arn = config.role_arn

    def fetch_role_credentials() -> dict[str, str]:
        answer = _call_sts(conn_id, "AssumeRole", sts.assume_role, RoleArn=role_arn, RoleSessionName=ROLE_SESSION_NAME)
        role_credentials = answer["Credentials"]
        mask_secret(role_credentials["SecretAccessKey"])
        mask_secret(role_credentials["SessionToken"])
        return {
            "access_key": role_credentials["AccessKeyId"],
            "secret_key": role_credentials["SecretAccessKey"],
            "token": role_credentials["SessionToken"],
            "expiry_time": role_credentials["Expiration"].isoformat(),
        }

    return RefreshableCredentials.create_from_metadata(
        metadata=fetch_role_credentials(), refresh_using=fetch_role_credentials, method="sts-assume-role"
    )


class _BotocoreDebugSilencer(logging.Filter):
    """Drops botocore's DEBUG records of a thread while it makes one of the hook's STS calls.

    The filter sits on botocore's secret-bearing loggers only while at least one such call runs, so
    importing the hook changes nothing for the rest of the process.
    """

    def __init__(self) -> None:
        super().__init__()
        self.quiet = threading.local()
        self._lock = threading.Lock()
        self._calls = 0

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG or not getattr(self.quiet, "active", False)

    @contextmanager
    def silence(self) -> Iterator[None]:
        """Keep botocore from logging this thread's STS signatures and AssumeRole's secrets at DEBUG."""
        with self._lock:
            if self._calls == 0:
                for name in BOTOCORE_SECRET_BEARING_LOGGERS:
                    logging.getLogger(name).addFilter(self)
            self._calls += 1
        self.quiet.active = True
        try:
            yield
        finally:
            self.quiet.active = False
            with self._lock:
                self._calls -= 1
                if self._calls == 0:
                    for name in BOTOCORE_SECRET_BEARING_LOGGERS:
                        logging.getLogger(name).removeFilter(self)


_botocore_silencer = _BotocoreDebugSilencer()
