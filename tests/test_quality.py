"""Quality control over the real local server: a mixed crowd, gold questions, probation, blocking, worker
models that outweigh spammers, and what the requester sees (billing, task lists, confidence, the export)."""

from __future__ import annotations

import json
import math
import random
import re
import sqlite3
import statistics
import time

import httpx
import pytest

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.triggers._tracking import TaskTracker, build_records
from imagecontains_gateway.__main__ import config_from_args, main, parse_args
from imagecontains_gateway.adjudication import (
    ClassPrior,
    CrowdPrior,
    WorkerModel,
    adjudicate,
    learn_from_task,
    posterior,
)
from imagecontains_gateway.config import CrowdClass, ServerConfig, parse_crowd

PRIOR = CrowdPrior(0.8, 0.8)
REWARD = 0.01


def answer_key(path, images):
    """Write an answer key: image URL -> labels it contains."""
    path.write_text(json.dumps({"images": images}))
    return str(path)


def put_and_wait(names_to_images, label="person", timeout=60):
    hook = ImageContainsHook()
    inputs = {name: {"image": {"url": url}, "target": {"label": label}} for name, url in names_to_images.items()}
    hook.put_tasks("image-contains", inputs)
    deadline = time.monotonic() + timeout
    while True:
        documents = hook.get_tasks("image-contains", list(inputs))
        if all(document["state"] != "processing" for document in documents.values()):
            return documents
        assert time.monotonic() < deadline, "tasks did not finish"
        time.sleep(0.1)


def worker_rows(db_path):
    with sqlite3.connect(db_path) as db:
        return {
            row[0]: row[1:]
            for row in db.execute("SELECT worker, questions, gold_right, gold_wrong, blocked_at FROM worker_models")
        }


# The model on its own

# Even odds and no hard images: the posterior of the workers' models alone.
EVEN = {"prior": PRIOR, "share_yes": 0.5, "share_hard": 1e-9}


def weight(models, worker, says_yes):
    """The log-odds for "yes" that one answer of ``worker`` gives."""
    probability_yes = posterior([(worker, says_yes)], models, **EVEN).probability_yes
    return math.log(probability_yes / (1.0 - probability_yes))


def test_a_yes_sayer_and_a_random_clicker_weigh_nothing_once_known():
    models = {
        "yes-sayer": WorkerModel(yes_said_yes=20, no_said_yes=20),
        "clicker": WorkerModel(yes_said_yes=10, yes_said_no=10, no_said_no=10, no_said_yes=10),
        "careful": WorkerModel(yes_said_yes=18, yes_said_no=2, no_said_no=18, no_said_yes=2),
    }
    careful = weight(models, "careful", True)
    assert weight(models, "yes-sayer", True) < 0.1 * careful
    assert max(abs(weight(models, "clicker", says_yes)) for says_yes in (True, False)) < 0.1 * careful
    # Two spammers saying "yes" lose to two careful "no"s.
    answers = [("yes-sayer", True), ("clicker", True), ("careful", False), ("careful-too", False)]
    models["careful-too"] = models["careful"]
    verdict = adjudicate(answers, models, confidence=0.8, max_answers=11, prior=PRIOR, class_prior=ClassPrior())
    assert verdict.contains_target is False
    # Without the models (every worker new), the same answers would be a tie.
    assert adjudicate(answers, {}, confidence=0.5001, max_answers=11, prior=PRIOR, class_prior=ClassPrior())
    assert abs(posterior(answers, {}, **EVEN).probability_yes - 0.5) < 1e-9


def test_agreement_teaches_the_model_that_a_yes_sayer_is_wrong_on_images_without_the_target():
    models: dict[str, WorkerModel] = {}
    class_prior = ClassPrior()
    for n in range(40):  # two careful workers answer right, the yes-sayer says yes to every image
        truth = n % 2 == 0
        answers = [("a", truth), ("b", truth), ("yes-sayer", True)]
        learned, class_prior = learn_from_task(answers, models, class_prior, prior=PRIOR)
        models.update(learned)
    assert models["yes-sayer"].accuracy_on_yes(PRIOR) > 0.9 and models["yes-sayer"].accuracy_on_no(PRIOR) < 0.2
    assert models["a"].balanced_accuracy(PRIOR) > 0.9
    assert weight(models, "yes-sayer", True) < 0.1 * weight(models, "a", True)


