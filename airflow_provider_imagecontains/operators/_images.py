"""Turn the operator's ``images`` argument into named crowd tasks: parsing, validation, task names
and S3 presigning. Private to the operator; the sensor only sees the submission handle it produces."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow_provider_imagecontains.exceptions import InvalidImagesError, InvalidTaskError
from airflow_provider_imagecontains.results import listing
from airflow_provider_imagecontains.validation import (
    MAX_IMAGE_URL_LENGTH,
    MAX_TASK_NAME_LENGTH,
    has_control_characters,
    validate_image_url,
    validate_label,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# 32 hex digits = 128 bits of SHA-256: among a billion tasks in one namespace the chance that two
# names collide is about 1.5e-21. The rest of the 64 characters holds a readable namespace slug.
HASH_LENGTH = 32
SLUG_LENGTH = MAX_TASK_NAME_LENGTH - HASH_LENGTH - 1
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ImageTask:
    """One crowd task to submit: ``url`` as the user gave it (``s3://`` stays ``s3://``)."""

    task_name: str
    url: str
    label: str

    def to_handle(self) -> dict[str, str]:
        return {"task_name": self.task_name, "url": self.url, "label": self.label}


def task_name(namespace: str, function_name: str, url: str, label: str) -> str:
    """Return the deterministic task name of (namespace, function, url, label).

    The same four values always give the same name, so a retry or re-run finds the task it
    created before instead of paying for a new one.
    """
    digest = hashlib.sha256(json.dumps([namespace, function_name, url, label]).encode()).hexdigest()
    slug = _SLUG_UNSAFE.sub("-", namespace).strip("-.")[:SLUG_LENGTH] or "images"
    return f"{slug}-{digest[:HASH_LENGTH]}"


def plan_image_tasks(images: Any, label: str | list[str] | None, namespace: str, function_name: str) -> list[ImageTask]:
    """Validate every image and label and return one :class:`ImageTask` per (image, label).

    :param images: image URLs, or dicts ``{"url": ..., "label": ...}`` with a per-image label.
    :param label: the label (or labels) for images that do not carry their own.
    :param namespace: the naming namespace (see :func:`task_name`).
    :param function_name: the crowd function, part of the task name.
    :raises InvalidImagesError: listing every bad item; raised before anything is submitted.
    """
    if isinstance(images, (str, dict)) or not isinstance(images, (list, tuple)):
        raise InvalidImagesError(
            f"Invalid images {_short(images)}: give a list of image URLs or of {{'url', 'label'}} dicts."
        )
    # Anything but a list or tuple is one label (checked below), so label=0 is an InvalidTaskError, not a TypeError.
    default_labels = list(label) if isinstance(label, (list, tuple)) else [label]
    problems: list[str] = []
    tasks: list[ImageTask] = []
    seen: set[tuple[str, str]] = set()
    for position, image in enumerate(images):
        url, labels = image, default_labels
        if isinstance(image, dict):
            unknown = sorted(set(image) - {"url", "label"})
            if unknown:
                problems.append(f"images[{position}]: unknown key(s) {', '.join(map(repr, unknown))}")
                continue
            url = image.get("url")
            labels = [image["label"]] if "label" in image else default_labels
        for item_label in labels:
            problem = _check_url(url) or _check_label(item_label)
            if problem or item_label is None:
                problems.append(f"images[{position}] {_short(url)}: {problem}")
            elif (url, item_label) in seen:
                problems.append(
                    f"images[{position}] {_short(url)}: duplicate of an earlier image with label {item_label!r}"
                )
            else:
                seen.add((url, item_label))
                tasks.append(ImageTask(task_name(namespace, function_name, url, item_label), url, item_label))
    if problems:
        raise InvalidImagesError(listing(f"{len(problems)} invalid image(s), nothing was submitted", problems))
    return tasks


def is_s3_uri(url: Any) -> bool:
    """Whether ``url`` is an ``s3://`` URI, in any case (``S3://`` too)."""
    return isinstance(url, str) and url[:5].lower() == "s3://"


def presign_s3_urls(tasks: list[ImageTask], s3_client: S3Client, expires_in: int) -> dict[str, str]:
    """Return ``{s3 URI: presigned HTTPS GET URL}`` for the ``s3://`` images among ``tasks``.

    Presigning is local (no request). The URLs carry a signature, so they are only ever sent to the
    crowd service, never logged or returned.

    :raises InvalidImagesError: listing the URIs whose presigned URL exceeds the API's 400 characters.
    """
    presigned: dict[str, str] = {}
    too_long: list[str] = []
    for uri in sorted({task.url for task in tasks if is_s3_uri(task.url)}):
        parts = urlsplit(uri)
        url = s3_client.generate_presigned_url(
            "get_object", Params={"Bucket": parts.netloc, "Key": parts.path[1:]}, ExpiresIn=expires_in
        )
        if len(url) > MAX_IMAGE_URL_LENGTH:
            too_long.append(f"{uri}: its presigned URL has {len(url)} characters")
        presigned[uri] = url
    if too_long:
        session_token = "X-Amz-Security-Token=" in next(iter(presigned.values()))
        cause = (
            "the credentials carry a session token (temporary credentials: an assumed role, SSO, an instance "
            "profile), which the URL must include"
            if session_token
            else "the bucket and key are long"
        )
        raise InvalidImagesError(
            listing(
                f"{len(too_long)} S3 image(s) exceed the API's {MAX_IMAGE_URL_LENGTH}-character URL limit once "
                f"presigned, because {cause}. Presign with long-lived credentials (an aws_conn_id with an access "
                "key and secret, no role), shorten the keys, or serve the images from a public or CDN URL with "
                "s3_url_template='https://cdn.example.com/{key}'. Nothing was submitted",
                too_long,
            )
        )
    return presigned


def public_s3_urls(tasks: list[ImageTask], url_template: str) -> dict[str, str]:
    """Return ``{s3 URI: url_template with its {bucket} and {key}}`` for the ``s3://`` images among ``tasks``.

    :raises InvalidImagesError: listing the URIs whose URL breaks the API's rules (e.g. over 400 characters).
    """
    urls: dict[str, str] = {}
    problems: list[str] = []
    for uri in sorted({task.url for task in tasks if is_s3_uri(task.url)}):
        parts = urlsplit(uri)
        try:
            url = url_template.format(bucket=parts.netloc, key=quote(parts.path[1:]))
        except (KeyError, IndexError, ValueError) as err:
            raise InvalidImagesError(
                f"Invalid s3_url_template {url_template!r}: use the placeholders {{bucket}} and {{key}} ({err})."
            ) from None
        try:
            urls[uri] = validate_image_url(url)
        except InvalidTaskError as err:
            problems.append(f"{uri}: {err.message}")
    if problems:
        raise InvalidImagesError(listing(f"{len(problems)} S3 image(s) have no valid public URL", problems))
    return urls


def _check_url(url: Any) -> str | None:
    if is_s3_uri(url):
        if has_control_characters(url) or url != url.strip():
            return "an S3 URI may not contain control characters or surrounding white space"
        parts = urlsplit(url)
        if not parts.netloc or len(parts.path) < 2:
            return "an S3 URI needs a bucket and a key, e.g. s3://bucket/frames/0001.jpg"
        return None
    try:
        validate_image_url(url)
    except InvalidTaskError as err:
        return err.message.split(": ", 1)[-1]
    return None


def _check_label(label: Any) -> str | None:
    if label is None:
        return "no label: pass target_label=... or give the image as {'url': ..., 'label': ...}"
    try:
        validate_label(label)
    except InvalidTaskError as err:
        return err.message
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
