"""The real-crowd benchmark's two drivers agree (issue 20): over HTTP (tasks in and out through the hook, answers
through the worker page's forms) the replay's workers get the questions and end the tasks they do in-process on
``CrowdService``, with the replay's server settings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_real_crowds import Crowd, HttpReplay, InProcessReplay, first_difference, server_config


def drive(driver, crowd: Crowd, visits: list[str], directory: Path) -> tuple[list[bool], list]:
    """Post every item, let the workers ask in the order of ``visits``: whether each got a question, and the
    outcomes."""
    directory.mkdir()
    run = driver(crowd, server_config(crowd, 0.95), str(directory))
    try:
        for item in crowd.answers:
            run.put(item)
        return [run.ask_and_answer(worker) for worker in visits], run.outcomes()
    finally:
        run.close()


def test_a_worker_offered_items_it_never_answered_is_kept_over_http_as_in_process(tmp_path):
    """Rte's replay offers a worker the open tasks of other HITs, and it says "can't tell" to them: the replay
    turns the non-answer block off for that. The HTTP driver started its server with only some of the replay's
    settings, so there the block was on: rte's worker 41 got no more questions after 6 "can't tell" in 11."""
    truth = {f"other-{n}": n % 2 == 0 for n in range(12)} | {"own": True}
    answers = {item: {worker: says for worker in ("a", "b", "c")} for item, says in truth.items() if item != "own"}
    crowd = Crowd("open-tasks", truth, answers | {"own": {"x": True, "a": True, "b": True}})
    # x is offered the twelve items it never answered first, then its own.
    visits = ["x"] * 14 + ["a", "b", "c"] * 14
    in_process = drive(InProcessReplay, crowd, visits, tmp_path / "in-process")
    with mock.patch.dict(os.environ):  # the HTTP driver points the hook's connection at its server
        over_http = drive(HttpReplay, crowd, visits, tmp_path / "http")
    assert in_process[0][:14] == [True] * 13 + [False]  # x answered its own item after twelve "can't tell"
    assert over_http[0] == in_process[0]
    assert first_difference(in_process[1], over_http[1]) is None
