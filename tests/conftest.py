"""Shared test set-up: an isolated Airflow home for the whole session, before Airflow is imported."""

from __future__ import annotations

import os
import tempfile

# Tests must never touch a developer's real Airflow home or DAGs.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="imagecontains-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(_AIRFLOW_HOME, "dags")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
