"""Calibration on real crowds: recorded answers of real workers replayed through the server's adjudication, against
majority vote and crowd-kit's Dawid-Skene and GLAD.

Three public datasets of real workers' binary answers with ground truth (bluebird, possent, rte; read from
``../shared/datasets/real-crowds/`` beside the repository, never copied into it) and one simulated crowd with item
difficulty and correlated errors (GLAD-style: a worker's chance of being right falls on hard items, and a few items
mislead most workers the same way), generated here.

The replay posts a dataset's items block by block (a block: items answered by the same workers, a HIT) and lets
that block's workers, in a random order drawn from the seed, ask for questions one at a time as people on the
worker page do; each answers the question the server gives it with the answer recorded for that worker and item.
Two drivers of the same replay:

- in-process (every seed and target): ``CrowdService.next_assignment`` / ``submit_answer`` on a ``TaskStore``, the
  calls the worker page makes, with the server's adjudication and learning (server/service.py, adjudication.py);
- over HTTP (one seed at the default target per dataset; ``--no-http`` skips it): ``LocalCrowdServer`` with
  ``--workforce human`` over loopback, tasks in through ``ImageContainsHook.put_task``, answers through the worker
  page's own requests (sign-in, ``GET /work``, ``POST /work/answer``), results out through ``get_tasks``, on a
  server with the in-process replay's settings; it must end every task exactly as the in-process replay of that
  seed does, or the bench names the first task they ended differently and exits with an error (after its report).

Accuracy counts an ``Inconclusive`` task as wrong. Majority vote (a tie counts half right), Dawid-Skene and GLAD run
on the very answers the server bought (the same answers per item) and on all the recorded answers. Results go to
the ``real_crowds`` section of docs/benchmarks.md.

    .venv/bin/python bench/bench_real_crowds.py [--seeds 3] [--no-http] [--datasets DIR] [--only NAME ...] [--no-report]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import math
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import httpx
import pandas as pd
from crowdkit.aggregation import GLAD, DawidSkene
from report import write_section

from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.human import HUMAN_PREFIX
from imagecontains_gateway.service import CrowdService
from imagecontains_gateway.store import TaskStore
from imagecontains_gateway.validation import IMAGE_CONTAINS

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets" / "real-crowds"
# Each dataset's question, as the label a worker is asked about (nominal: the server never sees the items).
LABELS = {"bluebird": "indigo bunting", "possent": "positive sentiment", "rte": "entailment"}
TARGETS = (0.9, 0.95, 0.98)
DEFAULT_TARGET = ServerConfig().confidence
# Calibration is judged per bin only where the bin holds this many completed tasks (over all seeds).
BIN_MIN_TASKS = 100
BIN_EDGES = (0.9, 0.95, 0.98, 0.99, 0.999, 1.0001)
CALIBRATION_SLACK = 0.03
IMAGE_URL = "https://crowd-replay.example.com/{crowd}/{item}.jpg"


@dataclass(frozen=True)
class Crowd:
    """Recorded binary answers with their truth.

    :param name: the dataset's name.
    :param truth: item -> whether the true answer is "yes".
    :param answers: item -> {worker: says yes}.
    """

    name: str
    truth: dict[str, bool]
    answers: dict[str, dict[str, bool]]

    def blocks(self) -> list[list[str]]:
        """The items grouped by the workers who answered them (a HIT), in the order they first appear."""
        grouped: dict[frozenset[str], list[str]] = {}
        for item, answers in self.answers.items():
            grouped.setdefault(frozenset(answers), []).append(item)
        return list(grouped.values())

    def recorded(self, item: str, worker: str) -> bool | None:
        """The worker's recorded answer; None ("can't tell" on the worker page: no vote, not asked again) for an
        item it never answered, which the server offers when a task of an earlier block is still open (its
        workers left or were blocked)."""
        return self.answers[item].get(worker)

    @property
    def answers_per_item(self) -> int:
        return min(len(answers) for answers in self.answers.values())


def load_crowd(directory: Path) -> Crowd:
    """A dataset folder: ``answer.csv`` (item, worker, answer with 1 = yes) and ``truth.csv`` (item, truth)."""
    with open(directory / "truth.csv", newline="") as truth_file:
        truth = {item: value == "1" for item, value in list(csv.reader(truth_file))[1:]}
    answers: dict[str, dict[str, bool]] = {}
    with open(directory / "answer.csv", newline="") as answer_file:
        for item, worker, value in list(csv.reader(answer_file))[1:]:
            answers.setdefault(item, {})[worker] = value == "1"
    return Crowd(directory.name, {item: truth[item] for item in answers}, answers)


def simulated_crowd(
    seed: int, items: int = 600, workers: int = 60, per_item: int = 20, block: int = 20, ability: float = 1.6
) -> Crowd:
    """A GLAD-style crowd: worker ``w`` is right on item ``i`` with probability ``sigmoid(ability_w * ease_i)``.

    Abilities spread around ``ability`` (1.6: workers right 0.78 of the time on average; 0.5: 0.64), one worker
    in 10 a spammer (0); eases are log-normal (some items hard for everyone), and one item in 25 misleads: its
    ease is negative, so most workers get it wrong together (correlated errors). Items come in blocks of
    ``block``, each answered by ``per_item`` workers drawn for the block.
    """
    rng = random.Random(seed)
    pool = [f"w{n}" for n in range(workers)]
    abilities = {w: 0.0 if rng.random() < 0.1 else max(0.2, rng.gauss(ability, 0.7 * ability / 1.6)) for w in pool}
    truth: dict[str, bool] = {}
    answers: dict[str, dict[str, bool]] = {}
    for start in range(0, items, block):
        chosen = rng.sample(pool, per_item)
        for n in range(start, min(start + block, items)):
            item = f"i{n}"
            ease = math.exp(rng.gauss(0.3, 0.8)) * (-0.5 if rng.random() < 1 / 25 else 1.0)
            truth[item] = rng.random() < 0.5
            answers[item] = {
                w: truth[item] == (rng.random() < 1.0 / (1.0 + math.exp(-abilities[w] * ease))) for w in chosen
            }
    return Crowd("simulated", truth, answers)


@dataclass(frozen=True)
class Outcome:
    """What the server made of one item: its verdict (None: ``Inconclusive``), confidence and the answers it bought."""

    item: str
    verdict: bool | None
    confidence: float
    answers: tuple[tuple[str, bool], ...]


class InProcessReplay:
    """The worker page's calls made directly on ``CrowdService`` (what ``/work`` and ``/work/answer`` call)."""

    def __init__(self, crowd: Crowd, config: ServerConfig, directory: str) -> None:
        self.crowd, self.config = crowd, config
        self.store = TaskStore(os.path.join(directory, "replay.db"))
        self.store.open_accounts([config.accounts[0].account_id], round(config.starting_balance * 1e6))
        self.service = CrowdService(self.store, config)

    def put(self, item: str) -> None:
        body = json.dumps({"input": task_input(self.crowd, item)}).encode()
        self.service.put_task(self.config.accounts[0].account_id, IMAGE_CONTAINS, task_name(item), body)

    def ask_and_answer(self, worker: str) -> bool:
        assignment = self.service.next_assignment(HUMAN_PREFIX + worker)
        if assignment is None:
            return False
        says_yes = self.crowd.recorded(item_of(assignment.image_url), worker)
        self.service.submit_answer(assignment, HUMAN_PREFIX + worker, says_yes)
        return True

    def outcomes(self) -> list[Outcome]:
        return [outcome_of(task["task_name"], task, task["answers"]) for task in self.store.tasks(IMAGE_CONTAINS)]

    def close(self) -> None:
        self.store.close()


