"""Crowd answers bought and final accuracy with a calibrated pre-screen, against sending every frame to the crowd.

10,000 frames (30% show a person) per run. The crowd is a pool of simulated workers of accuracy 0.8
adjudicated by the server's own code (server/adjudication.py, learning each worker's record as the server
does), in-process. A scorer of a given AUC is simulated by the binormal model: a frame's score is the
posterior probability of a person given a normal signal with mean 0 (no person) or d (person), unit
variance, d = sqrt(2) * Phi^-1(AUC). Its thresholds come from ``calibrate_thresholds`` at a precision of
0.99 per side, on the (score, crowd answer) pairs of an earlier calibration run (every frame sent to the
crowd, as a DAG does before it trusts a model). Then the 10,000 frames are pre-screened, auditing 5% of
the model's answers. Each frame's workers and their answers are the same in both arms. Medians over
several seeds go to the ``prescreen`` section of docs/benchmarks.md.

    .venv/bin/python bench/bench_prescreen.py [--frames 10000] [--calibration-frames 5000] [--repetitions 5]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Iterable
from statistics import NormalDist

from report import write_section

from airflow_provider_imagecontains.prescreen import calibrate_thresholds, is_audited
from airflow_provider_imagecontains.prescreen.screening import model_verdict
from airflow_provider_imagecontains.server.adjudication import ClassPrior, WorkerModel, adjudicate, learn_from_task
from airflow_provider_imagecontains.server.config import ServerConfig

POSITIVE_SHARE = 0.3
WORKER_ACCURACY = 0.8
POOL_SIZE = 30
AUCS = (0.90, 0.95, 0.99)
TARGET_AUC = 0.95
TARGET_PRECISION = 0.99
AUDIT_RATE = 0.05


class Crowd:
    """The simulated crowd: every frame has its own fixed draw of workers and answers; the adjudicator
    reads them one at a time and learns each worker's model as the server does."""

    def __init__(self, seed: int, config: ServerConfig) -> None:
        self.seed = seed
        self.config = config
        self.models: dict[str, WorkerModel] = {}
        self.class_prior = ClassPrior()
        self.answers_bought = 0

    def ask(self, frame: int, truth: bool) -> bool | None:
        rng = random.Random(f"{self.seed}-answers-{frame}")
        workers = rng.sample(range(POOL_SIZE), self.config.max_answers_per_task)
        answers = [(f"w{w}", truth if rng.random() < WORKER_ACCURACY else not truth) for w in workers]
        for used in range(1, len(answers) + 1):
            verdict = adjudicate(
                answers[:used],
                self.models,
                confidence=self.config.confidence,
                max_answers=self.config.max_answers_per_task,
                prior_accuracy=self.config.prior_worker_accuracy,
            )
            if not verdict.needs_more_answers:
                break
        self.answers_bought += used
        if verdict.contains_target is not None:
            learned, self.class_prior = learn_from_task(
                answers[:used], self.models, self.class_prior, prior_accuracy=self.config.prior_worker_accuracy
            )
            self.models.update(learned)
        return verdict.contains_target


def frames(seed: str, count: int, auc: float) -> list[tuple[bool, float]]:
    """(truth, score) of ``count`` frames for a binormal scorer of the given AUC."""
    rng = random.Random(seed)
    separation = math.sqrt(2) * NormalDist().inv_cdf(auc)
    prior_log_odds = math.log(POSITIVE_SHARE / (1 - POSITIVE_SHARE))
    result = []
    for _ in range(count):
        truth = rng.random() < POSITIVE_SHARE
        signal = rng.gauss(separation if truth else 0.0, 1.0)
        log_odds = prior_log_odds + separation * signal - separation * separation / 2
        result.append((truth, 1.0 / (1.0 + math.exp(-log_odds))))
    return result


