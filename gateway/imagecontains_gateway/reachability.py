"""Whether a public crowd's browsers can load an image: not from this machine or a local network.

A workforce of people on the internet (not the team's own staff) refuses such images at the PUT
(``CrowdService(check_image=unreachable_image_reason)``), so that no money is spent on a question nobody can see.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# Hosts no browser on the internet can reach: this machine and names of a local network.
_LOCAL_NAMES = ("localhost",)
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def unreachable_image_reason(url: str) -> str | None:
    """Why a participant's browser could not load ``url`` (a loopback or local-network host), else None."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES) or "." not in host:
            return (
                f"Invalid image URL {url!r}: host {host!r} is a local name that participants cannot reach; "
                "host the image where a browser on the internet can load it (e.g. S3)."
            )
        return None
    if not address.is_global:
        return (
            f"Invalid image URL {url!r}: {host} is a loopback, private or reserved address that participants "
            "cannot reach; host the image where a browser on the internet can load it (e.g. S3)."
        )
    return None