class HttpReplay:
    """The same replay over loopback: the hook puts and reads tasks, each worker uses the worker page's forms."""

    def __init__(self, crowd: Crowd, config: ServerConfig, directory: str) -> None:
        from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
        from imagecontains_gateway.testing import LocalCrowdServer

        self.crowd = crowd
        # Every setting the in-process replay has, not a chosen few: one left out (the non-answer block) made the
        # server block workers over HTTP that it kept in-process.
        defaults = ServerConfig()
        overrides = {
            setting.name: getattr(config, setting.name)
            for setting in fields(config)
            if getattr(config, setting.name) != getattr(defaults, setting.name)
        }
        self.server = LocalCrowdServer(os.path.join(directory, "replay.db"), **overrides)
        self.server.start()
        os.environ.update(self.server.airflow_connection_env())
        self.hook = ImageContainsHook()
        self.pages: dict[str, WorkerPage] = {}

    def put(self, item: str) -> None:
        self.hook.put_task(IMAGE_CONTAINS, task_name(item), task_input(self.crowd, item))

    def ask_and_answer(self, worker: str) -> bool:
        if worker not in self.pages:
            self.pages[worker] = WorkerPage(self.server.endpoint_url, self.server.issue_token("worker", worker))
        page = self.pages[worker]
        question = page.question()
        if question is None:
            return False
        question_id, image_url = question
        page.answer(question_id, self.crowd.recorded(item_of(image_url), worker))
        return True

    def outcomes(self) -> list[Outcome]:
        names = [task_name(item) for item in self.crowd.answers]
        documents = self.hook.get_tasks(IMAGE_CONTAINS, names)
        answers = {task["task_name"]: task["answers"] for task in self.server.tasks(IMAGE_CONTAINS)}
        return [outcome_of(name, documents[name], answers.get(name, [])) for name in names if name in answers]

    def close(self) -> None:
        for page in self.pages.values():
            page.client.close()
        self.server.stop()


