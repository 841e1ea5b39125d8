"""The gateway as operators get it: a wheel built from a clean sdist, installed into a bare virtualenv with
only its declared dependencies; it carries its pages' assets and imports nothing of Airflow or the provider."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

GATEWAY_ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).with_name("uv")
IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
import imagecontains_gateway
names = [m.name for m in pkgutil.walk_packages(imagecontains_gateway.__path__, "imagecontains_gateway.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
"""


def run(*command: str | Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def build_and_install(source: Path, root: Path) -> dict[str, Any]:
    """Build ``source``'s sdist and its wheel from it into ``root``, install the wheel into a bare venv there:
    the wheel, the venv and an environment whose PATH starts with the venv's bin."""
    uv = UV if UV.exists() else shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build and install the wheel")
    run(uv, "build", "--quiet", "--out-dir", root / "dist", source)
    wheel = next((root / "dist").glob("*.whl"))
    venv = root / "venv"
    run(uv, "venv", "--quiet", venv, "--python", sys.executable)
    run(uv, "pip", "install", "--quiet", "--python", venv / "bin" / "python", wheel)
    env = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "HOME": str(root)}
    return {"wheel": wheel, "venv": venv, "env": env}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return build_and_install(GATEWAY_ROOT, tmp_path_factory.mktemp("gateway-packaging"))


@pytest.mark.slow
def test_wheel_holds_the_typed_package_its_pages_assets_and_the_cli(installed) -> None:
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
        [dist_info] = {name.split("/")[0] for name in names if ".dist-info/" in name}
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
        metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert "imagecontains_gateway/py.typed" in names
    assert {"imagecontains_gateway/static/worker.js", "imagecontains_gateway/templates/work.html"} <= names
    assert not {name for name in names if name.startswith(("tests/", "airflow_provider_imagecontains/"))}
    assert "imagecontains-server = imagecontains_gateway.__main__:main" in entry_points
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not [r for r in requires if r.startswith(("apache-airflow", "airflow-provider-imagecontains"))]


@pytest.mark.slow
def test_every_module_imports_without_airflow_and_the_cli_runs(installed) -> None:
    python = installed["venv"] / "bin" / "python"
    result = json.loads(run(python, "-c", IMPORT_EVERY_MODULE, env=installed["env"]).strip().splitlines()[-1])
    assert {"imagecontains_gateway.app", "imagecontains_gateway.testing"} <= set(result["modules"])
    assert not [
        name for name in result["loaded"] if name.split(".")[0] in ("airflow", "airflow_provider_imagecontains")
    ]
    assert "--throttle-rate" in run(installed["venv"] / "bin" / "imagecontains-server", "--help", env=installed["env"])


def imported_roots(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (absolute imports, at any depth of the file)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_gateway_file_imports_airflow_the_provider_or_the_repositorys_other_folders() -> None:
    # The package and its tests alike: the gateway is built, tested and deployed without the provider.
    outside = {"airflow", "airflow_provider_imagecontains", "demo", "example_dags", "bench", "tests"}
    found = {
        str(path.relative_to(GATEWAY_ROOT)): sorted(imported_roots(path) & outside)
        for path in GATEWAY_ROOT.rglob("*.py")
        if ".egg-info" not in str(path)
    }
    assert {path: names for path, names in found.items() if names} == {}
