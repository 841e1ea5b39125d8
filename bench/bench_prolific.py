"""Prolific workforce: cost per adjudicated label and accuracy against a fixed overlap of five, and a burst of
participants arriving at the gateway.

1. Labels. Simulated participants of accuracy 0.7, 0.8 and 0.9 answer image-contains questions; the gateway's
   adjudicator (in-process, bench/simulated_adjudication.py) asks for answers one at a time until it is confident,
   gold mixed in at the server's default share, against the majority of a fixed five answers per image. Both pay
   the same price per answer: a place's reward (``--prolific-hourly-rate`` x batch x seconds per answer) with
   Prolific's fee, spread over the batch (the adjudicated arm's gold answers are paid too).
2. Burst. ``--participants`` participants of the fake Prolific (gateway/tests/fake_prolific.py) arrive within
   ``--arrival-seconds`` at a gateway (its own process) with ``--workforce prolific``: each follows the study URL
   (the start page checks the submission with Prolific) to its first question. Measured: the latency from the
   study URL to the question page (p50, p99) against one participant alone in the same run, and whether any
   question was held by two participants at once.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from report import write_section
from requests_aws4auth import AWS4Auth
from simulated_adjudication import SequentialAdjudicator

from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.testing import LocalCrowdServer

# The fake Prolific lives with the gateway's tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway" / "tests"))
from fake_prolific import FEE_RATE, TOKEN, FakeProlific

ACCURACIES = (0.7, 0.8, 0.9)
OVERLAP = 5
HOURLY_RATE, BATCH, SECONDS_PER_ANSWER = 12.0, 20, 5.0
PARTICIPANTS_PER_POOL = 60


def price_per_answer() -> float:
    """Dollars per answer: a place's reward with the fee, over the batch's answers."""
    reward_cents = HOURLY_RATE * 100 * BATCH * SECONDS_PER_ANSWER / 3600
    return reward_cents * (1 + FEE_RATE) / 100 / BATCH


def label_arm(accuracy: float, images: int, seed: int) -> dict[str, float]:
    """Adjudicated (sequential, with gold overhead) vs majority of five, on the same images and participants."""
    config = ServerConfig()
    rng = random.Random(seed)
    truths = [rng.random() < 0.5 for _ in range(images)]
    pool = [f"p{n}" for n in range(PARTICIPANTS_PER_POOL)]
    adjudicator = SequentialAdjudicator(config)
    answers_used = decided = right = 0
    majority_right = 0
    for truth in truths:
        people = rng.sample(pool, config.max_answers_per_task)
        answers = [(person, truth if rng.random() < accuracy else not truth) for person in people]
        verdict, used = adjudicator.decide(answers)
        answers_used += used
        if verdict.contains_target is not None:
            decided += 1
            right += verdict.contains_target == truth
        votes = [says for _, says in answers[:OVERLAP]]
        majority_right += (sum(votes) > OVERLAP / 2) == truth
    gold_overhead = 1 / (1 - config.gold_share)
    price = price_per_answer()
    return {
        "adjudicated_cost": answers_used * gold_overhead * price / max(decided, 1),
        "adjudicated_accuracy": right / max(decided, 1),
        "coverage": decided / images,
        "answers_per_label": answers_used / max(decided, 1),
        "majority_cost": OVERLAP * price,
        "majority_accuracy": majority_right / images,
    }


def burst(participants: int, arrival_seconds: float, seed: int) -> dict[str, float]:
    """``participants`` arrive within ``arrival_seconds``; latency to the first question and double holds."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as directory, FakeProlific(balance_cents=10**9) as fake:
        server = LocalCrowdServer(
            Path(directory) / "crowd.db",
            subprocess=True,
            workforce="prolific",
            prolific_accounts=("123456789012",),
            prolific_api_url=fake.api_url,
            prolific_token=TOKEN,
            prolific_poll_seconds=0.2,
            prolific_batch_size=2,
            prolific_seconds_per_answer=30.0,  # a place of 20 cents: above Prolific's minimum pay per hour
            gold_share=0.0,
        )
        with server:
            account = server.account
            auth = AWS4Auth(account.access_key_id, account.secret_access_key, "us-east-1", "crowd")
            base = f"{server.endpoint_url}/{account.account_id}/functions/image-contains/tasks"
            with requests.Session() as session:
                for n in range(participants + 50):
                    task = {
                        "input": {
                            "image": {"url": f"https://frames.example.com/{n}.jpg"},
                            "target": {"label": "person"},
                        }
                    }
                    session.put(f"{base}/t{n}", json=task, auth=auth, timeout=30).raise_for_status()
            deadline = time.monotonic() + 60
            while not any(
                s["status"] == "ACTIVE" and s["total_available_places"] >= participants for s in fake.studies.values()
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("the study did not get its places")
                time.sleep(0.1)
            (study_id,) = fake.studies
            alone = [_first_question(fake, study_id, f"alone{n}")[0] for n in range(5)]
            arrivals = sorted(rng.uniform(0, arrival_seconds) for _ in range(participants))
            start = time.monotonic()
            lock, held = threading.Lock(), []

            def arrive(n: int) -> float:
                time.sleep(max(0.0, start + arrivals[n] - time.monotonic()))
                latency, image = _first_question(fake, study_id, f"burst{n}")
                with lock:
                    held.append(image)
                return latency

            with ThreadPoolExecutor(64) as pool:
                latencies = sorted(pool.map(arrive, range(participants)))
    questions = [image for image in held if image is not None]
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "alone": statistics.median(alone),
        "held_twice": len(questions) - len(set(questions)),
        "without_question": len(held) - len(questions),
    }