def test_mostly_empty_images_keep_the_models_true_and_the_answers_right_on_both_kinds():
    """4,000 tasks, 10 % with the target, 30 workers right 80 % of the time on either kind, the server's defaults
    (confidence 0.95, at most 11 answers): the models must not drift (issue 12b: without a class prior they did,
    to 0.84 accuracy, 0.80 on empty images, 10 % Inconclusive, with completed tasks reported >= 0.95 sure)."""
    config = ServerConfig()
    rng = random.Random(7)
    models: dict[str, WorkerModel] = {}
    class_prior = ClassPrior()
    right = {True: 0, False: 0}
    completed = {True: 0, False: 0}
    seen = {True: 0, False: 0}
    for _ in range(4000):
        truth = rng.random() < 0.1
        workers = rng.sample(range(30), config.max_answers_per_task)
        pending = [(f"w{w}", truth if rng.random() < 0.8 else not truth) for w in workers]
        for used in range(1, len(pending) + 1):
            answers = pending[:used]
            verdict = adjudicate(
                answers,
                models,
                confidence=config.confidence,
                max_answers=config.max_answers_per_task,
                prior=PRIOR,
                class_prior=class_prior,
            )
            if not verdict.needs_more_answers:
                break
        seen[truth] += 1
        completed[truth] += verdict.contains_target is not None
        right[truth] += verdict.contains_target == truth
        if not verdict.needs_more_answers:
            learned, class_prior = learn_from_task(answers, models, class_prior, prior=PRIOR)
            models.update(learned)
    accuracy = {kind: right[kind] / completed[kind] for kind in seen}
    # Completed tasks of each kind are right as often as the confidence says (Wald's bound on each kind); about
    # one task in ten fails Inconclusive, the price of allowing for hard images (issue 20).
    assert min(accuracy.values()) >= config.confidence - 0.01, accuracy
    assert sum(completed.values()) / sum(seen.values()) >= 0.88, completed
    assert abs(class_prior.share_yes - seen[True] / sum(seen.values())) < 0.025, (class_prior, seen)
    # Early stopping scatters single workers' estimates; the crowd's stay near the truth, 0.8 on each kind.
    for kind in (WorkerModel.accuracy_on_yes, WorkerModel.accuracy_on_no):
        assert 0.75 < statistics.median(kind(model, PRIOR) for model in models.values()) < 0.85


def test_crowd_flag_and_config_file(tmp_path):
    classes = parse_crowd("expert:5:0.95,average:20:0.75,spammer:5:0.5,yes-sayer:3:0.5:yes")
    assert [c.count for c in classes] == [5, 20, 5, 3] and classes[3].bias == "yes"
    assert ServerConfig(crowd="a:2:0.9,b:3:0.6").simulated_workers == 5
    # The one-class shorthand stays.
    assert ServerConfig(workforce_size=4, worker_accuracy=0.7).crowd_classes == (CrowdClass("sim-worker", 4, 0.7),)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"crowd": "expert:1:0.95,yes-sayer:2:0.5:yes"}))
    assert config_from_args(parse_args(["--config", str(config_file)])).simulated_workers == 3
    assert config_from_args(parse_args(["--crowd", "x:7:0.8"])).crowd_classes == (CrowdClass("x", 7, 0.8),)
    for bad in ("expert:5", "expert:five:0.9", "expert:5:1.5", "x:1:0.9:maybe", "x:1:0.9,x:2:0.8", "x:1:0.4:yes"):
        with pytest.raises(ValueError, match="Invalid"):
            ServerConfig(crowd=bad)


def test_a_yes_sayer_answers_yes_whatever_the_image():
    yes_sayer = CrowdClass("y", 1, 0.5, "yes")
    assert all(yes_sayer.says_yes(truth, draw / 10) for truth in (True, False) for draw in range(10))
    leaning = CrowdClass("l", 1, 0.75, "no")  # mistakes only on images with the target, half of them
    assert [leaning.says_yes(True, draw) for draw in (0.25, 0.75)] == [True, False]
    assert not any(leaning.says_yes(False, draw / 10) for draw in range(10))


