"""Blocking on real crowds: which workers the server blocks when recorded answers of real workers are replayed
through it (``bench_real_crowds``'s in-process replay: ``CrowdService`` as the worker page calls it), against each
worker's true balanced accuracy (the mean of its accuracies on items with and without the target, over all its
recorded answers).

Two runs per dataset and seed: without gold (a worker is judged only by the other workers' answers to tasks it did
not decide alone), and with gold: a share of the items, held out of the tasks, loaded as gold questions, which a
worker answers with its recorded answer (or "can't tell", no vote, for an item it never answered: possent's and
rte's workers answered only their own blocks). Results go to the ``blocking`` section of docs/benchmarks.md.

    .venv/bin/python bench/bench_blocking.py [--seeds 3] [--datasets DIR] [--no-report]
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from bench_real_crowds import (
    DATASETS,
    GOLD_SHARE,
    Crowd,
    InProcessReplay,
    hold_out_gold,
    load_crowd,
    replay,
    server_config,
)
from report import write_section

from imagecontains_gateway.human import HUMAN_PREFIX

BAD_BELOW = 0.6  # the server's block_below_accuracy: these workers should be blocked
GOOD_FROM = 0.7  # these must never be


def balanced_accuracies(crowd: Crowd) -> dict[str, float]:
    """Each worker's true balanced accuracy over all its recorded answers."""

    def share(right: float, wrong: float) -> float:
        return right / (right + wrong) if right + wrong else 0.5

    return {
        worker.removeprefix(HUMAN_PREFIX): (share(m.yes_said_yes, m.yes_said_no) + share(m.no_said_no, m.no_said_yes))
        / 2
        for worker, m in crowd.recorded_models().items()
    }


@dataclass
class Blocked:
    """Who was blocked in one replay, and how many answers each blocked worker gave to tasks before."""

    workers: dict[str, int]


def replay_blocking(crowd: Crowd, seed: int, with_gold: bool) -> Blocked:
    found: dict[str, int] = {}

    class Driver(InProcessReplay):
        def close(self) -> None:
            rows = self.store.connection.execute(
                "SELECT w.worker, (SELECT COUNT(*) FROM answers a WHERE a.worker = w.worker AND a.answer >= 0) "
                "FROM worker_models w WHERE w.blocked_reason IS NOT NULL"
            )
            found.update({worker.removeprefix(HUMAN_PREFIX): answers for worker, answers in rows})
            super().close()

    replay(crowd, server_config(crowd, 0.95), seed, Driver, hold_out_gold(crowd, seed) if with_gold else [])
    return Blocked(found)


def bench(crowd: Crowd, seeds: int) -> list[str]:
    accuracy = balanced_accuracies(crowd)
    bad = {w for w, a in accuracy.items() if a < BAD_BELOW}
    good = {w for w, a in accuracy.items() if a >= GOOD_FROM}
    rows = []
    for with_gold in (False, True):
        blocked_bad, blocked_good, blocked_between, answers_before = [], [], [], []
        for seed in range(seeds):
            blocked = replay_blocking(crowd, seed, with_gold)
            blocked_bad.append(len(bad & set(blocked.workers)))
            blocked_good.append(len(good & set(blocked.workers)))
            blocked_between.append(len(set(blocked.workers) - bad - good))
            answers_before += [blocked.workers[w] for w in bad & set(blocked.workers)]
            wrongly = sorted(f"{w} ({accuracy[w]:.2f})" for w in good & set(blocked.workers))
            print(
                f"{crowd.name} gold={with_gold} seed {seed}: blocked {sorted(blocked.workers)}; good blocked {wrongly}"
            )
        mean = lambda values: sum(values) / len(values)  # noqa: E731
        rows.append(
            f"| {crowd.name} | {'yes' if with_gold else 'no'} | {len(accuracy)} | {len(bad)} | {mean(blocked_bad):.1f} "
            f"| {mean(answers_before) if answers_before else float('nan'):.1f} | {len(good)} | {max(blocked_good)} "
            f"| {mean(blocked_between):.1f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", type=Path, default=DATASETS, help="the real-crowds folder")
    parser.add_argument("--only", nargs="*", default=["bluebird", "possent", "rte"])
    parser.add_argument("--no-report", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    logging.getLogger("imagecontains_gateway.service").setLevel(logging.ERROR)
    rows = [row for name in args.only for row in bench(load_crowd(args.datasets / name), args.seeds)]
    text = f"""## Blocking on real crowds (`bench/bench_blocking.py`)

Recorded answers of real workers replayed through the server (`bench_real_crowds`'s in-process replay, confidence
0.95), {args.seeds} seeds each; a worker's true balanced accuracy is measured over all its recorded answers. Without
gold, workers are judged only by the answers before theirs to the same tasks, when those alone were 0.9 sure; with gold,
{GOLD_SHARE:.0%} of the items are held out of the tasks as gold questions (answered with the worker's recorded answer,
or "can't tell" for an item it never saw). Bad: below {BAD_BELOW} (the server's bar), good: {GOOD_FROM} or more.
"Answers before" is the mean number of task answers a bad worker gave before it was blocked.

| crowd | gold | workers | bad | bad blocked (mean) | answers before | good | good blocked (worst seed) | between blocked (mean) |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows)
    print(text)
    if not args.no_report:
        write_section("blocking", text)


if __name__ == "__main__":
    main()
