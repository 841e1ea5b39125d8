"""Where the example DAGs find images and put their outputs: a local folder or an object-storage prefix.

Shared by ``surveillance_triage`` and ``training_data_etl``; listed in ``.airflowignore`` because it
holds no DAG. Everything is read and written through Airflow's ``ObjectStoragePath`` on a connection
(``conn_id``, e.g. an Amazon connection for ``s3://``, whose ``endpoint_url`` extra points at any S3-compatible
store; ``s3://`` needs s3fs, which the provider's ``[amazon]`` extra installs). Local images reach the crowd over
HTTP, so a local folder comes with the base URL under which it is served; S3 objects are passed on as
``s3://`` URIs, which the operator presigns.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import urlopen

from airflow.providers.common.compat.sdk import ObjectStoragePath

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
LOCAL_PROTOCOLS = ("", "file", "local")


def list_images(
    source: str,
    *,
    base_url: str | None = None,
    conn_id: str | None = None,
    modified_since: datetime | None = None,
    modified_before: datetime | None = None,
) -> list[dict[str, str]]:
    """List the images under ``source``, oldest first, as ``{"source", "url"}`` records.

    :param source: a local folder (path or ``file://`` URI), or a prefix such as ``s3://bucket/prefix/``.
    :param base_url: the http(s) URL under which a local ``source`` folder is served (required for one).
    :param conn_id: the Airflow connection of the storage (``None``: the scheme's default credentials).
    :param modified_since: keep images modified at or after this time (inclusive).
    :param modified_before: keep images modified before this time (exclusive).
    """
    root = ObjectStoragePath(source, conn_id=conn_id)
    local = root.protocol in LOCAL_PROTOCOLS
    if local:
        if not base_url or urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(
                f"Invalid base URL {base_url!r} for local folder {source!r}: the crowd fetches images over "
                "HTTP, so serve the folder and give its http(s) URL."
            )
        if not root.is_dir():
            raise ValueError(f"Invalid image folder {root.path!r}: it does not exist or is not a folder.")
    base = (base_url or "").rstrip("/")
    found = []
    for path in root.rglob("*"):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            modified = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
            location = _location(path)
            url = f"{base}/{quote(path.relative_to(root).as_posix())}" if local else location
            found.append((location, url, modified))
    return [
        {"source": location, "url": url}
        for location, url, modified in sorted(found, key=lambda item: (item[2], item[0]))
        if (modified_since is None or modified >= modified_since)
        and (modified_before is None or modified < modified_before)
    ]


def write_output(destination: str, data: bytes, content_type: str, conn_id: str | None = None) -> str:
    """Write ``data`` to a local path, ``file://`` URI or object URI such as ``s3://bucket/key``; return where
    it went (a local path, or the object's URI).

    :param destination: where to write (local parent folders are created).
    :param data: the bytes to write.
    :param content_type: the object's media type on S3 (a report page opens in the browser as a page).
    :param conn_id: the Airflow connection of the storage (``None``: the scheme's default credentials).
    """
    path = ObjectStoragePath(destination, conn_id=conn_id)
    if path.protocol in LOCAL_PROTOCOLS:
        path.parent.mkdir(parents=True, exist_ok=True)
    options = {"ContentType": content_type} if path.protocol == "s3" else {}
    with path.open("wb", **options) as file:
        file.write(data)
    return _location(path)


def read_output(location: str, conn_id: str | None = None) -> bytes | None:
    """Read what :func:`write_output` wrote at ``location``; ``None`` when nothing is there yet."""
    try:
        return ObjectStoragePath(location, conn_id=conn_id).read_bytes()
    except FileNotFoundError:
        return None


def join_location(prefix: str, name: str) -> str:
    """``prefix`` (a folder, an object-storage prefix or a ``file://`` URI) joined with a file ``name``."""
    if prefix.startswith("file://"):
        prefix = urlsplit(prefix).path
    return f"{prefix.rstrip('/')}/{name}"


def read_image(url: str, conn_id: str | None = None, timeout: float = 30.0) -> bytes:
    """Read an image the crowd was shown, from its http(s) URL or its ``s3://`` URI (on ``conn_id``)."""
    if url.startswith("s3://"):
        return ObjectStoragePath(url, conn_id=conn_id).read_bytes()
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"Invalid image URL {url!r}: expected http(s) or s3://.")
    with urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
        return response.read()


def no_images_hint(source: str, base_url: str | None, conn_id: str | None, interval_start: datetime) -> str | None:
    """Why a run found no image in its interval although ``source`` holds some: images are chosen by their
    modification times."""
    everything = list_images(source, base_url=base_url, conn_id=conn_id)
    if not everything:
        return None
    return (
        f"{source} holds {len(everything)} images, but none was modified during this run's data interval: "
        "images are chosen by their modification time (a file's mtime, an S3 object's LastModified), and copied "
        "or restored files keep old times. Touch them into the interval (e.g. `touch` the files), or trigger a run "
        f"whose interval covers them (this one starts {interval_start.isoformat()})."
    )


def _location(path: ObjectStoragePath) -> str:
    """A local path as a plain path, an object as ``scheme://bucket/key`` (without the connection id)."""
    return path.path if path.protocol in LOCAL_PROTOCOLS else f"{path.protocol}://{path.path}"


def batched(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive batches of ``size`` (the last may be shorter): one mapped task each."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def as_records(answers: Any) -> list[dict[str, Any]]:
    """Flatten the mapped sensor's XCom (one list of answers per batch) into one list."""
    # Indexing up to len() rather than iterating: iteration of Airflow's lazy XCom sequence
    # ends by asking for one value too many, which logs a spurious "XCom not found" error.
    return [answer for position in range(len(answers)) for answer in answers[position]]
