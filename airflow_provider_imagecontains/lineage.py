"""OpenLineage datasets of the operator and sensor: the images they ask about, as input datasets.

Imported only when the OpenLineage provider asks (``get_openlineage_facets_on_complete``), so a
deployment without it imports nothing from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage


def image_folders(urls: Iterable[str]) -> list[tuple[str, str]]:
    """``(namespace, name)`` of each folder holding the images, following OpenLineage's naming:
    ``s3://bucket`` with the key's folder, ``https://host[:port]`` with the path's folder.

    A folder, not each image: thousands of frames would otherwise make thousands of datasets.
    """
    folders = set()
    for url in urls:
        parts = urlsplit(url)
        folder = parts.path.rsplit("/", 1)[0]
        if parts.scheme == "s3":
            folders.add((f"s3://{parts.netloc}", folder.lstrip("/") or "/"))
        else:
            folders.add((f"{parts.scheme}://{parts.netloc}", folder or "/"))
    return sorted(folders)


def images_lineage(urls: Iterable[str]) -> OperatorLineage:
    """The lineage of a task that asked about ``urls``: one input dataset per folder of images."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=[Dataset(namespace=ns, name=name) for ns, name in image_folders(urls)])
