"""The pre-screen's parts: scorer loading, image fetching, audit choice, calibration and summaries."""

from __future__ import annotations

import random
import threading
import time

import pytest
from loopback import LoopbackServer

from airflow_provider_imagecontains.prescreen import (
    ImageFetcher,
    calibrate_thresholds,
    calibration_pairs,
    is_audited,
    load_scorer,
    score_images,
    screen,
    summarize,
)


class ConstantScorer:
    def score(self, url: str, image: bytes, label: str) -> float | None:
        return 0.5


@pytest.fixture
def host():
    """A loopback host: ``/big`` is 2 kB, ``/slow`` answers after 2 s, anything else is 4 bytes."""

    def answer(method, path, headers, body):
        if path == "/slow":
            time.sleep(2)
            return 200, {}, b""  # the client has given up: nothing to write to
        if path == "/big":
            return 200, {}, b"x" * 2048
        return 200, {}, b"tiny"

    server = LoopbackServer(answer)
    yield server.endpoint_url
    server.close()


def test_load_scorer_takes_an_instance_or_an_import_path() -> None:
    instance = ConstantScorer()
    assert load_scorer(instance) is instance
    assert isinstance(load_scorer(f"{__name__}.ConstantScorer"), ConstantScorer)
    with pytest.raises(ImportError, match="has no Missing"):
        load_scorer(f"{__name__}.Missing")
    with pytest.raises(TypeError, match="score"):
        load_scorer("collections.OrderedDict")


def test_fetch_caps_size_and_time(host) -> None:
    fetcher = ImageFetcher(timeout=0.3, max_bytes=1024)
    assert fetcher.fetch(f"{host}/small") == b"tiny"
    with pytest.raises(ValueError, match="exceeds the 1024-byte cap"):
        fetcher.fetch(f"{host}/big")
    started = time.monotonic()
    with pytest.raises(Exception, match="timed out"):
        fetcher.fetch(f"{host}/slow")
    assert time.monotonic() - started < 1.5
    with pytest.raises(ValueError, match="only http"):
        fetcher.fetch("ftp://example.com/a.jpg")
    with pytest.raises(ValueError, match="no S3 client"):
        fetcher.fetch("s3://bucket/a.jpg")


def test_scoring_runs_off_the_main_thread_with_bounded_concurrency_and_keeps_order() -> None:
    running, peak, threads = [0], [0], set()
    lock = threading.Lock()

    class SlowScorer:
        def score(self, url, image, label):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                threads.add(threading.current_thread().name)
            time.sleep(0.02)
            with lock:
                running[0] -= 1
            return int(url) / 100 if label == "a" else None

    items = [(str(n), label) for n in range(40) for label in ("a", "b")]
    fetched: list[str] = []
    results = score_images(items, SlowScorer(), lambda url: fetched.append(url) or b"", max_workers=4)

    assert [r.score for r in results] == [
        n / 100 if label == "a" else None for n, label in [(int(u), la) for u, la in items]
    ]
    assert sorted(fetched) == sorted(str(n) for n in range(40))  # each image fetched once for its two labels
    assert peak[0] == 4 and threading.main_thread().name not in threads


def test_a_score_outside_zero_to_one_is_no_score() -> None:
    class Bad:
        def score(self, url, image, label):
            return {"nan": float("nan"), "big": 1.5, "bool": True}[url]

    results = score_images([("nan", "x"), ("big", "x"), ("bool", "x")], Bad(), lambda url: b"", max_workers=2)
    assert [r.score for r in results] == [None, None, None]
    assert all("not a number in [0, 1]" in r.reason for r in results)


def test_the_audit_choice_is_stable_and_near_its_rate() -> None:
    keys = [(f"https://cam/{n}.jpg", "person") for n in range(10000)]
    chosen = [is_audited(url, label, 0.1) for url, label in keys]
    assert chosen == [is_audited(url, label, 0.1) for url, label in keys]
    assert 900 <= sum(chosen) <= 1100
    assert not any(is_audited(url, label, 0.0) for url, label in keys[:100])
    assert all(is_audited(url, label, 1.0) for url, label in keys[:100])
    # A higher rate audits a superset: raising it never drops an audit already paid for.
    assert all(is_audited(u, la, 0.2) for (u, la), c in zip(keys, chosen, strict=True) if c)


def test_screen_decides_by_threshold_and_audits_only_model_answers() -> None:
    items = [("a", "x"), ("b", "x"), ("c", "x"), ("d", "x")]
    screened = screen(items, [0.95, 0.05, 0.5, None], accept_above=0.9, reject_below=0.1, audit_rate=1.0)
    assert [(s.verdict, s.audited, s.to_crowd) for s in screened] == [
        (True, True, True),
        (False, True, True),
        (None, False, True),
        (None, False, True),
    ]


