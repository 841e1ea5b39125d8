"""Turn audited (score, crowd answer) pairs into the thresholds at which the model may answer alone."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# One-sided 95% normal quantile: a threshold is trusted only when the precision it reaches is
# unlikely to be a lucky draw of few pairs.
Z_95 = 1.6449


@dataclass(frozen=True)
class Thresholds:
    """Where the model may answer without the crowd; ``None`` on a side means "never on this side".

    :param accept_above: scores at or above it are answered "contains".
    :param reject_below: scores at or below it are answered "does not contain".
    :param pairs: how many pairs the thresholds were computed from.
    :param reason: why a side is ``None`` (too few pairs, or the target precision is not reached).
    """

    accept_above: float | None
    reject_below: float | None
    pairs: int
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_pairs(records: Iterable[Mapping[str, Any]], audit_rate: float) -> list[dict[str, Any]]:
    """The (score, crowd answer) pairs in a run's result records, weighted for how they were sampled.

    Every image the crowd answered and the model scored is a pair. Images the model was unsure of all
    go to the crowd; those it settled reach the crowd only at ``audit_rate``, so each audited pair
    stands for ``1 / audit_rate`` settled images (an unbiased estimate of the model's precision).
    """
    pairs = []
    for record in records:
        if record.get("source") != "crowd" or record["state"] != "completed" or record.get("model_score") is None:
            continue
        audited = record.get("model_contains_target") is not None
        if audited and audit_rate <= 0:
            continue
        pairs.append(
            {
                "score": record["model_score"],
                "crowd": bool(record["contains_target"]),
                "weight": 1.0 / audit_rate if audited else 1.0,
            }
        )
    return pairs


def calibrate_thresholds(
    pairs: Sequence[Mapping[str, Any]],
    *,
    contains_precision: float = 0.99,
    not_contains_precision: float = 0.99,
    crowd_accuracy: float = 0.95,
    min_pairs: int = 200,
) -> Thresholds:
    """The widest thresholds whose model answers reach the target precisions, judged against the crowd.

    The crowd is itself wrong at times (``crowd_accuracy``), so agreement with it understates the
    model's precision: the observed agreement ``q`` of a set is corrected to ``(q - (1 - a)) / (2a - 1)``.
    A side is trusted only when the one-sided 95% lower bound (Wilson, on the pairs' effective count)
    of that corrected precision reaches the target; with fewer than ``min_pairs`` pairs nothing is trusted.

    :param pairs: ``{"score", "crowd", "weight"}`` dicts (see :func:`calibration_pairs`; ``weight`` defaults to 1).
    :param contains_precision: the share of "contains" answers of the model that must be right.
    :param not_contains_precision: the same for "does not contain".
    :param crowd_accuracy: how often the crowd's adjudicated answer is right (above 0.5).
    :param min_pairs: below this many pairs the model answers nothing.
    """
    if not 0.5 < crowd_accuracy <= 1:
        raise ValueError(f"Invalid crowd_accuracy {crowd_accuracy!r}: expected a number in (0.5, 1].")
    for name, value in (("contains_precision", contains_precision), ("not_contains_precision", not_contains_precision)):
        if not 0 < value < 1:
            raise ValueError(f"Invalid {name} {value!r}: expected a number in (0, 1).")
    if len(pairs) < min_pairs:
        return Thresholds(None, None, len(pairs), f"{len(pairs)} audited pairs, fewer than min_pairs={min_pairs}")
    scored = [(float(p["score"]), bool(p["crowd"]), float(p.get("weight", 1.0))) for p in pairs]
    accept = _widest_cut(sorted(scored, key=lambda p: -p[0]), True, contains_precision, crowd_accuracy)
    reject = _widest_cut(sorted(scored, key=lambda p: p[0]), False, not_contains_precision, crowd_accuracy)
    if accept is not None and reject is not None and reject >= accept:
        # The two sets overlap only when the model barely separates the classes: trust neither.
        accept = reject = None
    missing = [
        f"{side} precision {target} not reached"
        for side, target, found in (
            ("contains", contains_precision, accept),
            ("does-not-contain", not_contains_precision, reject),
        )
        if found is None
    ]
    return Thresholds(accept, reject, len(pairs), "; ".join(missing) or None)


def _widest_cut(
    ordered: list[tuple[float, bool, float]], side: bool, target: float, crowd_accuracy: float
) -> float | None:
    """The score of the widest prefix of ``ordered`` (most confident first) whose corrected precision
    for answer ``side`` has a lower bound at or above ``target``; ``None`` when no prefix does."""
    agreeing = total = squares = 0.0
    best: float | None = None
    for position, (score, crowd, weight) in enumerate(ordered):
        total += weight
        squares += weight * weight
        agreeing += weight if crowd == side else 0.0
        if position + 1 < len(ordered) and ordered[position + 1][0] == score:
            continue  # a threshold cannot split equal scores
        effective = total * total / squares
        lower = _wilson_lower(agreeing / total, effective)
        precision = (lower - (1.0 - crowd_accuracy)) / (2.0 * crowd_accuracy - 1.0)
        if precision >= target:
            best = score
    return best


def _wilson_lower(share: float, count: float) -> float:
    z2 = Z_95 * Z_95
    centre = share + z2 / (2 * count)
    spread = Z_95 * math.sqrt(share * (1 - share) / count + z2 / (4 * count * count))
    return (centre - spread) / (1 + z2 / count)
