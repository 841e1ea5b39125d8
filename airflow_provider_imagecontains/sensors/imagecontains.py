"""Sensor that waits for the crowd's answers to a submission and pushes them to XCom."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.links.imagecontains import CrowdDashboardLink
from airflow_provider_imagecontains.results import check_failed_policy, finish_records, records_from_event
from airflow_provider_imagecontains.storage import TASKS_URI, read_lines
from airflow_provider_imagecontains.triggers._tracking import TaskTracker, build_records, crowd_task_names
from airflow_provider_imagecontains.triggers.imagecontains import ImageContainsTrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage


class ImageContainsSensor(BaseSensorOperator):
    """
    Wait until every task of an :class:`~airflow_provider_imagecontains.operators.imagecontains.ImageContainsOperator`
    submission has finished, then return the results.

    With ``deferrable=True`` the sensor defers to one
    :class:`~airflow_provider_imagecontains.triggers.imagecontains.ImageContainsTrigger` that watches all tasks,
    so no worker slot is held while the crowd works. With ``deferrable=False`` it pokes in ``poke`` or
    ``reschedule`` mode and returns the same results.

    The XCom return value is a list of records ``{"url", "label", "task_name", "state",
    "contains_target", "confidence", "answers", "problem", "source", "model_score", "model_contains_target"}``,
    one per image and label in submission order, including those a pre-screen settled (``source`` ``"model"``,
    no task). ``confidence`` (the adjudicator's posterior for the answer) and ``answers`` (votes used) are
    None unless the service's result gives them (the local server's does).

    :param submission: the operator's return value (templated), e.g. ``submit.output`` or
        ``"{{ ti.xcom_pull(task_ids='submit') }}"``; a list of handles (from a mapped operator)
        is merged.
    :param imagecontains_conn_id: the Airflow connection of the crowd API; ``None`` (default): the one the
        submission was made with.
    :param hook_params: keyword arguments of the
        :class:`~airflow_provider_imagecontains.hooks.imagecontains.ImageContainsHook` (``max_concurrency``,
        ``max_attempts``, ``timeout``, ...); the trigger gets them too.
    :param failed_policy: what to do when tasks end ``failed``: ``"fail"`` the Airflow task
        listing them (default), ``"skip"`` it, or ``"report"`` them in the results.
    :param deferrable: wait in the triggerer (needs one running); default ``[operators] default_deferrable``,
        which Airflow ships as ``False``.
    :param max_poll_interval: the longest wait between polls in the triggerer while nothing finishes.
    :param max_consecutive_poll_failures: deferred, end the wait after this many poll cycles in a row in which
        no task could be read (see the trigger).
    :param poke_interval: seconds between polls (the first interval of the triggerer's backoff).
    :param timeout: seconds before the sensor fails with ``AirflowSensorTimeout``.
    :param records_path: (templated) a folder URI (``s3://bucket/prefix``, ``file:///data``, any scheme of
        Airflow's ``ObjectStoragePath``): the records go there as JSON Lines, one file per task instance,
        and XCom holds only a small reference that :func:`~airflow_provider_imagecontains.storage.read_records`
        turns back into records. ``None`` (default): the records themselves go to XCom.
    :param records_conn_id: the Airflow connection of ``records_path`` (``None``: the scheme's default).
    """

    template_fields: Sequence[str] = ("submission", "records_path")
    ui_color = "#f0e4ec"
    operator_extra_links = (CrowdDashboardLink(),)

    def __init__(
        self,
        *,
        submission: Any,
        imagecontains_conn_id: str | None = None,
        hook_params: dict[str, Any] | None = None,
        failed_policy: str = "fail",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_poll_interval: float = 600,
        max_consecutive_poll_failures: int = 10,
        poke_interval: timedelta | float = 60,
        records_path: str | None = None,
        records_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        check_failed_policy(failed_policy)
        self.submission = submission
        self.imagecontains_conn_id = imagecontains_conn_id
        self.hook_params = hook_params or {}
        self.failed_policy = failed_policy
        self.deferrable = deferrable
        self.max_poll_interval = max_poll_interval
        self.max_consecutive_poll_failures = max_consecutive_poll_failures
        self.records_path = records_path
        self.records_conn_id = records_conn_id
        self._tracker: TaskTracker | None = None

    @cached_property
    def handle(self) -> dict[str, Any]:
        """The submission, parsed (and a stored one read) once per task instance."""
        return parse_submission(self.submission)

    @cached_property
    def hook(self) -> ImageContainsHook:
        """One hook for every poke: credentials (STS calls) and connections are set up once."""
        conn_id = self.imagecontains_conn_id or self.handle["imagecontains_conn_id"]
        return ImageContainsHook(imagecontains_conn_id=conn_id, **self.hook_params)

    def execute(self, context: Context) -> Any:
        handle = self.handle
        CrowdDashboardLink.persist(context, self.hook.config.endpoint_url, crowd_task_names(handle["tasks"]))
        if not self.deferrable:
            return super().execute(context)
        # One poll first: a re-run whose answers are all in needs no trip through the triggerer.
        poke_result = self.poke(context)
        if poke_result.is_done:
            return poke_result.xcom_value
        # A stored handle's tasks stay out of the trigger's kwargs: the trigger reads them itself.
        tasks = (
            {"tasks_uri": handle[TASKS_URI], "tasks_conn_id": handle.get("tasks_conn_id")}
            if handle.get(TASKS_URI)
            else {"task_names": crowd_task_names(handle["tasks"])}
        )
        self.defer(
            trigger=ImageContainsTrigger(
                **tasks,
                function_name=handle["function_name"],
                imagecontains_conn_id=self.hook.imagecontains_conn_id,
                hook_params=self.hook_params,
                poll_interval=self.poke_interval,
                max_poll_interval=self.max_poll_interval,
                max_consecutive_poll_failures=self.max_consecutive_poll_failures,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Context) -> PokeReturnValue:
        handle = self.handle
        if self._tracker is None:
            # Kept between pokes in poke mode; reschedule mode starts afresh and polls all tasks once.
            self._tracker = TaskTracker(crowd_task_names(handle["tasks"]))
        self._tracker.poll(partial(self.hook.get_tasks, handle["function_name"]), self._tracker.unfinished)
        self.log.info("Crowd tasks: %s", self._tracker.progress_message())
        if not self._tracker.done:
            return PokeReturnValue(is_done=False)
        records = build_records(handle["tasks"], self._tracker.to_event())
        return PokeReturnValue(is_done=True, xcom_value=self._finish(records, context))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        return self._finish(records_from_event(self.handle, event), context)

    def _finish(self, records: list[dict[str, Any]], context: Context) -> Any:
        return finish_records(self, records, context)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the images of the submission, one input dataset per folder (S3 and HTTP namespaces)."""
        from airflow_provider_imagecontains.lineage import images_lineage

        return images_lineage(task["url"] for task in self.handle["tasks"])


def parse_submission(submission: Any) -> dict[str, Any]:
    """Return one submission handle from the operator's XCom value, its string rendering, or a list of them.

    :raises AirflowSkipException: when the operator ran with ``dry_run=True`` and so created no tasks.
    """
    if isinstance(submission, str):
        try:
            submission = ast.literal_eval(submission)
        except (ValueError, SyntaxError):
            raise ValueError(
                f"Invalid submission {submission[:80]!r}: expected the ImageContainsOperator's return value."
            ) from None
    handles = [submission] if isinstance(submission, dict) else list(submission or [])
    dry_runs = [h for h in handles if isinstance(h, dict) and h.get("dry_run")]
    if dry_runs and len(dry_runs) == len(handles):
        new_tasks = sum(h.get("new_tasks", 0) for h in dry_runs)
        total_tasks = sum(h.get("total_tasks", 0) for h in dry_runs)
        raise AirflowSkipException(
            f"The submission is the result of a dry run (dry_run=True): no crowd task was created, so there is "
            f"nothing to wait for; {new_tasks} of {total_tasks} crowd tasks would be new in a real run."
        )
    if not handles or not all(
        isinstance(h, dict)
        and {"function_name", "imagecontains_conn_id"} <= h.keys()
        and ("tasks" in h or TASKS_URI in h)
        for h in handles
    ):
        raise ValueError(
            f"Invalid submission {str(submission)[:80]!r}: expected the ImageContainsOperator's return value."
        )
    targets = {(h["function_name"], h["imagecontains_conn_id"]) for h in handles}
    if len(targets) > 1:
        raise ValueError(
            f"Invalid submission: its handles mix functions or connections {sorted(targets)}; use one sensor each."
        )
    # A stored handle (the operator's records_path) is read once here; its URI stays for the trigger.
    tasks = [
        task
        for h in handles
        for task in (h["tasks"] if "tasks" in h else read_lines(h[TASKS_URI], h.get("tasks_conn_id")))
    ]
    if len(handles) > 1:
        return {**handles[0], TASKS_URI: None, "tasks": tasks}
    return {**handles[0], "tasks": tasks}
