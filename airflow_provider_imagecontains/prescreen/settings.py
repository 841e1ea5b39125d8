"""The operator's pre-screen settings, as one object (docs/prescreen.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from airflow_provider_imagecontains.prescreen.fetch import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT
from airflow_provider_imagecontains.prescreen.scorer import Scorer


@dataclass
class PreScreen:
    """A model that answers the images it is sure about, and how far it is trusted.

    Not frozen: Airflow renders the ``template_fields`` of an object given to an operator's template field by
    setting its attributes. The operator takes its own copy, so one ``PreScreen`` can serve several tasks.

    :param scorer: an object with ``score(url, image, label) -> float | None``, or the import path
        ``"package.module.ClassName"`` of a class built with no arguments (imported only when the task runs).
    :param accept_above: (templated) images scored at or above it are answered "contains" by the model;
        ``None``: never.
    :param reject_below: (templated) images scored at or below it are answered "does not contain" by the model;
        ``None``: never.
    :param calibration_pairs: (templated) how many audited (score, crowd answer) pairs the thresholds were
        calibrated from (``calibrate_thresholds(...).pairs``); thresholds without any are taken as set by hand
        and the task log warns that no audit backs them. Whatever the thresholds, the model never answers
        "does not contain" at a score its scorer gives when it detects nothing (a scorer's
        ``nothing_detected_score``, e.g. :class:`~airflow_provider_imagecontains.prescreen.people.PeopleScorer`'s).
    :param audit_rate: the fraction of model-answered images sent to the crowd as well, chosen by a hash of
        (image, label) so a re-run audits the same ones.
    :param concurrency: images fetched and scored at once (threads).
    :param timeout: seconds to connect to an image's host and between bytes received.
    :param max_bytes: larger images are not scored (they go to the crowd).
    :param crowd_task_cost: dollars a crowd task costs on average, to log the spend the model avoided.
    """

    template_fields: ClassVar[Sequence[str]] = ("accept_above", "reject_below", "calibration_pairs")

    scorer: Scorer | str
    accept_above: float | str | None = None
    reject_below: float | str | None = None
    calibration_pairs: int | str | None = None
    audit_rate: float = 0.05
    concurrency: int = 8
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES
    crowd_task_cost: float | None = None

    def __post_init__(self) -> None:
        # The templated thresholds are checked when the task runs, once rendered.
        if isinstance(self.scorer, str) and "." not in self.scorer.strip("."):
            raise ValueError(f"Invalid scorer {self.scorer!r}: expected an import path 'package.module.ClassName'.")
        if self.concurrency < 1:
            raise ValueError(f"Invalid concurrency {self.concurrency!r}: expected at least 1.")


# The operator's arguments before PreScreen, by the PreScreen field each became (deprecated).
LEGACY_ARGUMENTS = {
    "accept_above": "accept_above",
    "reject_below": "reject_below",
    "calibration_pairs": "calibration_pairs",
    "audit_rate": "audit_rate",
    "prescreen_concurrency": "concurrency",
    "prescreen_timeout": "timeout",
    "prescreen_max_bytes": "max_bytes",
    "crowd_task_cost": "crowd_task_cost",
}


def from_legacy_arguments(prescreen: Any, legacy: dict[str, Any]) -> PreScreen:
    """The :class:`PreScreen` of the operator's deprecated arguments: ``prescreen`` a scorer or import path,
    ``legacy`` the separate settings given (by their old names)."""
    if isinstance(prescreen, PreScreen):
        raise ValueError(
            f"Give the pre-screen settings inside prescreen=PreScreen(...) only, not also as {', '.join(legacy)}."
        )
    if prescreen is None:
        raise ValueError(f"{', '.join(legacy)} set without a prescreen: give prescreen=PreScreen(scorer=..., ...).")
    return PreScreen(scorer=prescreen, **{LEGACY_ARGUMENTS[name]: value for name, value in legacy.items()})
