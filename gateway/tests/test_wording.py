"""The article before a label in the worker page's question (browser check: test_ui_browser.py)."""

from __future__ import annotations

import pytest

from imagecontains_gateway.wording import article


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("person", "a"),
        ("apple", "an"),
        ("hour", "an"),
        ("honest man", "an"),
        ("unicorn", "a"),
        ("umbrella", "an"),
        ("European car", "a"),
        ("one-way sign", "a"),
        ("SUV", "an"),
        ("UFO", "a"),
        ("X-ray", "an"),
        ("U-turn sign", "a"),
        ("8-wheeler", "an"),
        ("18-wheeler", "an"),
        ("80 km/h sign", "an"),
        ("fire hydrant", "a"),
        ("bus", "a"),
        ("cactus", "a"),
        ("GPS antenna", "a"),
        ("LED lamp", "an"),
        ("person on a bike", "a"),
        ("bottle of water", "a"),
        ("traffic lights", ""),
        ("people", ""),
        ("children", ""),
        ("SUVs", ""),
        ("2 cars", ""),
        ("people on bikes", ""),
        ("scissors", ""),
        ("smoke", ""),
        ("water", ""),
        ("graffiti", ""),
        ("a dog", ""),
        ("the moon", ""),
        ("two cars", ""),
        ("some litter", ""),
        ("", ""),
        ("<script>", "a"),
    ],
)
def test_article(label, expected):
    assert article(label) == expected
