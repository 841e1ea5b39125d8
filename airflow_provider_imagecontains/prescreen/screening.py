"""Score images off the main thread, decide which ones the model settles, and summarise the outcome."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from airflow_provider_imagecontains.prescreen.scorer import Scorer


@dataclass(frozen=True)
class ScoreResult:
    """The model's score of one (image, label), or why there is none.

    :param score: the belief in [0, 1] that the image contains the label; ``None`` without one.
    :param reason: why there is no score (fetch or scorer failure, a refusal to judge), else ``None``.
    """

    score: float | None
    reason: str | None = None


@dataclass(frozen=True)
class Screened:
    """What the pre-screen decided for one (image, label).

    :param score: the model's score (``None`` when it could not score).
    :param verdict: the model's answer when the score passed a threshold, else ``None``.
    :param audited: the model's answer is checked by the crowd as well.
    """

    score: float | None
    verdict: bool | None
    audited: bool

    @property
    def to_crowd(self) -> bool:
        return self.verdict is None or self.audited


def score_images(
    items: Sequence[tuple[str, str]],
    scorer: Scorer,
    fetch: Callable[[str], bytes],
    *,
    max_workers: int,
) -> list[ScoreResult]:
    """Fetch each image once and score it for each of its labels, ``max_workers`` images at a time.

    Never raises for one image: a fetch or scorer failure, a refusal (``None``) or a score outside
    [0, 1] becomes a :class:`ScoreResult` without a score and with the reason.

    :param items: (url, label) pairs, one per crowd question.
    :returns: one result per item, in the order of ``items``.
    """
    labels_by_url: dict[str, list[str]] = {}
    for url, label in items:
        labels_by_url.setdefault(url, []).append(label)

    def score_url(url: str) -> dict[str, ScoreResult]:
        try:
            image = fetch(url)
        except Exception as err:
            failure = ScoreResult(None, f"fetch failed: {type(err).__name__}: {_first_line(err)}")
            return dict.fromkeys(labels_by_url[url], failure)
        return {label: _score_one(scorer, url, image, label) for label in labels_by_url[url]}

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="prescreen") as pool:
        by_url = dict(zip(labels_by_url, pool.map(score_url, labels_by_url), strict=True))
    return [by_url[url][label] for url, label in items]


def _score_one(scorer: Scorer, url: str, image: bytes, label: str) -> ScoreResult:
    try:
        score = scorer.score(url, image, label)
    except Exception as err:
        return ScoreResult(None, f"scorer failed: {type(err).__name__}: {_first_line(err)}")
    if score is None:
        return ScoreResult(None, "the scorer cannot judge this label")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0 or math.isnan(score):
        return ScoreResult(None, f"scorer returned {score!r}, not a number in [0, 1]")
    return ScoreResult(float(score))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def is_audited(url: str, label: str, audit_rate: float) -> bool:
    """Whether the model's answer for (url, label) is audited: a stable pseudo-random draw at ``audit_rate``,
    so a re-run audits the same images (and reuses their crowd tasks)."""
    digest = hashlib.sha256(json.dumps(["audit", url, label]).encode()).digest()
    return int.from_bytes(digest[:8], "big") < audit_rate * 2**64


def model_verdict(
    score: float | None,
    accept_above: float | None,
    reject_below: float | None,
    nothing_detected_score: float | None = None,
) -> bool | None:
    """The model's answer when ``score`` is at or above ``accept_above`` or at or below ``reject_below``, never
    "does not contain" at or below ``nothing_detected_score`` (a detector that saw nothing has no evidence)."""
    if score is None:
        return None
    if accept_above is not None and score >= accept_above:
        return True
    if reject_below is not None and score <= reject_below:
        return False if nothing_detected_score is None or score > nothing_detected_score else None
    return None


def screen(
    items: Sequence[tuple[str, str]],
    scores: Sequence[float | None],
    *,
    accept_above: float | None,
    reject_below: float | None,
    audit_rate: float,
    nothing_detected_score: float | None = None,
) -> list[Screened]:
    """Decide each (url, label): settled by the model, audited, or sent to the crowd.

    :param items: (url, label) pairs.
    :param scores: the model's score of each, ``None`` where it has none.
    :param accept_above: scores at or above it are answered "contains" (``None``: never).
    :param reject_below: scores at or below it are answered "does not contain" (``None``: never).
    :param audit_rate: the fraction of model answers that the crowd checks as well.
    :param nothing_detected_score: the highest score the scorer gives when it detects nothing; no image at or
        below it is answered "does not contain" (``None``: the scorer does not say).
    """
    screened = []
    for (url, label), score in zip(items, scores, strict=True):
        verdict = model_verdict(score, accept_above, reject_below, nothing_detected_score)
        screened.append(Screened(score, verdict, verdict is not None and is_audited(url, label, audit_rate)))
    return screened


def validate_thresholds(accept_above: Any, reject_below: Any, audit_rate: Any) -> None:
    """Raise ``ValueError`` for thresholds that are not numbers in [0, 1], that overlap, or a bad ``audit_rate``."""
    for name, value in (("accept_above", accept_above), ("reject_below", reject_below)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1
        ):
            raise ValueError(f"Invalid {name} {value!r}: expected a number in [0, 1] or None.")
    if accept_above is not None and reject_below is not None and reject_below >= accept_above:
        raise ValueError(f"Invalid thresholds: reject_below={reject_below} must be below accept_above={accept_above}.")
    if isinstance(audit_rate, bool) or not isinstance(audit_rate, (int, float)) or not 0 <= audit_rate <= 1:
        raise ValueError(f"Invalid audit_rate {audit_rate!r}: expected a fraction in [0, 1].")


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of a run's result records: who settled the images, and how the audits went.

    ``audit_agreement`` is the share of answered audits on which the crowd agreed with the model
    (``None`` before any audit was answered).
    """
    images = settled = audited = answered = agreed = 0
    for record in records:
        images += 1
        if record.get("source") == "model":
            settled += 1
        elif record.get("model_contains_target") is not None:
            audited += 1
            if record["state"] == "completed":
                answered += 1
                agreed += record["contains_target"] == record["model_contains_target"]
    return {
        "images": images,
        "settled_by_model": settled,
        "sent_to_crowd": images - settled,
        "audited": audited,
        "audits_answered": answered,
        "audits_agreed": agreed,
        "audit_agreement": agreed / answered if answered else None,
    }


def prescreened(records: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a pre-screen model took part in the run of these result records (one has a model score)."""
    return any(record.get("model_score") is not None or record.get("source") == "model" for record in records)


def summary_message(records: Sequence[Mapping[str, Any]]) -> str | None:
    """The log line of a pre-screened run's results (``None`` when no record has a model score)."""
    if not prescreened(records):
        return None
    counts = summarize(records)
    agreement = counts["audit_agreement"]
    return (
        f"Pre-screen: the model settled {counts['settled_by_model']} of {counts['images']} images, "
        f"{counts['sent_to_crowd']} went to the crowd ({counts['audited']} of them audits of model answers); "
        f"the crowd agreed with the model on {counts['audits_agreed']} of {counts['audits_answered']} answered audits"
        + (f" ({agreement:.1%})." if agreement is not None else ".")
    )
