"""Extra link of the operator and sensor: the local crowd server's dashboard, narrowed to a run's tasks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import requests
from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

# The hosted service answers at *.amazonaws.com and has no dashboard; any other endpoint is a local server.
_HOSTED_SUFFIX = ".amazonaws.com"


def dashboard_url(endpoint_url: str, task_names: Iterable[str]) -> str | None:
    """The local server's dashboard showing ``task_names``, or ``None`` for the hosted service.

    Task names are ``<namespace slug>-<hash>``: the page is narrowed to the slug all of them share
    (the DAG id by default), or shows every task when they span several namespaces.
    """
    if (urlsplit(endpoint_url).hostname or "").endswith(_HOSTED_SUFFIX):
        return None
    prefixes = {name.rsplit("-", 1)[0] + "-" for name in task_names}
    query = f"?{urlencode({'prefix': prefixes.pop()})}" if len(prefixes) == 1 else ""
    return f"{endpoint_url.rstrip('/')}/dashboard{query}"


class CrowdDashboardLink(BaseOperatorLink):
    """ "Crowd dashboard": the local crowd server's requester dashboard, narrowed to the task's crowd tasks.

    The operator and sensor store the URL in XCom while they run (:meth:`persist`); with the hosted
    service, or a local server without the dashboard (simulated workforce only), the link stays empty.
    """

    name = "Crowd dashboard"
    key = "imagecontains_dashboard"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(ti_key=ti_key, key=self.key) or ""

    @classmethod
    def persist(cls, context: Context | dict[str, Any], endpoint_url: str, task_names: Iterable[str]) -> None:
        """Store the dashboard URL for this task instance when the server has a dashboard (nothing outside
        a task run, e.g. a bare ``execute``)."""
        ti = context.get("ti")
        url = dashboard_url(endpoint_url, task_names)
        if ti is not None and url is not None and _serves_dashboard(endpoint_url):
            ti.xcom_push(key=cls.key, value=url)


def _serves_dashboard(endpoint_url: str) -> bool:
    """Whether the server has the dashboard: only with a human or mixed workforce (``--workforce``).

    A signed-out visitor is sent to the sign-in page (303); a server without the page answers 404.
    """
    try:
        answer = requests.get(f"{endpoint_url.rstrip('/')}/dashboard", allow_redirects=False, timeout=5)
    except requests.RequestException:
        return False
    return answer.status_code in (200, 303)
