"""Layers run one way: the library (``pkpo/``) never imports the repository's scripts
(``experiments``) or notebooks (``analysis``); those import ``pkpo``.

Imports are read with ``ast``, so an import inside a function counts as much as one at the
top, and so does ``importlib.import_module("experiments....")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKPO = Path(__file__).resolve().parents[1] / "pkpo"
FORBIDDEN = ("experiments", "analysis")


def _imports_by_name(call: ast.Call) -> bool:
    """``importlib.import_module(...)``, ``import_module(...)`` or ``__import__(...)``."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def forbidden_imports(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, module) of every absolute import of a :data:`FORBIDDEN` top-level package."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif (
            isinstance(node, ast.Call)
            and _imports_by_name(node)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue  # relative imports stay inside pkpo
        found += [(node.lineno, name) for name in names if name.split(".")[0] in FORBIDDEN]
    return found


def test_no_module_under_pkpo_imports_experiments_or_analysis() -> None:
    modules = sorted(PKPO.rglob("*.py"))
    assert PKPO / "analysis" / "cli.py" in modules and len(modules) > 20  # the tree was read
    offenders = [
        f"{path.relative_to(PKPO.parent)}:{line}: imports {name}"
        for path in modules
        for line, name in forbidden_imports(path.read_text(encoding="utf-8"), str(path))
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import experiments.toy\n", [(1, "experiments.toy")]),
        ("import os, analysis as nb\n", [(1, "analysis")]),
        ("from analysis import NOTEBOOKS\n", [(1, "analysis")]),
        ("def f():\n    from experiments.toy import figures\n", [(2, "experiments.toy")]),
        (
            "import importlib\nimportlib.import_module('experiments.repro_sweep')\n",
            [(2, "experiments.repro_sweep")],
        ),
        ("m = __import__('analysis')\n", [(1, "analysis")]),
    ],
)
def test_the_checker_finds_each_kind_of_import(source: str, expected: list) -> None:
    assert forbidden_imports(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "from pkpo import analysis\n",
        "import pkpo.analysis.cli\n",
        "from . import analysis\n",
        "from .analysis import runs\n",
        "import analysis_tools\n",
        "import experimentsx\n",
        "importlib.import_module(name)\n",
    ],
)
def test_the_checker_lets_pkpo_imports_and_lookalikes_pass(source: str) -> None:
    assert forbidden_imports(source) == []