def test_gold_from_an_answer_key_asks_every_image_about_every_label(tmp_path, capsys):
    from imagecontains_gateway.quality import AnswerKey, gold_from_answer_key

    key = AnswerKey({"cam1/a b.png": ["Person"], "https://x.example/c.jpg": ["car"]})
    assert sorted(gold_from_answer_key(key)) == [
        ("/images/cam1/a%20b.png", "Person", True),  # labels as the key spells them, as a task's are
        ("/images/cam1/a%20b.png", "car", False),  # a file name is served from --images-dir
        ("https://x.example/c.jpg", "Person", False),
        ("https://x.example/c.jpg", "car", True),
    ]
    one_sided = answer_key(tmp_path / "one-sided.json", {"a.png": ["person"]})
    with pytest.raises(SystemExit, match="both answers"):
        main(["gold", "add", one_sided, "--db", str(tmp_path / "crowd.db")])
    two_sided = answer_key(tmp_path / "key.json", {"a.png": ["person"], "b.png": ["car"]})
    main(["gold", "add", two_sided, "--db", str(tmp_path / "crowd.db")])
    main(["gold", "add", two_sided, "--db", str(tmp_path / "crowd.db")])
    assert capsys.readouterr().out.splitlines() == [
        "4 gold questions added (0 already known).",
        "0 gold questions added (4 already known).",
    ]


# Over the real server


def test_records_carry_the_servers_confidence_and_answers_and_none_without_them(crowd_server):
    server = crowd_server(worker_accuracy=1.0, seed=3)
    names = {f"r{n}": f"https://tasks.example/r{n}.jpg" for n in range(3)}
    put_and_wait(names)
    tracker = TaskTracker(names)
    hook = ImageContainsHook()
    tracker.poll(lambda batch: hook.get_tasks("image-contains", batch), list(names))
    submitted = [{"task_name": name, "url": url, "label": "person"} for name, url in names.items()]
    stored = {task["task_name"]: task for task in server.tasks()}
    for record in build_records(submitted, tracker.to_event()):
        votes = stored[record["task_name"]]["answers"]
        assert record["contains_target"] == stored[record["task_name"]]["result"]["containsTarget"]
        assert record["answers"] == len(votes) and server.config.confidence <= record["confidence"] < 1

    # A result with containsTarget alone (the hosted service's), and an event of an older trigger: None.
    tracker = TaskTracker(["hosted"])
    tracker.record({"hosted": {"state": "completed", "result": {"containsTarget": True}}})
    event = tracker.to_event()
    assert "confidence" not in event
    (record,) = build_records([{"task_name": "hosted", "url": "u", "label": "person"}], event)
    assert (record["contains_target"], record["confidence"], record["answers"]) == (True, None, None)


@pytest.fixture
def gold_key(tmp_path):
    """40 gold questions: 20 images, each against the labels "person" and "car"."""
    images = {f"https://gold.example/{n}.jpg": (["person"] if n % 2 else ["car"]) for n in range(20)}
    return answer_key(tmp_path / "gold.json", images)


