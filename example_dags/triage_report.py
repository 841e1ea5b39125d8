"""The report of surveillance_triage: which frames need a human look, as CSV, JSON and an HTML page with
thumbnails. Helpers of the example DAG (kept out of parsing by ``.airflowignore``); nothing here is the
provider's."""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import re
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from example_io import join_location, read_image, write_output

from airflow_provider_imagecontains.prescreen import prescreened, summarize

log = logging.getLogger(__name__)

THUMBNAIL_WIDTH = 160


def needs_inspection(answer: dict[str, Any]) -> bool:
    """A frame needs a human look when the crowd saw the label in it or could not answer."""
    return answer["state"] != "completed" or bool(answer["contains_target"])


def inspection_reason(answer: dict[str, Any], label: str) -> str:
    if answer["state"] == "completed" and answer.get("source") == "model":
        return f"contains {label} (model, score {answer['model_score']:.2f})"
    if answer["state"] == "completed":
        return f"contains {label}"
    problem = answer.get("problem") or {}
    return f"no answer ({problem.get('code', answer['state'])})"


def frame_name(url: str) -> str:
    """The last path segment of a frame's URL (its file name), without any presigned query."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or url


REPORT_COLUMNS = [
    "frame",
    "url",
    "flagged",
    "answer",
    "confidence",
    "answers",
    "source",
    "reason",
    "task_name",
    "thumbnail",
]


def render_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS)
    writer.writeheader()
    writer.writerows({key: "" if row.get(key) is None else row[key] for key in REPORT_COLUMNS} for row in rows)
    return buffer.getvalue()


def answer_text(answer: dict[str, Any], label: str) -> str:
    """What was decided about a frame, e.g. ``person``, ``no person`` or ``no answer (Expired)``."""
    if answer["state"] != "completed":
        return f"no answer ({(answer.get('problem') or {}).get('code', answer['state'])})"
    return label if answer["contains_target"] else f"no {label}"


def confidence_text(answer: dict[str, Any]) -> str:
    """The crowd's confidence (the adjudicator's posterior), or the model's score for a frame it settled."""
    if answer.get("source") == "model":
        return f"model score {answer['model_score']:.2f}"
    return "-" if answer.get("confidence") is None else f"{answer['confidence']:.0%}"