class WorkerPage:
    """One worker on the worker page, as a plain HTTP client submitting the page's own form."""

    def __init__(self, endpoint_url: str, token: str) -> None:
        self.client = httpx.Client(base_url=endpoint_url, timeout=30)
        if self.client.post("/signin", data={"token": token}).status_code != 303:
            raise RuntimeError("The worker page refused a worker token.")
        self.csrf = ""

    def question(self) -> tuple[str, str] | None:
        """(question id, image URL) of the question on the page, None when there is none."""
        page = self.client.get("/work")
        page.raise_for_status()
        form = re.search(r'id="answer-form".*?name="task" value="(\d+)".*?name="csrf" value="(\w+)"', page.text, re.S)
        if form is None:
            return None
        self.csrf = form[2]
        return form[1], re.search(r'<img class="frame" src="([^"]*)"', page.text)[1]  # type: ignore[index]

    def answer(self, question_id: str, says_yes: bool | None) -> None:
        answer = "cant-tell" if says_yes is None else "yes" if says_yes else "no"
        data = {"task": question_id, "answer": answer, "csrf": self.csrf}
        response = self.client.post("/work/answer", data=data)
        if response.status_code != 303:
            raise RuntimeError(f"The worker page refused an answer: {response.status_code} {response.text}")


def task_name(item: str) -> str:
    return f"item-{item}"


def task_input(crowd: Crowd, item: str) -> dict:
    return {"image": {"url": IMAGE_URL.format(crowd=crowd.name, item=item)}, "target": {"label": label(crowd)}}


def label(crowd: Crowd) -> str:
    return LABELS.get(crowd.name, "target")


def item_of(image_url: str) -> str:
    return image_url.rsplit("/", 1)[-1].removesuffix(".jpg")


def outcome_of(name: str, document: dict, answers: list) -> Outcome:
    result = document.get("result") or {}
    verdict = result.get("containsTarget") if document["state"] == "completed" else None
    return Outcome(
        name.removeprefix("item-"), verdict, float(result.get("confidence", 0.0)), tuple(map(tuple, answers))
    )


def replay(crowd: Crowd, config: ServerConfig, seed: int, driver: Callable = InProcessReplay) -> list[Outcome]:
    """Post the crowd's blocks (shuffled by ``seed``) and let each block's workers, in a random order, ask and answer
    until none of them has a question left; every task has then ended (the cap is at most the block's workers)."""
    rng = random.Random(seed)
    blocks = crowd.blocks()
    rng.shuffle(blocks)
    with tempfile.TemporaryDirectory(prefix="real-crowds-") as directory:
        run = driver(crowd, config, directory)
        try:
            for block in blocks:
                for item in rng.sample(block, len(block)):
                    run.put(item)
                active = sorted(crowd.answers[block[0]])
                while active:
                    worker = rng.choice(active)
                    if not run.ask_and_answer(worker):
                        active.remove(worker)
            return run.outcomes()
        finally:
            run.close()