def test_spammers_are_blocked_and_outweighed_gold_is_never_billed_nor_listed(crowd_server, tmp_path, gold_key, capsys):
    truth = {f"https://tasks.example/{n}.jpg": n % 2 == 0 for n in range(80)}
    key = answer_key(tmp_path / "key.json", {url: ["person"] if yes else [] for url, yes in truth.items()})
    server = crowd_server(
        crowd="careful:10:0.95,clicker:2:0.5,yes-sayer:2:0.5:yes",
        answer_key_path=key,
        seed=7,
        reward_per_answer=REWARD,
        probation_questions=36,
        probation_gold_share=1.0,
        block_below_accuracy=0.75,
        # A task every unblocked worker has answered short of the target waits for its deadline (Expired, wrong).
        task_deadline_seconds=20.0,
    )
    main(["gold", "add", gold_key, "--db", server.db_path])
    assert capsys.readouterr().out.startswith("40 gold questions added")

    names = {f"t{n}": url for n, url in enumerate(truth)}
    documents = put_and_wait(names)
    # An Inconclusive task (no result) counts as wrong.
    right = sum((documents[name]["result"] or {}).get("containsTarget") == truth[url] for name, url in names.items())
    assert right >= 76, f"{right} of 80 right"
    for document in (d for d in documents.values() if d["result"] is not None):
        assert set(document["result"]) == {"containsTarget", "confidence", "answers"}
        assert document["result"]["confidence"] >= server.config.confidence

    rows = worker_rows(server.db_path)
    spammers = [w for w in rows if not w.startswith("careful")]
    # Yes-sayers are found on gold at once; a clicker whose gold record cannot rule out the bar at 99 % (a lucky
    # run of coin flips) keeps answering, weighed by its model, until it can.
    assert all(rows[w][3] is not None for w in spammers if w.startswith("yes-sayer")), f"yes-sayers not blocked: {rows}"
    assert any(rows[w][3] is not None for w in spammers if w.startswith("clicker")), f"no clicker blocked: {rows}"
    spammers = [w for w in spammers if rows[w][3] is not None]
    assert not any(rows[w][3] is not None for w in rows if w.startswith("careful"))
    # Blocked workers answered no task after they were blocked; a spammer saw at most its probation.
    with sqlite3.connect(server.db_path) as db:
        for worker in spammers:
            late = db.execute(
                "SELECT COUNT(*) FROM answers WHERE worker = ? AND created_at > ?", (worker, rows[worker][3])
            ).fetchone()[0]
            assert late <= 1
        task_answers = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        gold_answers = db.execute("SELECT COUNT(*) FROM gold_answers").fetchone()[0]
        class_priors = db.execute("SELECT function, label, yes, no FROM class_priors").fetchall()
        adjudicated = db.execute(
            "SELECT COUNT(*) FROM tasks WHERE problem IS NULL OR json_extract(problem, '$.code') != 'Expired'"
        ).fetchone()[0]
    assert gold_answers >= 30
    # The class prior counts the requester's tasks the adjudicator ended (half of them contain the target), not gold
    # and not a task that expired waiting for answers.
    [(function, label, yes, no)] = class_priors
    assert (function, label) == ("image-contains", "person")
    assert adjudicated >= 76 and yes + no == pytest.approx(adjudicated) and 35 < yes < 45

    # The export holds every yes/no answer, gold flagged.
    export = tmp_path / "answers.jsonl"
    main(["export-answers", "--db", server.db_path, "--output", str(export)])
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(lines) == task_answers + gold_answers
    assert {key for line in lines for key in line} == {
        "task_name",
        "worker",
        "contains_target",
        "gold",
        "answered_at",
        "account",
    }
    assert sum(line["gold"] for line in lines) == gold_answers
    assert {line["task_name"] for line in lines if not line["gold"]} == set(names)

    # Billing: only task answers are paid for by the requester.
    spend = server.config.starting_balance - balance(server)
    assert spend == pytest.approx(task_answers * REWARD)
    # Gold is in no task list: not through the API's test helper, not on the dashboard.
    listed = server.tasks()
    assert len(listed) == 80 and not any("gold.example" in t["input"]["image"]["url"] for t in listed)

    # Worker models and blocks are kept across restarts: spammers answer none of the new tasks.
    server.restart()
    documents = put_and_wait({f"after-restart-{n}": url for n, url in enumerate(list(truth)[:5])})
    after = [t for t in server.tasks() if t["task_name"].startswith("after-restart")]
    assert len(after) == 5 and not any(worker in spammers for t in after for worker, _ in t["answers"])


class Worker:
    """A person on the worker page, as a plain HTTP client submitting the page's own form."""

    def __init__(self, server, name):
        self.client = httpx.Client(base_url=server.endpoint_url, timeout=30)
        response = self.client.post("/signin", data={"token": server.issue_token("worker", name)})
        assert response.status_code == 303

    def page(self):
        page = self.client.get("/work")
        assert page.status_code == 200
        return page.text

    def answer(self, page, says_yes):
        self.post(page, "answer-form", "/work/answer", answer="yes" if says_yes else "no")

    def undo(self, page):
        self.post(page, "undo-form", "/work/undo")

    def post(self, page, form_id, action, **fields):
        form = page.split(f'id="{form_id}"', 1)[1].split("</form>", 1)[0]
        question_id = re.search(r'name="task" value="(\d+)"', form)[1]
        csrf = re.search(r'name="csrf" value="(\w+)"', form)[1]
        assert self.client.post(action, data={"task": question_id, "csrf": csrf, **fields}).status_code == 303


def question_on(page):
    """(image URL, label) of the question on a worker page, or None."""
    image = re.search(r'<img class="frame" src="([^"]*)"', page)
    return None if image is None else (image[1], re.search(r'<strong class="label">(.*?)</strong>', page, re.S)[1])


