"""Operator that submits images to the crowd as image-contains tasks."""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.exceptions import AirflowProviderDeprecationWarning
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowOptionalProviderFeatureException,
    AirflowTaskTimeout,
    BaseOperator,
    conf,
)
from botocore.exceptions import BotoCoreError

from airflow_provider_imagecontains.exceptions import (
    BulkTaskError,
    CrowdApiError,
    EndpointUnreachableError,
    InvalidImagesError,
    TaskNameConflictError,
    TaskNotFoundError,
)
from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.links.imagecontains import CrowdDashboardLink
from airflow_provider_imagecontains.operators._images import (
    ImageTask,
    is_s3_uri,
    plan_image_tasks,
    presign_s3_urls,
    public_s3_urls,
)
from airflow_provider_imagecontains.prescreen.fetch import ImageFetcher
from airflow_provider_imagecontains.prescreen.scorer import Scorer, load_scorer
from airflow_provider_imagecontains.prescreen.screening import (
    Screened,
    score_images,
    screen,
    validate_thresholds,
)
from airflow_provider_imagecontains.prescreen.settings import PreScreen, from_legacy_arguments
from airflow_provider_imagecontains.results import MAX_LISTED, check_failed_policy, finish_records, records_from_event
from airflow_provider_imagecontains.storage import TASKS_URI, store_handle
from airflow_provider_imagecontains.triggers._tracking import TaskTracker, build_records, is_transient
from airflow_provider_imagecontains.triggers.imagecontains import ImageContainsTrigger
from airflow_provider_imagecontains.validation import IMAGE_CONTAINS

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage
    from mypy_boto3_s3 import S3Client

__all__ = ["ImageContainsOperator", "InvalidImagesError"]

# Where each instance records how many crowd tasks it plans, for max_run_tasks.
RUN_TASKS_XCOM_KEY = "crowd_tasks_planned"
# The sensor's default timeout: waiting for the answers in the operator is bounded the same way.
DEFAULT_WAIT_TIMEOUT = conf.getfloat("sensors", "default_timeout", fallback=7 * 24 * 3600)
# A presigned URL of a crowd server's image is used at once, to score it.
PRESCREEN_IMAGE_URL_SECONDS = 300
# SigV4 presigned URLs live at most 7 days; the crowd usually answers within a day.
DEFAULT_PRESIGN_EXPIRES_IN = 7 * 24 * 3600


