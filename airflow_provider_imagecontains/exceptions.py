"""Errors raised by the crowd API client (hook) and by input validation.

Every error keeps the service's own ``code`` and ``message`` (when the service sent them) and
never carries credentials, request headers or signatures.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowFailException


class CrowdApiError(Exception):
    """Base class of every error the provider raises about the crowd API.

    :param message: what went wrong and what to do about it.
    :param status_code: the HTTP status of the response, when there was one.
    :param code: the service's error code (for example ``InsufficientFunds``), when it sent one.
    """

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code


class InvalidTaskError(CrowdApiError, ValueError):
    """The task name or input breaks the API's rules (found locally, or a 400 from the service)."""


# status_code is the crowd response's (None here: no request was made), not AirflowException's HTTP 500.
class InvalidImagesError(InvalidTaskError, AirflowFailException):  # type: ignore[misc]
    """The operator's images or labels break the API's rules; nothing was submitted.

    An :class:`AirflowFailException`, so Airflow fails the task without retrying: a retry would meet
    the same input.
    """


class TaskNameConflictError(CrowdApiError):
    """The task name is already used with a different input (400). Use another name, or delete the
    finished task first."""


class FunctionNotFoundError(CrowdApiError):
    """The function name is unknown to the service (404)."""


class TaskNotFoundError(CrowdApiError):
    """No task has this name for this function and account (404); it may have been deleted."""


class TaskInProgressError(CrowdApiError):
    """A processing task cannot be deleted; wait until it is completed or failed."""


class AccessDeniedError(CrowdApiError):
    """The service refused the credentials or signature (401/403)."""


class ThrottledError(CrowdApiError):
    """The service kept throttling (429) beyond the retry budget."""


class ServiceError(CrowdApiError):
    """The service failed (5xx, dropped connection) beyond the retry budget, or answered with a
    body that is not what the API documents."""


class EndpointUnreachableError(ServiceError):
    """No connection to the endpoint could be made beyond the retry budget (refused, unknown host, connect
    timeout): the request never reached the service. The message names the cause and the endpoint."""


class BulkTaskError(CrowdApiError):
    """Some calls of a bulk request failed; nothing is lost: the successes and the failures are both kept.

    :param results: ``{task_name: task document}`` of the calls that succeeded.
    :param errors: ``{task_name: CrowdApiError}`` of the calls that failed.
    """

    def __init__(self, results: dict[str, dict], errors: dict[str, CrowdApiError]) -> None:
        examples = "; ".join(f"{name!r}: {type(err).__name__}" for name, err in list(errors.items())[:3])
        first = next(iter(errors.values()), None)
        super().__init__(
            f"{len(errors)} of {len(results) + len(errors)} task calls failed ({examples}"
            f"{'; ...' if len(errors) > 3 else ''}). "
            + (f"First error: {first.message} " if first is not None else "")
            + "See .errors for each failure and .results for the successes."
        )
        self.results = results
        self.errors = errors
