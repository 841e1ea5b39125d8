"""The workforce pages in real headless Chromium (Debian's ``chromium``, driven by Playwright).

Set ``IMAGECONTAINS_SCREENSHOT_DIR=docs/screenshots`` to keep the screenshots the run takes.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

import pytest

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from demo.frames import GROUND, SHIRT, SKIN, SKY, encode_png, frame_name, generate_frames

MALICIOUS_LABEL = '<script>window.pwned = "label"</script><img src=x onerror="window.pwned = 1">'
# Two agreeing new workers reach 0.97 > 0.95 with this prior; one answer alone (0.855) does not.
TWO_HUMANS = {"workforce": "human", "prior_worker_accuracy": 0.9, "confidence": 0.95}
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def screenshots(tmp_path):
    """Where screenshots go: IMAGECONTAINS_SCREENSHOT_DIR when set (docs/screenshots), else a temporary folder."""
    folder = Path(os.environ.get("IMAGECONTAINS_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(browser, server, kind, subject, viewport, start="/work"):
    """A browser context signed in through the sign-in form; returns (context, page)."""
    context = browser.new_context(viewport=viewport, is_mobile=viewport is PHONE, has_touch=viewport is PHONE)
    page = context.new_page()
    page.goto(server.endpoint_url + start)
    assert page.url.startswith(server.endpoint_url + "/signin"), "an unsigned visitor is sent to the sign-in page"
    page.fill("#token", server.issue_token(kind, subject))
    with page.expect_navigation():
        page.click("button[type=submit]")
    return context, page


def shown_question(page):
    """(label, image file name) of the question on the page, or None while it waits for work."""
    page.wait_for_selector("#answer-form, #waiting")
    if page.locator("#answer-form").count() == 0:
        return None
    page.wait_for_function("() => document.querySelector('img.frame').complete")
    assert page.evaluate("document.querySelector('img.frame').naturalWidth") > 0, "the image did not load"
    return page.inner_text(".label"), page.get_attribute("img.frame", "src").rsplit("/", 1)[-1]


def put_frames(server, frames):
    """One task per frame (label "person"), plus one with a malicious label; returns {task name: truth}."""
    inputs, truth = {}, {}
    for name, labels in frames.items():
        task = name.removesuffix(".png").replace("_", "-")
        inputs[task] = {"image": {"url": f"{server.endpoint_url}/images/{name}"}, "target": {"label": "person"}}
        truth[task] = "person" in labels
    inputs["x-script"] = {
        "image": {"url": f"{server.endpoint_url}/images/{frame_name(1)}"},
        "target": {"label": MALICIOUS_LABEL},
    }
    truth["x-script"] = False
    hook = ImageContainsHook()
    for task, task_input in inputs.items():  # one by one: the bulk form refuses the running Playwright loop
        hook.put_task("image-contains", task, task_input)
    return truth


def stored_answers(server):
    """Every stored answer as (task name, worker, answer): 1 yes, 0 no, -1 can't tell (the database's own codes)."""
    with sqlite3.connect(server.db_path) as db:
        return db.execute(
            "SELECT t.name, a.worker, a.answer FROM answers a JOIN tasks t ON t.id = a.task_id ORDER BY a.id"
        ).fetchall()


def held_by(server, task_name):
    """The worker answering the task right now, or None."""
    with sqlite3.connect(server.db_path) as db:
        return db.execute("SELECT claimed_by FROM tasks WHERE name = ?", (task_name,)).fetchone()[0]


def put_questions(server, names, label="person", image=None):
    """One task per name, all asking about ``image`` of the images folder (the first frame by default)."""
    url = f"{server.endpoint_url}/images/{image or frame_name(0)}"
    hook = ImageContainsHook()
    for name in names:
        hook.put_task("image-contains", name, {"image": {"url": url}, "target": {"label": label}})


def write_large_frame(path, width=1600, height=1000):
    """A wide camera frame with one distant person, a few pixels tall (the detail a worker must not miss)."""
    rows = [[SKY] * width if y < height * 3 // 5 else [GROUND] * width for y in range(height)]
    for y in range(height * 7 // 10, height * 7 // 10 + 14):
        for x in range(width * 3 // 4, width * 3 // 4 + 5):
            rows[y][x] = SKIN if y < height * 7 // 10 + 4 else SHIRT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(rows))


def wait_until_finished(server, timeout=30.0):
    deadline = time.monotonic() + timeout
    while any(task["state"] == "processing" for task in server.tasks("image-contains")):
        assert time.monotonic() < deadline, "tasks still processing"
        time.sleep(0.1)
    return {task["task_name"]: task for task in server.tasks("image-contains")}


def test_two_workers_answer_a_batch_by_click_and_keyboard_and_the_dashboard_follows(
    chromium, crowd_server, tmp_path, screenshots
):
    frames = generate_frames(tmp_path / "frames", 4)
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"))
    truth = put_frames(server, frames)
    truth_by_question = {("person", name.split("/")[-1]): "person" in labels for name, labels in frames.items()}
    truth_by_question[(MALICIOUS_LABEL, frame_name(1))] = False

    dashboard_context, dashboard = sign_in(chromium, server, "dashboard", server.account.account_id, DESKTOP)
    alice_context, alice = sign_in(chromium, server, "worker", "alice", DESKTOP)
    bob_context, bob = sign_in(chromium, server, "worker", "bob", PHONE)
    try:
        assert dashboard.url.endswith("/dashboard")
        dashboard.wait_for_function("() => document.getElementById('progress').textContent.includes('0 of 5 finished')")
        dashboard.evaluate("window.notReloaded = true")

        seen = {"alice": [], "bob": []}
        while any(task["state"] == "processing" for task in server.tasks("image-contains")):
            for name, page in (("alice", alice), ("bob", bob)):
                question = shown_question(page)
                if question is None:
                    continue
                assert question not in seen[name], f"{name} was shown {question} twice"
                seen[name].append(question)
                if question[0] == MALICIOUS_LABEL:
                    # Shown as text: no script ran, no element was created from the label.
                    assert page.evaluate("window.pwned") is None
                    assert page.locator(".label script, .label img").count() == 0
                if len(seen[name]) == 1:
                    page.screenshot(path=str(screenshots / f"worker-{'desktop' if name == 'alice' else 'phone'}.png"))
                says_yes = truth_by_question[question]
                with page.expect_navigation():
                    if name == "alice":
                        page.click("button.yes" if says_yes else "button.no")
                    else:
                        page.keyboard.press("y" if says_yes else "n")
        assert len(seen["alice"]) == len(seen["bob"]) == 5, "both workers answer every task once"

        tasks = wait_until_finished(server)
        for task_name, says_yes in truth.items():
            assert tasks[task_name]["state"] == "completed"
            assert tasks[task_name]["result"]["containsTarget"] == says_yes
            assert sorted(worker for worker, _ in tasks[task_name]["answers"]) == ["human:alice", "human:bob"]

        dashboard.wait_for_function("() => document.getElementById('progress').textContent.includes('5 of 5 finished')")
        assert dashboard.evaluate("window.notReloaded") is True, "the dashboard refreshes without reloading"
        row = dashboard.locator("tr[data-task='x-script']")
        assert row.locator("td.label").inner_text() == MALICIOUS_LABEL
        assert dashboard.locator("#tasks script, #tasks img").count() == 0
        assert dashboard.evaluate("window.pwned") is None
        assert "2 / 0 / 0" in dashboard.locator("tr[data-task='frame-0000']").inner_text()
        assert "$0.10" == dashboard.inner_text("#spend")  # ten answers at $0.01
        # The result with the adjudicator's confidence, and each worker's record (no gold loaded: none paid).
        assert re.fullmatch(
            r"(yes|no) \(\d+ % sure\)", dashboard.locator("tr[data-task='frame-0000'] td").nth(5).inner_text()
        )
        alice_row = dashboard.locator("#workers tr[data-worker='alice']").inner_text()
        assert "5" in alice_row and "active" in alice_row and "%" in alice_row
        assert dashboard.inner_text("#gold-cost") == "$0.00"
        dashboard.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)
    finally:
        for context in (dashboard_context, alice_context, bob_context):
            context.close()


def test_cant_tell_by_space_bar_then_the_task_expires_on_the_dashboard(chromium, crowd_server, tmp_path):
    generate_frames(tmp_path / "frames", 1)
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"), task_deadline_seconds=5.0)
    url = f"{server.endpoint_url}/images/{frame_name(0)}"
    dashboard_context, dashboard = sign_in(chromium, server, "dashboard", server.account.account_id, DESKTOP)
    worker_context, worker = sign_in(chromium, server, "worker", "carol", PHONE)
    try:
        # The task's deadline runs from its PUT: put it once both pages are open, so a slow sign-in cannot use it up.
        ImageContainsHook().put_task("image-contains", "blurry", {"image": {"url": url}, "target": {"label": "car"}})
        # The waiting page reloads itself once a question waits (a reload by hand races it: ERR_ABORTED).
        worker.wait_for_selector("#answer-form")
        assert shown_question(worker) == ("car", frame_name(0))
        with worker.expect_navigation():
            worker.keyboard.press(" ")
        assert shown_question(worker) is None, "a worker who could not tell is not asked again"
        tasks = wait_until_finished(server, timeout=15)
        assert tasks["blurry"]["state"] == "failed" and tasks["blurry"]["problem"]["code"] == "Expired"
        assert tasks["blurry"]["answers"] == [], "can't tell is no vote"
        row = dashboard.locator("tr[data-task='blurry']")
        row.filter(has_text="Expired").wait_for()
        assert re.search(r"0 / 0 / 1", row.inner_text())
    finally:
        dashboard_context.close()
        worker_context.close()


def test_no_token_and_path_traversal_are_refused_in_the_browser(chromium, crowd_server, tmp_path):
    generate_frames(tmp_path / "frames", 1)
    (tmp_path / "secret.png").write_bytes(b"secret outside the folder")
    server = crowd_server(workforce="human", images_dir=str(tmp_path / "frames"))
    context = chromium.new_context()
    try:
        page = context.new_page()
        assert page.goto(server.endpoint_url + f"/images/{frame_name(0)}").status == 401
        response = page.goto(server.endpoint_url + "/work")
        assert page.url.endswith("/signin?for=worker") and response.status == 200
        page.fill("#token", "icw_guessed")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.inner_text(".error") == "Unknown token."
        assert context.cookies() == []

        put_questions(server, ["q1"])  # signed in, dave holds this question: its image is his to see
        page.fill("#token", server.issue_token("worker", "dave"))
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.goto(server.endpoint_url + f"/images/{frame_name(0)}").status == 200
        for path in ("/images/..%2fsecret.png", "/images/..%5csecret.png", "/images/%2e%2e/secret.png"):
            response = page.goto(server.endpoint_url + path)
            assert response.status in (403, 404), path
            assert b"secret" not in response.body(), path
    finally:
        context.close()


def test_space_and_enter_on_a_focused_control_do_what_that_control_does(chromium, crowd_server, tmp_path):
    generate_frames(tmp_path / "frames", 1)
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"))
    put_questions(server, ["q1", "q2", "q3"])
    context, page = sign_in(chromium, server, "worker", "erin", DESKTOP)
    try:
        for task, button, key, answer in (("q1", "no", " ", 0), ("q2", "yes", "Enter", 1)):
            shown_question(page)
            page.keyboard.press("Tab")  # as a keyboard user gets there: Tab until the button has focus
            while not page.evaluate(f"document.activeElement.matches('button.{button}')"):
                page.keyboard.press("Tab")
            with page.expect_navigation():
                page.keyboard.press(key)
            assert stored_answers(server)[-1] == (task, "human:erin", answer), f"{key!r} on {button}"
        shown_question(page)
        page.focus("button.link")  # Sign out
        with page.expect_navigation():
            page.keyboard.press(" ")
        assert page.url.endswith("/signin"), "Space on Sign out signs out"
        assert [task for task, *_ in stored_answers(server)] == ["q1", "q2"], "and answers nothing"
    finally:
        context.close()


def test_question_wording_keyboard_hints_and_a_sign_in_page_for_workers(chromium, crowd_server, tmp_path):
    generate_frames(tmp_path / "frames", 1)
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"))
    questions = {"apple": "an apple", "traffic lights": "traffic lights", "smoke": "smoke", "SUV": "an SUV"}
    for n, label in enumerate(questions):
        put_questions(server, [f"w{n}"], label=label)
    signin = chromium.new_page()
    try:
        signin.goto(server.endpoint_url + "/signin")
        text = signin.inner_text("main")
        assert "token you were given" in text
        assert "imagecontains-server" not in text and signin.locator("main code").count() == 0, "no command line"
    finally:
        signin.close()
    desktop_context, desktop = sign_in(chromium, server, "worker", "fay", DESKTOP)
    try:
        for label, wording in questions.items():
            assert shown_question(desktop)[0] == label
            assert desktop.inner_text("h1") == f"Does this image contain {wording}?"
            assert all(key.is_visible() for key in desktop.locator("kbd").all())
            with desktop.expect_navigation():
                desktop.keyboard.press("n")
    finally:
        desktop_context.close()
    phone_context, phone = sign_in(chromium, server, "worker", "gus", PHONE)
    try:
        shown_question(phone)
        assert phone.locator("kbd").count() == 3 and not any(key.is_visible() for key in phone.locator("kbd").all())
    finally:
        phone_context.close()


def test_dashboard_names_images_by_their_path_in_the_folder_and_shows_no_agreement_for_one_vote(
    chromium, crowd_server, tmp_path
):
    for camera in ("cam1", "cam2"):
        generate_frames(tmp_path / "frames" / camera, 1)
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"))
    for camera in ("cam1", "cam2"):
        put_questions(server, [camera], image=f"{camera}/{frame_name(0)}")
    dashboard_context, dashboard = sign_in(chromium, server, "dashboard", server.account.account_id, DESKTOP)
    contexts = [dashboard_context]
    try:
        for name, answers in (("alice", 2), ("bob", 1)):  # two votes on cam1, one on cam2
            context, page = sign_in(chromium, server, "worker", name, DESKTOP)
            contexts.append(context)
            for _ in range(answers):
                shown_question(page)
                with page.expect_navigation():
                    page.keyboard.press("y")
        dashboard.locator("tr[data-task='cam1']").filter(has_text="completed").wait_for()
        cells = {
            camera: dashboard.locator(f"tr[data-task='{camera}'] td").all_inner_texts() for camera in ("cam1", "cam2")
        }
        assert cells["cam1"][2] == f"cam1/{frame_name(0)}" and cells["cam2"][2] == f"cam2/{frame_name(0)}"
        assert cells["cam1"][6:8] == ["2 / 0 / 0", "100 %"]
        assert cells["cam2"][6:8] == ["1 / 0 / 0", "\N{EN DASH}"], "one vote agrees with itself: no agreement figure"
    finally:
        for context in contexts:
            context.close()


def test_a_broken_image_can_only_be_reported_or_not_told_and_fails_the_task_once_every_worker_reports_it(
    chromium, crowd_server, tmp_path, screenshots
):
    generate_frames(tmp_path / "frames", 1)
    # Two new workers' reports weigh one whole report (issue 24): then the local image is checked on disk.
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"), broken_image_reports=1)
    deleted = tmp_path / "frames" / "cam9" / "deleted.png"
    deleted.parent.mkdir()
    deleted.write_bytes((tmp_path / "frames" / frame_name(0)).read_bytes())
    put_questions(server, ["gone"], image="cam9/deleted.png")  # a PUT names only images that exist (issue 24)
    deleted.unlink()  # ... and then the frame is cleaned up
    dashboard_context, dashboard = sign_in(chromium, server, "dashboard", server.account.account_id, DESKTOP)
    contexts = [dashboard_context]
    try:
        for n, name in enumerate(("alice", "bob")):
            context, page = sign_in(chromium, server, "worker", name, DESKTOP)
            contexts.append(context)
            page.locator("#image-error").wait_for()
            assert not page.is_visible("#zoom") and not page.is_visible("img.frame")
            visible = [
                button.evaluate("button => button.firstChild.textContent.trim()")  # the name, without its key
                for button in page.locator(".answers button:visible").all()
            ]
            assert visible == ["Can't tell", "Report a broken image"]
            for key in ("y", "n"):
                page.keyboard.press(key)
            page.wait_for_timeout(300)  # time enough for a form post to land, had a key sent one
            assert page.locator("#image-error").is_visible() and stored_answers(server)[n:] == []
            if n == 0:
                page.screenshot(path=str(screenshots / "worker-broken-image.png"))
            with page.expect_navigation():
                page.click("button.broken-image")
            assert stored_answers(server)[n] == ("gone", f"human:{name}", -2)
            if n == 0:
                assert server.tasks("image-contains")[0]["state"] == "processing", (
                    "one report may be the worker's network"
                )
                row = dashboard.locator("tr[data-task='gone']")
                row.filter(has_text="1 report").wait_for()
                assert dashboard.inner_text("#broken-images") == "1"
        (task,) = server.tasks("image-contains")
        assert task["state"] == "failed" and task["problem"]["code"] == "ImageUnavailable", "no wait for the deadline"
        dashboard.locator("tr[data-task='gone']").filter(has_text="ImageUnavailable").filter(
            has_text="2 reports"
        ).wait_for()
        dashboard.screenshot(path=str(screenshots / "dashboard-broken-image.png"), full_page=True)
    finally:
        for context in contexts:
            context.close()


def test_the_worker_sees_the_time_left_and_is_told_when_it_ran_out_or_an_answer_came_too_late(
    chromium, crowd_server, tmp_path
):
    generate_frames(tmp_path / "frames", 1)
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"), human_claim_seconds=3.0)
    put_questions(server, ["slow"])
    context, page = sign_in(chromium, server, "worker", "hal", DESKTOP)
    try:
        shown_question(page)
        assert re.fullmatch(r"Time left: 0:0[123]", page.inner_text("#time-left"))
        assert not page.is_visible("#time-up")
        page.locator("#time-up").wait_for(timeout=10_000)
        assert page.inner_text("#time-left") == "Time left: 0:00"
        assert page.locator(".answers button:enabled").count() == 0, "an answer now would not count"
        page.keyboard.press("y")
        # The question went back; an answer sent anyway (a page without scripts, a slow network) is dropped,
        # and the next page says so.
        deadline = time.monotonic() + 10
        while held_by(server, "slow") is not None:  # the server gives questions back once a second
            assert time.monotonic() < deadline, "the question was never given back"
            time.sleep(0.1)
        response_type = page.evaluate(
            """async () => {
                const form = new FormData(document.getElementById("answer-form"));
                form.set("answer", "yes");
                const sent = {method: "POST", body: new URLSearchParams(form), redirect: "manual"};
                return (await fetch("/work/answer", sent)).type;
            }"""
        )
        assert response_type == "opaqueredirect"  # the 303 back to /work, not followed here
        with page.expect_navigation():
            page.click("#time-up a")
        assert "was not recorded" in page.inner_text("#notice")
        assert stored_answers(server) == []
        shown_question(page)  # nobody else took it: it is offered again, with its time anew
        assert re.fullmatch(r"Time left: 0:0[123]", page.inner_text("#time-left"))
        page.reload()
        assert page.locator("#notice").count() == 0, "told once"
    finally:
        context.close()


def test_a_stray_key_is_undone_while_its_task_is_undecided_and_no_question_is_paid_twice(
    chromium, crowd_server, tmp_path, screenshots
):
    generate_frames(tmp_path / "frames", 2)
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"))
    put_questions(server, ["q1"], image=frame_name(0))
    put_questions(server, ["q2"], image=frame_name(1))
    ivy_context, ivy = sign_in(chromium, server, "worker", "ivy", DESKTOP)
    jan_context = None
    try:
        assert shown_question(ivy)[1] == frame_name(0)
        with ivy.expect_navigation():
            ivy.keyboard.press("n")  # meant "y"
        assert shown_question(ivy)[1] == frame_name(1), "the next question at once: a fast worker never waits"
        assert stored_answers(server) == [("q1", "human:ivy", 0)]
        assert ivy.inner_text("#last-answer") == "No"
        ivy.screenshot(path=str(screenshots / "worker-undo.png"))
        with ivy.expect_navigation():
            ivy.keyboard.press("u")
        assert shown_question(ivy)[1] == frame_name(0), "the undone question comes back"
        assert stored_answers(server) == []
        with ivy.expect_navigation():
            ivy.keyboard.press("y")
        assert shown_question(ivy)[1] == frame_name(1), "then the one set aside"
        assert stored_answers(server) == [("q1", "human:ivy", 1)]
        with sqlite3.connect(server.db_path) as db:
            (balance,) = db.execute("SELECT microdollars FROM balances WHERE account = ?", (server.account.account_id,))
        assert balance[0] == 1000_000_000 - 2 * 10_000, "two questions shown, each paid once"

        jan_context, jan = sign_in(chromium, server, "worker", "jan", DESKTOP)
        assert shown_question(jan)[1] == frame_name(0)
        with jan.expect_navigation():
            jan.keyboard.press("y")  # the second "yes": q1 is decided by it
        assert server.tasks("image-contains")[0]["state"] == "completed"
        jan.wait_for_selector("#waiting")
        assert jan.locator("#undo-form").count() == 0, "an answer that decided its task cannot be taken back"
    finally:
        ivy_context.close()
        if jan_context is not None:
            jan_context.close()


def test_images_show_at_their_own_size_and_zoom_without_smoothing(chromium, crowd_server, tmp_path, screenshots):
    generate_frames(tmp_path / "frames", 1)  # 160 x 120
    write_large_frame(tmp_path / "frames" / "cam1" / "wide.png")
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"))
    put_questions(server, ["wide"], image="cam1/wide.png")
    put_questions(server, ["small"], image=frame_name(0))
    context, page = sign_in(chromium, server, "worker", "kim", DESKTOP)

    def shown_size():
        return page.evaluate(
            """() => {
                const box = document.querySelector("img.frame").getBoundingClientRect();
                const rendering = getComputedStyle(document.querySelector("img.frame")).imageRendering;
                return [Math.round(box.width), Math.round(box.height), rendering];
            }"""
        )

    try:
        shown_question(page)
        width, height, _ = shown_size()
        assert width < 1600 and height <= 0.7 * DESKTOP["height"] + 1, "shrunk to fit: the whole frame is in view"
        assert width / height == pytest.approx(1.6, abs=0.01), "in proportion"
        assert page.inner_text("#image-size").startswith("1600 \N{MULTIPLICATION SIGN} 1000 px, shown at ")
        full_size = page.locator("#full-size")
        assert full_size.get_attribute("href") == f"{server.endpoint_url}/images/cam1/wide.png"
        assert full_size.get_attribute("target") == "_blank"
        page.click("button[data-zoom='1']")
        assert shown_size() == [1600, 1000, "auto"], "100 %: one image pixel per screen pixel"
        viewer_width, scroll_width = page.evaluate("[viewer.clientWidth, viewer.scrollWidth]")
        assert scroll_width > viewer_width, "the zoomed frame scrolls inside its box"
        page.keyboard.press("+")
        assert shown_size() == [3200, 2000, "pixelated"], "enlarged without smoothing"
        page.evaluate("viewer.scrollTo(1200 * 2 - 500, 700 * 2 - 350)")  # to the distant person
        page.screenshot(path=str(screenshots / "worker-large-frame-zoomed.png"))
        with page.expect_navigation():
            page.keyboard.press("y")

        assert shown_question(page) == ("person", frame_name(0))
        assert shown_size() == [160, 120, "auto"], "a small frame is shown at its own size, not blown up"
        page.click("button[data-zoom='4']")
        assert shown_size() == [640, 480, "pixelated"]
        page.keyboard.press("-")
        assert shown_size() == [320, 240, "pixelated"]
    finally:
        context.close()


def test_one_browser_holds_a_worker_and_a_dashboard_session_and_a_wrong_role_page_names_its_token(
    chromium, crowd_server, tmp_path
):
    generate_frames(tmp_path / "frames", 1)
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"))
    put_questions(server, ["q1"])
    context, worker = sign_in(chromium, server, "worker", "alice", DESKTOP)
    try:
        assert shown_question(worker) == ("person", frame_name(0))
        dashboard = context.new_page()  # the README's "open the dashboard in another tab"
        dashboard.goto(server.endpoint_url + "/dashboard")
        assert dashboard.url.endswith("/signin?for=dashboard")
        needed = dashboard.inner_text("#token-needed")
        assert "dashboard token" in needed and "signed in as the worker alice" in needed
        dashboard.fill("#token", server.issue_token("dashboard", server.account.account_id))
        with dashboard.expect_navigation():
            dashboard.click("button[type=submit]")
        assert dashboard.url.endswith("/dashboard")
        dashboard.wait_for_function("() => document.getElementById('progress').textContent.includes('0 of 1')")
        assert len(context.cookies()) == 2, "a session cookie per role"

        worker.reload()
        assert shown_question(worker) == ("person", frame_name(0)), "the worker tab is still signed in"
        with worker.expect_navigation():
            worker.keyboard.press("y")
        assert stored_answers(server) == [("q1", "human:alice", 1)]

        with dashboard.expect_navigation():
            dashboard.click("button.link")  # Sign out of the dashboard only
        worker.reload()
        assert worker.url.endswith("/work") and worker.locator("#waiting").count() == 1
        dashboard.goto(server.endpoint_url + "/dashboard")
        assert dashboard.url.endswith("/signin?for=dashboard")

        worker_only = chromium.new_page()  # a dashboard-only browser sent to the worker page
        worker_only.goto(server.endpoint_url + "/work")
        assert worker_only.inner_text("#token-needed") == "The worker page needs a worker token."
        worker_only.close()
    finally:
        context.close()


def test_over_https_cookies_are_secure_host_only_and_pages_carry_hsts(chromium, crowd_server, tmp_path):
    server = crowd_server(workforce="human", tls=True)
    context = chromium.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(server.endpoint_url + "/dashboard")
        page.fill("#token", server.issue_token("dashboard", server.account.account_id))
        with page.expect_navigation() as navigation:
            page.click("button[type=submit]")
        assert page.url.endswith("/dashboard")
        assert navigation.value.headers["strict-transport-security"] == "max-age=31536000"
        (cookie,) = context.cookies()
        assert cookie["name"] == "__Host-imagecontains_dashboard"
        assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, True, "Strict", "/")
    finally:
        context.close()


def test_the_dashboard_cancels_one_task_or_every_processing_task_of_its_prefix(chromium, crowd_server, tmp_path):
    generate_frames(tmp_path / "frames", 1)
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"))
    put_questions(server, ["run1-a", "run1-b", "run2-a"])
    context, dashboard = sign_in(chromium, server, "dashboard", server.account.account_id, DESKTOP, "/dashboard")
    try:
        row = dashboard.locator("tr[data-task='run2-a']")
        with dashboard.expect_navigation():
            row.locator("button.cancel-task").click()
        row.filter(has_text="Cancelled").wait_for()
        assert row.locator("button.cancel-task").count() == 0, "a finished task has no Cancel button"
        dashboard.goto(server.endpoint_url + "/dashboard?prefix=run1-")
        with dashboard.expect_navigation():
            dashboard.click("#cancel-prefix button")
        assert dashboard.url.endswith("/dashboard?prefix=run1-")
        states = {task["task_name"]: task["problem"]["code"] for task in server.tasks("image-contains")}
        assert states == {"run1-a": "Cancelled", "run1-b": "Cancelled", "run2-a": "Cancelled"}
        forged = dashboard.evaluate(
            """async () => (await fetch("/dashboard/cancel", {method: "POST",
                body: new URLSearchParams({prefix: "run", csrf: "0".repeat(64)})})).status"""
        )
        assert forged == 403, "the form needs the page's CSRF token"
    finally:
        context.close()


def test_at_1280_px_the_task_table_fits_unbroken_and_a_large_frame_leaves_the_answer_buttons_on_screen(
    chromium, crowd_server, tmp_path
):
    write_large_frame(tmp_path / "frames" / "cam1" / "wide.png")
    server = crowd_server(**TWO_HUMANS, images_dir=str(tmp_path / "frames"))
    put_questions(server, ["camera-north-entrance-0001", "camera-north-entrance-0002"], image="cam1/wide.png")
    viewport = {"width": 1280, "height": 900}
    dashboard_context, dashboard = sign_in(chromium, server, "dashboard", server.account.account_id, viewport)
    worker_context, worker = sign_in(chromium, server, "worker", "alice", viewport)
    try:
        dashboard.goto(server.endpoint_url + "/dashboard")
        dashboard.locator("tr[data-task='camera-north-entrance-0001'] td.label").wait_for()
        overflow = dashboard.evaluate(
            "() => { const box = document.querySelector('#tasks').closest('.scroll');"
            " return box.scrollWidth - box.clientWidth; }"
        )
        assert overflow <= 0, f"the task table is {overflow} px wider than its box"
        lines = dashboard.evaluate(
            """() => Array.from(document.querySelectorAll('#tasks td.label, #tasks td.state')).map(cell => {
                const range = document.createRange();
                range.selectNodeContents(cell);
                return new Set(Array.from(range.getClientRects()).map(rect => Math.round(rect.top))).size;
            })"""
        )
        assert set(lines) == {1}, "a label or state is split over lines"

        for _ in range(2):  # the second question also shows the bar that undoes the first answer
            shown_question(worker)
            bottom = worker.evaluate(
                "Math.max(...Array.from(document.querySelectorAll('.answers button:not([hidden])'))"
                ".map(button => button.getBoundingClientRect().bottom))"
            )
            assert bottom <= viewport["height"], f"the answer buttons end at {bottom} px, below the screen"
            with worker.expect_navigation():
                worker.keyboard.press("n")
    finally:
        dashboard_context.close()
        worker_context.close()