class ImageContainsOperator(BaseOperator):
    """
    Ask the crowd whether each image contains a label: one image-contains task per (image, label).

    Task names are deterministic in (namespace, function, url, label), so retries and re-runs
    find the tasks they created before: nothing is paid for twice, and images already answered
    in the same namespace are reused. Every input is validated before the first request.

    The XCom return value has one shape per mode (``records_path`` swaps lists for a small reference):

    * by default, the submission handle ``{"function_name", "imagecontains_conn_id", "tasks": [{"task_name",
      "url", "label"}, ...]}`` for :class:`~airflow_provider_imagecontains.sensors.imagecontains.ImageContainsSensor`
      (with ``records_path``: ``"tasks_uri"``, ``"tasks_conn_id"`` and ``"task_count"`` instead of ``"tasks"``);
    * with ``wait_for_completion=True``, the sensor's result records (with ``records_path``: the reference
      :func:`~airflow_provider_imagecontains.storage.read_records` reads);
    * with ``dry_run=True``, ``{"function_name", "imagecontains_conn_id", "dry_run": True, "total_tasks",
      "new_tasks", "existing_tasks", "settled_by_model"}``.

    :param images: (templated) image URLs, or dicts ``{"url": ..., "label": ...}`` with their own
        label. ``s3://bucket/key`` URIs are sent as presigned HTTPS URLs; other schemes than
        http, https and s3 are rejected.
    :param target_label: (templated) what to look for in images without their own label (the API's
        ``target.label``); a list of labels creates one task per image and label.
    :param label: deprecated name of ``target_label``.
    :param function_name: ``image-contains`` (paid, real workers) or ``image-contains-test``
        (free mock answers for a dry run of the pipeline).
    :param imagecontains_conn_id: the Airflow connection of the crowd API.
    :param hook_params: keyword arguments of the
        :class:`~airflow_provider_imagecontains.hooks.imagecontains.ImageContainsHook` (``max_concurrency``,
        ``max_attempts``, ``retry_base_delay``, ``max_retry_delay``, ``timeout``); the trigger gets them too.
    :param namespace: (templated) scope of task reuse; defaults to the DAG id, so re-running a
        DAG reuses its answers. Put e.g. ``{{ ds }}`` in it to ask again for each date.
    :param resubmit_failed: delete and resubmit tasks that ended ``failed`` (paid again).
    :param max_tasks: refuse (before any request) an instance of this task with more crowd tasks than this:
        it counts the tasks one task instance plans (one mapped instance: its own batch), reused ones too.
    :param max_run_tasks: refuse (before any request) an instance that would take the tasks planned by all
        instances of this task in the DAG run (every mapped instance) above this. Each instance records
        its count in XCom before it submits anything and sums the counts of its run: whichever instance
        would pass the limit fails with nothing submitted, so the run never spends on more tasks than this.
    :param dry_run: only count how many new tasks a run would create; submit nothing.
    :param wait_for_completion: wait until all tasks are finished and return their results.
    :param deferrable: wait in the triggerer rather than a worker slot.
    :param poll_interval: seconds between polls while waiting.
    :param max_poll_interval: the longest wait between polls while nothing finishes (deferred).
    :param max_consecutive_poll_failures: deferred, end the wait after this many poll cycles in a row in which
        no task could be read (see the trigger).
    :param wait_timeout: with ``wait_for_completion``, the longest wait in seconds (or a ``timedelta``) for
        the answers, deferred or not; default ``[sensors] default_timeout`` (7 days), the sensor's ``timeout``.
    :param failed_policy: with ``wait_for_completion``, what failed tasks do: ``"fail"``,
        ``"skip"`` or ``"report"`` (see the sensor).
    :param aws_conn_id: (templated) Airflow AWS connection the Amazon provider's ``S3Hook`` presigns
        ``s3://`` images with (extra ``[amazon]``); ``None`` or a missing connection uses boto3's default chain.
    :param presign_expires_in: seconds the presigned URLs stay valid (at most 7 days).
    :param s3_url_template: send ``s3://`` images as this public or CDN URL instead of presigning, e.g.
        ``"https://cdn.example.com/{key}"`` or ``"https://{bucket}.s3.amazonaws.com/{key}"``; for credentials
        whose presigned URLs exceed the API's 400 characters (any session token).
    :param submit_rounds: PUT rounds in all: calls that still fail on throttling, server errors or
        dropped connections after the hook's own retries are submitted again in the next round,
        keeping every success; the task fails only if some remain after the last round. Any other
        error (invalid input, name conflict, access denied, unknown function) fails it at once.
    :param submit_round_delay: seconds to pause before each further round, for the service to recover.
    :param prescreen: (templated: its thresholds and ``calibration_pairs``) a
        :class:`~airflow_provider_imagecontains.prescreen.settings.PreScreen`: a model that answers the images
        it is sure about, its thresholds and audit rate (docs/prescreen.md). ``None``: every image goes to the
        crowd. A scorer or its import path given here directly, with the settings as the separate arguments
        below, is deprecated.
    :param accept_above: deprecated: ``PreScreen(accept_above=...)``; likewise ``reject_below``,
        ``calibration_pairs``, ``audit_rate``, ``crowd_task_cost``, and ``prescreen_concurrency``,
        ``prescreen_timeout``, ``prescreen_max_bytes`` (``PreScreen``'s ``concurrency``, ``timeout``, ``max_bytes``).
    :param records_path: (templated) a folder URI (any scheme of Airflow's ``ObjectStoragePath``) for what
        would be big in XCom: the handle's tasks (the handle then carries ``tasks_uri`` instead, which the
        sensor and trigger read), or with ``wait_for_completion`` the records (a small reference that
        :func:`~airflow_provider_imagecontains.storage.read_records` reads back).
    :param records_conn_id: the Airflow connection of ``records_path`` (``None``: the scheme's default).
    """

    template_fields: Sequence[str] = (
        "images",
        "target_label",
        "namespace",
        "function_name",
        "imagecontains_conn_id",
        "aws_conn_id",
        "prescreen",
        "records_path",
    )
    ui_color = "#f4d9e6"
    operator_extra_links = (CrowdDashboardLink(),)

    def __init__(
        self,
        *,
        images: Any,
        target_label: str | list[str] | None = None,
        function_name: str = IMAGE_CONTAINS,
        imagecontains_conn_id: str = ImageContainsHook.default_conn_name,
        hook_params: dict[str, Any] | None = None,
        namespace: str | None = None,
        resubmit_failed: bool = False,
        max_tasks: int | None = None,
        max_run_tasks: int | None = None,
        dry_run: bool = False,
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60,
        max_poll_interval: float = 600,
        max_consecutive_poll_failures: int = 10,
        wait_timeout: timedelta | float = DEFAULT_WAIT_TIMEOUT,
        failed_policy: str = "fail",
        aws_conn_id: str | None = "aws_default",
        presign_expires_in: int = DEFAULT_PRESIGN_EXPIRES_IN,
        s3_url_template: str | None = None,
        submit_rounds: int = 3,
        submit_round_delay: float = 30,
        prescreen: PreScreen | Scorer | str | None = None,
        records_path: str | None = None,
        records_conn_id: str | None = None,
        label: str | list[str] | None = None,
        accept_above: float | str | None = None,
        reject_below: float | str | None = None,
        calibration_pairs: int | str | None = None,
        audit_rate: float | None = None,
        prescreen_concurrency: int | None = None,
        prescreen_timeout: float | None = None,
        prescreen_max_bytes: int | None = None,
        crowd_task_cost: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if label is not None:
            if target_label is not None:
                raise ValueError("Give target_label only: label is its deprecated name.")
            warnings.warn(
                "ImageContainsOperator's label argument is deprecated: use target_label.",
                AirflowProviderDeprecationWarning,
                stacklevel=2,
            )
            target_label = label
        legacy = {
            name: value
            for name, value in (
                ("accept_above", accept_above),
                ("reject_below", reject_below),
                ("calibration_pairs", calibration_pairs),
                ("audit_rate", audit_rate),
                ("prescreen_concurrency", prescreen_concurrency),
                ("prescreen_timeout", prescreen_timeout),
                ("prescreen_max_bytes", prescreen_max_bytes),
                ("crowd_task_cost", crowd_task_cost),
            )
            if value is not None
        }
        if legacy or not isinstance(prescreen, (PreScreen, type(None))):
            prescreen = from_legacy_arguments(prescreen, legacy)
            warnings.warn(
                "ImageContainsOperator's separate pre-screen arguments are deprecated: give "
                "prescreen=PreScreen(scorer=..., accept_above=..., ...) (airflow_provider_imagecontains.prescreen).",
                AirflowProviderDeprecationWarning,
                stacklevel=2,
            )
        elif prescreen is not None:
            # Airflow renders the templated settings in place: this task's own copy keeps a PreScreen shared by
            # several tasks from carrying one task's rendering into another's.
            prescreen = replace(prescreen)
        check_failed_policy(failed_policy)
        if submit_rounds < 1:
            raise ValueError(f"Invalid submit_rounds {submit_rounds!r}: expected at least 1.")
        self.images = images
        self.target_label = target_label
        self.function_name = function_name
        self.imagecontains_conn_id = imagecontains_conn_id
        self.hook_params = hook_params or {}
        self.namespace = namespace
        self.resubmit_failed = resubmit_failed
        self.max_tasks = max_tasks
        self.max_run_tasks = max_run_tasks
        # Not ``self.dry_run``: BaseOperator.dry_run() is a method.
        self.count_only = dry_run
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.max_consecutive_poll_failures = max_consecutive_poll_failures
        self.wait_timeout = wait_timeout
        self.failed_policy = failed_policy
        self.aws_conn_id = aws_conn_id
        self.presign_expires_in = presign_expires_in
        self.s3_url_template = s3_url_template
        self.submit_rounds = submit_rounds
        self.submit_round_delay = submit_round_delay
        self.records_path = records_path
        self.records_conn_id = records_conn_id
        self.prescreen = prescreen

    @cached_property
    def hook(self) -> ImageContainsHook:
        return ImageContainsHook(imagecontains_conn_id=self.imagecontains_conn_id, **self.hook_params)

    def execute(self, context: Context) -> Any:
        tasks = self._plan()
        # A pre-screen that cannot be built fails the task here: sending every image to the crowd instead
        # would spend what the pre-screen was set up to save.
        scorer = self._load_scorer() if self.prescreen is not None else None
        if self.max_tasks is not None and len(tasks) > self.max_tasks:
            raise AirflowFailException(
                f"This run has {len(tasks)} crowd tasks, more than max_tasks={self.max_tasks}; nothing was submitted."
            )
        if self.max_run_tasks is not None and not self.count_only:
            self._reserve_run_tasks(context, len(tasks))
        # Presigned URLs are made (locally) and checked against the API's limit before any request.
        sent_urls = self._presign(tasks)
        screened = self._prescreen(tasks, scorer) if scorer is not None else None
        crowd = [task for task, s in zip(tasks, screened, strict=True) if s.to_crowd] if screened else tasks
        if self.count_only:
            return {**self._count_new_tasks(crowd), "settled_by_model": len(tasks) - len(crowd)}
        docs = self._submit(crowd, sent_urls) if crowd else {}
        if crowd:
            CrowdDashboardLink.persist(context, self.hook.config.endpoint_url, (task.task_name for task in crowd))
        states = Counter(doc["state"] for doc in docs.values())
        self.log.info(
            "Submitted %d crowd tasks to %s: %s.",
            len(crowd),
            self.function_name,
            ", ".join(f"{count} {state}" for state, count in sorted(states.items())) or "none",
        )
        handle = self._handle(tasks, screened)
        if not self.wait_for_completion:
            if self.records_path is not None:
                return store_handle(handle, self.records_path, self.records_conn_id, context)
            return handle
        tracker = TaskTracker(task.task_name for task in crowd)
        tracker.record(docs)
        if self.deferrable and not tracker.done:
            # With records_path the names stay out of the trigger table: the trigger reads the stored handle.
            names: dict[str, Any] = {"task_names": tracker.task_names}
            if self.records_path is not None:
                stored = store_handle(handle, self.records_path, self.records_conn_id, context)
                names = {"tasks_uri": stored[TASKS_URI], "tasks_conn_id": self.records_conn_id}
            self.defer(
                trigger=ImageContainsTrigger(
                    **names,
                    function_name=self.function_name,
                    imagecontains_conn_id=self.imagecontains_conn_id,
                    hook_params=self.hook_params,
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    max_consecutive_poll_failures=self.max_consecutive_poll_failures,
                ),
                method_name="execute_complete",
                # The scores, not the whole handle: the rest is planned again on resume.
                kwargs={"model_scores": [s.score for s in screened]} if screened else None,
                timeout=self._wait_timeout,
            )
        deadline = time.monotonic() + self._wait_timeout.total_seconds()
        while not tracker.done:
            self.log.info("Crowd tasks: %s", tracker.progress_message())
            if time.monotonic() + self.poll_interval > deadline:
                raise AirflowTaskTimeout(
                    f"The crowd answers did not all arrive within wait_timeout={self._wait_timeout} "
                    f"({tracker.progress_message()}). The tasks stay on the service: running this task again "
                    "resumes the wait without paying twice."
                )
            time.sleep(self.poll_interval)
            tracker.poll(partial(self.hook.get_tasks, self.function_name), tracker.unfinished)
        return self._finish(build_records(handle["tasks"], tracker.to_event()), context)

    @property
    def _wait_timeout(self) -> timedelta:
        if isinstance(self.wait_timeout, timedelta):
            return self.wait_timeout
        return timedelta(seconds=self.wait_timeout)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, model_scores: list[float | None] | None = None
    ) -> Any:
        tasks = self._plan()
        screened = self._screen(tasks, model_scores) if model_scores is not None else None
        return self._finish(records_from_event(self._handle(tasks, screened), event), context)

    def _reserve_run_tasks(self, context: Context, count: int) -> None:
        """Hold ``count`` tasks against ``max_run_tasks`` for this DAG run, or fail with nothing submitted.

        The count goes to XCom before the sum is read, so of any instances that check at the same time the
        last to record sees all the others: together they never pass the limit (at worst, both refuse).
        The counts of a mapped task are read by explicit map index: without them, ``xcom_pull`` returns
        only the caller's own value on some releases, which would make the cap a per-instance one.
        """
        ti = context["ti"]
        ti.xcom_push(key=RUN_TASKS_XCOM_KEY, value=count)
        if ti.map_index is None or ti.map_index < 0:
            recorded = [ti.xcom_pull(task_ids=self.task_id, key=RUN_TASKS_XCOM_KEY)]
        else:
            recorded = ti.xcom_pull(
                task_ids=self.task_id, key=RUN_TASKS_XCOM_KEY, map_indexes=range(self._mapped_instances(ti))
            )
        if not isinstance(recorded, list):
            self._refuse_unenforceable_cap(f"xcom_pull returned {type(recorded).__name__}, not every instance's count")
        run_total = sum(value or 0 for value in recorded)
        if run_total > self.max_run_tasks:  # type: ignore[operator]
            ti.xcom_push(key=RUN_TASKS_XCOM_KEY, value=0)  # this instance submits nothing: free its share
            raise AirflowFailException(
                f"The instances of {self.task_id!r} in this DAG run plan {run_total} crowd tasks with this one "
                f"({count}), more than max_run_tasks={self.max_run_tasks}; nothing was submitted by this instance."
            )

    def _mapped_instances(self, ti: Any) -> int:
        """How many mapped instances this task has in the DAG run (the Task SDK's ``get_ti_count``)."""
        get_ti_count = getattr(ti, "get_ti_count", None)
        if get_ti_count is None:
            self._refuse_unenforceable_cap("this Airflow release cannot count the mapped instances of a task")
        return get_ti_count(dag_id=ti.dag_id, task_ids=[self.task_id], run_ids=[ti.run_id])

    def _refuse_unenforceable_cap(self, reason: str) -> NoReturn:
        raise AirflowFailException(
            f"max_run_tasks={self.max_run_tasks} cannot be enforced across the instances of {self.task_id!r}: "
            f"{reason}. Nothing was submitted; use max_tasks (one instance's cap) instead."
        )

    def _finish(self, records: list[dict[str, Any]], context: Context) -> Any:
        return finish_records(self, records, context)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the images asked about, one input dataset per folder (S3 and HTTP namespaces)."""
        from airflow_provider_imagecontains.lineage import images_lineage

        return images_lineage(task.url for task in self._plan())

    def _plan(self) -> list[ImageTask]:
        return plan_image_tasks(self.images, self.target_label, self.namespace or self.dag_id, self.function_name)

    def _handle(self, tasks: list[ImageTask], screened: list[Screened] | None = None) -> dict[str, Any]:
        entries: list[dict[str, Any]] = [task.to_handle() for task in tasks]
        for entry, s in zip(entries, screened or (), strict=False):
            if not s.to_crowd:
                entry["task_name"] = None
            entry["model_score"] = s.score
            entry["model_contains_target"] = s.verdict
        return {
            "function_name": self.function_name,
            "imagecontains_conn_id": self.imagecontains_conn_id,
            "tasks": entries,
        }

    @property
    def _prescreen_settings(self) -> PreScreen:
        if self.prescreen is None:
            raise RuntimeError("No pre-screen is set.")  # callers run only with one
        return self.prescreen

    def _calibration_pairs(self) -> float | None:
        """``calibration_pairs`` as a number (a template renders it as a string, "0" included)."""
        try:
            return _as_number(self._prescreen_settings.calibration_pairs)
        except ValueError:
            raise AirflowFailException(
                f"Invalid calibration_pairs {self._prescreen_settings.calibration_pairs!r}: expected a count. "
                "Nothing was fetched or submitted."
            ) from None

    def _load_scorer(self) -> Scorer:
        """The pre-screen model, with its thresholds checked; any failure fails the task before anything is paid."""
        thresholds = self._thresholds()
        try:
            scorer = load_scorer(self._prescreen_settings.scorer)
        except Exception as err:
            raise AirflowFailException(
                f"The pre-screen model {self._prescreen_settings.scorer!r} could not be loaded ({type(err).__name__}: {err}); "
                "nothing was fetched or submitted. Fix the import path or install what it needs (the built-in "
                "people scorer: pip install 'airflow-provider-imagecontains[vision]'), or set prescreen=None to "
                "send every image to the crowd."
            ) from err
        self._warn_about_thresholds(*thresholds)
        return scorer

    def _prescreen(self, tasks: list[ImageTask], scorer: Scorer) -> list[Screened]:
        """Score every image and decide which ones the model settles; a failure to score one image only sends
        it to the crowd."""
        items = [(task.url, task.label) for task in tasks]
        settings = self._prescreen_settings
        fetcher = ImageFetcher(timeout=settings.timeout, max_bytes=settings.max_bytes, s3_client=self._s3_client)
        hook = self.hook

        def fetch(url: str) -> bytes:
            # The crowd server's own images (--images-dir) answer signed-in people only: read them by presigned URL.
            return fetcher.fetch(hook.presign_image_url(url, expires_in=PRESCREEN_IMAGE_URL_SECONDS))

        started = time.monotonic()
        results = score_images(items, scorer, fetch, max_workers=settings.concurrency)
        unscored = [(task, result.reason) for task, result in zip(tasks, results, strict=True) if result.score is None]
        self.log.info(
            "Pre-screen scored %d of %d images in %.1fs.",
            len(tasks) - len(unscored),
            len(tasks),
            time.monotonic() - started,
        )
        if unscored:
            lines = [f"  - {task.url} (label {task.label!r}): {reason}" for task, reason in unscored[:MAX_LISTED]]
            if len(unscored) > MAX_LISTED:
                lines.append(f"  ... and {len(unscored) - MAX_LISTED} more")
            self.log.warning("%d images have no model score and go to the crowd:\n%s", len(unscored), "\n".join(lines))
        screened = self._screen(tasks, [result.score for result in results])
        self._log_screening(screened)
        return screened

    def _screen(self, tasks: list[ImageTask], scores: list[float | None]) -> list[Screened]:
        accept_above, reject_below = self._thresholds()
        return screen(
            [(task.url, task.label) for task in tasks],
            scores,
            accept_above=accept_above,
            reject_below=reject_below,
            audit_rate=self._prescreen_settings.audit_rate,
            nothing_detected_score=self._nothing_detected_score,
        )

    @cached_property
    def _nothing_detected_score(self) -> float | None:
        """The highest score the scorer gives an image in which it detects nothing, if it says (else None)."""
        try:
            scorer = load_scorer(self._prescreen_settings.scorer)
        except Exception:  # the scorer's own failure to load is reported where it is used
            return None
        value = getattr(scorer, "nothing_detected_score", None)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def _warn_about_thresholds(self, accept_above: float | None, reject_below: float | None) -> None:
        """Warn (task log) when thresholds no audit backs would let the model settle images."""
        if (accept_above is not None or reject_below is not None) and not self._calibration_pairs():
            self.log.warning(
                "Pre-screen thresholds accept_above=%s, reject_below=%s were set by hand, without calibration "
                "pairs: the model settles images on scores no audit has checked. Calibrate them from audited "
                "pairs (calibrate_thresholds, docs/prescreen.md) and pass calibration_pairs.",
                accept_above,
                reject_below,
            )
        floor = self._nothing_detected_score
        if reject_below is not None and floor is not None and reject_below <= floor:
            self.log.warning(
                "reject_below=%s is at or below %s, the highest score this scorer gives when it detects nothing: "
                "the model answers 'does not contain' for no image (not seeing a person is no proof there is none).",
                reject_below,
                floor,
            )

    def _thresholds(self) -> tuple[float | None, float | None]:
        """The thresholds as numbers (templates render them as strings), checked: bad ones fail the task without
        retries (a retry would meet the same values)."""
        try:
            settings = self._prescreen_settings
            accept_above, reject_below = (_as_number(value) for value in (settings.accept_above, settings.reject_below))
            validate_thresholds(accept_above, reject_below, settings.audit_rate)
        except ValueError as err:
            raise AirflowFailException(f"{err} Nothing was fetched or submitted.") from None
        return accept_above, reject_below

    def _log_screening(self, screened: list[Screened]) -> None:
        settled = [s for s in screened if not s.to_crowd]
        audited = sum(1 for s in screened if s.audited)
        contains = sum(1 for s in settled if s.verdict)
        avoided = f"{len(settled)} crowd tasks not bought"
        cost = self._prescreen_settings.crowd_task_cost
        if cost is not None:
            avoided += f" (about ${len(settled) * cost:,.2f} at ${cost} a task)"
        self.log.info(
            "Pre-screen: the model settled %d of %d images (%d contain the label, %d do not); %d go to the crowd "
            "(%d unsure or unscored, %d audits of model answers at audit_rate=%s); %s.",
            len(settled),
            len(screened),
            contains,
            len(settled) - contains,
            len(screened) - len(settled),
            len(screened) - len(settled) - audited,
            audited,
            self._prescreen_settings.audit_rate,
            avoided,
        )

    def _submit(self, tasks: list[ImageTask], sent_urls: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """PUT every task and return its document; PUT is idempotent, so existing tasks come back unpaid.

        :param sent_urls: ``{s3 URI: URL sent to the crowd}`` (see :meth:`_presign`).
        """
        inputs = {
            task.task_name: {"image": {"url": sent_urls.get(task.url, task.url)}, "target": {"label": task.label}}
            for task in tasks
        }
        by_name = {task.task_name: task for task in tasks}
        docs = self._put_or_reuse(inputs, by_name)
        failed = [name for name, doc in docs.items() if doc["state"] == "failed"]
        if failed and self.resubmit_failed:
            self.log.info("Deleting and resubmitting %d failed crowd tasks (resubmit_failed=True).", len(failed))
            for name in failed:
                self.hook.delete_task(self.function_name, name)
            docs.update(self._put_or_reuse({name: inputs[name] for name in failed}, by_name))
        elif failed:
            self.log.warning(
                "%d crowd tasks had already failed; they are kept as failed (set resubmit_failed=True to pay for "
                "another attempt).",
                len(failed),
            )
        return docs

    def _put_or_reuse(
        self, inputs: dict[str, dict[str, Any]], tasks: Mapping[str, ImageTask]
    ) -> dict[str, dict[str, Any]]:
        """PUT ``inputs`` in up to ``submit_rounds`` rounds and return every task document.

        A round submits again only the calls that failed transiently in the one before. A name
        conflict on an S3 image is the same image with an earlier presigned URL, so the existing
        task is fetched and reused instead.
        """
        docs: dict[str, dict[str, Any]] = {}
        reusable: list[str] = []
        pending = inputs
        for submit_round in range(1, self.submit_rounds + 1):
            results, errors = self._put_once(pending)
            docs.update(results)
            reusable += [
                name
                for name, error in errors.items()
                if isinstance(error, TaskNameConflictError) and self._is_presigned(inputs[name])
            ]
            transient = {name: error for name, error in errors.items() if is_transient(error)}
            permanent = {
                name: error for name, error in errors.items() if name not in transient and name not in reusable
            }
            if permanent:
                raise AirflowFailException(self._failure_message(permanent, tasks, len(inputs)))
            if not transient:
                break
            # Not one call of the round got a connection: the endpoint is down or wrong, waiting will not help.
            unreachable = not results and all(isinstance(e, EndpointUnreachableError) for e in errors.values())
            if submit_round == self.submit_rounds or unreachable:
                raise BulkTaskError(docs, transient)
            self.log.warning(
                "%d of %d crowd task calls failed after retries (first: %s: %s); submitting them again in %.0fs "
                "(round %d of %d).",
                len(transient),
                len(inputs),
                type(first := next(iter(transient.values()))).__name__,
                first.message,
                self.submit_round_delay,
                submit_round + 1,
                self.submit_rounds,
            )
            time.sleep(self.submit_round_delay)
            pending = {name: inputs[name] for name in transient}
        if reusable:
            docs.update(self.hook.get_tasks(self.function_name, reusable))
        return docs

    def _put_once(
        self, inputs: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, CrowdApiError]]:
        """One bulk PUT: the task documents of the calls that succeeded and the errors of those that failed."""
        try:
            return self.hook.put_tasks(self.function_name, inputs), {}
        except BulkTaskError as err:
            return err.results, err.errors

    @staticmethod
    def _failure_message(errors: dict[str, CrowdApiError], tasks: Mapping[str, ImageTask], total: int) -> str:
        lines = [
            f"  - {tasks[name].url} (label {tasks[name].label!r}, task {name}): {type(error).__name__}: {error.message}"
            for name, error in list(errors.items())[:MAX_LISTED]
        ]
        if len(errors) > MAX_LISTED:
            lines.append(f"  ... and {len(errors) - MAX_LISTED} more")
        return "\n".join([f"{len(errors)} of {total} crowd task(s) could not be submitted:", *lines])

    def _count_new_tasks(self, tasks: list[ImageTask]) -> dict[str, Any]:
        """Dry run: GET every task and count those a real run would create (and pay for)."""
        names = [task.task_name for task in tasks]
        try:
            docs = self.hook.get_tasks(self.function_name, names)
        except BulkTaskError as err:
            if not all(isinstance(error, TaskNotFoundError) for error in err.errors.values()):
                raise
            docs = err.results
        states = Counter(doc["state"] for doc in docs.values())
        new_tasks = len(names) - len(docs) + (states["failed"] if self.resubmit_failed else 0)
        summary = {
            "function_name": self.function_name,
            "imagecontains_conn_id": self.imagecontains_conn_id,
            "dry_run": True,
            "total_tasks": len(names),
            "new_tasks": new_tasks,
            "existing_tasks": dict(states),
        }
        self.log.info(
            "Dry run: %d of %d crowd tasks would be created; existing: %s.", new_tasks, len(names), dict(states)
        )
        return summary

    def _presign(self, tasks: list[ImageTask]) -> dict[str, str]:
        """``{s3 URI: URL sent to the crowd}`` of the ``s3://`` images; without any, no S3 client is made."""
        if not any(is_s3_uri(task.url) for task in tasks):
            return {}
        if self.s3_url_template is not None:
            return public_s3_urls(tasks, self.s3_url_template)
        try:
            return presign_s3_urls(tasks, self._s3_client(), self.presign_expires_in)
        except BotoCoreError as err:
            raise AirflowException(
                f"Presigning the s3:// images needs AWS credentials that can read them ({type(err).__name__}: "
                f"{err}). Set aws_conn_id (now aws_conn_id={self.aws_conn_id!r}) to an AWS connection, or give "
                "the machine running this task credentials through boto3's default chain (environment, "
                "profile, instance role). Nothing was submitted."
            ) from err

    @staticmethod
    def _is_presigned(task_input: dict[str, Any]) -> bool:
        return "X-Amz-Signature=" in task_input["image"]["url"]

    def _s3_client(self) -> S3Client:
        """An S3 client of the Amazon provider's ``S3Hook`` on ``aws_conn_id``: role assumption, ``verify``,
        ``config_kwargs`` and endpoint settings of the connection all apply; presigning uses SigV4."""
        try:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        except ImportError:
            raise AirflowOptionalProviderFeatureException(
                "s3:// images need the Amazon provider: pip install 'airflow-provider-imagecontains[amazon]'. "
                "Nothing was submitted."
            ) from None
        from botocore.config import Config

        hook = S3Hook(aws_conn_id=self.aws_conn_id)
        return hook.get_client_type(config=hook.config.merge(Config(signature_version="s3v4")))


def _as_number(value: Any) -> float | None:
    """A threshold given as a number, None, or a template's rendering of either."""
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "None", "null"):
            return None
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"Invalid threshold {value!r}: expected a number in [0, 1] or None.") from None
    return value
