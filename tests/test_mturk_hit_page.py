"""The HIT page MTurk workers see, in real headless Chromium: preview mode, an accepted assignment on a desktop
and on a phone, and the form MTurk receives (``assignmentId`` and ``containsTarget``).

Set ``IMAGECONTAINS_SCREENSHOT_DIR=docs/screenshots`` to keep the screenshots (docs/mturk.md shows them).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from fake_mturk import HitPage

from demo.frames import draw_frame
from imagecontains_gateway.mturk import html_question

pytestmark = pytest.mark.timeout(300)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
IMAGE_URL = "https://frames.example.com/cam1/0001.png"
SANDBOX_SUBMIT = "https://workersandbox.mturk.com/mturk/externalSubmit"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("IMAGECONTAINS_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def hit_content(label: str) -> str:
    """The HTMLContent of the HIT, as MTurk serves it to the worker's browser in an iframe."""
    question = html_question(IMAGE_URL, label, SANDBOX_SUBMIT)
    return question[question.index("<![CDATA[") + 9 : question.rindex("]]>")]


def open_hit(browser, viewport, query: str, label: str = "person"):  # type: ignore[no-untyped-def]
    """A page showing the HIT at a fake MTurk URL; the image and MTurk's submit endpoint are served locally."""
    frame = draw_frame(3, ["person", "car"])
    context = browser.new_context(viewport=viewport, is_mobile=viewport is PHONE, has_touch=viewport is PHONE)
    page = context.new_page()
    submitted: list[dict[str, list[str]]] = []

    def external_submit(route) -> None:  # type: ignore[no-untyped-def]
        submitted.append(parse_qs(route.request.post_data or ""))
        route.fulfill(status=200, content_type="text/html", body="<p>Thank you</p>")

    page.route(
        "https://hit.mturk.test/**", lambda route: route.fulfill(content_type="text/html", body=hit_content(label))
    )
    page.route(IMAGE_URL, lambda route: route.fulfill(content_type="image/png", body=frame))
    page.route("https://www.mturk.com/mturk/externalSubmit", external_submit)
    page.route(SANDBOX_SUBMIT, external_submit)
    page.goto("https://hit.mturk.test/hit?" + query)
    page.wait_for_function("() => document.querySelector('img').complete")
    return context, page, submitted


def test_preview_shows_the_question_and_disables_answers(chromium, screenshots: Path) -> None:
    context, page, submitted = open_hit(chromium, DESKTOP, "assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H1")
    try:
        assert page.inner_text("h1") == "Does this image contain a person?"
        assert page.evaluate("document.querySelector('img').naturalWidth") > 0
        assert page.is_visible("#preview")
        assert all(page.is_disabled(f"button[value='{value}']") for value in ("yes", "no", "cant-tell"))
        page.screenshot(path=str(screenshots / "mturk-hit-preview.png"), full_page=True)
        assert submitted == []
    finally:
        context.close()


@pytest.mark.parametrize(("viewport", "shot"), [(DESKTOP, "mturk-hit.png"), (PHONE, "mturk-hit-phone.png")])
def test_an_accepted_assignment_posts_its_answer_to_mturk(chromium, screenshots: Path, viewport, shot: str) -> None:
    query = "assignmentId=3ASSIGNMENT&hitId=H1&workerId=W1&turkSubmitTo=https%3A%2F%2Fwww.mturk.com"
    context, page, submitted = open_hit(chromium, viewport, query)
    try:
        assert not page.is_visible("#preview")
        # The buttons fit side by side in the viewport, large enough to tap.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"]
        for value in ("yes", "no", "cant-tell"):
            box = page.locator(f"button[value='{value}']").bounding_box()
            assert box is not None and box["height"] >= 44 and box["x"] + box["width"] <= viewport["width"]
        page.screenshot(path=str(screenshots / shot), full_page=True)
        with page.expect_navigation():
            page.click("button[value='no']")
        # MTurk gets the assignment id and the answer field (the turkSubmitTo host, not the default).
        assert submitted == [{"assignmentId": ["3ASSIGNMENT"], "containsTarget": ["no"]}]
    finally:
        context.close()


def test_label_and_url_are_text_not_markup(chromium) -> None:
    label = '<img src=x onerror="window.pwned=1">cat'
    context, page, _ = open_hit(chromium, DESKTOP, "assignmentId=A&turkSubmitTo=https%3A%2F%2Fevil.example", label)
    try:
        assert page.inner_text(".label") == label
        assert page.evaluate("window.pwned") is None
        # An unknown turkSubmitTo is ignored: answers go to MTurk only.
        assert page.get_attribute("#mturk_form", "action") == SANDBOX_SUBMIT
        assert HitPage(html_question(IMAGE_URL, label, SANDBOX_SUBMIT)).label == label
    finally:
        context.close()
