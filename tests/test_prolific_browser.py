"""The Prolific participant's pages in real headless Chromium (Debian's ``chromium``, driven by Playwright): the
study URL from the fake Prolific, a batch of questions on this server's own images with its progress, and the way
back to Prolific with the completion code; another participant cannot load an image it does not hold.

Set ``IMAGECONTAINS_SCREENSHOT_DIR=docs/screenshots`` to keep the screenshots (docs/prolific.md shows them).
"""

from __future__ import annotations

import pytest
from fake_prolific import TOKEN, FakeProlific
from prolific_participants import ACCOUNT, open_places, wait_until

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from demo.frames import generate_frames
from tests.test_ui_browser import DESKTOP, PHONE, screenshots  # noqa: F401 -- the fixture

BATCH = 3
COMPLETION = "https://app.prolific.com/submissions/complete"

pytestmark = pytest.mark.timeout(300)


def test_a_participant_answers_a_batch_and_goes_back_to_prolific(chromium, crowd_server, tmp_path, screenshots):  # noqa: F811
    frames = generate_frames(tmp_path / "frames", 2)
    with FakeProlific() as fake:
        server = crowd_server(
            workforce="prolific",
            prolific_accounts=(ACCOUNT,),
            prolific_api_url=fake.api_url,
            prolific_token=TOKEN,
            prolific_poll_seconds=0.05,
            prolific_batch_size=BATCH,
            gold_share=0.0,
            images_dir=str(tmp_path / "frames"),
        )
        hook = ImageContainsHook()
        for n, name in enumerate(frames):
            url = f"{server.endpoint_url}/images/{name}"
            hook.put_task("image-contains", f"frame-{n}", {"image": {"url": url}, "target": {"label": "person"}})
        wait_until(lambda: any(s["status"] == "ACTIVE" for s in fake.studies.values()), what="a published study")
        (study_id,) = fake.studies
        wait_until(lambda: open_places(fake, study_id) >= 2, what="two places")
        session_id = fake.start_submission(study_id, "5f0c0ffee5f0c0ffee5f0c0f")
        other_session = fake.start_submission(study_id, "6a1bad1dea6a1bad1dea6a1b")

        context = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        other = chromium.new_context(viewport=DESKTOP)
        returned_to: list[str] = []

        def prolific(route):
            returned_to.append(route.request.url)
            route.fulfill(status=200, content_type="text/html", body="<p>Prolific</p>")

        context.route(f"{COMPLETION}*", prolific)
        try:
            refused = other.new_page()
            refused.goto(fake.participant_url(other_session).replace("6a1bad1dea", "0000000000"))
            assert refused.locator("#refused").is_visible()
            refused.screenshot(path=str(screenshots / "prolific-refused.png"))

            page = context.new_page()
            page.goto(fake.participant_url(session_id))
            assert page.url.endswith("/prolific/work")
            for number in range(1, BATCH + 1):
                page.wait_for_selector("#answer-form, #done")
                if page.locator("#done").count():
                    break
                assert page.inner_text("#progress") == f"Question {number} of {BATCH}"
                page.wait_for_function("() => document.querySelector('img.frame').complete")
                assert page.evaluate("document.querySelector('img.frame').naturalWidth") > 0, "the image loads"
                src = page.get_attribute("img.frame", "src")
                assert src.startswith("/prolific/images/")
                # Another participant's browser gets nothing of a question it does not hold.
                assert other.request.get(server.endpoint_url + src).status == 404
                if number == 1:
                    page.screenshot(path=str(screenshots / "prolific-question.png"))
                says_yes = "person" in frames[src.rsplit("/", 1)[-1]]
                with page.expect_navigation():
                    page.keyboard.press("y" if says_yes else "n")
            page.wait_for_selector("#done")
            code = page.inner_text("#code")
            page.screenshot(path=str(screenshots / "prolific-done.png"))
            page.wait_for_url(f"{COMPLETION}*")  # the page's refresh, or a tap on its link
            assert returned_to == [f"{COMPLETION}?cc={code}"]
            fake.complete_submission(session_id, code)
            wait_until(lambda: fake.effects[("approve", session_id)] == 1, what="the submission approved")
        finally:
            context.close()
            other.close()
            server.stop()  # before the fake Prolific goes
