"""MTurk API calls and spend per adjudicated task: the MTurk workforce (one HIT per task, one assignment at a
time, adjudicated after each answer) against posting fixed majority-of-5 HITs, on the same fake MTurk
(gateway/tests/fake_mturk.py, over loopback) with workers of accuracy 0.7, 0.8 and 0.9, in the same run.

Both methods run the real code paths: the workforce's cycles (server/mturk.py) on a real task store, and the
baseline through the same MTurkRequester (CreateHIT with 5 assignments, ListAssignmentsForHIT, ApproveAssignment).
Workers answer before the next poll, so neither method makes empty polls; on real MTurk, waiting adds
ListAssignmentsForHIT calls to both in proportion to the time workers take. Spend is reward plus MTurk's fee
of every assignment. Results go to the ``mturk`` section of docs/benchmarks.md.

    .venv/bin/python bench/bench_mturk.py [--tasks 150] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boto3
from report import write_section

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway" / "tests"))

from fake_mturk import ACCESS_KEY_ID, SECRET_ACCESS_KEY, FakeMTurk

from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.mturk import (
    MTurkRequester,
    MTurkWorkforce,
    assignment_cost,
    parse_answer,
)
from imagecontains_gateway.service import CrowdService
from imagecontains_gateway.store import PROCESSING, TaskStore

ACCOUNT = "123456789012"
REWARD = 0.05
ACCURACIES = (0.7, 0.8, 0.9)
FIXED_OVERLAP = 5
# Workers need a moment to take and submit an assignment (the fake's crowd ticks every 10 ms).
SETTLE_SECONDS = 0.03


def images(tasks: int, seed: int) -> dict[str, bool]:
    """Image URL -> whether it contains a person."""
    rng = random.Random(seed)
    return {f"https://frames.example.com/cam/{n:05d}.jpg": rng.random() < 0.5 for n in range(tasks)}


def client(fake: FakeMTurk):  # type: ignore[no-untyped-def]
    return boto3.client(
        "mturk",
        region_name="us-east-1",
        endpoint_url=fake.endpoint_url,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def run_workforce(truth: dict[str, bool], accuracy: float, seed: int) -> dict[str, float]:
    config = ServerConfig(workforce="mturk", reward_per_answer=REWARD, seed=seed)
    with (
        tempfile.TemporaryDirectory() as folder,
        FakeMTurk(lambda url, _label: truth[url], worker_accuracy=accuracy, workers=200, seed=seed) as fake,
    ):
        store = TaskStore(os.path.join(folder, "crowd.db"))
        store.open_accounts([ACCOUNT], 10**12)
        service = CrowdService(store, config)
        for n, url in enumerate(truth):
            body = json.dumps({"input": {"image": {"url": url}, "target": {"label": "person"}}}).encode()
            service.put_task(ACCOUNT, "image-contains", f"frame-{n}", body)
        workforce = MTurkWorkforce(service, MTurkRequester(client(fake), config))

        async def drive() -> None:
            while any(task["state"] == PROCESSING for task in store.tasks()):
                await workforce.cycle()
                await asyncio.sleep(SETTLE_SECONDS)
            await workforce.cycle()  # approves what the last cycle read
            await workforce.stop()

        started = time.perf_counter()
        asyncio.run(drive())
        seconds = time.perf_counter() - started
        tasks = store.tasks()
        store.close()
        return summarize(fake, tasks, truth, seconds)


def run_fixed_majority(truth: dict[str, bool], accuracy: float, seed: int) -> dict[str, float]:
    config = ServerConfig(workforce="mturk", reward_per_answer=REWARD, seed=seed)
    with FakeMTurk(lambda url, _label: truth[url], worker_accuracy=accuracy, workers=200, seed=seed) as fake:
        requester = MTurkRequester(client(fake), config)
        started = time.perf_counter()
        requester.available_balance()
        hits = {
            url: requester.create_hit(f"majority-{n}", url, "person", FIXED_OVERLAP, 3600)
            for n, url in enumerate(truth)
        }
        results: list[dict[str, object]] = []
        for url, hit_id in hits.items():
            while len(submitted := requester.submitted_assignments(hit_id)) < FIXED_OVERLAP:
                time.sleep(SETTLE_SECONDS)
            votes = [parse_answer(a["Answer"]) for a in submitted]
            for assignment in submitted:
                requester.approve(assignment["AssignmentId"])
            yes, no = votes.count(True), votes.count(False)
            results.append(
                {"state": "completed", "result": {"containsTarget": yes > no}, "input": {"image": {"url": url}}}
                if yes != no
                else {"state": "failed", "result": None, "input": {"image": {"url": url}}}
            )
        return summarize(fake, results, truth, time.perf_counter() - started)


def summarize(fake: FakeMTurk, tasks: list[dict], truth: dict[str, bool], seconds: float) -> dict[str, float]:
    completed = [t for t in tasks if t["state"] == "completed"]
    right = sum(t["result"]["containsTarget"] == truth[t["input"]["image"]["url"]] for t in completed)
    assignments = fake.assignments()
    sizes = [hit.max_assignments for hit in fake.hits.values()]
    spend = sum(assignment_cost(REWARD, size) * size for size in sizes)
    return {
        "calls": sum(n for op, n in fake.calls.items() if op not in ("throttled", "unavailable")) / len(tasks),
        "writes": fake.writes() / len(tasks),
        "assignments": len(assignments) / len(tasks),
        "median_assignments": statistics.median(sizes),
        "spend": spend / len(tasks),
        "completed": len(completed) / len(tasks),
        "accuracy": right / len(completed) if completed else 0.0,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for accuracy in ACCURACIES:
        truth = images(args.tasks, args.seed)
        sequential = run_workforce(truth, accuracy, args.seed)
        fixed = run_fixed_majority(truth, accuracy, args.seed)
        rows.append((accuracy, sequential, fixed))
        print(f"accuracy {accuracy}: workforce {sequential}\n  majority-of-5 {fixed}", flush=True)
    lines = [
        "## MTurk workforce: API calls and spend per task (`bench/bench_mturk.py`)",
        "",
        f"{args.tasks} tasks per worker accuracy (half the images contain the target), reward ${REWARD:.2f} per "
        f"assignment plus MTurk's 20% fee (at least $0.01: ${assignment_cost(REWARD, 5):.2f} per assignment), "
        "against the fake MTurk over loopback, both methods in the same run. *Workforce*: one HIT per task, one "
        "assignment at a time until the adjudicator reaches 0.95 (at most 9, MTurk's limit for a HIT that grows). "
        "*Majority of 5*: one HIT of 5 assignments per task, read once all are in, ties count as not completed. "
        "Calls = every MTurk request (CreateHIT, CreateAdditionalAssignmentsForHIT, ListAssignmentsForHIT, "
        "ApproveAssignment, GetAccountBalance, UpdateExpirationForHIT); writes = requests that change something. "
        "Workers answer before the next poll (no empty polls; on real MTurk waiting adds ListAssignmentsForHIT "
        "calls to both).",
        "",
        "| worker accuracy | method | MTurk calls / task | writes / task | assignments / task (median) | spend / task | completed | correct of completed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for accuracy, sequential, fixed in rows:
        for name, row in (("workforce (sequential)", sequential), ("majority of 5", fixed)):
            lines.append(
                f"| {accuracy} | {name} | {row['calls']:.1f} | {row['writes']:.1f} | {row['assignments']:.2f} "
                f"({row['median_assignments']:g}) | ${row['spend']:.3f} | {row['completed']:.1%} | {row['accuracy']:.1%} |"
            )
    lines += [
        "",
        "Spend per task of the workforce relative to majority of 5: "
        + ", ".join(f"{s['spend'] / f['spend']:.2f}x at {a}" for a, s, f in rows)
        + "; MTurk calls: "
        + ", ".join(f"{s['calls'] / f['calls']:.2f}x at {a}" for a, s, f in rows)
        + ".",
    ]
    write_section("mturk", "\n".join(lines))


if __name__ == "__main__":
    main()
