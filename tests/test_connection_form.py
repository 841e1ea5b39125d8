"""The imagecontains connection form as Airflow's UI gets it (``GET /ui/connections/hook_meta``).

Airflow 3.0 and 3.1 build it from the hook's ``get_ui_field_behaviour`` / ``get_connection_form_widgets``;
3.2 and later from ``ui-field-behaviour`` / ``conn-fields`` in provider info. The same form must come out
of both: run this file on 3.3 (``make test``) and on 3.1 (``make venv VENV=.venv-3.1 AIRFLOW_VERSION=3.1.8``,
then ``.venv-3.1/bin/pytest tests/test_connection_form.py``)."""

from __future__ import annotations

from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

EXTRA_FIELDS = ["region_name", "endpoint_url", "account_id", "aws_session_token", "role_arn", "profile_name"]


def _form() -> dict:
    HookMetaService.hook_meta_data.cache_clear()
    [form] = [h for h in HookMetaService.hook_meta_data() if h.connection_type == "imagecontains"]
    return form.model_dump()


def test_the_form_relabels_hides_and_adds_the_fields_on_this_airflow_version() -> None:
    form = _form()
    standard = form["standard_fields"]
    assert standard["login"]["title"] == "AWS Access Key ID"
    assert standard["password"]["title"] == "AWS Secret Access Key"
    assert standard["host"]["hidden"] and standard["port"]["hidden"] and standard["url_schema"]["hidden"]

    extra = form["extra_fields"]
    assert sorted(extra) == sorted(EXTRA_FIELDS)
    assert extra["region_name"]["value"] == "us-east-1"
    assert extra["endpoint_url"]["schema"]["title"] == "Endpoint URL"
    assert extra["aws_session_token"]["schema"]["format"] == "password"  # masked in the form
    assert "null" in extra["account_id"]["schema"]["type"]  # every extra field is optional