def server_config(crowd: Crowd, target: float) -> ServerConfig:
    """The server as a user would run it for this crowd: people on the worker page, the default answer cap unless
    the recorded answers are fewer (``--max-answers 10`` for rte)."""
    cap = min(ServerConfig().max_answers_per_task, crowd.answers_per_item)
    # A recorded worker offered an item it never answered says "can't tell": an artefact of the replay, not a
    # worker who dodges questions, so the non-answer block (issue 24) stays off.
    return ServerConfig(
        workforce="human",
        confidence=target,
        max_answers_per_task=cap,
        starting_balance=1e6,
        max_non_answer_share=1.0,
    )


# Baselines on the same answers


def majority_accuracy(crowd: Crowd, answers: dict[str, list[tuple[str, bool]]]) -> float:
    """Majority vote's accuracy, a tie counted half right (a fair coin's expectation)."""
    score = 0.0
    for item, votes in answers.items():
        yes = sum(says_yes for _, says_yes in votes)
        no = len(votes) - yes
        score += 0.5 if yes == no else float((yes > no) == crowd.truth[item])
    return score / len(crowd.truth)


def crowdkit_accuracy(crowd: Crowd, answers: dict[str, list[tuple[str, bool]]], method: str) -> float:
    rows = [(item, worker, int(says_yes)) for item, votes in answers.items() for worker, says_yes in votes]
    frame = pd.DataFrame(rows, columns=["task", "worker", "label"])
    model = DawidSkene(n_iter=100) if method == "Dawid-Skene" else GLAD(n_iter=100)
    labels = model.fit_predict(frame)
    return sum(int(labels.get(item, -1)) == int(truth) for item, truth in crowd.truth.items()) / len(crowd.truth)


@dataclass
class Pooled:
    """The outcomes of every seed at one target, and the baselines on the same answers."""

    outcomes: list[Outcome] = field(default_factory=list)
    items: int = 0
    baselines: dict[str, list[float]] = field(default_factory=dict)

    def add(self, crowd: Crowd, outcomes: list[Outcome], with_baselines: bool) -> None:
        self.outcomes += outcomes
        self.items += len(crowd.truth)
        if with_baselines:
            bought = {o.item: list(o.answers) for o in outcomes}
            figures = {"majority vote": majority_accuracy(crowd, bought)}
            for method in ("Dawid-Skene", "GLAD"):
                figures[method] = crowdkit_accuracy(crowd, bought, method)
            for name, value in figures.items():
                self.baselines.setdefault(name, []).append(value)

    def completed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict is not None]

    def summary(self, crowd: Crowd) -> dict[str, float]:
        done = self.completed()
        right = [o.verdict == crowd.truth[o.item] for o in done]
        mean_confidence = sum(o.confidence for o in done) / max(1, len(done))
        share_right = sum(right) / max(1, len(done))
        return {
            "accuracy": sum(right) / self.items,
            "inconclusive": 1.0 - len(done) / self.items,
            "right_of_completed": share_right,
            "mean_confidence": mean_confidence,
            "gap": share_right - mean_confidence,
            "ece": expected_calibration_error(crowd, done),
            "answers": sum(len(o.answers) for o in self.outcomes) / self.items,
            "single_answer": sum(len(o.answers) == 1 for o in done) / self.items,
            **{name: sum(values) / len(values) for name, values in self.baselines.items()},
        }


def reliability(crowd: Crowd, done: list[Outcome]) -> Iterator[tuple[float, float, int, float, float]]:
    """(low, high, tasks, mean confidence, share right) per confidence bin that holds tasks."""
    for low, high in itertools.pairwise(BIN_EDGES):
        inside = [o for o in done if low <= o.confidence < high]
        if inside:
            confidence = sum(o.confidence for o in inside) / len(inside)
            right = sum(o.verdict == crowd.truth[o.item] for o in inside) / len(inside)
            yield low, min(high, 1.0), len(inside), confidence, right


def expected_calibration_error(crowd: Crowd, done: list[Outcome]) -> float:
    return sum(n * abs(confidence - right) for _, _, n, confidence, right in reliability(crowd, done)) / max(
        1, len(done)
    )


def calibrated(crowd: Crowd, pooled: Pooled) -> bool:
    """Right at least as often as the mean reported confidence, within the slack, overall and per full bin."""
    summary = pooled.summary(crowd)
    bins_ok = all(
        right >= confidence - CALIBRATION_SLACK
        for _, _, n, confidence, right in reliability(crowd, pooled.completed())
        if n >= BIN_MIN_TASKS
    )
    return summary["gap"] >= -CALIBRATION_SLACK and bins_ok


