"""The package as users get it: built from a clean sdist, installed into a bare virtualenv with only
its declared dependencies, and seen by Airflow as a provider with its hook and connection type. The gateway
is a distribution of its own (gateway/tests/test_gateway_packaging.py): nothing of it is in this wheel."""

from __future__ import annotations

import ast
import json
import sys
import zipfile
from pathlib import Path

import pytest
from test_gateway_packaging import build_and_install, run

from airflow_provider_imagecontains import __version__, get_provider_info

REPO_ROOT = Path(__file__).resolve().parent.parent
# What workers and the triggerer import.
PROVIDER_MODULES = [
    "airflow_provider_imagecontains.hooks.imagecontains",
    "airflow_provider_imagecontains.operators.imagecontains",
    "airflow_provider_imagecontains.sensors.imagecontains",
    "airflow_provider_imagecontains.triggers.imagecontains",
]
# The gateway and what it brings along.
GATEWAY_DISTRIBUTIONS = ["imagecontains-gateway", "fastapi", "uvicorn", "jinja2", "python-multipart"]
SERVER_STACK = {"fastapi", "starlette", "uvicorn", "jinja2", "multipart", "python_multipart", "httptools", "uvloop"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The provider's wheel (built from its sdist) in a bare venv, with an Airflow home of its own."""
    root = tmp_path_factory.mktemp("packaging")
    installed = build_and_install(REPO_ROOT, root)
    installed["env"].update(AIRFLOW_HOME=str(root / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    return installed


@pytest.mark.slow
def test_wheel_holds_the_typed_provider_and_nothing_of_the_gateway(installed):
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(f"airflow_provider_imagecontains-{__version__}.dist-info/entry_points.txt").decode()
    assert "airflow_provider_imagecontains/py.typed" in names
    assert {f"{module.replace('.', '/')}.py" for module in PROVIDER_MODULES} <= names
    assert not {name for name in names if name.startswith(("tests/", "demo/", "example_dags/", "bench/", "gateway/"))}
    assert not {name for name in names if "imagecontains_gateway" in name or "/server/" in name}
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = airflow_provider_imagecontains:get_provider_info" in entry_points
    assert "imagecontains-server" not in entry_points


@pytest.mark.slow
def test_every_module_imports_with_only_the_declared_dependencies(installed):
    python = installed["venv"] / "bin" / "python"
    run(python, "-c", "; ".join(f"import {module}" for module in PROVIDER_MODULES), env=installed["env"])


@pytest.mark.slow
def test_airflow_lists_the_provider_its_hook_and_connection_type(installed):
    airflow = installed["venv"] / "bin" / "airflow"
    providers = json.loads(run(airflow, "providers", "list", "--output", "json", env=installed["env"]))
    ours = [p for p in providers if p["package_name"] == "airflow-provider-imagecontains"]
    assert ours and ours[0]["version"] == __version__

    hooks = json.loads(run(airflow, "providers", "hooks", "--output", "json", env=installed["env"]))
    [hook] = [h for h in hooks if h["connection_type"] == "imagecontains"]
    expected = get_provider_info()["connection-types"][0]["hook-class-name"]
    assert hook["class"] == expected
    assert hook["package_name"] == "airflow-provider-imagecontains"


def test_no_provider_module_imports_the_gateway() -> None:
    # The provider reaches the gateway over HTTP only; its tests may start one (the gateway is their dev dependency).
    package = REPO_ROOT / "airflow_provider_imagecontains"
    found = [
        str(path.relative_to(REPO_ROOT))
        for path in package.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "imagecontains_gateway")
        or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "imagecontains_gateway" for a in node.names))
    ]
    assert found == []


