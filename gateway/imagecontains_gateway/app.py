"""The FastAPI app of the local Crowd API server: the task routes, STS and error handling."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import re
import secrets
import string
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagecontains_gateway.config import DEMO_ACCOUNT, REGION_NAME, SERVICE_NAME, ServerConfig
from imagecontains_gateway.faults import STATS_PATH, FaultInjector
from imagecontains_gateway.guards import (
    LOOPBACK_NAMES,
    AccountRateLimit,
    AllowedHosts,
    BodyLimit,
    BodyRule,
    Scope,
)
from imagecontains_gateway.human import HumanWorkforce
from imagecontains_gateway.images import LocalImages
from imagecontains_gateway.logs import redact_server_logs
from imagecontains_gateway.prolific import ProlificWorkforce, prolific_client
from imagecontains_gateway.prolific_pages import ProlificPages
from imagecontains_gateway.protocol import HardenedConfig, bounded_protocol
from imagecontains_gateway.quality import AnswerKey
from imagecontains_gateway.service import CrowdError, CrowdService
from imagecontains_gateway.sigv4 import SignatureError, SigningKey, verify_presigned_url, verify_signature
from imagecontains_gateway.store import TaskStore
from imagecontains_gateway.ui import PAGE_BODIES, UI_PATHS, mount_workforce_ui
from imagecontains_gateway.workforce import SimulatedWorkforce

log = logging.getLogger(__name__)

TASK_PATH = "/{account}/functions/{function}/tasks/{task}"
# Cancelling processing tasks: an operation of its own (the Crowd API's DELETE of a processing task stays 409).
CANCEL_PATH = "/{account}/functions/{function}/cancellations"
STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
_ROLE_ARN = re.compile(r"arn:aws:iam::(\d{12}):role/[\w+=,.@/-]{1,64}")
# The DurationSeconds AssumeRole accepts (AWS STS API reference: 15 minutes to 12 hours).
MIN_SESSION_SECONDS, MAX_SESSION_SECONDS = 900, 43200
# An idle keep-alive connection is closed after this long (uvicorn's default).
KEEP_ALIVE_SECONDS = 5
# How often processing tasks are checked against their deadline.
_SWEEP_SECONDS = 1.0


class CrowdServerApp:
    """Holds what one running server shares: config, store, service, workforce, fault injector.

    :param config: the server settings.
    :param db_path: the SQLite file of tasks, answers and balances.
    :param host_names: the names clients reach the server by (a task's image URL naming one of them and
        ``/images/`` names a local image).
    """

    def __init__(self, config: ServerConfig, db_path: str, host_names: Iterable[str] = LOOPBACK_NAMES) -> None:
        self.config = config
        self.db_path = db_path
        self.local_images = LocalImages(config.images_dir, host_names)
        self._account_rates = AccountRateLimit(config.account_requests_per_second, config.account_request_burst)
        self._keys = {a.access_key_id: SigningKey(a.account_id, a.secret_access_key) for a in config.accounts}
        self.service: CrowdService | None = None
        # People answering on the worker page (docs/workforce.md), unless the workforce is all simulated.
        self.human = HumanWorkforce(config, db_path) if config.workforce != "simulated" else None
        # Prolific participants (docs/prolific.md); the token is checked here so a refused one stops the start.
        prolific = ProlificWorkforce(config, prolific_client(config)) if config.workforce == "prolific" else None
        if self.human is not None and prolific is not None:
            self.human.problem_sources.append(lambda: prolific.failure)  # the dashboard says when its loop died
        self.prolific = prolific
        self.api = self._build_api()
        self.faults = FaultInjector(self.api, config)
        self._api_bodies = BodyRule(config.max_body_bytes)
        self.asgi = BodyLimit(self.faults, self._body_rule, _refusal)

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        store = TaskStore(self.db_path)
        store.open_accounts([a.account_id for a in self.config.accounts], round(self.config.starting_balance * 1e6))
        store.release_claims()
        check_task = self.prolific.check_task if self.prolific is not None else None
        self.service = service = CrowdService(store, self.config, check_task=check_task, local_images=self.local_images)
        answer_key = AnswerKey.load(self.config.answer_key_path) if self.config.answer_key_path else None
        workforce = SimulatedWorkforce(
            service,
            crowd=() if self.config.workforce in ("human", "prolific") else self.config.crowd_classes,
            delay=self.config.answer_delay_seconds,
            after=self.config.simulated_after_seconds,
            answer_key=answer_key,
            seed=self.config.seed,
        )
        workforce.start()
        if self.human is not None:
            self.human.start(service)
        if self.prolific is not None:
            self.prolific.start(service)
        sweeper = asyncio.create_task(self._sweep_deadlines(service))
        try:
            yield
        finally:
            sweeper.cancel()
            await workforce.stop()
            if self.human is not None:
                await self.human.stop()
            if self.prolific is not None:
                await self.prolific.stop()
            store.close()

    @staticmethod
    async def _sweep_deadlines(service: CrowdService) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            service.expire_due()

    def _build_api(self) -> FastAPI:
        api = FastAPI(
            title="Local MTurk Crowd API", lifespan=self.lifespan, docs_url=None, redoc_url=None, openapi_url=None
        )
        api.add_api_route(TASK_PATH, self.put_task, methods=["PUT"])
        api.add_api_route(TASK_PATH, self.get_task, methods=["GET"])
        api.add_api_route(TASK_PATH, self.delete_task, methods=["DELETE"])
        api.add_api_route(CANCEL_PATH, self.cancel_tasks, methods=["POST"])
        api.add_api_route("/", self.sts, methods=["GET", "POST"])
        if self.config.expose_stats:
            api.add_api_route(STATS_PATH, self.request_counts, methods=["GET"])
        if self.human is not None:
            mount_workforce_ui(api, self.human, self.local_images, self.presigned_account)
        if self.prolific is not None:
            api.include_router(ProlificPages(self.prolific, self.local_images).router)
        api.add_exception_handler(StarletteHTTPException, _http_exception)
        api.add_exception_handler(RequestValidationError, _validation_exception)
        api.add_exception_handler(Exception, _unexpected_exception)
        return api

    # Crowd routes

    async def put_task(self, request: Request, account: str, function: str, task: str) -> Response:
        try:
            body = await self._authorized(request, account)
            status, stored = self._service.put_task(account, function, task, body)
        except CrowdError as err:
            return error_response(err)
        return Response(stored.document_json(), status, media_type="application/json")

    async def get_task(self, request: Request, account: str, function: str, task: str) -> Response:
        try:
            await self._authorized(request, account)
            stored = self._service.get_task(account, function, task)
        except CrowdError as err:
            return error_response(err)
        return Response(stored.document_json(), 200, media_type="application/json")

    async def delete_task(self, request: Request, account: str, function: str, task: str) -> Response:
        try:
            await self._authorized(request, account)
            self._service.delete_task(account, function, task)
        except CrowdError as err:
            return error_response(err)
        return Response(status_code=204)

    async def cancel_tasks(self, request: Request, account: str, function: str) -> Response:
        try:
            body = await self._authorized(request, account)
            cancelled = self._service.cancel_tasks(account, function, body)
        except CrowdError as err:
            return error_response(err)
        return Response(json.dumps({"cancelled": cancelled}), 200, media_type="application/json")

    async def request_counts(self) -> Response:
        counts = [[method, status, n] for (method, status), n in self.faults.request_counts.items()]
        return Response(json.dumps(counts), media_type="application/json")

    @property
    def _service(self) -> CrowdService:
        if self.service is None:
            raise CrowdError(503, "ServiceUnavailable", "The server is starting.")
        return self.service

    async def _authorized(self, request: Request, account: str) -> bytes:
        """Return the body once the request is signed by ``account`` itself, within the account's request rate."""
        body = await request.body()
        key = self._verify(request, body, SERVICE_NAME, REGION_NAME)
        if key.account_id != account:
            raise CrowdError(403, "AccessDenied", f"Your credentials do not grant access to account {account!r}.")
        self._within_rate(key)
        return body

    def _within_rate(self, key: SigningKey) -> None:
        retry_after = self._account_rates.retry_after(key.account_id)
        if retry_after is not None:
            raise CrowdError(
                429,
                "Throttled",
                f"Account {key.account_id} passed its {self.config.account_requests_per_second:g} requests a second; "
                "retry after the Retry-After delay.",
                {"Retry-After": str(retry_after)},
            )

    def _body_rule(self, scope: Scope) -> BodyRule:
        # The pages take only the small forms they send themselves (never a multipart upload).
        return PAGE_BODIES if scope["path"].startswith(UI_PATHS) else self._api_bodies

    def _verify(self, request: Request, body: bytes, service: str, region: str | None) -> SigningKey:
        try:
            return verify_signature(**self._signed_request(request), body=body, service=service, region=region)
        except SignatureError as err:
            raise CrowdError(403, err.code, err.message) from None

    def presigned_account(self, request: Request) -> str:
        """The account whose presigned URL (``ImageContainsHook.presign_image_url``) ``request`` follows.

        :raises SignatureError: for a URL not signed by a known account, or expired.
        """
        key = verify_presigned_url(**self._signed_request(request), service=SERVICE_NAME, region=REGION_NAME)
        return key.account_id

    def _signed_request(self, request: Request) -> dict[str, Any]:
        """What a SigV4 check reads of ``request``: method, raw path and query, headers, the key lookup and clock."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in request.scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        return {
            "method": request.method,
            "raw_path": request.scope.get("raw_path", request.scope["path"].encode()).decode("latin-1").split("?")[0],
            "query_string": request.scope["query_string"].decode("latin-1"),
            "headers": headers,
            "lookup": self._lookup_key,
            "now": datetime.datetime.now(datetime.timezone.utc),
            "max_skew_seconds": self.config.clock_skew_seconds,
        }

    def _lookup_key(self, access_key_id: str) -> SigningKey | None:
        key = self._keys.get(access_key_id)
        if key is not None or self.service is None:
            return key
        session = self.service.store.session(access_key_id)
        if session is None:
            return None
        account, secret, token, expires_at = session
        return SigningKey(account, secret, token, datetime.datetime.fromtimestamp(expires_at, datetime.timezone.utc))

    # STS (query protocol, XML answers)

    async def sts(self, request: Request) -> Response:
        try:
            body = await request.body()
            params = dict(parse_qsl(request.scope["query_string"].decode("latin-1")))
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                params.update(parse_qsl(body.decode("utf-8", "replace")))
            key = self._verify(request, body, "sts", None)
            self._within_rate(key)
            action = params.get("Action")
            if action == "GetCallerIdentity":
                return _sts_response(action, _caller_identity(key, request))
            if action == "AssumeRole":
                return _sts_response(action, self._assume_role(key, params))
            raise CrowdError(
                400, "InvalidAction", f"Action {action!r} is not supported; use GetCallerIdentity or AssumeRole."
            )
        except CrowdError as err:
            return _sts_error(err)

    def _assume_role(self, caller: SigningKey, params: dict[str, str]) -> str:
        role_arn, session_name = params.get("RoleArn", ""), params.get("RoleSessionName", "")
        role = _ROLE_ARN.fullmatch(role_arn)
        if role is None or not session_name:
            raise CrowdError(400, "ValidationError", f"Invalid RoleArn {role_arn!r} or missing RoleSessionName.")
        if role[1] != caller.account_id:
            raise CrowdError(403, "AccessDenied", f"Not authorized to assume role {role_arn!r}.")
        requested = params.get("DurationSeconds", "3600")
        # ASCII digits only, bounded as AWS bounds them: str.isdigit() takes "²", and int() refuses 5,000 digits.
        if not (requested.isascii() and requested.isdigit() and len(requested) <= 5) or not (
            MIN_SESSION_SECONDS <= int(requested) <= MAX_SESSION_SECONDS
        ):
            raise CrowdError(
                400,
                "ValidationError",
                f"Invalid DurationSeconds {requested[:20]!r}: expected {MIN_SESSION_SECONDS} to {MAX_SESSION_SECONDS}.",
            )
        duration = min(int(requested), self.config.session_duration_seconds)
        expires_at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=duration)
        if caller.expires_at is not None:
            # Role chaining: temporary credentials never outlive the session that asked for them.
            expires_at = min(expires_at, caller.expires_at)
        access_key_id = "ASIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
        secret, token = secrets.token_urlsafe(30), secrets.token_urlsafe(96)
        self._service.store.add_session(access_key_id, caller.account_id, secret, token, expires_at.timestamp())
        return (
            f"<Credentials><AccessKeyId>{access_key_id}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>"
            f"<SessionToken>{token}</SessionToken>"
            f"<Expiration>{expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration></Credentials>"
            f"<AssumedRoleUser><AssumedRoleId>AROA{access_key_id[4:]}:{escape(session_name)}</AssumedRoleId>"
            f"<Arn>{escape(_assumed_role_arn(role_arn, session_name))}</Arn></AssumedRoleUser>"
        )


def error_response(err: CrowdError) -> Response:
    """The API's error body ``{"code": ..., "message": ...}`` (never a stack trace)."""
    body = json.dumps({"code": err.code, "message": err.message})
    return Response(body, err.status, headers=err.headers, media_type="application/json")


