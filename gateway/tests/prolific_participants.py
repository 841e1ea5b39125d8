"""Simulated Prolific participants and a gateway for them, shared by the gateway's tests and the provider's: a
gateway with ``workforce="prolific"`` on the fake Prolific (fake_prolific.py), and participants who take a place,
follow the study URL over HTTP, answer their batch on the participant pages and bring the completion code back."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from fake_prolific import TOKEN, FakeProlific

from imagecontains_gateway.testing import LocalCrowdServer

# Images whose name says "person" contain a person (what a careful participant sees).
IMAGES = [f"https://frames.example.com/cam{n}/{'person' if n % 2 else 'empty'}-{n:03d}.jpg" for n in range(6)]
BATCH = 4
ACCOUNT = "123456789012"  # the demo account, the server's default


def truth(image_url: str, label: str) -> bool:
    return label in image_url.rsplit("/", 1)[-1]


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out waiting for {what}.")
        time.sleep(0.05)


def prolific_server(tmp_path: Any, fake: FakeProlific, **overrides: Any) -> LocalCrowdServer:
    settings: dict[str, Any] = {
        "workforce": "prolific",
        "prolific_accounts": (ACCOUNT,),
        "prolific_api_url": fake.api_url,
        "prolific_token": TOKEN,
        "prolific_poll_seconds": 0.05,
        "prolific_batch_size": BATCH,
        "prior_worker_accuracy": 0.9,
        "seed": 3,
        **overrides,
    }
    return LocalCrowdServer(tmp_path / "crowd.db", **settings)


@dataclass
class Page:
    """What a participant's browser got: the final URL, status and HTML."""

    url: str
    status: int
    text: str

    def field(self, pattern: str) -> str | None:
        found = re.search(pattern, self.text, re.S)
        return html.unescape(found[1]) if found else None


class Participant:
    """A participant of the fake Prolific who follows the study URL and answers like a careful person.

    :param fake: the fake Prolific.
    :param study: the study's Prolific id.
    :param pid: the participant's Prolific id.
    """

    def __init__(self, fake: FakeProlific, study: str, pid: str) -> None:
        self.fake, self.study, self.pid = fake, study, pid
        wait_until(lambda: open_places(fake, study) > 0, what="a free place")
        self.session_id = fake.start_submission(study, pid)
        self.browser = requests.Session()

    def start_url(self) -> str:
        return self.fake.participant_url(self.session_id)

    def get(self, url: str) -> Page:
        response = self.browser.get(url, timeout=30)
        return Page(response.url, response.status_code, response.text)

    def answer(self, page: Page) -> Page:
        label, image = page.field(r'class="label">(.*?)<'), page.field(r'<img class="frame" src="([^"]+)"')
        assert label is not None and image is not None, page.text
        form = {"task": page.field(r'name="task" value="(\d+)"'), "csrf": page.field(r'name="csrf" value="(\w+)"')}
        response = self.browser.post(
            page.url.rsplit("/prolific/", 1)[0] + "/prolific/answer",
            data={**form, "answer": "yes" if self.sees(page, image, label) else "no"},
            timeout=30,
        )
        return Page(response.url, response.status_code, response.text)

    def sees(self, page: Page, image: str, label: str) -> bool:
        """Whether the participant sees ``label`` in the image at ``image`` on ``page`` (here: its file name)."""
        return truth(image, label)

    def take_part(self, questions: int | None = None, seconds_per_answer: float = 0.0) -> Page:
        """Answer the batch (or ``questions`` of it), from the page ``page`` or the study URL; returns the last page."""
        page = self.get(self.start_url())
        return self.go_on(page, questions, seconds_per_answer)

    def go_on(self, page: Page, questions: int | None = None, seconds_per_answer: float = 0.0) -> Page:
        done = 0
        while page.field(r'id="code">(\w+)<') is None and (questions is None or done < questions):
            assert page.status == 200 and 'id="progress"' in page.text, page.text
            number = int(page.field(r"Question (\d+) of") or 0)
            assert f"Question {number} of {BATCH}" in page.text
            time.sleep(seconds_per_answer)
            page = self.answer(page)
            done += 1
        return page

    def submit(self, page: Page) -> str:
        """Follow the completion link to Prolific with the code (the fake plays app.prolific.com)."""
        link = page.field(r'id="complete" href="([^"]+)"')
        assert link is not None and link.startswith("https://app.prolific.com/submissions/complete?cc="), page.text
        code = link.rsplit("=", 1)[1]
        self.fake.complete_submission(self.session_id, code)
        return code


def open_places(fake: FakeProlific, study_id: str) -> int:
    study = fake.studies[study_id]
    if study["status"] != "ACTIVE":
        return 0
    held = [s for s in fake.study_submissions(study_id) if s["status"] in ("ACTIVE", "AWAITING REVIEW", "APPROVED")]
    return int(study["total_available_places"]) - len(held)