def ideal_share(run: list[tuple[bool, float]]) -> float:
    """The share of ``run`` that thresholds chosen with the true labels (precision exactly 0.99 per side,
    no crowd noise, no confidence bound) would settle: the ceiling of any calibration for this scorer."""
    settled = 0
    for side, ordered in ((True, sorted(run, key=lambda f: -f[1])), (False, sorted(run, key=lambda f: f[1]))):
        agreeing = best = 0
        for position, (truth, _) in enumerate(ordered, start=1):
            agreeing += truth == side
            if agreeing >= TARGET_PRECISION * position:
                best = position
        settled += best
    return settled / len(run)


def run_once(auc: float, seed: int, args: argparse.Namespace, config: ServerConfig, measured: bool) -> dict[str, float]:
    # Calibration: an earlier run in which every frame went to the crowd.
    history = Crowd(seed + 1000, config)
    pairs, right = [], {True: [0, 0], False: [0, 0]}
    for frame, (truth, score) in enumerate(frames(f"{seed}-history-{auc}", args.calibration_frames, auc)):
        answer = history.ask(frame, truth)
        if answer is not None:
            pairs.append({"score": score, "crowd": answer})
            right[truth][0] += answer == truth
            right[truth][1] += 1
    # What gold questions would measure: the crowd's accuracy on each kind of frame.
    on_yes, on_no = (right[kind][0] / right[kind][1] for kind in (True, False))
    thresholds = calibrate_thresholds(
        pairs,
        contains_precision=TARGET_PRECISION,
        not_contains_precision=TARGET_PRECISION,
        crowd_accuracy_on_yes=on_yes if measured else config.confidence,
        crowd_accuracy_on_no=on_no if measured else config.confidence,
    )
    # The measured run: the same frames and worker answers for both arms.
    run = frames(f"{seed}-run", args.frames, auc)
    crowd_only, prescreened = Crowd(seed, config), Crowd(seed, config)
    right_crowd = right_pre = settled = model_right = 0
    # The crowd's accuracy on the frames the pre-screen sent it, in each arm (same frames, same worker answers).
    sent = sent_positive = sent_right_pre = sent_right_crowd = 0
    for frame, (truth, score) in enumerate(run):
        crowd_only_right = crowd_only.ask(frame, truth) == truth
        right_crowd += crowd_only_right
        verdict = model_verdict(score, thresholds.accept_above, thresholds.reject_below)
        if verdict is None or is_audited(f"frame-{seed}-{frame}", "person", AUDIT_RATE):
            answer = prescreened.ask(frame, truth)
            sent += 1
            sent_positive += truth
            sent_right_pre += answer == truth
            sent_right_crowd += crowd_only_right
        else:
            answer = verdict
            settled += 1
            model_right += verdict == truth
        right_pre += answer == truth
    return {
        "ideal": ideal_share(run),
        "settled": settled / args.frames,
        "model_precision": model_right / settled if settled else float("nan"),
        "answers_crowd": crowd_only.answers_bought,
        "answers_pre": prescreened.answers_bought,
        "saved": 1 - prescreened.answers_bought / crowd_only.answers_bought,
        "sent_accuracy_crowd": sent_right_crowd / sent,
        "sent_accuracy_pre": sent_right_pre / sent,
        "sent_positive": sent_positive / sent,
        "accuracy_crowd": right_crowd / args.frames,
        "accuracy_pre": right_pre / args.frames,
        "on_yes": on_yes,
        "on_no": on_no,
    }


