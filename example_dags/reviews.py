"""The team's reviewers in surveillance_triage: one question per frame the crowd could not settle (for Airflow's
human-in-the-loop operator), and their answers as ``reviews.json`` next to the run's report. Helpers of the
example DAG (kept out of parsing by ``.airflowignore``); nothing here is the provider's."""

from __future__ import annotations

import json
from typing import Any

from example_io import join_location, write_output
from triage_report import frame_name

REVIEW_OPTIONS = ["Contains it", "Does not contain it", "Cannot tell"]


def review_requests(answers: list[dict[str, Any]], label: str) -> list[dict[str, str]]:
    """One reviewer question (the human-in-the-loop operator's ``subject`` and ``body``) per frame the crowd
    could not settle, in the order of ``answers``."""
    requests = []
    for answer in answers:
        if answer["state"] == "completed":
            continue
        problem = answer.get("problem") or {}
        name = frame_name(answer["url"])
        # An s3:// frame cannot be shown in the browser; its URI tells a reviewer where to find it.
        picture = f"![{name}]({answer['url']})" if answer["url"].startswith(("http://", "https://")) else answer["url"]
        requests.append(
            {
                "subject": f"Does frame {name} show a {label}?",
                "body": f"{picture}\n\nThe crowd could not settle this frame ({problem.get('code', 'failed')}: "
                f"{problem.get('message', 'no details')}). Frame: `{answer['url']}`",
            }
        )
    return requests


def review_outcomes(answers: list[dict[str, Any]], reviews: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The reviewers' answers joined with the frames they were asked about (``None``: no answer yet or
    the question failed), as ``reviews.json`` records."""
    unsettled = [answer for answer in answers if answer["state"] != "completed"]
    outcomes = []
    for answer, review in zip(unsettled, reviews, strict=True):
        chosen = (review or {}).get("chosen_options") or []
        decision = chosen[0] if chosen else None
        outcomes.append(
            {
                "frame": frame_name(answer["url"]),
                "url": answer["url"],
                "label": answer["label"],
                "crowd_problem": (answer.get("problem") or {}).get("code"),
                "review": decision,
                "contains_target": {REVIEW_OPTIONS[0]: True, REVIEW_OPTIONS[1]: False}.get(decision or ""),
                "reviewed_by": ((review or {}).get("responded_by_user") or {}).get("name"),
            }
        )
    return outcomes


def write_reviews(outcomes: list[dict[str, Any]], run_dir: str, conn_id: str | None = None) -> dict[str, int]:
    """Write ``outcomes`` to ``reviews.json`` in the run's report folder; return what the reviewers said."""
    write_output(
        join_location(run_dir, "reviews.json"), json.dumps(outcomes, indent=2).encode(), "application/json", conn_id
    )
    return {
        "reviewed": sum(1 for o in outcomes if o["review"] is not None),
        "contains": sum(1 for o in outcomes if o["contains_target"] is True),
        "unanswered": sum(1 for o in outcomes if o["review"] is None),
    }