def test_people_cannot_tell_gold_and_one_who_fails_it_gets_no_more_questions(crowd_server, tmp_path, gold_key):
    server = crowd_server(
        workforce="human",
        probation_questions=4,
        probation_gold_share=1.0,
        gold_share=0.0,
        block_below_accuracy=0.7,
        seed=1,
    )
    main(["gold", "add", gold_key, "--db", server.db_path])
    gold = json.loads(open(gold_key).read())["images"]
    put_and_wait_none = ImageContainsHook()
    inputs = {
        f"t{n}": {"image": {"url": f"https://tasks.example/{n}.jpg"}, "target": {"label": "person"}} for n in range(3)
    }
    put_and_wait_none.put_tasks("image-contains", inputs)

    def is_gold(question):
        return question[0].startswith("https://gold.example/")

    def gold_truth(question):
        return question[1] in gold[question[0]]

    # Alice answers gold right: after her probation she gets real tasks, on the same page.
    alice, pages = Worker(server, "alice"), []
    for _ in range(5):
        page = alice.page()
        question = question_on(page)
        pages.append((is_gold(question), page))
        alice.answer(page, gold_truth(question) if is_gold(question) else True)
    assert [gold for gold, _ in pages] == [True] * 4 + [False]

    def masked(page):
        """The page without what differs between any two questions: image, label, ids, tally, the last answer."""
        image, label = question_on(page)
        page = page.replace(image, "…").replace(label, "…")
        page = re.sub(r'<form class="undo".*?</form>', "", page, flags=re.S)
        for pattern in (r'value="\d+"', r'value="[\w-]{20,}"', r"\d+ answered", r'alt="[^"]*"'):
            page = re.sub(pattern, "…", page)
        return re.sub(r"\s+", " ", page)

    # A gold answer can be undone, as an answer that did not decide its task can.
    assert all('id="undo-form"' in page for _, page in pages[1:])
    assert len({masked(page) for _, page in pages}) == 1, "a gold question's page differs from a task's"
    # Gold answers count like any other: the worker's tally gives nothing away.
    assert [int(re.search(r"(\d+) answered", page)[1]) for _, page in pages] == [0, 1, 2, 3, 4]

    # An answer to a gold question can be taken back like any other: what it taught the model goes too.
    carol = Worker(server, "carol")
    page = carol.page()
    question = question_on(page)
    carol.answer(page, not gold_truth(question))
    page = carol.page()
    assert worker_rows(server.db_path)["human:carol"][1:3] == (0, 1)
    carol.undo(page)
    page = carol.page()
    assert question_on(page) == question and worker_rows(server.db_path)["human:carol"][1:3] == (0, 0)
    carol.answer(page, gold_truth(question))
    assert worker_rows(server.db_path)["human:carol"][1:3] == (1, 0)

    # Mallory gets every gold question wrong: blocked, she sees no more questions while tasks wait.
    mallory, mallory_gold = Worker(server, "mallory"), 0
    while (question := question_on(page := mallory.page())) is not None:
        assert is_gold(question) and mallory_gold < 4
        mallory.answer(page, not gold_truth(question))
        mallory_gold += 1
    assert "No questions right now" in page and mallory_gold >= 3
    assert question_on(Worker(server, "bob").page()) is not None  # there are questions for others
    assert worker_rows(server.db_path)["human:mallory"][3] is not None
    assert not any(worker == "human:mallory" for t in server.tasks() for worker, _ in t["answers"])

    # The requester's dashboard: each worker's record and blocked state; gold cost apart, no gold task listed.
    dashboard = httpx.Client(base_url=server.endpoint_url, timeout=30)
    token = server.issue_token("dashboard", server.account.account_id)
    assert dashboard.post("/signin", data={"token": token}).status_code == 303
    figures = dashboard.get("/dashboard/data").json()
    workers = {worker["worker"]: worker for worker in figures["workers"]}
    # Only the workers who answered this account's tasks (issue 24): mallory and carol answered gold alone.
    assert list(workers) == ["alice"]
    assert workers["alice"]["blocked"] is None and workers["alice"]["gold_right"] == 4
    assert (workers["alice"]["answers"], workers["alice"]["gold_answers"]) == (1, 4)
    gold_answers = 4 + 1 + mallory_gold  # alice, carol, mallory
    assert figures["gold"] == {
        "answers": gold_answers,
        "cost": pytest.approx(gold_answers * server.config.reward_per_answer),
    }
    assert {task["task_name"] for task in figures["tasks"]} == set(inputs)
    assert figures["spend"] == pytest.approx(1 * server.config.reward_per_answer)  # alice's one task answer