def _median(values: Iterable[float]) -> float:
    present = [value for value in values if not math.isnan(value)]
    return statistics.median(present) if present else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    # The pairs surveillance_triage keeps (AUDIT_WINDOW).
    parser.add_argument("--calibration-frames", type=int, default=5_000)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    config = ServerConfig()
    rows, crowd_rows, verdicts = [], [], []
    for measured in (False, True):
        for auc in AUCS:
            runs = [run_once(auc, seed, args, config, measured) for seed in range(args.repetitions)]
            # A run in which the model settled nothing has no precision: medians over the others.
            m = {key: _median(run[key] for run in runs) for key in runs[0]}
            rows.append(
                f"| {auc:.2f} | {'measured' if measured else 'assumed'} {m['on_yes'] if measured else config.confidence:.3f} / "
                f"{m['on_no'] if measured else config.confidence:.3f} | {m['settled']:.1%} | {m['ideal']:.1%} "
                f"| {m['model_precision']:.4f} | {m['answers_crowd']:,.0f} | {m['answers_pre']:,.0f} | **{m['saved']:.1%}** "
                f"| {m['accuracy_crowd']:.2%} | {m['accuracy_pre']:.2%} "
                f"| **{100 * (m['accuracy_pre'] - m['accuracy_crowd']):+.2f}** |"
            )
            if not measured:
                crowd_rows.append(
                    f"| {auc:.2f} | {m['sent_positive']:.1%} | {m['sent_accuracy_crowd']:.2%} | {m['sent_accuracy_pre']:.2%} |"
                )
            print(rows[-1], flush=True)
            if auc == TARGET_AUC:
                label = "crowd accuracies measured (gold)" if measured else "crowd accuracies assumed"
                met = m["saved"] >= 0.6 and m["accuracy_pre"] - m["accuracy_crowd"] >= -0.005
                verdicts.append(
                    f"{label}: {m['saved']:.1%} fewer answers, accuracy "
                    f"{100 * (m['accuracy_pre'] - m['accuracy_crowd']):+.2f} points: **{'met' if met else 'not met'}**; "
                    f"thresholds chosen with the true labels would settle {m['ideal']:.1%} of the frames"
                )
    text = (
        f"""## Pre-screen (`bench/bench_prescreen.py`)

{args.frames:,} frames per run ({POSITIVE_SHARE:.0%} with a person), {args.repetitions} runs (medians). Crowd: {POOL_SIZE}
simulated workers of accuracy {WORKER_ACCURACY}, adjudicated in-process by the server's code with its defaults
(confidence {config.confidence}, at most {config.max_answers_per_task} answers, prior {config.prior_worker_accuracy}).
Scorers: binormal (equal variances) of the given AUC, scores = posterior probability. Thresholds: `calibrate_thresholds`
at precision {TARGET_PRECISION} per side (crowd accuracy taken as {config.confidence}, 95% lower bound) from an earlier
run of {args.calibration_frames:,} frames all sent to the crowd, correcting for the crowd's own errors with its accuracy on
frames with and without a person: "assumed" {config.confidence} each (a DAG without gold questions), or "measured" on the
calibration run against the truth (what gold questions give). Audit rate {AUDIT_RATE:.0%}. Final accuracy counts a
frame the crowd could not settle (`Inconclusive`) as wrong. Baseline: the same frames and worker answers, every
frame to the crowd.

| AUC | crowd accuracy on yes / on no in calibration | settled by model | settled at best (true labels) | model precision | answers, crowd only | answers, pre-screen | answers saved | accuracy, crowd only | accuracy, pre-screen | accuracy change (points) |
|---|---|---|---|---|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + f"""

Target at AUC {TARGET_AUC} (at least 60% fewer crowd answers, accuracy at most 0.5 points below crowd only):
"""
        + "\n".join(f"- {verdict}" for verdict in verdicts)
        + """

The crowd on the frames the pre-screen sends it (the uncertain ones and the audits; the \"assumed\" runs), in both arms: the same
frames and the same worker answers, adjudicated once among all frames (crowd only) and once among the
pre-screened ones. The pre-screen removes mostly one class (the confident "no person" frames), so the crowd
sees a different share of positives; an adjudicator whose accuracy depends on that share loses accuracy here
that the model's own answers cannot make up.

| AUC | share with a person | crowd accuracy, crowd-only arm | crowd accuracy, pre-screen arm |
|---|---|---|---|
"""
        + "\n".join(crowd_rows)
    )
    write_section("prescreen", text)


if __name__ == "__main__":
    main()
