"""The pages Prolific participants see: the start (their submission checked with Prolific), the questions of
their batch on the worker page's layout, and the way back to Prolific with the completion code.

A participant has no sign-in token: the start page checks with Prolific that the submission ``SESSION_ID``
exists, belongs to ``PROLIFIC_PID`` and the study ``STUDY_ID``, and is active, then opens a session whose
random id only this browser holds (HttpOnly cookie; SameSite=Lax, since the participant arrives by a link from
prolific.com). Answers are form POSTs with the session's CSRF token, as on the staff's worker page.
"""

from __future__ import annotations

import asyncio
import hmac
import mimetypes
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from imagecontains_gateway.images import LocalImages
from imagecontains_gateway.prolific import (
    ACTIVE,
    PLACE_FREED,
    START_PATH,
    ProlificWorkforce,
    Session,
    completion_url,
)
from imagecontains_gateway.prolific_client import ProlificError, ProlificRequestError
from imagecontains_gateway.ui import ANSWERS, BROKEN_IMAGE_ANSWER, csrf_token
from imagecontains_gateway.wording import article

PARTICIPANT_COOKIE = "imagecontains_participant"
_HERE = Path(__file__).parent
# A session a participant's browser holds lasts as long as Prolific lets a submission stay active (< 24 h).
_COOKIE_SECONDS = 24 * 3600


class ProlificPages:
    """The participants' routes.

    :param workforce: the Prolific workforce the pages serve.
    :param local_images: the server's own images (``--images-dir``).
    """

    def __init__(self, workforce: ProlificWorkforce, local_images: LocalImages) -> None:
        self.workforce = workforce
        self.local_images = local_images
        config = workforce.config
        self.own_images = (config.public_url or "").rstrip("/") + "/images/"
        self.secure = (config.public_url or "").startswith("https://")
        self.templates = Jinja2Templates(
            env=Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=True, auto_reload=False)
        )
        router = self.router = APIRouter()
        router.add_api_route(START_PATH, self.start, methods=["GET"])
        router.add_api_route("/prolific/work", self.work_page, methods=["GET"])
        router.add_api_route("/prolific/answer", self.submit_answer, methods=["POST"])
        router.add_api_route("/prolific/images/{path:path}", self.image, methods=["GET"])

    async def start(self, request: Request) -> Response:
        params = request.query_params
        participant, study_id, session_id = (
            params.get(name, "") for name in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
        )
        if not (participant and study_id and session_id):
            return self._refusal(request, "This link is incomplete: open the study from Prolific again.", 400)
        if self.workforce.failure is not None:
            return self._refusal(request, "The study is not available right now. Please return it on Prolific.", 503)
        study = self.workforce.studies.study_by_id(study_id)
        if study is None:
            return self._refusal(request, "This link does not belong to a study of this site.", 404)
        known = self.workforce.studies.session(session_id)
        if known is None or known.participant != participant:
            try:
                submission = await asyncio.to_thread(self.workforce.client.get_submission, session_id)
            except ProlificRequestError:  # no such submission
                submission = None
            except ProlificError:
                return self._refusal(
                    request, "Prolific could not be asked about your submission: reload in a minute.", 503
                )
            if submission is None or not (
                submission.participant_id == participant
                and submission.study_id == study_id
                and submission.status == ACTIVE
            ):
                return self._refusal(
                    request, "Prolific does not know this submission as an active one of yours in this study.", 403
                )
        elif known.status != ACTIVE:
            return self._refusal(request, "This submission is no longer active on Prolific.", 403)
        if self.workforce.service.store.is_blocked(f"prolific:{participant}"):
            return self._refusal(
                request, "There are no more questions for you in this study. Please return your submission.", 403
            )
        browser_id = secrets.token_urlsafe(32)
        self.workforce.studies.open_session(session_id, study_id, participant, browser_id)
        response = RedirectResponse("/prolific/work", status_code=303)
        response.set_cookie(
            PARTICIPANT_COOKIE,
            browser_id,
            max_age=_COOKIE_SECONDS,
            httponly=True,
            samesite="lax",
            path="/prolific",
            secure=self.secure,  # never sent over plain HTTP once the site is HTTPS
        )
        return response

    async def work_page(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return self._refusal(request, "Open the study from Prolific to take part.", 401)
        assignment = self.workforce.question_for(session)
        if assignment is None:
            self.workforce.studies.finish(session.session_id)
            study = self.workforce.studies.study_by_id(session.study_id)
            code = study.completion_code if study else ""
            return self._page(
                request, "prolific_done.html", {"answered": session.answered, "url": completion_url(code), "code": code}
            )
        batch = self.workforce.config.prolific_batch_size
        context = {
            "assignment": assignment,
            "image_url": self._shown(assignment.image_url),
            "article": article(assignment.label),
            "seconds_left": self.workforce.seconds_left(session.session_id),
            "number": session.answered + 1,
            "batch": batch,
            "csrf": csrf_token(request.cookies[PARTICIPANT_COOKIE]),
        }
        return self._page(request, "prolific_work.html", context)

    async def submit_answer(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return Response("Open the study from Prolific to take part.", 401, media_type="text/plain; charset=utf-8")
        form = await request.form()
        origin = request.headers.get("origin")
        if origin not in (None, f"{request.url.scheme}://{request.headers.get('host', '')}") or not hmac.compare_digest(
            str(form.get("csrf", "")).encode(), csrf_token(request.cookies[PARTICIPANT_COOKIE]).encode()
        ):
            return Response("Cross-site request refused; reload the page.", 403, media_type="text/plain; charset=utf-8")
        answer, question_id = str(form.get("answer", "")), str(form.get("task", ""))
        if (answer not in ANSWERS and answer != BROKEN_IMAGE_ANSWER) or not question_id.isdigit():
            return Response(f"Invalid answer {answer!r}.", 400, media_type="text/plain; charset=utf-8")
        # An answer to a question no longer held (a second click, a reload) is dropped: the next page follows.
        self.workforce.answer(session, int(question_id), answer if answer == BROKEN_IMAGE_ANSWER else ANSWERS[answer])
        return RedirectResponse("/prolific/work", status_code=303)

    async def image(self, request: Request, path: str) -> Response:
        """One of this server's images, to the participant holding a question that shows it."""
        session = self._session(request)
        held = self.workforce.held(session.session_id) if session else None
        # Only the image of the question held, so the path was checked when its task was accepted.
        if held is None or held.image_url != self.own_images + quote(path):
            return Response("No such image.", 404, media_type="text/plain; charset=utf-8")
        file = self.local_images.file(path)
        if file is None:
            return Response("No such image.", 404, media_type="text/plain; charset=utf-8")
        return FileResponse(file, media_type=mimetypes.guess_type(file.name)[0])

    def _shown(self, image_url: str) -> str:
        """Where the participant's browser loads the image: this server's own images through the route that
        checks the participant holds the question, anything else (https) as it is."""
        if image_url.startswith(self.own_images):
            return "/prolific/images/" + image_url.removeprefix(self.own_images)
        return image_url

    def _session(self, request: Request) -> Session | None:
        browser_id = request.cookies.get(PARTICIPANT_COOKIE)
        session = self.workforce.studies.session_of_browser(browser_id) if browser_id else None
        return session if session is not None and session.status not in PLACE_FREED else None

    def _refusal(self, request: Request, message: str, status: int) -> Response:
        return self._page(request, "prolific_refused.html", {"message": message}, status_code=status)

    def _page(self, request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)
