"""The crowd API's input rules, checked by the hook before any request.

The gateway enforces the same rules with its own code (``imagecontains_gateway.validation``).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_imagecontains.exceptions import InvalidTaskError

IMAGE_CONTAINS = "image-contains"
IMAGE_CONTAINS_TEST = "image-contains-test"
IMAGE_CONTAINS_FUNCTIONS = frozenset({IMAGE_CONTAINS, IMAGE_CONTAINS_TEST})

TASK_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_TASK_NAME_LENGTH = 64
MAX_IMAGE_URL_LENGTH = 400
# The contract does not bound labels; 256 characters is ample for "what to look for" and keeps
# worker pages readable.
MAX_LABEL_LENGTH = 256
ALLOWED_URL_SCHEMES = frozenset({"http", "https"})


def validate_task_name(task_name: Any) -> str:
    """Return ``task_name`` if it is 1 to 64 characters from ``[A-Za-z0-9._-]``, other than ``.`` and ``..``."""
    if not isinstance(task_name, str) or not TASK_NAME_PATTERN.fullmatch(task_name):
        raise InvalidTaskError(
            f"Invalid task name {task_name!r}: use 1 to {MAX_TASK_NAME_LENGTH} characters "
            "from A-Z, a-z, 0-9, '.', '_' and '-'."
        )
    if task_name in (".", ".."):
        # Signers and proxies normalise such a path segment away: the request would reach another URL.
        raise InvalidTaskError(f"Invalid task name {task_name!r}: '.' and '..' are path segments, not names.")
    return task_name


def validate_function_name(function_name: Any) -> str:
    """Return ``function_name`` if it is a non-empty string (the service decides which exist)."""
    if not isinstance(function_name, str) or not function_name.strip():
        raise InvalidTaskError(f"Invalid function name {function_name!r}: give the API's name, e.g. 'image-contains'.")
    return function_name


def validate_image_url(url: Any) -> str:
    """Return ``url`` if it is an absolute http(s) URL of at most 400 characters."""
    if not isinstance(url, str) or not url:
        raise InvalidTaskError(f"Invalid image URL {url!r}: give an http(s) URL as a string.")
    if len(url) > MAX_IMAGE_URL_LENGTH:
        raise InvalidTaskError(
            f"Invalid image URL {url[:60]!r}...: it has {len(url)} characters, "
            f"the API allows at most {MAX_IMAGE_URL_LENGTH}."
        )
    if url != url.strip() or any(ch.isspace() for ch in url):
        raise InvalidTaskError(f"Invalid image URL {url!r}: it contains white space.")
    if has_control_characters(url) or has_hidden_characters(url):
        raise InvalidTaskError(
            f"Invalid image URL {url!r}: it contains control characters or invisible formatting characters."
        )
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise InvalidTaskError(f"Invalid image URL {url!r}: {err}.") from None
    if parts.scheme.lower() not in ALLOWED_URL_SCHEMES or not parts.hostname:
        raise InvalidTaskError(f"Invalid image URL {url!r}: only absolute http:// and https:// URLs are accepted.")
    if "@" in parts.netloc:
        # Workers' browsers load the URL, and pages show it: a user name or password in it would reach them all.
        raise InvalidTaskError(
            f"Invalid image URL {parts.scheme}://...@{parts.hostname}: it carries a user name or password; "
            "give the image a URL without them (for S3, a presigned URL)."
        )
    return url


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (C0, DEL or C1), which no URL may carry unencoded."""
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def has_hidden_characters(text: str) -> bool:
    """Whether ``text`` holds a character that changes how text around it shows without showing itself: format
    characters (bidirectional overrides such as U+202E, zero-width ones), line or paragraph separators, private-use,
    surrogate or unassigned code points. Shown to workers, U+202E turned a question around on screen (issue 24)."""
    return any(unicodedata.category(ch) in _HIDDEN_CATEGORIES for ch in text)


_HIDDEN_CATEGORIES = frozenset({"Cf", "Co", "Cs", "Cn", "Zl", "Zp"})


def validate_label(label: Any) -> str:
    """Return ``label`` if it is a non-blank string of at most 256 characters, without control or hidden characters."""
    if not isinstance(label, str) or not label.strip():
        raise InvalidTaskError(f"Invalid label {label!r}: give a non-empty text such as 'person'.")
    if has_control_characters(label) or has_hidden_characters(label):
        raise InvalidTaskError(
            f"Invalid label {label!r}: it contains control characters or invisible formatting characters "
            "(such as right-to-left overrides or zero-width spaces); give plain text such as 'person'."
        )
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidTaskError(
            f"Invalid label {label[:40]!r}...: it has {len(label)} characters, at most {MAX_LABEL_LENGTH} are allowed."
        )
    return label


def validate_image_contains_input(task_input: Any) -> dict[str, Any]:
    """Return ``task_input`` if it is exactly ``{"image": {"url": ...}, "target": {"label": ...}}``."""
    if not isinstance(task_input, dict):
        raise InvalidTaskError(
            f"Invalid input {task_input!r}: expected {{'image': {{'url': ...}}, 'target': {{'label': ...}}}}."
        )
    _require_exact_keys("input", task_input, {"image", "target"})
    image, target = task_input["image"], task_input["target"]
    if not isinstance(image, dict):
        raise InvalidTaskError(f"Invalid input: 'image' must be an object with a 'url', got {image!r}.")
    if not isinstance(target, dict):
        raise InvalidTaskError(f"Invalid input: 'target' must be an object with a 'label', got {target!r}.")
    _require_exact_keys("image", image, {"url"})
    _require_exact_keys("target", target, {"label"})
    validate_image_url(image["url"])
    validate_label(target["label"])
    return task_input


def validate_task_input(function_name: str, task_input: Any) -> dict[str, Any]:
    """Check ``task_input`` against the rules of ``function_name`` where the provider knows them.

    The transport is generic: inputs of other functions only need to be JSON objects.
    """
    if function_name in IMAGE_CONTAINS_FUNCTIONS:
        return validate_image_contains_input(task_input)
    if not isinstance(task_input, dict):
        raise InvalidTaskError(f"Invalid input {task_input!r}: the API takes a JSON object.")
    return task_input


def _require_exact_keys(where: str, value: dict[str, Any], expected: set[str]) -> None:
    missing = sorted(expected - value.keys())
    unknown = sorted(set(value) - expected)
    if missing:
        raise InvalidTaskError(f"Invalid input: {where!r} is missing {', '.join(map(repr, missing))}.")
    if unknown:
        raise InvalidTaskError(f"Invalid input: {where!r} has unknown key(s) {', '.join(map(repr, unknown))}.")
