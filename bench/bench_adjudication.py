"""Adjudicated accuracy and answers per task versus an oracle and a fixed majority of 3 and of 5, on the same
simulated answers.

For each worker accuracy, every task gets a random truth and a shuffled list of answers from
distinct simulated workers; the adjudicator (imagecontains_gateway/adjudication.py, learning each worker's model
as the server does, without gold) reads them one at a time, majority-of-3 reads the first 3, majority-of-5 the
first 5. The oracle reads them one at a time by the same rule (confidence target, two agreeing answers, answer
cap) knowing the workers' true accuracy and that no image is hard: the fewest answers a calibrated adjudicator
needs. Medians over several repetitions go to the ``adjudication`` section of docs/benchmarks.md.

    .venv/bin/python bench/bench_adjudication.py [--tasks 3000] [--repetitions 5]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics

from report import write_section
from simulated_adjudication import SequentialAdjudicator

from imagecontains_gateway.adjudication import MIN_AGREEING_ANSWERS
from imagecontains_gateway.config import ServerConfig

WORKER_ACCURACIES = (0.7, 0.8, 0.9)
POOL_SIZE = 30


def oracle(answers: list[tuple[str, bool]], accuracy: float, config: ServerConfig) -> tuple[bool | None, int]:
    """The sequential rule knowing every worker is right with ``accuracy`` on every image: (verdict, answers read)."""
    threshold = math.log(config.confidence / (1.0 - config.confidence))
    weight = math.log(accuracy / (1.0 - accuracy))
    said_yes = 0
    for used, (_, says_yes) in enumerate(answers[: config.max_answers_per_task], start=1):
        said_yes += says_yes
        lead = 2 * said_yes - used
        agreeing = said_yes if lead > 0 else used - said_yes
        if abs(lead) * weight >= threshold and agreeing >= MIN_AGREEING_ANSWERS:
            return lead > 0, used
    return None, used


def run_once(accuracy: float, tasks: int, seed: int, config: ServerConfig) -> dict[str, float]:
    rng = random.Random(seed)
    workers = [f"w{n}" for n in range(POOL_SIZE)]
    adjudicator = SequentialAdjudicator(config)
    adjudicated_right = adjudicated_done = answers_used = oracle_right = oracle_answers = 0
    majority_right = {3: 0, 5: 0}
    for _ in range(tasks):
        truth = rng.random() < 0.5
        chosen = rng.sample(workers, config.max_answers_per_task)
        answers = [(w, truth if rng.random() < accuracy else not truth) for w in chosen]
        for size in majority_right:
            majority_right[size] += (sum(a for _, a in answers[:size]) * 2 > size) == truth
        verdict, used = adjudicator.decide(answers)
        answers_used += used
        oracle_verdict, oracle_used = oracle(answers, accuracy, config)
        oracle_answers += oracle_used
        oracle_right += oracle_verdict == truth
        if verdict.contains_target is not None:
            adjudicated_done += 1
            adjudicated_right += verdict.contains_target == truth
    return {
        "accuracy": adjudicated_right / adjudicated_done,
        "completed": adjudicated_done / tasks,
        "overall": adjudicated_right / tasks,
        "answers": answers_used / tasks,
        "oracle": oracle_right / tasks,
        "oracle answers": oracle_answers / tasks,
        "majority3": majority_right[3] / tasks,
        "majority5": majority_right[5] / tasks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    config = ServerConfig()
    rows = []
    for accuracy in WORKER_ACCURACIES:
        runs = [run_once(accuracy, args.tasks, seed, config) for seed in range(args.repetitions)]
        median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        rows.append(
            f"| {accuracy} | {median['accuracy']:.3f} | {median['completed']:.3f} | {median['overall']:.3f} "
            f"| {median['answers']:.2f} | {median['oracle']:.3f} | {median['oracle answers']:.2f} "
            f"| {median['answers'] / median['oracle answers']:.2f} | {median['majority3']:.3f} "
            f"| {median['majority5']:.3f} |"
        )
        print(rows[-1], flush=True)
    text = f"""## Adjudication (`bench/bench_adjudication.py`)

{args.tasks} tasks per run, {args.repetitions} runs (medians), a pool of {POOL_SIZE} simulated workers of equal
accuracy, server defaults: confidence {config.confidence}, at most {config.max_answers_per_task} answers, prior
worker accuracy {config.prior_worker_accuracy}. Adjudicated accuracy is over completed tasks; the others fail
`Inconclusive`; "overall" counts them as wrong. The oracle applies the same rule (confidence target, two agreeing
answers, answer cap) knowing the workers' true accuracy and that no image is hard: the fewest answers a calibrated
adjudicator needs ("x oracle": the adjudicator's answers over the oracle's). Majorities use the first 3 or 5 of the
same answers (costing 3 and 5 answers per task).

| worker accuracy | adjudicated accuracy | completed | overall | mean answers | oracle overall | oracle answers \
| x oracle | majority of 3 | majority of 5 |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows)
    write_section("adjudication", text)


if __name__ == "__main__":
    main()
