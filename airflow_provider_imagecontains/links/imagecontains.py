"""Extra link of the operator and sensor: the crowd gateway's dashboard, narrowed to a run's tasks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

# The default endpoint_url (the 2017 preview's hosted API, at *.amazonaws.com) never had a dashboard.
_HOSTED_SUFFIX = ".amazonaws.com"


def dashboard_url(endpoint_url: str, task_names: Iterable[str]) -> str | None:
    """The gateway's dashboard showing ``task_names``, or ``None`` for an endpoint without one.

    Task names are ``<namespace slug>-<hash>``: the page is narrowed to the slug all of them share
    (the DAG id by default), or shows every task when they span several namespaces.
    """
    if (urlsplit(endpoint_url).hostname or "").endswith(_HOSTED_SUFFIX):
        return None
    prefixes = {name.rsplit("-", 1)[0] + "-" for name in task_names}
    query = f"?{urlencode({'prefix': prefixes.pop()})}" if len(prefixes) == 1 else ""
    return f"{endpoint_url.rstrip('/')}/dashboard{query}"


class CrowdDashboardLink(BaseOperatorLink):
    """ "Crowd dashboard": the gateway's requester dashboard, narrowed to the task's crowd tasks.

    The operator and sensor store the URL in XCom while they run (:meth:`persist`), built from the
    connection's ``endpoint_url`` alone: no request is made. The gateway serves the page when it runs
    a human or mixed workforce (``--workforce``); with only simulated workers the page is not found.
    """

    name = "Crowd dashboard"
    key = "imagecontains_dashboard"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(ti_key=ti_key, key=self.key) or ""

    @classmethod
    def persist(cls, context: Context | dict[str, Any], endpoint_url: str, task_names: Iterable[str]) -> None:
        """Store the dashboard URL for this task instance (nothing outside a task run, e.g. a bare ``execute``)."""
        ti = context.get("ti")
        url = dashboard_url(endpoint_url, task_names)
        if ti is not None and url is not None:
            ti.xcom_push(key=cls.key, value=url)
