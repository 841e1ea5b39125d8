"""`make demo`: run ``surveillance_triage`` through Airflow against the local crowd server.

Everything lives under ``.demo/`` (recreated on every run): the sample frames and their answer
key, the crowd server's database, a throw-away Airflow home and the report. The crowd server, the
folder server for the frames and the Airflow process are stopped on the way out, also after a
failure or Ctrl-C.

Run from the repository root: ``python -m demo.run_demo``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from demo.frames import ANSWER_KEY_NAME, frame_name, generate_frames
from imagecontains_gateway.testing import LocalCrowdServer

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO_ROOT / "example_dags"
DAG_ID = "surveillance_triage"
# The run the demo triggers covers 11:00 to 12:00 on this day (the DAG's data interval).
RUN_AFTER = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
INTERVAL = timedelta(hours=1)
# Frames that arrived before the interval: the run must leave them out.
EARLIER_FRAMES = 2
FRAMES_IN_INTERVAL = 24
# Far more than a demo run needs (well under a minute); stops a stuck run from hanging `make demo`.
COMMAND_TIMEOUT_SECONDS = 300
# Small batches so that even the demo spreads its frames over several mapped tasks.
BATCH_SIZE = 8


def stamp_arrivals(folder: Path, names: Sequence[str], start: datetime, spacing: timedelta) -> None:
    """Set the modification times of ``names`` in ``folder`` to ``start``, ``start + spacing``, ..."""
    for position, name in enumerate(names):
        arrived = (start + position * spacing).timestamp()
        os.utime(folder / name, (arrived, arrived))


def prepare_frames(folder: Path) -> dict[str, list[str]]:
    """Write the sample frames; the first ``EARLIER_FRAMES`` arrive before the run's interval.

    :return: the answer key's images of the frames inside the interval.
    """
    images = generate_frames(folder, EARLIER_FRAMES + FRAMES_IN_INTERVAL)
    names = [frame_name(index) for index in range(len(images))]
    interval_start = RUN_AFTER - INTERVAL
    stamp_arrivals(folder, names[:EARLIER_FRAMES], interval_start - INTERVAL / 2, timedelta(minutes=5))
    stamp_arrivals(folder, names[EARLIER_FRAMES:], interval_start, INTERVAL / FRAMES_IN_INTERVAL)
    return {name: images[name] for name in names[EARLIER_FRAMES:]}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the demo's output to its summary."""


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on a free loopback port; yield its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, name="demo-frames", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def airflow_env(airflow_home: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of the demo's Airflow commands: a private home, the example DAGs only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "IMAGECONTAINS_"))}
    env.update(
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
    )
    env.update(extra)
    return env


def run_logged(
    command: list[str], env: dict[str, str], log_path: Path, timeout: float = COMMAND_TIMEOUT_SECONDS
) -> None:
    """Run ``command`` with its output in ``log_path``; on failure show the log's tail and raise.

    The command runs in its own process group, which is killed if it outlives ``timeout`` seconds
    or the demo is interrupted.
    """
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
        try:
            outcome = f"exit {process.wait(timeout=timeout)}"
        except subprocess.TimeoutExpired:
            outcome = f"still running after {timeout:.0f} s, killed"
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if outcome != "exit 0":
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        raise SystemExit(f"{' '.join(command[:4])} failed ({outcome}); end of {log_path}:\n" + "\n".join(tail))


@dataclass(frozen=True)
class DemoResult:
    """What a demo run produced: the answer key of the frames in the interval, the triage report
    (``triage.json``), the report page, and what the crowd was paid."""

    answer_key: dict[str, list[str]]
    report: dict[str, Any]
    report_html: Path
    answers_bought: int
    cost: float


def migrate_airflow(airflow_home: Path, log_path: Path) -> None:
    """Create the metadata database of a fresh Airflow home."""
    run_logged([_airflow(), "db", "migrate"], airflow_env(airflow_home, {}), log_path)


def run_dag(
    dag_id: str,
    run_after: datetime,
    airflow_home: Path,
    extra_env: dict[str, str],
    log_path: Path,
    params: dict[str, Any] | None = None,
) -> None:
    """Run one DAG run to the end in a single process (``airflow dags test``), with ``params`` as its conf."""
    command = [_airflow(), "dags", "test", dag_id, run_after.isoformat(), "--conf", json.dumps(params or {})]
    run_logged(command, airflow_env(airflow_home, extra_env), log_path)


def run_demo(
    workdir: Path, *, worker_accuracy: float = 0.95, worker_page: bool = False, echo: Callable[[str], None] = print
) -> DemoResult:
    """Recreate ``workdir``, run ``surveillance_triage`` once against a local crowd server, clean up.

    :param workdir: the demo's folder; deleted first.
    :param worker_accuracy: how often a simulated worker answers as the answer key says.
    :param worker_page: let a person answer on the worker page next to slower simulated workers (docs/workforce.md).
    :param echo: where progress lines go.
    """
    shutil.rmtree(workdir, ignore_errors=True)
    frames_dir, airflow_home, reports_dir = workdir / "frames", workdir / "airflow", workdir / "reports"
    log_path = workdir / "airflow.log"
    airflow_home.mkdir(parents=True)

    answer_key = prepare_frames(frames_dir)
    echo(f"Generated {len(answer_key) + EARLIER_FRAMES} sample frames in {frames_dir}")
    migrate_airflow(airflow_home, log_path)
    crowd = LocalCrowdServer(
        workdir / "crowd.db",
        subprocess=True,
        answer_key_path=str(frames_dir / ANSWER_KEY_NAME),
        worker_accuracy=worker_accuracy,
        seed=2026,
        **(WORKER_PAGE_CONFIG if worker_page else {}),
    )
    crowd.start()
    if worker_page:
        echo(worker_page_instructions(crowd))
    try:
        with serve_folder(frames_dir) as frames_url:
            echo(
                f"Crowd server at {crowd.endpoint_url}, frames at {frames_url}; running {DAG_ID} (log: {log_path}) ..."
            )
            extra_env = {
                **crowd.airflow_connection_env(),
                "IMAGECONTAINS_FRAMES_SOURCE": str(frames_dir),
                "IMAGECONTAINS_FRAMES_BASE_URL": frames_url,
                "IMAGECONTAINS_REPORTS_DIR": str(reports_dir),
                "IMAGECONTAINS_POLL_INTERVAL": "1",
            }
            run_dag(DAG_ID, RUN_AFTER, airflow_home, extra_env, log_path, {"batch_size": BATCH_SIZE})
        tasks = crowd.tasks("image-contains")
    finally:
        crowd.stop()

    report_dir = reports_dir / (RUN_AFTER - INTERVAL).strftime("%Y%m%dT%H%M%S")
    answers_bought = sum(len(task["answers"]) for task in tasks)
    return DemoResult(
        answer_key=answer_key,
        report=json.loads((report_dir / "triage.json").read_text()),
        report_html=report_dir / "index.html",
        answers_bought=answers_bought,
        cost=answers_bought * crowd.config.reward_per_answer,
    )


# With --worker-page: a person answers next to simulated workers that take human-like time and take a question
# only once it has waited for the person this long (docs/workforce.md), so the person sees every frame first.
PERSON_FIRST_SECONDS = 45.0
WORKER_PAGE_CONFIG: dict[str, Any] = {
    "workforce": "mixed",
    "answer_delay_seconds": 2.0,
    "simulated_after_seconds": PERSON_FIRST_SECONDS,
}


def worker_page_instructions(crowd: LocalCrowdServer) -> str:
    """Where to answer and watch, with fresh sign-in tokens for the demo's worker and account."""
    worker_token = crowd.issue_token("worker", "you")
    dashboard_token = crowd.issue_token("dashboard", crowd.account.account_id)
    return (
        f"Worker page: {crowd.endpoint_url}/work  (token {worker_token})\n"
        f"Dashboard:   {crowd.endpoint_url}/dashboard  (token {dashboard_token})\n"
        f"Every question waits {PERSON_FIRST_SECONDS:g} s for you before simulated workers take it; answer at your "
        "own pace. The demo ends by itself once every frame is answered; press Ctrl-C to stop it sooner (it cleans up)."
    )


def summary_table(result: DemoResult) -> str:
    """The demo's closing table: what the run saw, flagged and bought, and how it agrees with the key."""
    report = result.report
    with_person = {name for name, labels in result.answer_key.items() if "person" in labels}
    flagged = {row["frame"] for row in report["inspect"]}
    rows = [
        ("frames in the interval", str(report["frames"])),
        ("flagged for inspection", str(report["flagged"])),
        ("clear", str(report["clear"])),
        ("unanswered", str(report["unanswered"])),
        (
            "answer key agreement",
            f"{len(flagged & with_person)} of {len(with_person)} frames with a person flagged, "
            f"{len(flagged - with_person)} without",
        ),
        ("answers bought", str(result.answers_bought)),
        ("cost", f"${result.cost:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run surveillance_triage against the local crowd server.")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".demo", help="recreated on every run")
    parser.add_argument("--worker-page", action="store_true", help="answer questions yourself in a browser")
    args = parser.parse_args(argv)
    # A plain `kill` should clean up like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    result = run_demo(args.workdir.resolve(), worker_page=args.worker_page)
    print(summary_table(result))
    print(f"Report: {result.report_html}")


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


if __name__ == "__main__":
    main()