def _refusal(scope: Scope, status: int, code: str, message: str) -> Response:
    """A refusal before routing, in the format of the route asked for: STS XML, plain text for pages, else JSON."""
    if scope["path"] == "/":
        return _sts_error(CrowdError(status, code, message))
    if scope["path"].startswith(UI_PATHS):
        return Response(message, status, media_type="text/plain; charset=utf-8")
    return error_response(CrowdError(status, code, message))


def _caller_identity(key: SigningKey, request: Request) -> str:
    access_key_id = request.headers.get("authorization", "").split("Credential=", 1)[-1].split("/", 1)[0]
    if key.session_token is None:
        arn, user_id = f"arn:aws:iam::{key.account_id}:user/imagecontains", access_key_id
    else:
        arn, user_id = f"arn:aws:sts::{key.account_id}:assumed-role/imagecontains/session", f"AROA{access_key_id[4:]}"
    return f"<Arn>{arn}</Arn><UserId>{escape(user_id)}</UserId><Account>{key.account_id}</Account>"


def _assumed_role_arn(role_arn: str, session_name: str) -> str:
    account, role_name = role_arn.split(":")[4], role_arn.split(":role/", 1)[1].rsplit("/", 1)[-1]
    return f"arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}"


def _sts_response(action: str, result: str) -> Response:
    body = (
        f'<{action}Response xmlns="{STS_NAMESPACE}"><{action}Result>{result}</{action}Result>'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>"
    )
    return Response(body, 200, media_type="text/xml")


