"""Confidence that means what it says (issue 20): one answer never settles a task, and on crowds whose errors
are correlated through hard items the reported confidence is not above the share of tasks right.

The crowds are generated (bench/bench_real_crowds.py's GLAD-style crowd: item difficulty, a few misleading items)
and replayed through ``CrowdService`` as people on the worker page answer; the benchmark runs the same replay on
recorded real crowds (docs/benchmarks.md, section ``real_crowds``), also with gold questions and as an in-sample oracle,
whose replays are checked here too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from imagecontains_gateway.adjudication import WorkerModel
from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.service import CrowdService
from imagecontains_gateway.store import TaskStore
from imagecontains_gateway.validation import IMAGE_CONTAINS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_real_crowds import (
    InProcessReplay,
    OracleReplay,
    Pooled,
    hold_out_gold,
    replay,
    server_config,
    simulated_crowd,
)


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_one_answer_never_completes_a_task_even_from_a_proven_expert(tmp_path, confidence):
    config = ServerConfig(workforce="human", confidence=confidence)
    store = TaskStore(str(tmp_path / "crowd.db"))
    account = config.accounts[0].account_id
    store.open_accounts([account], 10**9)
    # 200 gold questions, every one right: the strongest record a worker can have.
    store.save_models({"human:expert": WorkerModel(100, 0, 100, 0, gold_right=200)})
    service = CrowdService(store, config)
    body = {"input": {"image": {"url": "https://images.example.com/1.jpg"}, "target": {"label": "person"}}}
    service.put_task(account, IMAGE_CONTAINS, "t1", json.dumps(body).encode())
    service.submit_answer(service.next_assignment("human:expert"), "human:expert", True)
    assert store.get(account, IMAGE_CONTAINS, "t1").state == "processing", "one answer completed the task"
    service.submit_answer(service.next_assignment("human:second"), "human:second", True)
    task = store.get(account, IMAGE_CONTAINS, "t1")
    assert task.state == "completed" and json.loads(task.result)["containsTarget"] is True


def completed_calibration(crowd, confidence, seeds):
    pooled = Pooled()
    for seed in range(seeds):
        pooled.add(crowd, replay(crowd, server_config(crowd, confidence), seed), with_baselines=False)
    return pooled.summary(crowd)


def test_a_crowd_right_64_percent_of_the_time_is_not_reported_97_percent_sure():
    """Today's two-coin models started at 0.8 and learned from the server's own decisions: on such a crowd they
    reported 0.97 and were right about 0.75 of the time (bluebird, a real crowd at 0.64: 0.97 and 0.74)."""
    crowd = simulated_crowd(1, items=200, workers=30, ability=0.5)
    summary = completed_calibration(crowd, 0.95, seeds=2)
    assert summary["right_of_completed"] >= summary["mean_confidence"] - 0.03, summary


def test_confidence_is_calibrated_on_a_crowd_with_item_difficulty_and_correlated_errors():
    crowd = simulated_crowd(0)
    for confidence in (0.9, 0.95):
        summary = completed_calibration(crowd, confidence, seeds=1)
        assert summary["right_of_completed"] >= summary["mean_confidence"] - 0.03, (confidence, summary)
        assert summary["inconclusive"] < 0.25, (confidence, summary)


def test_the_gold_replay_holds_gold_out_of_the_tasks_asks_it_and_replays_exactly():
    crowd = simulated_crowd(2, items=100, workers=20, per_item=8, block=20)
    gold = hold_out_gold(crowd, 0)
    gold_answers: list[int] = []

    class Driver(InProcessReplay):
        def close(self) -> None:
            gold_answers.append(self.store.connection.execute("SELECT COUNT(*) FROM gold_answers").fetchone()[0])
            super().close()

    config = server_config(crowd, 0.95)
    first = replay(crowd, config, 0, Driver, gold)
    assert len(gold) == 20 and {o.item for o in first} == set(crowd.truth) - set(gold)
    assert gold_answers[0] > 0, "no worker was asked a gold question"
    assert replay(crowd, config, 0, Driver, gold) == first, "the same seed replayed differently"


def test_the_oracle_keeps_every_worker_model_at_its_recorded_counts():
    crowd = simulated_crowd(3, items=60, workers=15, per_item=8, block=20)
    recorded = crowd.recorded_models()
    after: list[dict] = []

    class Driver(OracleReplay):
        def close(self) -> None:
            after.append(self.store.worker_models(recorded))
            super().close()

    outcomes = replay(crowd, server_config(crowd, 0.95), 0, Driver)
    assert len(outcomes) == 60 and any(o.verdict is not None for o in outcomes)
    assert after[0] == recorded