def test_gold_from_local_files_looks_and_loads_exactly_like_a_task(crowd_server, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("gold-a.png", "gold-b.png", "task-0.png"):
        (images / name).write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode())
    server = crowd_server(
        workforce="human", images_dir=str(images), probation_questions=2, probation_gold_share=1.0, gold_share=0.0
    )
    # Gold added the documented way: file names under --images-dir, labels spelled as the requester's tasks spell them.
    main(
        [
            "gold",
            "add",
            answer_key(tmp_path / "key.json", {"gold-a.png": ["Person"], "gold-b.png": ["Car"]}),
            "--db",
            server.db_path,
        ]
    )
    ImageContainsHook().put_tasks(
        "image-contains",
        {"t0": {"image": {"url": f"{server.endpoint_url}/images/task-0.png"}, "target": {"label": "Person"}}},
    )
    worker, shown = Worker(server, "ada"), []
    for _ in range(3):  # two gold questions (probation), then the task
        page = worker.page()
        image, label = question_on(page)
        loaded = worker.client.get(image)
        assert image.startswith(f"{server.endpoint_url}/images/"), image  # the same absolute form as a task's
        shown.append((image.rsplit("/", 1)[-1], label, loaded.status_code, loaded.content[8:]))
        worker.answer(page, True)
    assert {name for name, *_ in shown[:2]} <= {"gold-a.png", "gold-b.png"} and shown[2][0] == "task-0.png"
    assert all(label in ("Person", "Car") for _, label, *_ in shown), shown  # never lower-cased
    assert [(status, content) for _, _, status, content in shown] == [(200, name.encode()) for name, *_ in shown]


def test_a_broken_image_is_confirmed_by_trusted_workers_and_gold_reported_broken_discredits(
    crowd_server, tmp_path, gold_key
):
    server = crowd_server(workforce="human", probation_questions=3, probation_gold_share=1.0, gold_share=0.0)
    main(["gold", "add", gold_key, "--db", server.db_path])
    gold = json.loads(open(gold_key).read())["images"]
    ImageContainsHook().put_tasks(
        "image-contains",
        {
            name: {"image": {"url": f"https://tasks.example/{name}.jpg"}, "target": {"label": "person"}}
            for name in ("gone", "fine")
        },
    )

    def through_probation(name, wrong=0, broken=0):
        """A worker answering its three gold questions: ``broken`` reported broken, ``wrong`` wrong, the rest right."""
        worker = Worker(server, name)
        for n in range(3):
            page = worker.page()
            image, label = question_on(page)
            assert image.startswith("https://gold.example/")
            if n < broken:
                worker.post(page, "answer-form", "/work/answer", answer="broken-image")
            else:
                worker.answer(page, (label in gold[image]) != (n < broken + wrong))
        return worker

    def report(worker):
        page = worker.page()
        assert question_on(page)[0] == "https://tasks.example/gone.jpg"
        worker.post(page, "answer-form", "/work/answer", answer="broken-image")

    def gone():
        return next(task for task in server.tasks() if task["task_name"] == "gone")

    mallory = through_probation("mallory", broken=1)  # a gold image is known to load: her reports are not believed
    tess, tina, tom = (through_probation(name) for name in ("tess", "tina", "tom"))  # trusted: 3 gold right
    carl = through_probation("carl", wrong=1)  # not trusted
    report(mallory)
    report(tess)
    assert gone()["state"] == "processing"  # one trusted report (mallory's is "can't tell")
    report(tina)
    assert gone()["state"] == "processing", "two reports send the image to review, not to failure"
    assert question_on(carl.page())[0] == "https://tasks.example/fine.jpg", "under review: trusted workers only"
    report(tom)
    assert gone()["state"] == "failed" and gone()["problem"]["code"] == "ImageUnavailable"
    with sqlite3.connect(server.db_path) as db:
        answers = db.execute(
            "SELECT a.worker, a.answer FROM answers a JOIN tasks t ON t.id = a.task_id WHERE t.name = 'gone' ORDER BY a.id"
        ).fetchall()
    assert answers == [("human:mallory", -1), ("human:tess", -2), ("human:tina", -2), ("human:tom", -2)]


