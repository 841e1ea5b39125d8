"""The README's "Running the local server on its own" section, run as a new user would: its shell
blocks verbatim (only the port is a free one) with the README's minimal DAG saved where it says."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from imagecontains_gateway.store import TaskStore

README = Path(__file__).resolve().parent.parent / "README.md"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start : end if end != -1 else None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_the_standalone_section_gets_answers_for_the_minimal_dag(tmp_path) -> None:
    readme = README.read_text()
    setup, run_dag = re.findall(r"```bash\n(.*?)```", _section(readme, "### Running the local server on its own"), re.S)
    [dag_source] = re.findall(r"```python\n(.*?)```", _section(readme, "## A minimal DAG"), re.S)
    assert "Save [the minimal DAG](#a-minimal-dag) as `$AIRFLOW_HOME/dags/find_people.py`" in readme
    save_dag = f"cat > \"$AIRFLOW_HOME/dags/find_people.py\" <<'PYEOF'\n{dag_source}PYEOF\n"
    # Other runs may hold the README's port 8787 on a shared machine.
    script = (setup + save_dag + run_dag).replace("8787", str(_free_port()))
    # A fresh user's environment: none of the test session's Airflow settings.
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path)}
    log = tmp_path / "shell.log"
    with log.open("w") as out:
        shell = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            shell.wait(timeout=300)
        finally:
            # The README starts the server in the background: stop it with the shell's process group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGTERM)
    output = log.read_text()
    assert shell.returncode == 0, output[-4000:]
    assert "Connection success!" in output
    assert "[DAG TEST] end task task_id=people" in output and "Dag run in success state" in output
    store = TaskStore(str(tmp_path / "crowd.db"))
    try:
        tasks = store.tasks("image-contains")
    finally:
        store.close()
    assert sorted(t["input"]["image"]["url"] for t in tasks) == [
        "https://example.com/cam1/0001.jpg",
        "https://example.com/cam2/0002.jpg",
    ]
    assert {t["state"] for t in tasks} == {"completed"}
