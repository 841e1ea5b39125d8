"""The web pages of the human workforce: sign-in, the worker page, the requester dashboard and local images.

Pages are Jinja2 templates with autoescaping on; scripts are static files only, enforced by a
Content-Security-Policy without ``'unsafe-inline'``. Sessions live on the server (they expire, and end at
sign-out); the HttpOnly, SameSite=Strict cookie holds only the session's random id, never the sign-in token. Each
role has a cookie of its own, so one browser can hold a worker and a dashboard session at once; over HTTPS (direct,
or behind a trusted proxy that sends ``X-Forwarded-Proto``) the cookies are ``Secure`` ``__Host-`` cookies and
pages carry HSTS. Answers are form POSTs that also carry a per-session CSRF token and must
come from this server's own origin. Routes and decisions: docs/workforce.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import mimetypes
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.datastructures import FormData

from imagecontains_gateway.guards import BodyRule, FailureThrottle
from imagecontains_gateway.human import DASHBOARD, WORKER, HumanWorkforce, Identity
from imagecontains_gateway.images import LocalImages
from imagecontains_gateway.service import CrowdError
from imagecontains_gateway.sigv4 import SignatureError, is_presigned
from imagecontains_gateway.validation import IMAGE_CONTAINS
from imagecontains_gateway.wording import article

log = logging.getLogger(__name__)

# The URL paths the web pages own (the fault injector leaves them alone).
UI_PATHS = ("/signin", "/signout", "/work", "/dashboard", "/images/", "/static/", "/prolific/")
# What a request to the pages may carry: the small url-encoded forms the pages themselves send.
PAGE_BODIES = BodyRule(max_bytes=4096, content_types=("application/x-www-form-urlencoded",))
# One session cookie per role (worker page, dashboard): signing in as one never signs the other out.
SESSION_COOKIES = {WORKER: "imagecontains_worker", DASHBOARD: "imagecontains_dashboard"}
# Over HTTPS the cookie is Secure, and this prefix makes the browser refuse it unless it is Secure, host-only
# and for the whole site (no other host or plain-HTTP page can set or shadow it).
HOST_ONLY_PREFIX = "__Host-"
HSTS = "max-age=31536000"
# Which token each page needs, as the sign-in page says when a browser arrives without it.
TOKEN_NEEDED = {
    WORKER: "The worker page needs a worker token.",
    DASHBOARD: "The dashboard needs your account's dashboard token.",
}
# A waiting worker page asks for work with requests that return after this long at the latest.
WAIT_SECONDS = 10.0
ANSWERS = {"yes": True, "no": False, "cant-tell": None}
BROKEN_IMAGE_ANSWER = "broken-image"
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# Unknown tokens one client may try per minute before sign-in answers it 429 (a token is 256 random bits: this
# bounds the work and the log lines a guesser costs, not its odds).
SIGNIN_FAILURES_PER_MINUTE = 10

_HERE = Path(__file__).parent
_SECURITY_HEADERS = {
    # Images may come from anywhere a task's URL points (S3, a frame server); nothing else may.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' http: https:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def mount_workforce_ui(
    api: FastAPI, workforce: HumanWorkforce, local_images: LocalImages, presigned_account: Callable[[Request], str]
) -> None:
    """Add the pages, their static files and their security headers to ``api``.

    :param presigned_account: the account that signed a presigned image URL (raises ``SignatureError`` else).
    """
    api.include_router(WorkforcePages(workforce, local_images, presigned_account).router)
    api.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    api.add_middleware(SecurityHeaders)


class SecurityHeaders:
    """ASGI middleware adding the security headers to every response of the pages.

    Plain ASGI rather than ``BaseHTTPMiddleware``, which hides a client's disconnect from the
    waiting worker page's request.

    :param app: the ASGI app to wrap.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(UI_PATHS):
            await self.app(scope, receive, send)
            return
        headers = [(name.lower().encode(), value.encode()) for name, value in _SECURITY_HEADERS.items()]
        if not path.startswith("/static/"):
            headers.append((b"cache-control", b"no-store"))
        if scope.get("scheme") == "https":  # uvicorn sets it from X-Forwarded-Proto of trusted proxies only
            headers.append((b"strict-transport-security", HSTS.encode()))

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def session_cookie(kind: str, request: Request) -> str:
    """The name of the session cookie of role ``kind`` (``worker`` or ``dashboard``) for ``request``'s scheme."""
    name = SESSION_COOKIES[kind]
    return HOST_ONLY_PREFIX + name if request.url.scheme == "https" else name


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session: derived from its secret id, so a third site cannot know it."""
    return hashlib.sha256(b"imagecontains-csrf\0" + session_id.encode()).hexdigest()


class WorkforcePages:
    """The routes of the web pages.

    :param workforce: the human workforce the pages serve.
    :param local_images: the images of ``--images-dir``.
    :param presigned_account: the account that signed a presigned image URL (raises ``SignatureError`` else).
    """

    def __init__(
        self, workforce: HumanWorkforce, local_images: LocalImages, presigned_account: Callable[[Request], str]
    ) -> None:
        self.workforce = workforce
        self.local_images = local_images
        self.presigned_account = presigned_account
        self.signin_failures = FailureThrottle(SIGNIN_FAILURES_PER_MINUTE, 60.0)
        self.templates = Jinja2Templates(
            env=Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=True, auto_reload=False)
        )
        router = self.router = APIRouter()
        router.add_api_route("/signin", self.signin_page, methods=["GET"])
        router.add_api_route("/signin", self.signin, methods=["POST"])
        router.add_api_route("/signout", self.signout, methods=["POST"])
        router.add_api_route("/work", self.work_page, methods=["GET"])
        router.add_api_route("/work/answer", self.submit_answer, methods=["POST"])
        router.add_api_route("/work/undo", self.undo_answer, methods=["POST"])
        router.add_api_route("/work/wait", self.wait_for_question, methods=["GET"])
        router.add_api_route("/dashboard", self.dashboard_page, methods=["GET"])
        router.add_api_route("/dashboard/data", self.dashboard_data, methods=["GET"])
        router.add_api_route("/dashboard/cancel", self.cancel_tasks, methods=["POST"])
        router.add_api_route("/images/{path:path}", self.image, methods=["GET"])

    # Sign-in

    async def signin_page(self, request: Request) -> Response:
        return self._signin_page(request, None)

    def _signin_page(self, request: Request, error: str | None, status_code: int = 200) -> Response:
        """The sign-in form; ``?for=worker|dashboard`` (where a page sent the browser) says which token it needs,
        and who this browser is already signed in as."""
        wanted = request.query_params.get("for")
        needed = TOKEN_NEEDED.get(wanted or "")
        signed_in = [
            (kind, identity.subject)
            for kind in SESSION_COOKIES
            if kind != wanted and (identity := self._identity(request, kind)) is not None
        ]
        context = {"error": error, "needed": needed, "signed_in": signed_in}
        return self._page(request, "signin.html", context, status_code=status_code)

    async def signin(self, request: Request) -> Response:
        if not _same_origin(request):
            return _refused(403, "Cross-site request refused.")
        client = request.client.host if request.client else ""
        retry_after = self.signin_failures.retry_after(client)
        if retry_after is not None:
            response = _refused(429, f"Too many unknown tokens; try again in {retry_after} seconds.")
            response.headers["Retry-After"] = str(retry_after)
            return response
        form = await request.form()
        token = str(form.get("token", "")).strip()
        identity = self.workforce.store.identify(token) if token else None
        if identity is None:
            if self.signin_failures.failed(client):
                log.warning(
                    "Sign-in refused for a minute to %s after %d unknown tokens.", client, SIGNIN_FAILURES_PER_MINUTE
                )
            return self._signin_page(request, "Unknown token.", status_code=401)
        seconds = self.workforce.config.web_session_seconds
        session_id = self.workforce.store.open_session(identity, seconds)
        response = RedirectResponse("/work" if identity.kind == WORKER else "/dashboard", status_code=303)
        response.set_cookie(
            session_cookie(identity.kind, request),
            session_id,
            max_age=int(seconds),
            httponly=True,
            samesite="strict",
            path="/",
            secure=request.url.scheme == "https",
        )
        return response

    async def signout(self, request: Request) -> Response:
        if not _same_origin(request):
            return _refused(403, "Cross-site request refused.")
        # Each page's form names its role (signing out of the worker page leaves the dashboard signed in);
        # without one, every role signs out.
        role = (await request.form()).get("role")
        if role is not None and role not in SESSION_COOKIES:
            return _refused(400, f"Invalid role {role!r}.")
        response = RedirectResponse("/signin", status_code=303)
        for kind in [str(role)] if role is not None else SESSION_COOKIES:
            name = session_cookie(kind, request)
            session_id = request.cookies.get(name)
            if session_id and self.workforce.running:
                identity = self.workforce.store.session(session_id)
                if identity is not None and identity.kind == WORKER:
                    self.workforce.release(identity.subject)  # the question it held goes to the others at once
                self.workforce.store.end_session(session_id)
            secure = request.url.scheme == "https"
            response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=secure)
        return response

    # The worker page

    async def work_page(self, request: Request) -> Response:
        identity = self._identity(request, WORKER)
        if identity is None:
            return RedirectResponse("/signin?for=worker", status_code=303)
        assignment = self.workforce.question_for(identity.subject)
        if assignment is not None:
            assignment = dataclasses.replace(assignment, image_url=_absolute_url(assignment.image_url, request))
        context = {
            "worker": identity.subject,
            "assignment": assignment,
            "article": article(assignment.label) if assignment else "",
            "seconds_left": self.workforce.seconds_left(identity.subject),
            "undo": self.workforce.undoable(identity.subject),
            "notice": self.workforce.take_notice(identity.subject),
            "answered": self.workforce.answers_given(identity.subject),
            "csrf": csrf_token(request.cookies[session_cookie(WORKER, request)]),
        }
        return self._page(request, "work.html", context)

    async def submit_answer(self, request: Request) -> Response:
        checked = await self._worker_form(request)
        if isinstance(checked, Response):
            return checked
        identity, form = checked
        # The form's "task" field holds the question's id (random per question: it tells gold from nothing).
        answer, question_id = str(form.get("answer", "")), str(form.get("task", ""))
        if (answer not in ANSWERS and answer != BROKEN_IMAGE_ANSWER) or not question_id.isdigit():
            return _refused(400, f"Invalid answer {answer!r} or task {question_id!r}.")
        # An answer to a question no longer held (given back, expired, answered twice) is dropped:
        # the worker simply gets the next question.
        if answer == BROKEN_IMAGE_ANSWER:
            self.workforce.report_broken_image(identity.subject, int(question_id))
        else:
            self.workforce.answer(identity.subject, int(question_id), ANSWERS[answer])
        return RedirectResponse("/work", status_code=303)

    async def undo_answer(self, request: Request) -> Response:
        checked = await self._worker_form(request)
        if isinstance(checked, Response):
            return checked
        identity, form = checked
        question_id = str(form.get("task", ""))  # the question's id, as on the answer form
        if not question_id.isdigit():
            return _refused(400, f"Invalid task {question_id!r}.")
        self.workforce.undo(identity.subject, int(question_id))  # refused: the next page says why
        return RedirectResponse("/work", status_code=303)

    async def _worker_form(self, request: Request) -> tuple[Identity, FormData] | Response:
        """The signed-in worker and the form it posted from this site's page, or the refusal to send."""
        identity = self._identity(request, WORKER)
        if identity is None:
            return _refused(401, "Sign in with your worker token first.")
        form = await request.form()
        if not _from_own_page(request, form, WORKER):
            return _refused(403, "Cross-site request refused; reload the page.")
        return identity, form

    async def wait_for_question(self, request: Request) -> Response:
        identity = self._identity(request, WORKER)
        if identity is None:
            return _refused(401, "Sign in with your worker token first.")
        deadline = time.monotonic() + WAIT_SECONDS
        # Checked every second: a closed page must not keep a request (and a server shutdown) waiting.
        while not (ready := await self.workforce.wait_for_question(identity.subject, 1.0)):
            if time.monotonic() >= deadline or await request.is_disconnected():
                break
        return Response(json.dumps({"ready": ready}), media_type="application/json")

    # The requester dashboard

    async def dashboard_page(self, request: Request) -> Response:
        identity = self._identity(request, DASHBOARD)
        if identity is None:
            return RedirectResponse("/signin?for=dashboard", status_code=303)
        # ?prefix= narrows the page to the tasks whose names start with it (the provider's extra link).
        prefix = request.query_params.get("prefix", "")
        csrf = csrf_token(request.cookies[session_cookie(DASHBOARD, request)])
        return self._page(request, "dashboard.html", {"account": identity.subject, "prefix": prefix, "csrf": csrf})

    async def cancel_tasks(self, request: Request) -> Response:
        """Cancel one processing task (form field ``task``) or those whose names start with ``prefix``."""
        identity = self._identity(request, DASHBOARD)
        if identity is None:
            return _refused(401, "Sign in with the account's dashboard token first.")
        form = await request.form()
        if not _from_own_page(request, form, DASHBOARD):
            return _refused(403, "Cross-site request refused; reload the page.")
        task, prefix = form.get("task"), str(form.get("prefix", ""))
        request_body = {"taskNames": [str(task)]} if task is not None else {"namePrefix": prefix}
        try:
            self.workforce.service.cancel_tasks(identity.subject, IMAGE_CONTAINS, json.dumps(request_body).encode())
        except CrowdError as err:
            return _refused(err.status, err.message)
        return RedirectResponse("/dashboard" + (f"?prefix={quote(prefix)}" if prefix else ""), status_code=303)

    async def dashboard_data(self, request: Request) -> Response:
        identity = self._identity(request, DASHBOARD)
        if identity is None:
            return _refused(401, "Sign in with the account's dashboard token first.")
        page = request.query_params.get("page", "1")
        figures = await self.workforce.dashboard_figures(
            identity.subject,
            request.query_params.get("prefix", ""),
            int(page) if page.isascii() and page.isdigit() and len(page) < 9 else 1,
        )
        # The figures are shared by every request of the next seconds: the image names go on copies.
        tasks = [{**task, "image": _image_shown(task["image_url"], request)} for task in figures["tasks"]]
        return Response(
            json.dumps(
                {
                    **figures,
                    "tasks": tasks,
                    "problems": self.workforce.problems(),
                    "calibration": self.workforce.service.calibration_report(),
                    "team": self.workforce.team(),
                }
            ),
            media_type="application/json",
        )

    # Local images

    async def image(self, request: Request, path: str) -> Response:
        if is_presigned(request.scope["query_string"].decode("latin-1")):
            return self._presigned_image(request, path)
        identities = [identity for kind in SESSION_COOKIES if (identity := self._identity(request, kind)) is not None]
        if not identities:
            return _refused(401, "Sign in first.")
        may_see = any(self._may_see(identity, path, request) for identity in identities)
        file = self.local_images.file(path) if may_see else None
        if file is None:
            return _refused(404, "No such image.")
        return FileResponse(file, media_type=mimetypes.guess_type(file.name)[0])

    def _presigned_image(self, request: Request, path: str) -> Response:
        """An image by a presigned URL: the requester's own tools (the operator's pre-screen, a report) read the
        images of their account (``ImageContainsHook.presign_image_url``), before and after their tasks exist."""
        if not self.workforce.running:
            return _refused(503, "The server is starting.")
        try:
            account = self.presigned_account(request)
        except SignatureError as err:
            return _refused(403, err.message)
        sole_account = {known.account_id for known in self.workforce.config.accounts} == {account}
        owned = self.local_images.belongs_to(path, account, sole_account=sole_account)
        file = (
            self.local_images.file(path)
            if owned or self._may_see(Identity(DASHBOARD, account), path, request)
            else None
        )
        if file is None:
            return _refused(404, "No such image.")
        return FileResponse(file, media_type=mimetypes.guess_type(file.name)[0])

    def _may_see(self, identity: Identity, path: str, request: Request) -> bool:
        """Whether a task of theirs shows the image at ``path``: for a worker the question they hold, for a
        dashboard any task of its account."""
        if identity.kind == WORKER:
            held = self.workforce.held_image_url(identity.subject)
            urls = [_absolute_url(held, request)] if held else []
        else:
            urls = self.workforce.store.image_urls(identity.subject)
        return any(_image_shown(url, request) == path for url in urls)

    # Helpers

    def _identity(self, request: Request, kind: str) -> Identity | None:
        """Who the browser is signed in as in role ``kind``, or None."""
        session_id = request.cookies.get(session_cookie(kind, request))
        if not session_id or not self.workforce.running:
            return None
        identity = self.workforce.store.session(session_id)
        return identity if identity is not None and identity.kind == kind else None

    def _page(self, request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)


