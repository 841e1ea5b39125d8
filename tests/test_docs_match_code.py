"""The docs show the code as it is: the defaults in the parameter tables of README.md and docs/operators.md,
and docs/operators.md the snippets of example_dags/example_imagecontains.py."""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

import pytest

from airflow_provider_imagecontains.hooks.connection_form import CONN_FIELDS
from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor

ROOT = Path(__file__).resolve().parent.parent
CLASSES = {"ImageContainsOperator": ImageContainsOperator, "ImageContainsSensor": ImageContainsSensor}
# A row naming one parameter (optionally "(templated)") whose default is one literal in backticks.
ROW = re.compile(r"^\| `(?P<name>\w+)`(?: \(templated\))? \| `(?P<default>[^`]+)` \|")


def documented_defaults(path: Path) -> list[tuple[str, str, str]]:
    """(class name, parameter, documented default) of each table row under a class's heading or caption."""
    rows, current = [], None
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            named = [name for name in (*CLASSES, "ImageContainsTrigger") if name in line]
            if named and (line.startswith("#") or line.startswith(f"`{named[0]}`")):
                current = named[0]
            continue
        # Defaults read from Airflow's configuration ("[operators] default_deferrable") are not literals.
        if current in CLASSES and (match := ROW.match(line)) and not match["default"].startswith("["):
            rows.append((current, match["name"], match["default"]))
    return rows


def as_python(text: str) -> object:
    literals = {"None": None, "True": True, "False": False}
    if text in literals:
        return literals[text]
    try:
        return float(text)
    except ValueError:
        return text.strip('"')


@pytest.mark.parametrize("document", ["README.md", "docs/operators.md"])
def test_documented_defaults_are_the_codes(document: str) -> None:
    rows = documented_defaults(ROOT / document)
    assert len(rows) > 10
    for class_name, name, default in rows:
        parameter = inspect.signature(CLASSES[class_name].__init__).parameters.get(name)
        assert parameter is not None, f"{document}: {class_name} has no parameter {name!r}"
        actual = parameter.default
        expected = as_python(default)
        if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
            assert float(actual) == expected, f"{document}: {class_name}({name}) defaults to {actual!r}"
        else:
            assert actual == expected, f"{document}: {class_name}({name}) defaults to {actual!r}, not {default}"


def test_the_connection_form_says_what_endpoint_url_is_and_that_sts_never_uses_it() -> None:
    field = CONN_FIELDS["endpoint_url"]
    assert "gateway" in field["description"] and "Never used for STS" in field["description"]
    assert "default" not in field["schema"]  # the ended preview's address is no default to offer


def example_snippets(text: str) -> dict[str, str]:
    """``{name: code}`` of each outermost ``# [START name]`` ... ``# [END name]`` block, dedented, with the
    markers of any inner block left out (as Sphinx's exampleinclude shows them)."""
    snippets = {}
    for match in re.finditer(r"# \[START (\w+)\]\n(.*?)\n[ ]*# \[END \1\]", text, re.S):
        lines = [line for line in match[2].splitlines() if not re.match(r"\s*# \[(START|END) ", line)]
        snippets[match[1]] = textwrap.dedent("\n".join(lines)).strip("\n")
    return snippets


def test_the_operator_docs_show_every_snippet_of_the_example_dag_as_it_is() -> None:
    snippets = example_snippets((ROOT / "example_dags" / "example_imagecontains.py").read_text())
    docs = (ROOT / "docs" / "operators.md").read_text()
    assert set(snippets) == {
        "howto_operator_imagecontains",
        "howto_sensor_imagecontains_deferrable",
        "howto_operator_imagecontains_dry_run",
        "howto_operator_imagecontains_mapped",  # with max_run_tasks inside
        "howto_operator_imagecontains_records_path",
        "howto_operator_imagecontains_prescreen",
    }
    for name, code in snippets.items():
        assert f"<!-- {name} -->\n```python\n{code}\n```" in docs, f"docs/operators.md does not show {name} as it is"