def _first_question(fake: FakeProlific, study_id: str, participant: str) -> tuple[float, str | None]:
    session_id = fake.start_submission(study_id, participant)
    began = time.monotonic()
    page = requests.get(fake.participant_url(session_id), timeout=60)
    latency = time.monotonic() - began
    page.raise_for_status()
    found = re.search(r'<img class="frame" src="([^"]+)"', page.text)
    return latency, found[1] if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument("--arrival-seconds", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    seeds = list(range(1, args.seeds + 1))
    rows = []
    for accuracy in ACCURACIES:
        runs = [label_arm(accuracy, args.images, seed) for seed in seeds]
        mean = {key: statistics.mean(run[key] for run in runs) for key in runs[0]}
        rows.append(
            f"| {accuracy:.1f} | ${mean['adjudicated_cost']:.4f} | {mean['adjudicated_accuracy']:.3f} | "
            f"{mean['coverage']:.3f} | {mean['answers_per_label']:.2f} | ${mean['majority_cost']:.4f} | "
            f"{mean['majority_accuracy']:.3f} | {mean['adjudicated_cost'] / mean['majority_cost']:.2f} |"
        )
        print(rows[-1], flush=True)
    bursts = [burst(args.participants, args.arrival_seconds, seed) for seed in seeds[:1]]
    b = bursts[0]
    print(b, flush=True)
    body = f"""## Prolific workforce (bench/bench_prolific.py)

Cost per adjudicated label and accuracy, {args.images} images per run, seeds {seeds} (means), participants of one
accuracy in a pool of {PARTICIPANTS_PER_POOL}. Price per answer ${price_per_answer():.4f}: a place pays
{HOURLY_RATE:.2f}/hour x {BATCH} answers x {SECONDS_PER_ANSWER:.0f} s, plus the fake Prolific's fee of
{FEE_RATE:.1%} (an assumption of the fake, not a quoted price: the gateway asks Prolific's cost calculator),
spread over the batch; the adjudicated arm also pays its gold share ({ServerConfig().gold_share:.0%}).
Coverage: the share of images the adjudicator decided (the rest fail Inconclusive at
{ServerConfig().max_answers_per_task} answers; their answers are counted in the cost).

| participant accuracy | adjudicated: cost per label | accuracy | coverage | answers per label | majority of {OVERLAP}: cost per label | accuracy | cost ratio |
| --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Burst: {args.participants} participants arrive within {args.arrival_seconds:.0f} s (seed {seeds[0]}) at a gateway
in its own process, each following the study URL (the start page asks the fake Prolific about the submission) to
its first question: p50 {b["p50"] * 1000:.0f} ms, p99 {b["p99"] * 1000:.0f} ms, against {b["alone"] * 1000:.0f} ms
for a participant alone in the same run; questions held by two participants at once: {b["held_twice"]};
participants without a question: {b["without_question"]}.
"""
    if not args.no_write:
        write_section("prolific", body)
    print(body)


if __name__ == "__main__":
    main()
