"""Latency of the worker page as the database grows, and with requester dashboards open (issue 24).

Method: a database is filled directly through the server's own schema (``TaskStore``): finished tasks with ten
answers each from 500 workers, plus open tasks; then the server runs as its own process (one uvicorn worker, as
shipped) on it, a signed-in worker views ``GET /work`` over one keep-alive connection, and the time of each
page view is taken on the client. Part 1 compares a database of ``--small`` answers with one of ``--answers``
(1M): a page view that scanned the answers table would grow with it. Part 2 opens ``--dashboards`` requester
dashboards on ``--tasks`` tasks, each polling ``/dashboard/data`` every 2 s as the page does, and compares the
worker's page-view times with and without them. Medians over ``--repetitions`` runs go to the ``worker-page``
section of docs/benchmarks.md.

    .venv/bin/python bench/bench_worker_page.py [--answers 1000000] [--tasks 16000] [--repetitions 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from report import write_section

from imagecontains_gateway.store import TaskStore
from imagecontains_gateway.testing import LocalCrowdServer

ANSWERS_PER_TASK = 10
WORKERS = 500
OPEN_TASKS = 200
DASHBOARD_POLL_SECONDS = 2.0


def fill(db_path: Path, account: str, answers: int, tasks: int | None = None) -> None:
    """Finished tasks with ``ANSWERS_PER_TASK`` answers each (``answers`` in all, or ``tasks`` tasks), and open ones."""
    finished = tasks if tasks is not None else answers // ANSWERS_PER_TASK
    store = TaskStore(str(db_path))
    store.open_accounts([account], 10**15)
    db = store.connection
    now = time.time()
    with store.transaction():
        db.executemany(
            "INSERT INTO tasks (id, account, function, name, input, state, result, created_at, deadline_at, "
            "finished_at) VALUES (?, ?, 'image-contains', ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    n + 1,
                    account,
                    f"t{n}",
                    f'{{"image":{{"url":"https://images.example.com/{n}.jpg"}},"target":{{"label":"person"}}}}',
                    "completed" if n < finished else "processing",
                    '{"containsTarget":true,"confidence":0.99,"answers":10}' if n < finished else None,
                    now - 3600 + n * 1e-3,
                    now + 86400,
                    now - 1800 if n < finished else None,
                )
                for n in range(finished + OPEN_TASKS)
            ),
        )
        db.executemany(
            "INSERT INTO answers (task_id, worker, answer, created_at) VALUES (?, ?, 1, ?)",
            (
                (n // ANSWERS_PER_TASK + 1, f"human:w{(n * 7 + n // ANSWERS_PER_TASK) % WORKERS}", now - 1800)
                for n in range(finished * ANSWERS_PER_TASK)
            ),
        )
    store.close()


def page_views(server: LocalCrowdServer, views: int) -> list[float]:
    """Milliseconds of each of ``views`` GET /work of a worker with a record (one keep-alive connection)."""
    with httpx.Client(base_url=server.endpoint_url, timeout=60) as worker:
        assert worker.post("/signin", data={"token": server.issue_token("worker", "w1")}).status_code == 303
        worker.get("/work")
        times = []
        for _ in range(views):
            started = time.perf_counter()
            assert worker.get("/work").status_code == 200
            times.append((time.perf_counter() - started) * 1000)
    return times


def poll_dashboard(server: LocalCrowdServer, token: str, stop: threading.Event, times: list[float]) -> None:
    with httpx.Client(base_url=server.endpoint_url, timeout=60) as owner:
        assert owner.post("/signin", data={"token": token}).status_code == 303
        while not stop.is_set():
            started = time.perf_counter()
            assert owner.get("/dashboard/data").status_code == 200
            times.append((time.perf_counter() - started) * 1000)
            stop.wait(DASHBOARD_POLL_SECONDS)


def p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100)[98]


def worker_page_at(answers: int, views: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        db_path = Path(directory) / "crowd.db"
        server = LocalCrowdServer(db_path, subprocess=True, workforce="human")
        fill(db_path, server.account.account_id, answers)
        with server:
            times = page_views(server, views)
    return {"median": statistics.median(times), "p99": p99(times)}


def with_dashboards(tasks: int, dashboards: int, views: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        db_path = Path(directory) / "crowd.db"
        server = LocalCrowdServer(db_path, subprocess=True, workforce="human")
        fill(db_path, server.account.account_id, tasks * ANSWERS_PER_TASK, tasks=tasks)
        with server:
            alone = page_views(server, views)
            stop, dashboard_times = threading.Event(), []
            token = server.issue_token("dashboard", server.account.account_id)  # one token: a new one ends the rest
            pollers = [
                threading.Thread(target=poll_dashboard, args=(server, token, stop, dashboard_times))
                for _ in range(dashboards)
            ]
            for poller in pollers:
                poller.start()
            time.sleep(1.0)
            busy = page_views(server, views)
            stop.set()
            for poller in pollers:
                poller.join()
    return {
        "alone_p99": p99(alone),
        "busy_median": statistics.median(busy),
        "busy_p99": p99(busy),
        "dashboard_median": statistics.median(dashboard_times),
        "dashboard_max": max(dashboard_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=16_000)
    parser.add_argument("--dashboards", type=int, default=5)
    parser.add_argument("--views", type=int, default=300)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--no-report", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    growth = []
    for _ in range(args.repetitions):
        small, large = worker_page_at(args.small, args.views), worker_page_at(args.answers, args.views)
        growth.append((small, large))
        print({"small": small, "large": large}, flush=True)
    busy = []
    for _ in range(args.repetitions):
        busy.append(with_dashboards(args.tasks, args.dashboards, args.views))
        print(busy[-1], flush=True)

    def median(values: list[float]) -> float:
        return statistics.median(values)

    small_median, large_median = median([s["median"] for s, _ in growth]), median([g["median"] for _, g in growth])
    small_p99, large_p99 = median([s["p99"] for s, _ in growth]), median([g["p99"] for _, g in growth])
    figures = {key: median([run[key] for run in busy]) for key in busy[0]}
    body = f"""## Worker page: database size and open dashboards (`bench/bench_worker_page.py`)