def overall_baselines(crowd: Crowd) -> dict[str, float]:
    every = {item: list(answers.items()) for item, answers in crowd.answers.items()}
    return {
        "majority vote": majority_accuracy(crowd, every),
        "Dawid-Skene": crowdkit_accuracy(crowd, every, "Dawid-Skene"),
        "GLAD": crowdkit_accuracy(crowd, every, "GLAD"),
    }


@contextmanager
def timed(what: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    print(f"{what}: {time.perf_counter() - started:.1f} s", flush=True)


def bench_crowd(crowd: Crowd, seeds: int, targets: tuple[float, ...], http: bool) -> dict:
    runs: dict[float, Pooled] = {}
    for target in targets:
        pooled = runs[target] = Pooled()
        config = server_config(crowd, target)
        for seed in range(seeds):
            with timed(f"{crowd.name} target {target} seed {seed}"):
                pooled.add(crowd, replay(crowd, config, seed), with_baselines=True)
        summary = pooled.summary(crowd)
        print(
            f"{crowd.name} {target}: " + ", ".join(f"{key} {value:.3f}" for key, value in summary.items()),
            f"calibrated {calibrated(crowd, pooled)}",
            flush=True,
        )
    http_difference = None
    if http:
        config = server_config(crowd, DEFAULT_TARGET)
        with timed(f"{crowd.name} over HTTP"):
            over_http = replay(crowd, config, 0, HttpReplay)
        in_process = replay(crowd, config, 0)
        http_difference = first_difference(in_process, over_http) or ""
        if http_difference:
            ended = [next((o for o in run if o.item == http_difference), None) for run in (in_process, over_http)]
            print(
                f"{crowd.name}: the HTTP replay DIFFERS from the in-process one, first at item {http_difference}: "
                f"in-process {ended[0]}; over HTTP {ended[1]}",
                flush=True,
            )
        else:
            print(f"{crowd.name}: the HTTP replay is identical to the in-process one", flush=True)
    with timed(f"{crowd.name} baselines over all answers"):
        everything = overall_baselines(crowd)
    # http: None when not run, "" when identical, else the first item the drivers ended differently.
    return {"runs": runs, "all": everything, "http": http_difference}


def first_difference(in_process: list[Outcome], over_http: list[Outcome]) -> str | None:
    """The first item (in the in-process order) whose task the two drivers ended differently, None when none."""
    by_item = {o.item: o for o in over_http}
    for outcome in in_process:
        if by_item.pop(outcome.item, None) != outcome:
            return outcome.item
    return next(iter(by_item), None)


def report(crowds: list[Crowd], results: dict[str, dict], seeds: int, http: bool) -> str:
    rows, reliability_rows, verdicts = [], [], []
    for crowd in crowds:
        result = results[crowd.name]
        for target, pooled in result["runs"].items():
            s = pooled.summary(crowd)
            ok = calibrated(crowd, pooled)
            bars = s["accuracy"] >= s["majority vote"] - 1e-9 and s["accuracy"] >= s["Dawid-Skene"] - 0.02 - 1e-9
            rows.append(
                f"| {crowd.name} | {target} | {s['accuracy']:.3f} | {s['inconclusive']:.3f} | {s['answers']:.2f} "
                f"| {s['single_answer']:.3f} | {s['mean_confidence']:.3f} | {s['right_of_completed']:.3f} "
                f"| {s['gap']:+.3f} | {s['ece']:.3f} | {s['majority vote']:.3f} | {s['Dawid-Skene']:.3f} "
                f"| {s['GLAD']:.3f} | {'yes' if ok else '**no**'} | {'yes' if bars else '**no**'} |"
            )
            for low, high, n, confidence, right in reliability(crowd, pooled.completed()):
                reliability_rows.append(
                    f"| {crowd.name} | {target} | {low:g}-{high:g} | {n} | {confidence:.3f} | {right:.3f} "
                    f"| {right - confidence:+.3f} |"
                )
            verdicts.append(ok and bars)
    overall = [
        f"| {crowd.name} | {len(crowd.truth)} | {len({w for a in crowd.answers.values() for w in a})} "
        f"| {crowd.answers_per_item} | "
        + " | ".join(f"{results[crowd.name]['all'][name]:.3f}" for name in ("majority vote", "Dawid-Skene", "GLAD"))
        + " |"
        for crowd in crowds
    ]
    http_text = (
        "Over HTTP (seed 0, target "
        f"{DEFAULT_TARGET}): "
        + "; ".join(
            f"{crowd.name} "
            + (
                f"**differs from** the in-process run (first at item {results[crowd.name]['http']})"
                if results[crowd.name]["http"]
                else "identical to the in-process run"
            )
            for crowd in crowds
            if results[crowd.name]["http"] is not None
        )
        + "."
        if http
        else "The HTTP replay was not run (`--no-http`)."
    )
    return (
        f"""## Calibration on real crowds (`bench/bench_real_crowds.py`)

Recorded answers of real workers (bluebird: 108 photos x 39 workers; possent: 1,000 tweets x 20 of 85 workers;
rte: 800 sentence pairs x 10 of 164 workers; read from `../shared/datasets/real-crowds/`) and a simulated crowd with
item difficulty and correlated errors (GLAD-style, generated by the bench), replayed through the server's adjudication
with people on the worker page (`--workforce human`): {seeds} seeds per target (each its own order of blocks, items
and worker visits), figures pooled over the seeds. The answer cap is the server's default (11) or the recorded
answers per item when fewer (rte: 10). The seeds run in-process (the worker page's calls on `CrowdService`); the
same replay over HTTP (`LocalCrowdServer`, hook and worker page forms) must give the same numbers. {http_text}

Accuracy counts `Inconclusive` as wrong (its share is shown apart); "single" is the share of items completed on one
answer; "right" is the share of completed tasks whose answer is true, against their mean reported confidence
("conf."); ECE is the expected calibration error over the bins below. Majority vote (a tie half right), Dawid-Skene
and GLAD (crowd-kit) use exactly the answers the server bought. Calibrated: right >= conf. - {CALIBRATION_SLACK} overall
and in every bin with at least {BIN_MIN_TASKS} tasks. Bars (issue 20): accuracy >= majority vote and >= Dawid-Skene -
0.02 on the same answers.

| crowd | target | accuracy | Inconclusive | answers per item | single | conf. | right | right - conf. | ECE | majority vote | Dawid-Skene | GLAD | calibrated | bars |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + """

Over all recorded answers (no adjudication, every answer paid):

| crowd | items | workers | answers per item | majority vote | Dawid-Skene | GLAD |
|---|---|---|---|---|---|---|
"""
        + "\n".join(overall)
        + """

Reliability (completed tasks by reported confidence, all seeds pooled):

| crowd | target | confidence | tasks | mean confidence | share right | right - conf. |
|---|---|---|---|---|---|---|
"""
        + "\n".join(reliability_rows)
        + f"""

Every crowd calibrated at every target with the accuracy bars met: {"yes" if all(verdicts) else "**no**"}."""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", type=Path, default=DATASETS, help="the real-crowds folder")
    parser.add_argument("--only", nargs="*", help="crowds to run (bluebird possent rte simulated); default all")
    parser.add_argument("--targets", type=float, nargs="*", default=list(TARGETS))
    parser.add_argument(
        "--no-http", dest="http", action="store_false", help="skip the replay over HTTP (compared with in-process)"
    )
    parser.add_argument("--no-report", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    logging.getLogger("imagecontains_gateway.service").setLevel(logging.ERROR)  # blocked workers
    names = args.only or ["bluebird", "possent", "rte", "simulated"]
    crowds = [simulated_crowd(0) if name == "simulated" else load_crowd(args.datasets / name) for name in names]
    results = {crowd.name: bench_crowd(crowd, args.seeds, tuple(args.targets), args.http) for crowd in crowds}
    text = report(crowds, results, args.seeds, args.http)
    print(text)
    if not args.no_report:
        write_section("real_crowds", text)
    differing = [name for name, result in results.items() if result["http"]]
    if differing:
        raise SystemExit(f"The HTTP replay differs from the in-process one for {', '.join(differing)} (see above).")


if __name__ == "__main__":
    main()