def _sts_error(err: CrowdError) -> Response:
    body = (
        f'<ErrorResponse xmlns="{STS_NAMESPACE}"><Error><Type>Sender</Type><Code>{escape(err.code)}</Code>'
        f"<Message>{escape(err.message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return Response(body, err.status, media_type="text/xml")


async def _http_exception(_: Request, exc: Any) -> Response:
    if exc.status_code == 404:
        return error_response(CrowdError(404, "NotFound", "No such route; tasks live at " + TASK_PATH + "."))
    if exc.status_code == 405:
        return error_response(CrowdError(405, "MethodNotAllowed", "Use PUT, GET or DELETE on " + TASK_PATH + "."))
    return error_response(CrowdError(exc.status_code, "InvalidRequest", str(exc.detail)))


async def _validation_exception(_: Request, exc: Any) -> Response:
    return error_response(CrowdError(400, "InvalidInput", f"Invalid request: {exc.errors()!r}."))


async def _unexpected_exception(_: Request, exc: Exception) -> Response:
    # Logged for the operator without request headers; the caller only learns that it failed.
    log.error("Unexpected %s while handling a request", type(exc).__name__, exc_info=exc)
    return error_response(CrowdError(500, "InternalError", "The server failed; the request may be retried."))


def build_uvicorn_server(
    config: ServerConfig,
    db_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> tuple[uvicorn.Server, CrowdServerApp]:
    """A uvicorn server (uvloop + httptools, one process) running the app, and the app itself.

    :param config: the server settings.
    :param db_path: the SQLite file.
    :param host: the address to listen on; keep 127.0.0.1 unless the server must be reachable from elsewhere.
        Requests must name it (unless it is 0.0.0.0 or ::), a loopback name or one of ``config.allowed_hosts``
        in their ``Host`` header.
    :param port: the port to listen on.
    :param log_level: uvicorn's log level (access logs show method, path and status only; query-string
        credentials are redacted in every log line).
    :param ssl_certfile: serve HTTPS with this certificate (PEM) and ``ssl_keyfile``; None: plain HTTP.
    :param ssl_keyfile: the certificate's private key (PEM).
    """
    if DEMO_ACCOUNT in config.accounts and not is_loopback(host):
        # The demo secret is public: anyone who can reach the port could sign as the demo account.
        raise ValueError(
            f"Refusing to listen on {host!r} with the public demo credentials: give your own --account, "
            "or keep the default host 127.0.0.1 (loopback only)."
        )
    unspecified = host in ("", "0.0.0.0", "::")  # noqa: S104 -- recognised here, not bound
    hosts = [*LOOPBACK_NAMES, *([] if unspecified else [host]), *config.allowed_hosts]
    app = CrowdServerApp(config, db_path, hosts)
    uvicorn_config = HardenedConfig(
        AllowedHosts(app.asgi, hosts, _refusal),
        host=host,
        port=port,
        # Slow, idle or too many clients: bounded in server/protocol.py; idle keep-alive connections are closed
        # after a few seconds (uvicorn's own setting).
        http=bounded_protocol(
            read_timeout=config.request_read_timeout_seconds,
            first_byte_timeout=config.first_byte_timeout_seconds,
            max_requests=config.max_connections,
        ),
        first_byte_timeout=config.first_byte_timeout_seconds,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # A client's address and scheme come from X-Forwarded-* only when a proxy named by the operator sent them.
        proxy_headers=bool(config.forwarded_allow_ips),
        forwarded_allow_ips=list(config.forwarded_allow_ips),
        lifespan="on",
        log_level=log_level,
        access_log=log_level in ("debug", "info"),
        server_header=False,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    redact_server_logs()  # after uvicorn.Config, which (re)configures uvicorn's loggers
    return uvicorn.Server(uvicorn_config), app


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
