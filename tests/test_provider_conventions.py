"""apache/airflow's own checks of provider operators, applied to ours: the ``deferrable`` default
(``check_deferrable_default``) and template fields that are constructor arguments of the same name
(``validate_operators_init``)."""

from __future__ import annotations

import ast
import inspect
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from airflow.sdk import DAG

from airflow_provider_imagecontains.operators.imagecontains import ImageContainsOperator
from airflow_provider_imagecontains.sensors.imagecontains import ImageContainsSensor

OPERATORS = [ImageContainsOperator, ImageContainsSensor]
REQUIRED = {ImageContainsOperator: {"images": []}, ImageContainsSensor: {"submission": {}}}


def _init(cls: type) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    (class_def,) = tree.body
    assert isinstance(class_def, ast.ClassDef)
    return next(node for node in class_def.body if isinstance(node, ast.FunctionDef) and node.name == "__init__")


def _defaults(init: ast.FunctionDef) -> dict[str, ast.expr | None]:
    args = init.args
    positional = args.posonlyargs + args.args
    defaults: dict[str, ast.expr | None] = dict.fromkeys(arg.arg for arg in positional)
    with_defaults = [arg.arg for arg in positional[len(positional) - len(args.defaults) :]]
    defaults.update(zip(with_defaults, args.defaults, strict=True))
    defaults.update({arg.arg: default for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)})
    return defaults


@pytest.mark.parametrize("cls", OPERATORS, ids=lambda cls: cls.__name__)
def test_deferrable_defaults_to_the_deployments_default_deferrable_falling_back_to_false(cls) -> None:
    default = _defaults(_init(cls))["deferrable"]
    assert default is not None
    assert ast.unparse(default) == "conf.getboolean('operators', 'default_deferrable', fallback=False)"
    # This test session sets no [operators] default_deferrable: nothing defers without a triggerer asked for.
    with DAG("conventions", schedule=None, start_date=datetime(2026, 1, 1)):
        built = cls(task_id="t", **REQUIRED[cls])
    assert built.deferrable is False


@pytest.mark.parametrize("cls", OPERATORS, ids=lambda cls: cls.__name__)
def test_each_template_field_is_a_constructor_argument_assigned_to_the_attribute_of_its_name(cls) -> None:
    init = _init(cls)
    parameters = _defaults(init)
    assigned = {
        node.targets[0].attr: node.value.id
        for node in ast.walk(init)
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Attribute)
        and isinstance(node.targets[0].value, ast.Name)
        and node.targets[0].value.id == "self"
        and isinstance(node.value, ast.Name)
    }
    for field in cls.template_fields:
        assert field in parameters, f"template field {field!r} is not an argument of {cls.__name__}"
        assert assigned.get(field) == field, f"{cls.__name__}.{field} is not set from the argument {field!r}"


PACKAGE = Path(__file__).resolve().parent.parent / "airflow_provider_imagecontains"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }


def test_the_operator_shares_result_helpers_through_their_own_module_not_the_sensors() -> None:
    assert "airflow_provider_imagecontains.sensors.imagecontains" not in _imported_modules(
        PACKAGE / "operators" / "imagecontains.py"
    )
    assert "airflow_provider_imagecontains.results" in _imported_modules(PACKAGE / "operators" / "imagecontains.py")
    assert "airflow_provider_imagecontains.results" in _imported_modules(PACKAGE / "sensors" / "imagecontains.py")


def test_one_max_listed_in_the_provider() -> None:
    defined = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MAX_LISTED" for t in node.targets)
    ]
    assert defined == ["results.py"]