def _absolute_url(url: str, request: Request) -> str:
    """``url`` as the worker page shows it: a gold question's own ``/images/...`` path on this server, as the
    absolute URL a requester's task names its local image by (so nothing tells the two apart)."""
    ours = url.startswith("/") and not url.startswith("//")
    return f"{request.url.scheme}://{request.headers.get('host', '')}{url}" if ours else url


def _image_shown(url: str | None, request: Request) -> str | None:
    """How the dashboard names a task's image: its path inside ``--images-dir`` when this server serves it
    (two cameras' ``frame_0001.png`` stay apart), else the whole URL."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = request.headers.get("host", "")
    ours = parts.netloc == host or (
        parts.hostname in _LOOPBACK_NAMES
        and urlsplit(f"//{host}").hostname in _LOOPBACK_NAMES
        and parts.port == request.url.port
    )
    if ours and parts.path.startswith("/images/"):
        return unquote(parts.path.removeprefix("/images/"))
    return url


def _from_own_page(request: Request, form: FormData, kind: str) -> bool:
    """Whether a form came from this site's page of role ``kind``: same origin, and the session's CSRF token."""
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a 500, not a 403).
    expected = csrf_token(request.cookies[session_cookie(kind, request)]).encode()
    return _same_origin(request) and hmac.compare_digest(str(form.get("csrf", "")).encode(), expected)


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin (a cross-site form or fetch)."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def _refused(status: int, message: str) -> Response:
    return Response(message, status, media_type="text/plain; charset=utf-8")
