"""The built-in people scorer on real photographs shipped inside scikit-image (no download)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from airflow_provider_imagecontains.prescreen import load_scorer
from airflow_provider_imagecontains.prescreen.people import PeopleScorer


def png(pixels: np.ndarray) -> bytes:
    if pixels.dtype != np.uint8:
        pixels = (pixels * 255).round().astype(np.uint8)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", pixels)[1].tobytes()


@pytest.fixture(scope="module")
def scorer() -> PeopleScorer:
    return load_scorer("airflow_provider_imagecontains.prescreen.people.PeopleScorer")


def test_faces_from_labeled_faces_in_the_wild_score_above_non_faces(scorer) -> None:
    crops = skimage.data.lfw_subset()  # 100 faces, then 100 non-faces
    scores = [scorer.score("lfw", png(crop), "person") for crop in crops[::4]]
    faces, others = scores[:25], scores[25:]
    auc = sum((f > o) + 0.5 * (f == o) for f in faces for o in others) / (len(faces) * len(others))
    assert auc >= 0.9  # 0.96 on all 200 crops (docs/benchmarks.md)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_the_astronaut_scores_above_photographs_without_people(scorer) -> None:
    person = scorer.score("astronaut", png(skimage.data.astronaut()), "person")
    empty = [scorer.score(name, png(getattr(skimage.data, name)()), "people") for name in ("coffee", "chelsea", "page")]
    assert person > 0.9 and max(empty) < 0.2


def test_other_labels_are_left_to_the_crowd_and_bad_bytes_raise(scorer) -> None:
    assert scorer.score("a", png(skimage.data.astronaut()), "car") is None
    with pytest.raises(ValueError, match="not an image"):
        scorer.score("a", b"<html>not found</html>", "person")


def test_photographs_it_detects_nothing_in_are_never_rejected_as_no_person(scorer) -> None:
    # Issue 25: a cat and a cup of coffee scored like a side-on man; reject_below=0.1 settled people as "no person".
    from airflow_provider_imagecontains.prescreen.screening import model_verdict

    empty = [scorer.score(name, png(getattr(skimage.data, name)()), "person") for name in ("coffee", "chelsea")]
    assert max(empty) <= scorer.nothing_detected_score < 0.5
    for score in empty:
        assert model_verdict(score, 0.9, 0.1, scorer.nothing_detected_score) is None
    astronaut = scorer.score("astronaut", png(skimage.data.astronaut()), "person")
    assert model_verdict(astronaut, 0.9, 0.1, scorer.nothing_detected_score) is True
