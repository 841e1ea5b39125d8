"""Where the example DAGs find images and put their outputs: a local folder or an S3 prefix.

Shared by ``surveillance_triage`` and ``training_data_etl``; listed in ``.airflowignore`` because it
holds no DAG. Local images reach the crowd over HTTP, so a local folder comes with the base URL
under which it is served; S3 objects are passed on as ``s3://`` URIs, which the operator presigns.
S3 goes through boto3 rather than Airflow's ``ObjectStoragePath``, which reads ``s3://`` through s3fs: only the
Amazon provider's optional ``s3fs`` extra installs it, and the examples add no dependency.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import urlopen

import boto3

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


def list_images(
    source: str,
    *,
    base_url: str | None = None,
    modified_since: datetime | None = None,
    modified_before: datetime | None = None,
) -> list[dict[str, str]]:
    """List the images under ``source``, oldest first, as ``{"source", "url"}`` records.

    :param source: a local folder, or an S3 prefix ``s3://bucket/prefix/``.
    :param base_url: the http(s) URL under which a local ``source`` folder is served (required for one).
    :param modified_since: keep images modified at or after this time (inclusive).
    :param modified_before: keep images modified before this time (exclusive).
    """
    if source.startswith("s3://"):
        found = _list_s3(source)
    else:
        if not base_url or urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(
                f"Invalid base URL {base_url!r} for local folder {source!r}: the crowd fetches images over "
                "HTTP, so serve the folder and give its http(s) URL."
            )
        found = _list_local(Path(source), base_url)
    return [
        {"source": location, "url": url}
        for location, url, modified in sorted(found, key=lambda item: (item[2], item[0]))
        if (modified_since is None or modified >= modified_since)
        and (modified_before is None or modified < modified_before)
    ]


def write_output(destination: str, data: bytes, content_type: str) -> str:
    """Write ``data`` to a local path or an ``s3://bucket/key``; return where it went.

    :param destination: a local file path or ``file://`` URI (parent folders are created) or an S3 object URI.
    :param data: the bytes to write.
    :param content_type: the object's media type on S3.
    """
    if destination.startswith("file://"):
        destination = urlsplit(destination).path
    if destination.startswith("s3://"):
        bucket, key = _split_s3_uri(destination)
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        return destination
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def read_output(location: str) -> bytes | None:
    """Read what :func:`write_output` wrote at a local path, ``file://`` URI or ``s3://bucket/key``; ``None``
    when nothing is there yet."""
    if location.startswith("s3://"):
        bucket, key = _split_s3_uri(location)
        client = boto3.client("s3")
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
    path = Path(urlsplit(location).path if location.startswith("file://") else location)
    return path.read_bytes() if path.is_file() else None


def join_location(prefix: str, name: str) -> str:
    """``prefix`` (a folder, an S3 prefix or a ``file://`` URI) joined with a file ``name``."""
    if prefix.startswith("file://"):
        prefix = urlsplit(prefix).path
    return f"{prefix.rstrip('/')}/{name}"


def read_image(url: str, timeout: float = 30.0) -> bytes:
    """Read an image the crowd was shown, from its http(s) URL or its ``s3://`` URI."""
    if url.startswith("s3://"):
        bucket, key = _split_s3_uri(url)
        return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"Invalid image URL {url!r}: expected http(s) or s3://.")
    with urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
        return response.read()


def _list_local(folder: Path, base_url: str) -> list[tuple[str, str, datetime]]:
    if not folder.is_dir():
        raise ValueError(f"Invalid image folder {str(folder)!r}: it does not exist or is not a folder.")
    base = base_url.rstrip("/")
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            modified = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
            found.append((str(path), f"{base}/{quote(path.relative_to(folder).as_posix())}", modified))
    return found


def _list_s3(prefix_uri: str) -> list[tuple[str, str, datetime]]:
    bucket, prefix = _split_s3_uri(prefix_uri)
    found = []
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            if obj["Key"].lower().endswith(IMAGE_SUFFIXES):
                uri = f"s3://{bucket}/{obj['Key']}"
                found.append((uri, uri, obj["LastModified"]))
    return found


def _split_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"Invalid S3 URI {uri!r}: expected s3://bucket/key.")
    return parts.netloc, parts.path.lstrip("/")


def batched(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive batches of ``size`` (the last may be shorter): one mapped task each."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def as_records(answers: Any) -> list[dict[str, Any]]:
    """Flatten the mapped sensor's XCom (one list of answers per batch) into one list."""
    # Indexing up to len() rather than iterating: iteration of Airflow's lazy XCom sequence
    # ends by asking for one value too many, which logs a spurious "XCom not found" error.
    return [answer for position in range(len(answers)) for answer in answers[position]]
