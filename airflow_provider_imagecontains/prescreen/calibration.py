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
    crowd_accuracy_on_yes: float = 0.95,
    crowd_accuracy_on_no: float = 0.95,
    min_pairs: int = 200,
) -> Thresholds:
    """The widest thresholds whose model answers reach the target precisions, judged against the crowd.

    The crowd is itself wrong at times, so agreement with it misstates the model's precision. With the
    crowd's accuracy ``y`` on images that contain the label and ``n`` on those that do not, a set the model
    calls "contains" in which the crowd says "yes" at rate ``q`` has precision ``(q - (1 - n)) / (y + n - 1)``
    (and symmetrically for "does not contain"). Overstating the crowd's errors makes the model look better
    than it is: measure the crowd's accuracies with gold questions where you can.
    A side is trusted only when the one-sided 95% lower bound (Wilson, on the pairs' effective count)
    of that corrected precision reaches the target; with fewer than ``min_pairs`` pairs nothing is trusted.

    :param pairs: ``{"score", "crowd", "weight"}`` dicts (see :func:`calibration_pairs`; ``weight`` defaults to 1).
    :param contains_precision: the share of "contains" answers of the model that must be right.
    :param not_contains_precision: the same for "does not contain".
    :param crowd_accuracy_on_yes: how often the crowd's adjudicated answer is "yes" for an image with the label.
    :param crowd_accuracy_on_no: how often it is "no" for an image without it (the two must sum to more than 1).
    :param min_pairs: below this many pairs the model answers nothing.
    """
    for name, value in (
        ("crowd_accuracy_on_yes", crowd_accuracy_on_yes),
        ("crowd_accuracy_on_no", crowd_accuracy_on_no),
    ):
        if not 0 < value <= 1:
            raise ValueError(f"Invalid {name} {value!r}: expected a number in (0, 1].")
    if crowd_accuracy_on_yes + crowd_accuracy_on_no <= 1:
        raise ValueError("Invalid crowd accuracies: a crowd no better than chance cannot vouch for a model.")
    for name, value in (("contains_precision", contains_precision), ("not_contains_precision", not_contains_precision)):
        if not 0 < value < 1:
            raise ValueError(f"Invalid {name} {value!r}: expected a number in (0, 1).")
    if len(pairs) < min_pairs:
        return Thresholds(None, None, len(pairs), f"{len(pairs)} audited pairs, fewer than min_pairs={min_pairs}")
    scored = [(float(p["score"]), bool(p["crowd"]), float(p.get("weight", 1.0))) for p in pairs]
    accept = _widest_cut(
        sorted(scored, key=lambda p: -p[0]), True, contains_precision, crowd_accuracy_on_yes, crowd_accuracy_on_no
    )
    reject = _widest_cut(
        sorted(scored, key=lambda p: p[0]), False, not_contains_precision, crowd_accuracy_on_no, crowd_accuracy_on_yes
    )
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
    ordered: list[tuple[float, bool, float]], side: bool, target: float, accuracy_same: float, accuracy_other: float
) -> float | None:
    """The score of the widest prefix of ``ordered`` (most confident first) whose corrected precision
    for answer ``side`` has a lower bound at or above ``target``; ``None`` when no prefix does.

    ``accuracy_same`` is the crowd's accuracy on images whose truth is ``side``, ``accuracy_other`` on the rest.
    """
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
        precision = (lower - (1.0 - accuracy_other)) / (accuracy_same + accuracy_other - 1.0)
        if precision >= target:
            best = score
    return best


def _wilson_lower(share: float, count: float) -> float:
    z2 = Z_95 * Z_95
    centre = share + z2 / (2 * count)
    spread = Z_95 * math.sqrt(share * (1 - share) / count + z2 / (4 * count * count))
    return (centre - spread) / (1 + z2 / count)
