"""Pre-screen: a model answers the images it is sure about, the crowd the rest (docs/prescreen.md).

The operator takes a :class:`PreScreen` and uses :func:`load_scorer`, :class:`ImageFetcher`, :func:`score_images` and :func:`screen`;
DAGs use :func:`calibrate_thresholds`, :func:`prescreened` and :func:`summarize` on the result records. Nothing here
imports the server, and nothing heavier than ``requests`` is imported at module level.
"""

from __future__ import annotations

from airflow_provider_imagecontains.prescreen.calibration import Thresholds, calibrate_thresholds, calibration_pairs
from airflow_provider_imagecontains.prescreen.fetch import ImageFetcher
from airflow_provider_imagecontains.prescreen.scorer import Scorer, load_scorer
from airflow_provider_imagecontains.prescreen.screening import (
    ScoreResult,
    Screened,
    is_audited,
    prescreened,
    score_images,
    screen,
    summarize,
)
from airflow_provider_imagecontains.prescreen.settings import PreScreen

__all__ = [
    "ImageFetcher",
    "PreScreen",
    "ScoreResult",
    "Scorer",
    "Screened",
    "Thresholds",
    "calibrate_thresholds",
    "calibration_pairs",
    "is_audited",
    "load_scorer",
    "prescreened",
    "score_images",
    "screen",
    "summarize",
]
