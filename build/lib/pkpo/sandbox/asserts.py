"""The assert rewriting behind the sandbox's unforgeable verdict (see ``pkpo.sandbox``),
and the standard modules restored after the program ran."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Sequence

# Standard modules that the runner imports before the program runs and restores after it,
# so that patching them (``math.isclose = lambda *a: True``) cannot fake a test. Only pure
# computation modules: restoring ``sys`` or ``os`` would break the interpreter.
PREIMPORTABLE = frozenset(
    {
        "array",
        "bisect",
        "cmath",
        "collections",
        "copy",
        "datetime",
        "decimal",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "math",
        "operator",
        "random",
        "re",
        "statistics",
        "string",
        "typing",
    }
)
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([A-Za-z_]\w*)|import[ \t]+([^\n#;]+))", re.MULTILINE)


class _HardenAsserts(ast.NodeTransformer):
    """Rewrite ``assert X`` into ``__pkpo_assert__(X')`` where every operand that X compares,
    combines arithmetically or tests for truth is passed through ``__pkpo_v__`` (a check
    that it is built from standard types only). Statements other than asserts are kept."""

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        test = _CheckOperands().visit(node.test)
        call = ast.Call(ast.Name("__pkpo_assert__", ast.Load()), [test], [])
        return ast.copy_location(ast.Expr(call), node)


class _CheckOperands(ast.NodeTransformer):
    @staticmethod
    def _checked(node: ast.expr) -> ast.expr:
        return ast.copy_location(ast.Call(ast.Name("__pkpo_v__", ast.Load()), [node], []), node)

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        node.left = self._checked(node.left)
        node.comparators = [self._checked(item) for item in node.comparators]
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        node.left, node.right = self._checked(node.left), self._checked(node.right)
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        self.generic_visit(node)
        node.operand = self._checked(node.operand)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.expr:
        self.generic_visit(node)
        node.values = [self._checked(item) for item in node.values]
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.expr:
        self.generic_visit(node)
        node.test = self._checked(node.test)
        return node


@functools.lru_cache(maxsize=4096)
def harden_test(source: str) -> str:
    """The test with its asserts rewritten for the runner (see ``_HardenAsserts``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ValueError(f"test code does not parse ({error}): {source[:200]!r}") from error
    return ast.unparse(ast.fix_missing_locations(_HardenAsserts().visit(tree)))


def _imported_modules(source: str) -> set[str]:
    """Top-level module names of ``import``/``from`` lines (regex: works on broken code)."""
    names = set()
    for from_module, import_list in _IMPORT.findall(source):
        names.add(from_module)
        names.update(
            item.split()[0].split(".")[0] for item in import_list.split(",") if item.strip()
        )
    return names - {""}


def modules_to_preimport(program: str, tests: Sequence[str]) -> list[str]:
    names = _imported_modules(program).union(*map(_imported_modules, tests))
    return sorted(names & PREIMPORTABLE)
