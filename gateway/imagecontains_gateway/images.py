"""Local images: the files of ``--images-dir`` this server serves at ``/images/<relative path>``, and which task
image URLs name them (docs/workforce.md).

A task's image URL names a local image when it is ``http(s)://<a name of this server>/images/<path>``; any other
URL is loaded by the worker's browser directly. A task may name only its account's images (checked at PUT, issue
24): every image of the folder when the server has one account, else those under ``<images-dir>/<account id>/``.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
IMAGES_PATH = "/images/"


class LocalImages:
    """The image files under ``images_dir``, and the task URLs that name them.

    :param images_dir: the folder served at ``/images/``; None: this server serves no images.
    :param host_names: the names clients reach this server by (a URL naming another host is not local).
    """

    def __init__(self, images_dir: str | None, host_names: Iterable[str]) -> None:
        self.images_dir = Path(images_dir).resolve() if images_dir else None
        self.host_names = frozenset(name.lower() for name in host_names)

    def path_of(self, url: str) -> str | None:
        """The percent-decoded path inside ``images_dir`` that ``url`` names, or None for a URL of another host."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or (parts.hostname or "") not in self.host_names:
            return None
        return unquote(parts.path.removeprefix(IMAGES_PATH)) if parts.path.startswith(IMAGES_PATH) else None

    def file(self, path: str) -> Path | None:
        """The image file ``path`` names inside ``images_dir``, or None for anything else (missing, outside, not an
        image).

        ``path`` arrives percent-decoded; it is resolved with symlinks followed and must stay inside the folder.
        """
        if self.images_dir is None or not path or "\0" in path or "\\" in path or path.startswith("/"):
            return None
        if any(part in ("", ".", "..") or part.startswith(".") for part in path.split("/")):
            return None
        file = Path(os.path.realpath(self.images_dir / path))
        if not file.is_relative_to(self.images_dir) or not file.is_file():
            return None
        return file if mimetypes.guess_type(file.name)[0] in IMAGE_TYPES else None

    def loads(self, url: str) -> bool | None:
        """Whether the image ``url`` names loads: True or False for a local image, None for another host's."""
        path = self.path_of(url)
        return None if path is None else self.file(path) is not None

    def account_image(self, url: str, account: str, *, sole_account: bool) -> bool | None:
        """Whether ``url`` names an existing image of ``account`` (see the module's doc); None for another host's.

        A missing image and another account's are the same answer, False: a PUT learns nothing of the folder.
        """
        path = self.path_of(url)
        if path is None:
            return None
        return self.belongs_to(path, account, sole_account=sole_account) and self.file(path) is not None

    @staticmethod
    def belongs_to(path: str, account: str, *, sole_account: bool) -> bool:
        """Whether the image at ``path`` (inside ``images_dir``) is ``account``'s (see the module's doc)."""
        return sole_account or path.split("/", 1)[0] == account
