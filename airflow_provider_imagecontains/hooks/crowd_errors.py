"""Reading the crowd API's answers: error answers mapped to the exceptions of ``exceptions``, task documents
checked, ``Retry-After`` parsed and connect failures named. Shared by the sync and async transports of
``base_crowd``; nothing here makes a request."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from urllib3.exceptions import NameResolutionError, NewConnectionError

from airflow_provider_imagecontains.exceptions import (
    AccessDeniedError,
    CrowdApiError,
    FunctionNotFoundError,
    InvalidTaskError,
    ServiceError,
    TaskInProgressError,
    TaskNameConflictError,
    TaskNotFoundError,
    ThrottledError,
)

TASK_STATES = frozenset({"processing", "completed", "failed"})


def error_for(
    status: int, body: bytes, method: str, function_name: str, task_name: str, *, max_attempts: int, conn_id: str
) -> CrowdApiError:
    """Map an error answer of the crowd API to the exception that tells the caller what to do.

    :param max_attempts: the attempts the call was given (the advice says how long the service kept failing).
    :param conn_id: the connection whose credentials an access error points to.
    """
    code, service_message = service_error(body)
    said = f"HTTP {status}" + (f" {code}" if code else "") + (f": {service_message}" if service_message else "")
    task = f"task {task_name!r} of function {function_name!r}"
    # The real service's codes are undocumented: trust the code when there is one, else known phrases.
    code_said = (code or "").lower()
    message_said = (service_message or "").lower()
    error_class: type[CrowdApiError]
    if status == 429:
        error_class = ThrottledError
        advice = (
            f"the service kept throttling for {max_attempts} attempt(s); lower max_concurrency "
            "(the operator's and sensor's hook_params) or retry later."
        )
    elif status >= 500:
        error_class = ServiceError
        advice = f"the service kept failing for {max_attempts} attempt(s); retry later (task names make this safe)."
    elif status in (401, 403):
        error_class = AccessDeniedError
        advice = (
            f"check the access key, secret, session token and region of connection {conn_id!r}, "
            "and that this machine's clock is right."
        )
    elif status == 404 and (
        "function" in code_said or (not code and "task" not in message_said and "function" in message_said)
    ):
        error_class = FunctionNotFoundError
        advice = (
            f"function {function_name!r} is unknown to the service; use e.g. 'image-contains' or 'image-contains-test'."
        )
    elif status == 404:
        error_class = TaskNotFoundError
        advice = "no such task: it was never created, was deleted, or expired 90 days after finishing."
    elif method == "DELETE" and (status == 409 or "progress" in code_said or "processing" in message_said):
        error_class = TaskInProgressError
        advice = "the task is still processing; delete it once it is completed or failed."
    elif method == "PUT" and (
        status == 409
        or any(word in code_said for word in ("alreadyexists", "conflict"))
        or any(phrase in message_said for phrase in ("already exists", "different input"))
    ):
        error_class = TaskNameConflictError
        advice = (
            "the name is already used with a different input; use another task name, or delete the finished task first."
        )
    elif status in (400, 413, 422):
        error_class = InvalidTaskError
        advice = "the service rejected the request as invalid; fix the input."
    else:
        error_class = ServiceError
        advice = "unexpected answer from the service; check endpoint_url."
    return error_class(f"{method} of {task} failed ({said}): {advice}", status_code=status, code=code)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay in seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def task_document_problem(document: Any, task_name: str) -> str | None:
    """Say what makes ``document`` not a task document for ``task_name``; None if it is one."""
    if not isinstance(document, dict):
        return "the body is not a JSON object"
    missing = [key for key in ("taskName", "input", "state") if key not in document]
    if missing:
        return f"the body lacks {', '.join(missing)}"
    if document["taskName"] != task_name:
        return f"the body is about task {document['taskName']!r}"
    if document["state"] not in TASK_STATES:
        return f"the state {document['state']!r} is not one of {sorted(TASK_STATES)}"
    if document["state"] == "completed" and not isinstance(document.get("result"), dict):
        return "a completed task has no result"
    if document["state"] == "failed" and not isinstance(document.get("problemDetails"), dict):
        return "a failed task has no problemDetails"
    return None


def service_error(body: bytes) -> tuple[str | None, str | None]:
    """The service's error ``code`` and ``message`` from an AWS-style JSON body, else an excerpt of the body."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        code = document.get("code") or document.get("Code") or document.get("__type")
        message = document.get("message") or document.get("Message")
        if isinstance(code, str) and "#" in code:
            code = code.rsplit("#", 1)[1]  # e.g. "com.amazon.crowd#ThrottlingException"
        if code is not None or message is not None:
            return (str(code) if code is not None else None), (str(message) if message is not None else None)
    excerpt = body_excerpt(body)
    return None, (f"non-JSON body {excerpt!r}" if excerpt else None)


def body_excerpt(body: bytes, limit: int = 120) -> str:
    return " ".join(body[: limit * 4].decode("utf-8", "replace")[:limit].split())


def connect_failure(err: Exception) -> str | None:
    """Why ``err`` kept a request from connecting at all ("connection refused", ...), or ``None`` when the
    connection was made and failed later (a dropped connection, a read timeout)."""
    # An aiohttp error exists only once the async path has imported aiohttp.
    loaded = sys.modules.get("aiohttp")
    if loaded is not None and isinstance(err, loaded.ClientSSLError):  # connected; the TLS handshake failed
        return None
    if loaded is not None and isinstance(err, loaded.ClientConnectorDNSError):
        return "host name not found"
    if loaded is not None and isinstance(err, loaded.ClientConnectorError):
        os_error: BaseException | None = err.os_error
    elif isinstance(err, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    elif isinstance(err, requests.ConnectionError) and isinstance(
        reason := getattr(err.args[0] if err.args else None, "reason", None), NewConnectionError
    ):
        if isinstance(reason, NameResolutionError):
            return "host name not found"
        os_error = reason.__cause__ or reason.__context__
    else:
        return None
    return "connection refused" if isinstance(os_error, ConnectionRefusedError) else "no connection could be made"