def _pairs(rng: random.Random, count: int, on_yes: float = 1.0, on_no: float = 1.0) -> list[dict]:
    """Scores below 0.3 are all negatives, above 0.7 all positives, between a coin toss; the crowd is right
    at ``on_yes`` on positives and ``on_no`` on negatives."""
    pairs = []
    for _ in range(count):
        score = rng.random()
        truth = score > 0.7 if not 0.3 <= score <= 0.7 else rng.random() < 0.5
        crowd = truth if rng.random() < (on_yes if truth else on_no) else not truth
        pairs.append({"score": score, "crowd": crowd})
    return pairs


def test_calibration_refuses_to_trust_the_model_with_too_few_pairs() -> None:
    thresholds = calibrate_thresholds(_pairs(random.Random(1), 150), min_pairs=200)
    assert (thresholds.accept_above, thresholds.reject_below) == (None, None)
    assert "150 audited pairs, fewer than min_pairs=200" in thresholds.reason
    # Enough pairs, but too few beyond a boundary to vouch for 0.99: still nothing trusted on that side.
    few = [{"score": 0.99, "crowd": True}] * 20 + [{"score": 0.5, "crowd": n % 2 == 0} for n in range(300)]
    assert calibrate_thresholds(few).accept_above is None


def test_calibration_picks_the_thresholds_that_reach_the_target_precision() -> None:
    thresholds = calibrate_thresholds(_pairs(random.Random(2), 4000), crowd_accuracy_on_yes=1, crowd_accuracy_on_no=1)
    assert 0.69 <= thresholds.accept_above <= 0.75
    assert 0.25 <= thresholds.reject_below <= 0.31
    assert thresholds.reason is None and thresholds.pairs == 4000


def test_calibration_corrects_for_a_crowd_that_is_sometimes_wrong() -> None:
    noisy = _pairs(random.Random(3), 6000, on_yes=0.95, on_no=0.95)
    # Judged as if the crowd were always right, a perfect model seems 95% precise: never trusted.
    assert calibrate_thresholds(noisy, crowd_accuracy_on_yes=1, crowd_accuracy_on_no=1).accept_above is None
    corrected = calibrate_thresholds(noisy, crowd_accuracy_on_yes=0.95, crowd_accuracy_on_no=0.95)
    assert 0.69 <= corrected.accept_above <= 0.8 and 0.2 <= corrected.reject_below <= 0.31


def test_calibration_takes_a_crowd_that_errs_more_on_one_side_into_account() -> None:
    # The crowd wrongly says "yes" on 8% of empty frames and "no" on 2% of frames with a person.
    lopsided = _pairs(random.Random(5), 12000, on_yes=0.98, on_no=0.92)
    targets = {"contains_precision": 0.98, "not_contains_precision": 0.98}
    matched = calibrate_thresholds(lopsided, crowd_accuracy_on_yes=0.98, crowd_accuracy_on_no=0.92, **targets)
    assert 0.6 <= matched.accept_above <= 0.8 and 0.2 <= matched.reject_below <= 0.4
    # Read as a symmetric 95% crowd, the 8% false "yes" look like model errors on the "no" side.
    assert calibrate_thresholds(lopsided, **targets).reject_below is None


def test_calibration_stops_trusting_a_model_the_crowd_disagrees_with() -> None:
    rng = random.Random(4)
    drifted = [
        {**p, "crowd": not p["crowd"] if p["score"] > 0.7 and rng.random() < 0.1 else p["crowd"]}
        for p in _pairs(rng, 4000)
    ]
    thresholds = calibrate_thresholds(drifted, crowd_accuracy_on_yes=1, crowd_accuracy_on_no=1)
    assert thresholds.accept_above is None and "contains precision 0.99 not reached" in thresholds.reason
    assert thresholds.reject_below is not None


def test_pairs_and_summary_from_records() -> None:
    def record(source, score, model, crowd, state="completed"):
        return {
            "source": source,
            "model_score": score,
            "model_contains_target": model,
            "contains_target": crowd if source == "crowd" else model,
            "state": state,
        }

    records = [
        record("model", 0.99, True, None),
        record("crowd", 0.98, True, True),  # audit, agreed
        record("crowd", 0.02, False, True),  # audit, disagreed
        record("crowd", 0.5, None, False),  # unsure
        record("crowd", None, None, True),  # unscored: no pair
        record("crowd", 0.97, True, None, state="failed"),  # audit without an answer
    ]
    assert calibration_pairs(records, audit_rate=0.1) == [
        {"score": 0.98, "crowd": True, "weight": 10.0},
        {"score": 0.02, "crowd": True, "weight": 10.0},
        {"score": 0.5, "crowd": False, "weight": 1.0},
    ]
    assert summarize(records) == {
        "images": 6,
        "settled_by_model": 1,
        "sent_to_crowd": 5,
        "audited": 3,
        "audits_answered": 2,
        "audits_agreed": 1,
        "audit_agreement": 0.5,
    }