Loopback, 2 cores, one server process (`--workforce human`), the database filled through the server's schema:
finished tasks with {ANSWERS_PER_TASK} answers each from {WORKERS} workers, and {OPEN_TASKS} open tasks. A
signed-in worker views `GET /work` {args.views} times over one keep-alive connection; times on the client, median
of {args.repetitions} runs. Issue 24 measured 50 ms a page view at 1M answers (a scan of the answers table per
view) and a p99 of 282 ms (from 6) with five dashboards open on 16k tasks.

| answers in the database | page view, median ms | p99 ms |
|---|---|---|
| {args.small:,} | {small_median:.1f} | {small_p99:.1f} |
| {args.answers:,} | {large_median:.1f} | {large_p99:.1f} |
| ratio | {large_median / small_median:.2f} | {large_p99 / small_p99:.2f} |

| {args.tasks:,} tasks of the account | worker page p99 ms | worker page median ms |
|---|---|---|
| no dashboard open | {figures["alone_p99"]:.1f} | |
| {args.dashboards} dashboards polling every {DASHBOARD_POLL_SECONDS:g} s | {figures["busy_p99"]:.1f} | {figures["busy_median"]:.1f} |

`/dashboard/data` meanwhile: median {figures["dashboard_median"]:.1f} ms, slowest {figures["dashboard_max"]:.1f} ms
(computed on the dashboard thread at most once every 2 s, shared by the dashboards asking meanwhile).
"""
    print(body)
    if not args.no_report:
        write_section("worker-page", body)


if __name__ == "__main__":
    main()
