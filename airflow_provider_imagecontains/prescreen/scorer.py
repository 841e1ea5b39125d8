"""The scorer interface: any model that says how likely an image contains a label."""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable


@runtime_checkable
class Scorer(Protocol):
    """A model that judges whether an image contains a label.

    ``score`` returns a probability-like belief in [0, 1] that ``image`` (the bytes fetched from
    ``url``) contains ``label``, or ``None`` when the model cannot judge this label. It is called
    from several threads at once, so it must be thread-safe (or serialise itself).
    """

    def score(self, url: str, image: bytes, label: str) -> float | None: ...


def load_scorer(scorer: Scorer | str) -> Scorer:
    """Return ``scorer`` itself, or build the class at import path ``"package.module.ClassName"`` with no arguments.

    :raises ValueError: the path is not a dotted path to a class.
    :raises ImportError: the module cannot be imported.
    :raises TypeError: the object built has no ``score`` method.
    """
    if isinstance(scorer, str):
        module_name, _, class_name = scorer.rpartition(".")
        if not module_name or not class_name:
            raise ValueError(f"Invalid scorer import path {scorer!r}: expected 'package.module.ClassName'.")
        module = importlib.import_module(module_name)
        try:
            factory = getattr(module, class_name)
        except AttributeError:
            raise ImportError(f"Invalid scorer import path {scorer!r}: {module_name} has no {class_name}.") from None
        scorer = factory()
    if not isinstance(scorer, Scorer):
        raise TypeError(
            f"Invalid scorer {type(scorer).__name__}: it needs a score(url, image, label) -> float | None method."
        )
    return scorer
