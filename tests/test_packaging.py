"""The package as users get it: built from a clean sdist, installed into a bare virtualenv with only
its declared dependencies, and seen by Airflow as a provider with its hook and connection type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from airflow_provider_imagecontains import __version__, get_provider_info

REPO_ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).with_name("uv")
MODULES = [
    "airflow_provider_imagecontains.hooks.imagecontains",
    "airflow_provider_imagecontains.operators.imagecontains",
    "airflow_provider_imagecontains.sensors.imagecontains",
    "airflow_provider_imagecontains.triggers.imagecontains",
    "airflow_provider_imagecontains.server.testing",
]


def run(*command: str | Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build sdist + wheel (the wheel from the sdist), install the wheel into a bare venv."""
    root = tmp_path_factory.mktemp("packaging")
    run(UV, "build", "--quiet", "--out-dir", root / "dist", REPO_ROOT)
    wheel = next((root / "dist").glob("*.whl"))
    venv = root / "venv"
    run(UV, "venv", "--quiet", venv, "--python", sys.executable)
    run(UV, "pip", "install", "--quiet", "--python", venv / "bin" / "python", wheel)
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(root),
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    return {"wheel": wheel, "venv": venv, "env": env}


@pytest.mark.slow
def test_wheel_holds_the_package_typed_with_its_server_assets(installed):
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(f"airflow_provider_imagecontains-{__version__}.dist-info/entry_points.txt").decode()
    assert "airflow_provider_imagecontains/py.typed" in names
    assert {f"{module.replace('.', '/')}.py" for module in MODULES} <= names
    assert not {name for name in names if name.startswith(("tests/", "demo/", "example_dags/", "bench/"))}
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = airflow_provider_imagecontains:get_provider_info" in entry_points
    assert "imagecontains-server = airflow_provider_imagecontains.server.__main__:main" in entry_points


@pytest.mark.slow
def test_every_module_imports_with_only_the_declared_dependencies(installed):
    python = installed["venv"] / "bin" / "python"
    run(python, "-c", "; ".join(f"import {module}" for module in MODULES), env=installed["env"])
    assert "usage" in run(installed["venv"] / "bin" / "imagecontains-server", "--help", env=installed["env"]).lower()


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
