"""The worker page's question in plain English: "Does this image contain an apple?", "... contain people?".

Labels are free text chosen by requesters, so the article is worked out from the label itself: none when the
label brings its own determiner ("the moon", "two cars"), names a plural ("traffic lights", "people") or a mass
noun ("smoke", "water"); otherwise "an" before a vowel sound ("an hour", "an SUV", "an 8-wheeler") and "a"
before anything else ("a unicorn", "a UFO"). English has exceptions no short rule knows; the label is always
shown exactly as given, so a wrong guess costs grammar, never meaning.
"""

from __future__ import annotations

import re

_DETERMINERS = frozenset(
    "a an the this that these those my your his her its our their some any no every each another either "
    "neither several many much more most few little all both one two three four five six seven eight nine ten".split()
)
# Uncountable things cameras see: "Does this image contain smoke?"
_MASS_NOUNS = frozenset(
    "water smoke fire snow rain fog mist ice grass sand mud dirt dust gravel soil traffic graffiti blood "
    "furniture luggage baggage equipment machinery clothing food trash garbage rubbish litter debris damage "
    "vegetation foliage text writing signage lighting oil gas steam money cash wildlife livestock cattle "
    "police news glass wood metal plastic paper concrete rust".split()
)
_IRREGULAR_PLURALS = frozenset("people children men women mice geese feet teeth oxen dice".split())
# Singular words ending in "s" that a plural rule would take for plurals.
_SINGULAR_S = frozenset(
    "bus gas lens canvas atlas iris cactus octopus walrus chassis compass bonus virus campus circus "
    "census status apparatus plus series species mattress dress glass bass cross moss boss".split()
)
# The words after which the head noun of a phrase ends: "person *on* a bike", "bottle *of* water".
_PREPOSITIONS = frozenset(
    "on in at of with without near by under over behind beside between inside outside from for "
    "wearing holding carrying riding driving pushing pulling using next".split()
)
_SILENT_H = ("hour", "honest", "honor", "honour", "heir", "herb")
# Vowel letters that sound like "you" or "wuh": "a unicorn", "a user", "a European", "a one-way sign".
_CONSONANT_SOUND = ("uni", "use", "usu", "uti", "ura", "ure", "uri", "uro", "ubi", "eu", "ewe", "one", "once")
# Letters whose names begin with a vowel sound, for initialisms ("an SUV", "an LED", "an X-ray").
_VOWEL_LETTERS = frozenset("AEFHILMNORSX")
_WORD = re.compile(r"[A-Za-z0-9][\w'-]*")


def article(label: str) -> str:
    """The article to put before ``label`` in "Does this image contain ...?": ``"a"``, ``"an"`` or ``""``."""
    words = _WORD.findall(label)
    if not words or words[0].lower() in _DETERMINERS:
        return ""
    head = words[0]
    for word in words[1:]:
        if word.lower() in _PREPOSITIONS:
            break
        head = word
    if head.lower() in _MASS_NOUNS or _is_plural(head):
        return ""
    return "an" if _starts_with_vowel_sound(words[0]) else "a"


def _is_plural(word: str) -> bool:
    lower = word.lower()
    if lower in _IRREGULAR_PLURALS:
        return True
    if word.isupper() or lower in _SINGULAR_S or len(lower) < 3:  # "GPS", "bus"
        return False
    return lower.endswith("s") and not lower.endswith(("ss", "us", "is"))


def _starts_with_vowel_sound(word: str) -> bool:
    lower = word.lower()
    digits = re.match(r"\d+", word)
    if digits:  # read aloud: "an 8", "an 11", "an 18-wheeler", "an 80"
        number = digits[0]
        return number.startswith("8") or (len(number) % 3 == 2 and number.startswith(("11", "18")))
    letters = re.match(r"[A-Z]+(?![a-z])", word)
    if letters and (len(letters[0]) > 1 or word[1:2] in ("-", "")):  # spelled out: "an SUV", "an X-ray", "a U-turn"
        return letters[0][0] in _VOWEL_LETTERS
    if lower.startswith(_SILENT_H):
        return True
    return lower[0] in "aeiou" and not lower.startswith(_CONSONANT_SOUND)
