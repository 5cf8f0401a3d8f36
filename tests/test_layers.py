"""Layers run one way.

1. The library (``pkpo/``) never imports the repository's scripts (``experiments``) or
   notebooks (``analysis``); those import ``pkpo``.
2. No two modules inside ``pkpo`` import each other, directly or round a loop: a cycle makes
   import order decide what exists, and one function-local import is enough to close one
   (``pkpo.train -> pkpo.models -> pkpo.pretrain -> pkpo.train`` did).
3. Inside ``pkpo`` every import goes from a layer of :data:`LAYERS` to the same layer or one
   below it: foundations at the bottom, the paper's analysis and the command lines at the top.

Imports are read with ``ast``, so an import inside a function counts as much as one at the
top, and so does ``importlib.import_module("experiments....")`` with a literal name. Inside
``pkpo`` the body of ``if TYPE_CHECKING:`` is left out: it never runs, so it closes no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PKPO = Path(__file__).resolve().parents[1] / "pkpo"
FORBIDDEN = ("experiments", "analysis")

Layers = tuple[tuple[str, tuple[str, ...]], ...]  # (name, module prefixes), bottom first

# The layers of pkpo, from the bottom up: a module may import its own layer and those below.
# An entry holds the module of that name and everything under it, except ``pkpo`` itself,
# which is ``pkpo/__init__.py`` alone. A new module goes into the row of what it is for.
LAYERS: Layers = (
    ("foundations", (
        "pkpo", "pkpo.arrays", "pkpo.estimators", "pkpo.transforms", "pkpo.schedules", "pkpo.arms",
        "pkpo.metrics", "pkpo.ppo", "pkpo.prompts", "pkpo.cache", "pkpo.checkpoint",
        "pkpo.distributed", "pkpo.logger", "pkpo.summary", "pkpo.plugins", "pkpo.rundir",
        "pkpo.placement",
    )),
    ("checkers", ("pkpo.verifiers", "pkpo.sandbox")),
    ("tasks", ("pkpo.tasks", "pkpo.scoring")),
    ("engines", ("pkpo.samplers", "pkpo.trainers", "pkpo.rollouts")),
    ("config", ("pkpo.config",)),  # checks batch sizes where trainers.update does
    ("models", ("pkpo.models",)),  # loading a model needs no task, sampler or scorer
    # the loop, and beside it the testbed's builder (it samples and scores the tasks; it
    # registers itself with pkpo.models, which does not import it)
    ("loop", ("pkpo.resume", "pkpo.train", "pkpo.pretrain")),
    ("applications", ("pkpo.analysis", "pkpo.toy", "pkpo.integrations")),
    ("commands", ("pkpo.commands",)),  # the console scripts: check the extra, then run
)  # fmt: skip


def _imports_by_name(call: ast.Call) -> bool:
    """``importlib.import_module(...)``, ``import_module(...)`` or ``__import__(...)``."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def _literal_import(node: ast.AST) -> str | None:
    """The module an ``import_module("...")``-style call names with a literal, else None."""
    if (
        isinstance(node, ast.Call)
        and _imports_by_name(node)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


def forbidden_imports(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, module) of every absolute import of a :data:`FORBIDDEN` top-level package."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif _literal_import(node):
            names = [_literal_import(node)]
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


# --- the import graph inside pkpo: module sources -> graph -> cycles and upward imports ---


def package_sources(root: Path = PKPO) -> dict[str, str]:
    """Dotted module name -> source of every module under ``root`` (a package's is its
    ``__init__.py``, named as the package)."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def _is_type_checking(node: ast.If) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    test = node.test
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


def _nodes_that_run(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node`` (function bodies included) but the body of
    ``if TYPE_CHECKING:``, whose imports serve the type checker alone."""
    for child in ast.iter_child_nodes(node):
        yield child
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _nodes_that_run(other)
        else:
            yield from _nodes_that_run(child)


def _imported_names(source: str, module: str, is_package: bool) -> Iterator[str]:
    """The absolute dotted names ``module`` imports; ``from a import b`` gives ``a.b``,
    which :func:`import_graph` cuts back to ``a`` when ``b`` is not a module."""
    package = module if is_package else module.rpartition(".")[0]
    for node in _nodes_that_run(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from .x import y: from the package, up one per extra dot
                parts = package.split(".")
                up = parts[: max(0, len(parts) - node.level + 1)]
                base = ".".join(up + ([base] if base else []))
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif _literal_import(node):
            yield _literal_import(node)


def import_graph(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """Module -> the modules of ``sources`` it imports. A name resolves to its longest prefix
    that is a module: ``from pkpo.analysis import tables`` imports the submodule
    ``pkpo.analysis.tables``, ``from pkpo.tasks import Task`` the package's ``__init__``.
    A module counts as a package when another module's name extends it."""
    packages = {name.rpartition(".")[0] for name in sources}
    graph: dict[str, set[str]] = {}
    for module, source in sources.items():
        graph[module] = set()
        for name in _imported_names(source, module, module in packages):
            parts = name.split(".")
            prefixes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
            target = next((prefix for prefix in prefixes if prefix in sources), None)
            if target is not None and target != module:  # outside pkpo, or itself
                graph[module].add(target)
    return graph


def _reachable(graph: Mapping[str, set[str]], start: str) -> set[str]:
    """Every module an import chain from ``start`` reaches (``start`` only round a cycle)."""
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, ())
    return seen


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Each set of modules that import each other round a loop (a strongly connected
    component), as its edges ``pkpo.a -> pkpo.b``: every one of them must go to break it."""
    reach = {module: _reachable(graph, module) for module in graph}
    cycles = {
        frozenset(other for other in reach[module] if module in reach[other])
        for module in graph
        if module in reach[module]
    }
    return sorted(
        sorted(f"{a} -> {b}" for a in cycle for b in graph[a] if b in cycle) for cycle in cycles
    )


def _covers(entry: str, module: str) -> bool:
    # ``pkpo`` covers its __init__ alone, lest it swallow every module yet to be placed
    return module == entry or (entry != "pkpo" and module.startswith(entry + "."))


def layers_of(module: str, layers: Layers = LAYERS) -> list[int]:
    """The index (0 = bottom) of each layer an entry of which covers ``module``."""
    return [i for i, (_, entries) in enumerate(layers) for e in entries if _covers(e, module)]


def misplaced(modules: list[str], layers: Layers = LAYERS) -> list[str]:
    """What is wrong with the placement of each module that is not in exactly one layer."""
    found = []
    for module in sorted(modules):
        placed = [layers[i][0] for i in layers_of(module, layers)]
        if not placed:
            found.append(f"{module} is in no layer: add it (or its package) to a row of LAYERS")
        elif len(placed) > 1:
            found.append(f"{module} is in {len(placed)} entries of LAYERS ({placed}): keep one")
    return found


def upward_imports(graph: Mapping[str, set[str]], layers: Layers = LAYERS) -> list[str]:
    """Each edge ``pkpo.a -> pkpo.b`` from a layer to a higher one, with the two layers.
    Modules without exactly one layer are :func:`misplaced`'s to report, not this one's."""
    height = {m: layers_of(m, layers) for m in {*graph, *(b for bs in graph.values() for b in bs)}}
    return sorted(
        f"{a} -> {b}  ({layers[height[a][0]][0]} imports {layers[height[b][0]][0]})"
        for a, targets in graph.items()
        for b in targets
        if len(height[a]) == len(height[b]) == 1 and height[a][0] < height[b][0]
    )


# --- the rules on the real tree ---


@pytest.fixture(scope="module")
def pkpo_graph() -> dict[str, set[str]]:
    graph = import_graph(package_sources())
    assert "pkpo.models" in graph["pkpo.train"]  # the tree was read, imports resolved
    assert "pkpo.analysis.tables" in graph["pkpo.analysis.claims"]
    return graph


def test_every_module_under_pkpo_is_in_exactly_one_layer(pkpo_graph: dict) -> None:
    problems = misplaced(list(pkpo_graph))
    header = "place each module in one row of LAYERS (tests/test_layers.py):\n"
    assert problems == [], header + "\n".join(problems)


def test_no_import_cycle_inside_pkpo(pkpo_graph: dict) -> None:
    cycles = import_cycles(pkpo_graph)
    header = "modules inside pkpo import each other round a loop (one block per loop):\n"
    assert cycles == [], header + "\n\n".join("\n".join(edges) for edges in cycles)


def test_every_import_inside_pkpo_runs_down_the_layers(pkpo_graph: dict) -> None:
    upward = upward_imports(pkpo_graph)
    header = "imports inside pkpo that run up the layers of LAYERS (tests/test_layers.py):\n"
    assert upward == [], header + "\n".join(upward)


# --- the checker on synthetic sources ---

# The cycle pkpo had: the loop loads the model, the model builds the testbed through pretrain,
# and pretrain reached back, from inside functions, for the model and for the loop's configs.
OLD_CYCLE = {
    "pkpo.train": "from pkpo.models import load_policy\n",
    "pkpo.models": "from pkpo import pretrain\n",
    "pkpo.pretrain": "def f():\n    from pkpo.train import CONF_DIR\n",
    "pkpo.config": "CONF_DIR = 'conf'\n",
}
OLD_CYCLE_EDGES = [
    "pkpo.models -> pkpo.pretrain",
    "pkpo.pretrain -> pkpo.models",
    "pkpo.pretrain -> pkpo.train",
    "pkpo.train -> pkpo.models",
]


@pytest.mark.parametrize(
    "back_to_models",
    [
        "def g():\n    from pkpo.models import ModelSpec\n",
        "def g():\n    from pkpo import models\n",
        "def g():\n    from . import models\n",
        "def g():\n    from .models import ModelSpec\n",
        "class C:\n    def g(self):\n        import pkpo.models\n",
        "import importlib\nm = importlib.import_module('pkpo.models')\n",
    ],
)
def test_the_cycle_checker_finds_the_old_train_models_pretrain_cycle(back_to_models: str) -> None:
    sources = {**OLD_CYCLE, "pkpo.pretrain": OLD_CYCLE["pkpo.pretrain"] + back_to_models}
    assert import_cycles(import_graph(sources)) == [OLD_CYCLE_EDGES]


def test_the_cycle_checker_finds_each_cycle_and_only_its_edges() -> None:
    sources = {
        "pkpo.a": "import pkpo.b\n",
        "pkpo.b": "from pkpo import a, c\n",  # c hangs off the a-b cycle
        "pkpo.c": "",
        "pkpo.tasks": "from pkpo.tasks import arc\n",  # a package and its submodule
        "pkpo.tasks.arc": "from . import Task\n",  # Task is no module: the __init__
    }
    assert import_cycles(import_graph(sources)) == [
        ["pkpo.a -> pkpo.b", "pkpo.b -> pkpo.a"],
        ["pkpo.tasks -> pkpo.tasks.arc", "pkpo.tasks.arc -> pkpo.tasks"],
    ]


@pytest.mark.parametrize(
    "back_to_train",
    [
        "from pkpo.config import CONF_DIR\n",  # the fix: the configs moved below both
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkpo.train import X\n",
        "import typing\nif typing.TYPE_CHECKING:\n    from pkpo import train\n",
    ],
)
def test_an_acyclic_graph_in_layer_order_yields_nothing(back_to_train: str) -> None:
    # today's layout: the loop loads models and registers the builder, which models never import
    sources = {
        **OLD_CYCLE,
        "pkpo.train": "from pkpo.models import load_policy\nfrom pkpo import pretrain\n",
        "pkpo.models": "",
        "pkpo.pretrain": "from pkpo import models\n" + back_to_train,
    }
    graph = import_graph(sources)
    assert "pkpo.train" not in graph["pkpo.pretrain"]
    assert import_cycles(graph) == []
    assert upward_imports(graph) == []
    assert misplaced(list(graph)) == []


def test_what_is_under_type_checking_else_still_counts() -> None:
    source = "if TYPE_CHECKING:\n    import pkpo.a\nelse:\n    import pkpo.b\n"
    assert import_graph({"pkpo.c": source, "pkpo.a": "", "pkpo.b": ""})["pkpo.c"] == {"pkpo.b"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from pkpo.analysis import tables\n", "pkpo.analysis.tables"),  # a submodule
        ("from pkpo.analysis.tables import claims_table\n", "pkpo.analysis.tables"),
        ("import pkpo.analysis.tables as t\n", "pkpo.analysis.tables"),
        ("def f():\n    from pkpo.analysis import ARMS\n", "pkpo.analysis"),  # the __init__
    ],
)
def test_the_layer_checker_finds_an_import_that_runs_up(source: str, expected: str) -> None:
    sources = {"pkpo.estimators": source, "pkpo.analysis": "", "pkpo.analysis.tables": ""}
    assert upward_imports(import_graph(sources)) == [
        f"pkpo.estimators -> {expected}  (foundations imports applications)"
    ]


def test_a_module_in_no_layer_or_in_two_is_reported() -> None:
    layers = (("low", ("pkpo", "pkpo.a")), ("high", ("pkpo.b", "pkpo.b.c")))
    modules = ["pkpo", "pkpo.a", "pkpo.a.x", "pkpo.b.c", "pkpo.new"]
    assert misplaced(modules, layers) == [
        "pkpo.b.c is in 2 entries of LAYERS (['high', 'high']): keep one",
        "pkpo.new is in no layer: add it (or its package) to a row of LAYERS",
    ]
    # an unplaced module is not also reported as an upward import
    assert upward_imports({"pkpo.a": {"pkpo.new"}, "pkpo.new": set()}, layers) == []
