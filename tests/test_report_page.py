"""The triage report page, opened in headless Chromium: it renders one row per flagged frame and
every thumbnail loads (decoded at the frames' size, shown at thumbnail width)."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.frames import HEIGHT, WIDTH, frame_name, generate_frames
from demo.run_demo import serve_folder


@pytest.fixture
def chromium_page(chromium):
    page = chromium.new_page()
    yield page
    page.close()


# What write_report is given for the report's cost lines (the DAG reads them from its environment).
COSTS = {"reward_per_answer": 0.01, "crowd_task_cost": None}


def test_report_page_renders_its_rows_and_thumbnails(tmp_path, chromium_page):
    import triage_report

    key = generate_frames(tmp_path / "frames", 12)
    with serve_folder(tmp_path / "frames") as base_url:
        answers = [
            {
                "url": f"{base_url}/{name}",
                "label": "person",
                "task_name": f"task-{index}",
                "state": "completed",
                "contains_target": "person" in labels,
                "problem": None,
            }
            for index, (name, labels) in enumerate(key.items())
        ]
        answers[1].update(state="failed", contains_target=None, problem={"code": "Expired", "message": "no workers"})
        summary = {"label": "person", "run_id": "r1", "data_interval_start": "11:00", "data_interval_end": "12:00"}
        report = triage_report.write_report(answers, summary, str(tmp_path / "report"), **COSTS)
    flagged = sorted([name for name, labels in key.items() if "person" in labels] + [frame_name(1)])

    failed_requests: list[str] = []
    chromium_page.on("requestfailed", lambda request: failed_requests.append(request.url))
    # The HTTP server is stopped: the page must stand on its own copies of the frames.
    chromium_page.goto(Path(report["report_html"]).as_uri())
    chromium_page.wait_for_load_state("load")

    assert chromium_page.locator("#frames tbody tr.frame").count() == len(key), "every frame is listed"
    rows = chromium_page.locator("#frames tbody tr.flagged")
    assert rows.count() == len(flagged)
    assert sorted(rows.nth(i).locator("td").nth(1).inner_text().split("\n")[0] for i in range(rows.count())) == flagged
    assert "no answer (Expired)" in chromium_page.locator("#frames").inner_text()
    assert "to inspect: " + str(len(flagged)) in chromium_page.locator("#summary").inner_text()

    images = chromium_page.locator("#frames img")
    images.last.scroll_into_view_if_needed()
    chromium_page.wait_for_function("Array.from(document.images).every(img => img.complete)")
    loaded = chromium_page.evaluate(
        "Array.from(document.images).map(img => [img.naturalWidth, img.naturalHeight, img.getBoundingClientRect().width])"
    )
    assert len(loaded) == len(flagged)
    assert all(size == [WIDTH, HEIGHT, triage_report.THUMBNAIL_WIDTH] for size in loaded), loaded
    assert failed_requests == []
