"""The workers' prior comes from what gold shows of the crowd as a whole, per kind of image (issue 20).

A crowd that sees the target on only half the images that contain it, and rarely where it is not (bluebird's
workers: right 0.52 of the time on "yes" images, 0.73 on "no" ones), makes a new worker's "no" weak evidence. With
the symmetric prior (0.8 on both kinds) three agreeing "no"s of new workers reported 0.96; gold shows the crowd's
bias, and the prior follows it. A server without gold keeps the configured prior exactly.
"""

from __future__ import annotations

import json
from dataclasses import replace

from imagecontains_gateway.adjudication import CROWD_PRIOR_STRENGTH, CrowdPrior
from imagecontains_gateway.config import ServerConfig
from imagecontains_gateway.service import CrowdService
from imagecontains_gateway.store import TaskStore
from imagecontains_gateway.validation import IMAGE_CONTAINS

GOLD = [(f"https://gold.example/{n}.jpg", "person", n % 2 == 0) for n in range(40)]


def open_service(tmp_path, **overrides):
    config = ServerConfig(workforce="human", **overrides)
    store = TaskStore(str(tmp_path / "crowd.db"))
    store.open_accounts([config.accounts[0].account_id], 10**12)
    return CrowdService(store, config)


def put(service, name):
    body = {"input": {"image": {"url": f"https://tasks.example/{name}.jpg"}, "target": {"label": "person"}}}
    service.put_task(service.config.accounts[0].account_id, IMAGE_CONTAINS, name, json.dumps(body).encode())


def answer_task(service, name, answers):
    """New workers ``new-<n>`` answer the task one at a time; return the task as it stands afterwards."""
    put(service, name)
    for n, says_yes in enumerate(answers):
        worker = f"new-{name}-{n}"
        assignment = service.next_assignment(worker)
        assert assignment is not None and not assignment.gold, assignment
        service.submit_answer(assignment, worker, says_yes)
    return service.store.get(service.config.accounts[0].account_id, IMAGE_CONTAINS, name)


def test_gold_of_a_crowd_biased_toward_no_weakens_new_workers_no(tmp_path):
    service = open_service(tmp_path, probation_gold_share=0.0, gold_share=0.0)  # tasks get no gold mixed in
    service.store.add_gold(GOLD)
    # Ten workers answer every gold question: on the 20 images with the target they say "yes" to 11 (0.55), on
    # the 20 without it "no" to 17 (0.85).
    for worker in (f"gold-{n}" for n in range(10)):
        yes_seen = no_seen = 0
        while (assignment := service.gold_assignment(worker)) is not None:
            truth = service.store.gold_truth(assignment.image_url, assignment.label)
            if truth:
                says_yes, yes_seen = yes_seen < 11, yes_seen + 1
            else:
                says_yes, no_seen = no_seen >= 17, no_seen + 1
            service.submit_answer(assignment, worker, says_yes)
    strength, configured = CROWD_PRIOR_STRENGTH, service.config.prior_worker_accuracy
    expected = CrowdPrior(
        (110 + strength * configured) / (200 + strength), (170 + strength * configured) / (200 + strength)
    )
    assert service.crowd_prior == expected

    # Four agreeing "no"s of new workers: about 0.93, short of the target (the symmetric prior reported 0.96 after
    # three and completed the task); a fifth completes it.
    task = answer_task(service, "no", [False] * 4)
    assert task.state == "processing", task.result
    service.submit_answer(service.next_assignment("fifth"), "fifth", False)
    task = service.store.get(service.config.accounts[0].account_id, IMAGE_CONTAINS, "no")
    assert task.state == "completed" and json.loads(task.result)["containsTarget"] is False
    # A restarted server finds the same prior in its database.
    assert CrowdService(service.store, service.config).crowd_prior == expected


def test_without_gold_new_workers_start_from_the_configured_prior_as_before(tmp_path):
    service = open_service(tmp_path, prior_worker_accuracy=0.8)
    assert service.crowd_prior == CrowdPrior(0.8, 0.8)
    # Three agreeing new workers complete a task at 0.960, two (0.908) do not, as before issue 20's crowd prior
    # (docs/adjudication.md, "Hard images").
    task = answer_task(service, "three", [False, False, False])
    assert task.state == "completed" and json.loads(task.result) == {
        "containsTarget": False,
        "confidence": 0.96,
        "answers": 3,
    }
    assert answer_task(service, "two", [True, True]).state == "processing"


def test_gold_task_votes_count_in_the_crowd_prior_once_decided_and_a_restart_agrees(tmp_path):
    """A gold task's votes teach nothing while it waits (its verdict must not be weighed with what its own answers
    taught); once decided they count as gold. A retracted gold answer is taken back."""
    service = open_service(
        tmp_path, probation_questions=0, gold_share=1.0, gold_task_share=1.0, block_below_accuracy=0.0
    )
    service.store.add_gold(GOLD)
    put(service, "waiting")  # gold is only asked while a task waits
    untouched = CrowdPrior(0.8, 0.8)
    first = service.next_assignment("a")
    assert first is not None and first.gold_task_id is not None
    truth = service.store.gold_truth(first.image_url, first.label)
    service.submit_answer(first, "a", truth)
    assert service.crowd_prior == untouched == CrowdService(service.store, service.config).crowd_prior
    for worker in ("b", "c"):  # three agreeing new workers decide it (0.960)
        assignment = service.next_assignment(worker)
        assert assignment is not None and assignment.gold_task_id == first.gold_task_id
        service.submit_answer(assignment, worker, truth)
    assert service.gold_tasks.calibration().completed == 1
    decided = CrowdService(service.store, service.config).crowd_prior
    assert service.crowd_prior == decided != untouched
    learned = (3 + CROWD_PRIOR_STRENGTH * 0.8) / (3 + CROWD_PRIOR_STRENGTH)
    assert (decided.on_yes if truth else decided.on_no) == learned

    # A plain gold answer counts at once, and is taken back with the worker's undo.
    service.config = replace(service.config, gold_task_share=0.0)
    plain = service.next_assignment("d")
    assert plain is not None and plain.gold and plain.gold_task_id is None
    service.submit_answer(plain, "d", True)
    assert service.crowd_prior != decided
    assert service.retract_answer(plain, "d")
    assert service.crowd_prior == decided == CrowdService(service.store, service.config).crowd_prior
