"""A built-in scorer for people in frames: OpenCV's pretrained HOG people detector and frontal-face Haar cascade.

Needs the ``[vision]`` extra (``opencv-python-headless`` 4.x: the HOG people detector and the cascades
were removed in 5.0). A classical detector, fast on a CPU and modest in accuracy (see the
``people-scorer`` section of docs/benchmarks.md): calibrate its thresholds before trusting it, or wrap a
stronger model (docs/prescreen.md).
"""

from __future__ import annotations

import math
import threading
from typing import Any

try:
    import cv2
    import numpy as np
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "The built-in people scorer needs OpenCV: pip install 'airflow-provider-imagecontains[vision]'."
    ) from err

PEOPLE_LABELS = frozenset({"person", "people", "persons", "human", "humans", "pedestrian", "pedestrians", "face"})
# Larger images are scaled down first: detection time grows with the pixel count, people stay findable.
MAX_SIDE = 480
# Smaller images are scaled up: the HOG window is 64x128 and the smallest cascade window about 24x24.
MIN_SIDE = 160
# Detector outputs at which a detector alone makes a person about even odds, and their spreads: the HOG
# SVM margin of the best window, the number of overlapping face detections (textures give a few, faces
# dozens). Set from the detectors' usual ranges, not fitted to the benchmark photographs.
_HOG_MIDPOINT, _HOG_SPREAD = 1.0, 0.3
_FACE_MIDPOINT, _FACE_SPREAD = 10.0, 3.0
# "Nothing detected": no HOG window past the SVM's own decision boundary (margin 0, OpenCV's default
# hitThreshold) and no face with more than 3 overlapping windows (the cascade's default minNeighbors).
_HOG_NOTHING, _FACE_NOTHING = 0.0, 3.0


class PeopleScorer:
    """Scores how likely an image shows a person from OpenCV's HOG people detector (whole upright bodies)
    and its frontal-face Haar cascade: a probability-like value, monotone in each detector's confidence
    but not a calibrated probability (calibrate thresholds from audited pairs before trusting it).

    Labels other than a person (``person``, ``people``, ``pedestrian``, ``face``, ...) get ``None``: the
    crowd answers those. Built with no arguments, so a DAG can name it by import path:
    ``PreScreen(scorer="airflow_provider_imagecontains.prescreen.people.PeopleScorer", ...)``. Thread-safe: each
    thread uses its own detectors.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def score(self, url: str, image: bytes, label: str) -> float | None:
        if label.strip().lower() not in PEOPLE_LABELS:
            return None
        gray = _decode_gray(image)
        hog, face = self._detectors()
        return _combined(_hog_margin(hog, gray), _face_detections(face, gray))

    @property
    def nothing_detected_score(self) -> float:
        """The highest score given to an image in which neither detector found anything (a side-on or small
        person, a cat and a cup of coffee alike): the operator never answers "no person" at or below it."""
        return _combined(_HOG_NOTHING, _FACE_NOTHING)

    def _detectors(self) -> tuple[Any, Any]:
        detectors = getattr(self._local, "detectors", None)
        if detectors is None:
            hog = cv2.HOGDescriptor()
            hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), dtype=np.float32))
            # cv2.data (where the cascades ship) is missing from OpenCV's type stubs.
            face = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
            detectors = self._local.detectors = (hog, face)
        return detectors


def _decode_gray(image: bytes) -> Any:
    gray = cv2.imdecode(np.frombuffer(image, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError("not an image OpenCV can decode")
    height, width = gray.shape
    factor = min(1.0, MAX_SIDE / max(height, width))
    factor = max(factor, MIN_SIDE / min(height, width))
    if factor != 1.0:
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (round(width * factor), round(height * factor)), interpolation=interpolation)
    return cv2.equalizeHist(gray)


def _hog_margin(hog: Any, gray: Any) -> float:
    """The SVM margin of the HOG detector's best window (below 0: nothing found)."""
    _, weights = hog.detectMultiScale(gray, hitThreshold=-0.5, winStride=(8, 8), padding=(8, 8), scale=1.05)
    return float(np.max(weights)) if len(weights) else -1.0


def _face_detections(cascade: Any, gray: Any) -> float:
    """How many overlapping windows the face cascade found at its best face (0: none)."""
    _, counts = cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=1, minSize=(24, 24))
    return float(np.max(counts)) if len(counts) else 0.0


def _combined(hog_margin: float, face_detections: float) -> float:
    """Either detector seeing a person is enough: 1 - P(neither is right to fire)."""
    beliefs = (
        _squash(hog_margin, _HOG_MIDPOINT, _HOG_SPREAD),
        _squash(face_detections, _FACE_MIDPOINT, _FACE_SPREAD),
    )
    return 1.0 - math.prod(1.0 - belief for belief in beliefs)


def _squash(margin: float, midpoint: float, spread: float) -> float:
    return 1.0 / (1.0 + math.exp(-(margin - midpoint) / spread))