def render_html(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A self-contained page: the run's counts and one table row per frame, those to inspect first."""
    esc = html.escape
    body = []
    for row in rows:
        # The thumbnail links to the full-size copy: the original URL may be gone or expired.
        if row["thumbnail"]:
            image = (
                f'<a href="{esc(row["thumbnail"])}"><img src="{esc(row["thumbnail"])}" alt="{esc(row["frame"])}" '
                f'width="{THUMBNAIL_WIDTH}" loading="lazy"></a>'
            )
        else:
            image = "(image unavailable)" if row["flagged"] else ""
        cells = [
            image,
            f"{esc(row['frame'])}<br><small>{esc(row['url'])}</small>",
            esc(row["answer"]),
            esc(row["confidence"]),
            "-" if row["answers"] is None else str(row["answers"]),
            esc(row["source"] or "-"),
            esc(row["reason"]),
            f"<code>{esc(row['task_name'] or '-')}</code>",
        ]
        row_class = "frame flagged" if row["flagged"] else "frame clear"
        body.append(f'<tr class="{row_class}">' + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    names = {
        "frames": "frames",
        "flagged": "to inspect",
        "clear": "clear",
        "unanswered": "unanswered",
        "crowd_answers": "crowd answers",
        "cost": "crowd cost",
        "settled_by_model": "settled by the model",
        "sent_to_crowd": "sent to the crowd",
        "spend_avoided": "crowd spend avoided",
        "audited": "audits of the model",
        "audit_agreement": "crowd agreed with the model on audits",
    }
    counts = "".join(
        f"<li>{esc(name)}: <strong>{esc(str(summary[key]))}</strong></li>"
        for key, name in names.items()
        if key in summary
    )
    title = f"Frames: {summary['data_interval_start']} to {summary['data_interval_end']}"
    headings = "".join(
        f"<th>{name}</th>"
        for name in ("thumbnail", "frame", "answer", "confidence", "answers", "source", "reason", "crowd task")
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:middle}}
tr.clear{{color:#555}}</style></head>
<body>
<h1>{esc(title)}</h1>
<p>Label asked: <strong>{esc(summary["label"])}</strong> (DAG run <code>{esc(summary["run_id"])}</code>)</p>
<ul id="summary">{counts}</ul>
<table id="frames">
<thead><tr>{headings}</tr></thead>
<tbody>
{chr(10).join(body) if body else '<tr><td colspan="8">No frame arrived in this interval.</td></tr>'}
</tbody>
</table>
</body>
</html>
"""


def write_report(
    answers: list[dict[str, Any]],
    summary: dict[str, Any],
    run_dir: str,
    read_frame: Callable[[str], bytes] | None = None,
    *,
    conn_id: str | None = None,
    reward_per_answer: float,
    crowd_task_cost: float | None,
) -> dict[str, Any]:
    """Write ``inspect.csv``, ``triage.json``, ``index.html`` and ``thumbnails/`` into ``run_dir``.

    Thumbnails are copies of the frames (shown scaled down): presigned URLs expire and camera
    folders rotate, so the report keeps the pictures it shows.

    :param answers: the sensor's answers for every frame of the run.
    :param summary: what the run was (label, run id, data interval).
    :param run_dir: a local folder or S3 prefix for this run's report.
    :param read_frame: reads a frame's bytes by its URL (default: :func:`example_io.read_image` on ``conn_id``).
    :param conn_id: the Airflow connection of the report's storage (and of ``s3://`` frames by default).
    :param reward_per_answer: dollars per crowd answer, for the report's cost.
    :param crowd_task_cost: dollars per crowd task, for the spend a pre-screen avoided (``None``: not known).
    """
    if read_frame is None:
        read_frame = partial(read_image, conn_id=conn_id)
    rows = []
    # Those to inspect first (each with a copy of its frame), then the clear ones.
    ordered = [a for a in answers if needs_inspection(a)] + [a for a in answers if not needs_inspection(a)]
    for number, answer in enumerate(ordered):
        name = frame_name(answer["url"])
        flagged = needs_inspection(answer)
        thumbnail = f"thumbnails/{number:05d}-{re.sub(r'[^A-Za-z0-9._-]', '_', name)}" if flagged else ""
        if flagged:
            try:
                write_output(
                    join_location(run_dir, thumbnail), read_frame(answer["url"]), "application/octet-stream", conn_id
                )
            except (OSError, BotoCoreError, ClientError) as err:
                log.warning("Could not copy frame %s for the report: %s", name, err)
                thumbnail = ""
        rows.append(
            {
                "frame": name,
                "url": answer["url"],
                "flagged": flagged,
                "answer": answer_text(answer, summary["label"]),
                "confidence": confidence_text(answer),
                "answers": answer.get("answers"),
                "source": answer.get("source"),
                "reason": inspection_reason(answer, summary["label"]) if flagged else "",
                "task_name": answer["task_name"],
                "thumbnail": thumbnail,
            }
        )
    flagged_rows = [row for row in rows if row["flagged"]]
    crowd_answers = sum(a.get("answers") or 0 for a in answers if a.get("source") != "model")
    summary = {
        **summary,
        "frames": len(answers),
        "flagged": len(flagged_rows),
        "clear": len(answers) - len(flagged_rows),
        "unanswered": sum(1 for a in answers if a["state"] != "completed"),
        "crowd_answers": crowd_answers,
        # Votes used, at the reward per answer; questions shown but answered "can't tell" are paid too.
        "cost": f"at least ${crowd_answers * reward_per_answer:,.2f} ({crowd_answers} answers at ${reward_per_answer})",
    }
    if prescreened(answers):
        prescreen = summarize(answers)
        agreement = prescreen["audit_agreement"]
        summary.update(
            settled_by_model=prescreen["settled_by_model"],
            sent_to_crowd=prescreen["sent_to_crowd"],
            spend_avoided="n/a (set IMAGECONTAINS_CROWD_TASK_COST)"
            if crowd_task_cost is None
            else f"${prescreen['settled_by_model'] * crowd_task_cost:,.2f}",
            audited=prescreen["audited"],
            audit_agreement="n/a"
            if agreement is None
            else f"{agreement:.1%} ({prescreen['audits_agreed']} of {prescreen['audits_answered']})",
        )
    outputs = {
        "report_csv": write_output(
            join_location(run_dir, "inspect.csv"), render_csv(rows).encode(), "text/csv", conn_id
        ),
        "report_json": write_output(
            join_location(run_dir, "triage.json"),
            json.dumps(
                {**summary, "inspect": flagged_rows, "cleared": [row for row in rows if not row["flagged"]]}, indent=2
            ).encode(),
            "application/json",
            conn_id,
        ),
        "report_html": write_output(
            join_location(run_dir, "index.html"),
            render_html(summary, rows).encode(),
            "text/html; charset=utf-8",
            conn_id,
        ),
    }
    return {**summary, **outputs}