def test_importing_the_provider_imports_none_of_the_servers_stack() -> None:
    # Airflow's own base classes load some of the same libraries (jinja2 for templates): only what ours add counts.
    script = f"""
import json, sys
from airflow.providers.common.compat.sdk import BaseHook, BaseOperator, BaseSensorOperator
from airflow.triggers.base import BaseTrigger
before = set(sys.modules)
{"; ".join(f"import {module}" for module in PROVIDER_MODULES)}
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    added = json.loads(run(sys.executable, "-c", script).strip().splitlines()[-1])
    assert "airflow_provider_imagecontains.operators.imagecontains" in added
    assert [name for name in added if name.startswith("imagecontains_gateway")] == []
    assert [name for name in added if name.split(".")[0] in SERVER_STACK] == []


@pytest.mark.slow
def test_the_provider_requires_nothing_of_the_gateway_and_publishes_no_dev_extra(installed) -> None:
    dist_info = f"airflow_provider_imagecontains-{__version__}.dist-info"
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        metadata = wheel.read(f"{dist_info}/METADATA").decode()
        names = set(wheel.namelist())
    fields = [line.split(":", 1) for line in metadata.splitlines() if ":" in line and not line.startswith(" ")]
    requires = [value.strip() for key, value in fields if key == "Requires-Dist"]
    assert "Provides-Extra: server" not in metadata
    for name in GATEWAY_DISTRIBUTIONS:
        assert not [r for r in requires if r.startswith(name)], f"the provider requires {name}"
    # Development tools are a dependency group, not an extra that users could install.
    assert "dev" not in [value.strip() for key, value in fields if key == "Provides-Extra"]
    # What the code imports directly is declared.
    runtime = [r for r in requires if "extra ==" not in r]
    assert {r.split(">")[0].split("=")[0] for r in runtime} >= {"requests", "urllib3", "aiohttp", "boto3"}
    assert {f"{dist_info}/licenses/LICENSE", f"{dist_info}/licenses/NOTICE"} <= names
    assert [value for key, value in fields if key == "License-File"] and any(key == "Project-URL" for key, _ in fields)


BARE_RUN = """
import asyncio, json, sys
from datetime import datetime

from airflow.providers.common.compat.sdk import TaskDeferred
from airflow.sdk import DAG

from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor
from airflow_provider_imagecontains.triggers.imagecontains import ImageContainsTrigger

images = [f"https://img.example.com/cam/{i}.jpg" for i in range(5)]
with DAG("bare_install", schedule=None, start_date=datetime(2026, 1, 1)):
    submit = ImageContainsOperator(task_id="submit", images=images, target_label="person", function_name="image-contains-test")
handle = submit.execute({})
with DAG("bare_install", schedule=None, start_date=datetime(2026, 1, 1)):
    wait = ImageContainsSensor(task_id="wait", submission=handle, poke_interval=0.2)


async def first_event(trigger):
    async for event in trigger.run():
        return event.payload


try:
    records = wait.execute({})  # every answer already in: no deferral
except TaskDeferred as deferred:
    records = wait.execute_complete({}, asyncio.run(first_event(deferred.trigger)))
# The trigger on its own as well, as the triggerer runs it.
trigger = ImageContainsTrigger(
    task_names=[t["task_name"] for t in handle["tasks"]],
    function_name="image-contains-test",
    imagecontains_conn_id="imagecontains_default",
    poll_interval=0.2,
)
event = asyncio.run(first_event(trigger))
loaded = sorted(m for m in sys.modules if m.startswith("imagecontains_gateway"))
print(json.dumps({"records": records, "event": event, "server_modules": loaded}))
"""


@pytest.mark.slow
def test_the_bare_install_runs_operator_sensor_and_trigger_against_a_server_elsewhere(installed, crowd_server):
    # The server runs here (the dev environment); the wheel's environment only holds its client side.
    server = crowd_server(test_function_seconds=3.0)
    env = {**installed["env"], **server.airflow_connection_env()}
    output = run(installed["venv"] / "bin" / "python", "-c", BARE_RUN, env=env)
    result = json.loads(output.strip().splitlines()[-1])
    assert result["server_modules"] == []
    assert [(r["url"], r["state"]) for r in result["records"]] == [
        (f"https://img.example.com/cam/{i}.jpg", "completed") for i in range(5)
    ]
    assert result["event"]["status"] == "success" and len(result["event"]["outcomes"]) == 5
    assert len(server.tasks(function_name="image-contains-test")) == 5


def test_the_readmes_extras_table_names_every_extra_a_machine_installs() -> None:
    import tomllib

    root = Path(__file__).resolve().parent.parent
    extras = set(tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]) - {"dev"}
    readme = (root / "README.md").read_text()
    table = readme[readme.index("| machine | install |") : readme.index("On an Airflow machine:")]
    assert {extra for extra in extras if f"[{extra}]" not in table} == set()
    assert "PeopleScorer" in table, "workers pre-screening with the built-in scorer need [vision]"
