"""Fetch image bytes for a scorer: http(s) with a timeout and a size cap, ``s3://`` through an S3 client."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_CHUNK = 64 * 1024


class ImageFetcher:
    """Read images by URL, refusing anything larger than ``max_bytes``.

    :param timeout: seconds to connect and between bytes received (http(s)).
    :param max_bytes: the largest image read; a larger one raises ``ValueError`` without being read whole.
    :param s3_client: builds the S3 client used for ``s3://`` images (the operator passes the same
        credentials it presigns with); called at most once, on the first ``s3://`` image.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        s3_client: Callable[[], S3Client] | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.s3_client = s3_client
        self._s3: S3Client | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def fetch(self, url: str) -> bytes:
        """The bytes of the image at ``url`` (``http``, ``https`` or ``s3``)."""
        scheme = urlsplit(url).scheme.lower()
        if scheme == "s3":
            return self._fetch_s3(url)
        if scheme not in ("http", "https"):
            raise ValueError(f"cannot fetch {scheme or 'scheme-less'} URLs, only http(s) and s3")
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        with session.get(url, timeout=self.timeout, stream=True) as response:
            response.raise_for_status()
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise ValueError(f"image of {declared} bytes exceeds the {self.max_bytes}-byte cap")
            body = bytearray()
            for chunk in response.iter_content(_CHUNK):
                body += chunk
                if len(body) > self.max_bytes:
                    raise ValueError(f"image exceeds the {self.max_bytes}-byte cap")
        return bytes(body)

    def _fetch_s3(self, uri: str) -> bytes:
        parts = urlsplit(uri)
        with self._lock:
            if self._s3 is None:
                if self.s3_client is None:
                    raise ValueError("no S3 client to read s3:// images with")
                self._s3 = self.s3_client()
        response = self._s3.get_object(Bucket=parts.netloc, Key=parts.path[1:])
        if response["ContentLength"] > self.max_bytes:
            response["Body"].close()
            raise ValueError(f"image of {response['ContentLength']} bytes exceeds the {self.max_bytes}-byte cap")
        return response["Body"].read()