def test_a_local_image_reported_broken_is_checked_on_disk(crowd_server, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("there.png", "deleted.png"):
        (images / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    server = crowd_server(workforce="human", images_dir=str(images), broken_image_reports=1)
    ImageContainsHook().put_tasks(
        "image-contains",
        {
            name: {"image": {"url": f"{server.endpoint_url}/images/{name}.png"}, "target": {"label": "person"}}
            for name in ("there", "deleted")
        },
    )
    (images / "deleted.png").unlink()  # after the PUT: the frame was cleaned up meanwhile
    workers = [Worker(server, name) for name in ("ann", "bob", "cid", "dan")]
    for worker in workers:
        while (page := worker.page()) and question_on(page):
            worker.post(page, "answer-form", "/work/answer", answer="broken-image")
    states = {task["task_name"]: (task["state"], (task["problem"] or {}).get("code")) for task in server.tasks()}
    # Two new workers weigh one whole report: the image is checked; the one still on disk loads, and keeps going.
    assert states == {"there": ("processing", None), "deleted": ("failed", "ImageUnavailable")}


def balance(server):
    with sqlite3.connect(server.db_path) as db:
        return db.execute("SELECT microdollars FROM balances").fetchone()[0] / 1e6


def dashboard(server):
    """A client signed in to the account's dashboard."""
    client = httpx.Client(base_url=server.endpoint_url, timeout=30)
    assert (
        client.post("/signin", data={"token": server.issue_token("dashboard", server.account.account_id)}).status_code
        == 303
    )
    return client


@pytest.mark.parametrize(("accuracy", "below"), [(0.62, True), (0.97, False)])
def test_gold_tasks_check_the_confidence_and_warn_when_results_are_right_less_often(
    crowd_server, tmp_path, caplog, accuracy, below
):
    """Workers right 62 % of the time, taken for 95 % (a prior set by hand): two agreeing answers report about 0.99
    and are right far less often. Gold tasks (gold questions adjudicated like tasks) show it, and the server warns;
    workers right 97 % of the time give no warning."""
    gold = {f"https://gold.example/{n}.jpg": (["person"] if n % 2 else ["car"]) for n in range(40)}
    truth = {f"https://tasks.example/{n}.jpg": n % 2 == 0 for n in range(200)}
    key = answer_key(tmp_path / "key.json", {url: ["person"] if yes else [] for url, yes in truth.items()})
    server = crowd_server(
        workforce="mixed",
        crowd=f"worker:12:{accuracy}",
        answer_key_path=key,
        seed=3,
        probation_questions=0,
        gold_share=0.5,
        gold_task_share=1.0,
        block_below_accuracy=0.0,
        prior_worker_accuracy=0.95,
    )
    main(["gold", "add", answer_key(tmp_path / "gold.json", gold), "--db", server.db_path])
    caplog.set_level("WARNING", logger="imagecontains_gateway.service")
    ImageContainsHook().put_tasks(
        "image-contains",
        {f"t{n}": {"image": {"url": url}, "target": {"label": "person"}} for n, url in enumerate(truth)},
    )
    owner, started = dashboard(server), time.monotonic()
    while (calibration := owner.get("/dashboard/data").json()["calibration"])["completed"] < 20:
        assert time.monotonic() < started + 60, calibration
        time.sleep(0.5)
    print(f"{time.monotonic() - started:.1f} s")

    assert calibration["predicted"] >= server.config.confidence, calibration
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Calibration:")]
    if below:
        assert calibration["observed"] < calibration["predicted"] - 0.05, calibration
        assert warnings and all("below the confidence target 0.95 beyond chance" in text for text in warnings)
    else:
        assert calibration["observed"] >= 0.9 and not calibration["below_target"] and not warnings, calibration
    # Gold tasks are gold: never billed (a worker may hold one charged question unanswered), never listed.
    server.stop()
    with sqlite3.connect(server.db_path) as db:
        task_answers = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        gold_answers = db.execute("SELECT COUNT(*) FROM gold_answers").fetchone()[0]
    spend = server.config.starting_balance - balance(server)
    assert gold_answers > 100 and spend < (task_answers + 12 + 0.5) * server.config.reward_per_answer
    assert not any("gold.example" in task["input"]["image"]["url"] for task in server.tasks())


def replay_crowd(service, crowd, tasks, seed):
    """Answer ``tasks`` tasks (random truths) and the gold questions mixed in with simulated workers asking in a
    random order, as the worker page does; return each worker's answers given before it was blocked."""
    rng = random.Random(seed)
    account = service.config.accounts[0].account_id
    truths = {}
    for n in range(tasks):
        url = f"https://tasks.example/{n}.jpg"
        truths[url] = rng.random() < 0.5
        body = json.dumps({"input": {"image": {"url": url}, "target": {"label": "person"}}}).encode()
        service.put_task(account, "image-contains", f"t{n}", body)
    answered = dict.fromkeys(crowd, 0)
    active = list(crowd)
    while active:
        worker = rng.choice(active)
        assignment = service.next_assignment(worker)
        if assignment is None:
            active.remove(worker)
            continue
        if assignment.gold:
            truth = service.store.gold_truth(assignment.image_url, assignment.label)
        else:
            truth = truths[assignment.image_url]
        service.submit_answer(assignment, worker, crowd[worker].says_yes(truth, rng.random()))
        answered[worker] += 1
    return answered


@pytest.mark.parametrize(("seed", "gold"), [(1, True), (2, True), (1, False), (2, False)])
def test_a_bad_worker_is_blocked_before_24_answers_and_good_ones_never(tmp_path, seed, gold):
    """Workers right 70 to 95 % of the time, and one right 20 % of the time, as people on the worker page.

    With gold (probation: 8 of the first 10 questions), the bad worker is blocked before its 8th gold answer and
    its 12th answer (the old rule waited for 8 gold answers, or 24 answers to finished tasks). Without gold, workers are judged only by the
    answers before theirs to the tasks they answered, never by verdicts their own answers helped reach: the bad
    one is still blocked, and no good worker ever is."""
    from imagecontains_gateway.service import CrowdService
    from imagecontains_gateway.store import TaskStore

    crowd = {f"good-{n}": CrowdClass("good", 1, 0.7 + 0.05 * (n % 6)) for n in range(12)}
    crowd["contrarian"] = CrowdClass("contrarian", 1, 0.2)
    store = TaskStore(str(tmp_path / "crowd.db"))
    store.open_accounts(["123456789012"], 10**12)
    if gold:
        store.add_gold([(f"https://gold.example/{n}.jpg", "person", n % 2 == 0) for n in range(40)])
    service = CrowdService(store, ServerConfig(workforce="human", seed=seed))
    answered = replay_crowd(service, crowd, 300, seed)
    blocked = {worker for worker in crowd if store.is_blocked(worker)}
    gold_answers = store.connection.execute("SELECT COUNT(*) FROM gold_answers WHERE worker = 'contrarian'")
    gold_answers = gold_answers.fetchone()[0]
    store.close()
    assert blocked == {"contrarian"}, (blocked, answered)
    if gold:
        assert gold_answers < 8 and answered["contrarian"] < 12, (gold_answers, answered)


def test_a_small_team_is_told_it_cannot_finish_tasks_and_two_people_measured_on_gold_can(
    crowd_server, tmp_path, gold_key, caplog
):
    """One or two people not yet measured can never reach the 0.95 target (issue 25: 0 of 11 completed, silently):
    the server says so at start and the dashboard says so with the remedy. Two people whose gold answers measured
    them complete tasks; their results' confidence is what those measured accuracies support."""
    caplog.set_level("WARNING", logger="imagecontains_gateway.human")
    server = crowd_server(workforce="human", seed=1)
    assert any("This workforce cannot complete tasks: 0 workers" in r.getMessage() for r in caplog.records)
    owner = dashboard(server)
    teams = []
    for name in ("alice", "bob", "carol"):
        server.issue_token("worker", name)
        teams.append(owner.get("/dashboard/data").json()["team"])
    assert [(team["workers"], team["completes"]) for team in teams] == [(1, False), (2, False), (3, True)]
    assert "Load gold questions" in teams[1]["message"] and teams[2]["message"] is None

    # A new server, two people, gold: after their probation they complete every task by agreeing.
    server = crowd_server(workforce="human", seed=1)
    main(["gold", "add", gold_key, "--db", server.db_path])
    gold = json.loads(open(gold_key).read())["images"]
    truth = {f"https://tasks.example/{n}.jpg": n % 3 == 0 for n in range(11)}
    ImageContainsHook().put_tasks(
        "image-contains",
        {f"t{n}": {"image": {"url": url}, "target": {"label": "person"}} for n, url in enumerate(truth)},
    )
    for name in ("alice", "bob"):
        person = Worker(server, name)
        while (question := question_on(page := person.page())) is not None:
            image, label = question
            person.answer(page, label in gold[image] if image in gold else truth[image])
    documents = ImageContainsHook().get_tasks("image-contains", [f"t{n}" for n in range(11)])
    completed = [d for d in documents.values() if d["state"] == "completed"]
    assert len(completed) == 11, documents
    assert all(d["result"]["answers"] == 2 and d["result"]["confidence"] >= 0.95 for d in completed)
    assert dashboard(server).get("/dashboard/data").json()["team"]["completes"]
