"""Code extraction from completions and unit-test construction for MBPP and HumanEval.

Tests are Python sources run by ``pkpo.sandbox.Sandbox`` after the program, one per
sandboxed child, so the fraction of passing tests is a continuous reward.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"", "python", "py", "python3"}
_CODE_START = re.compile(r"^(?:def |class |import |from |@|async def )", re.MULTILINE)


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _defines(source: str, names: Iterable[str]) -> bool:
    return any(
        re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(n)}\s*\(", source, re.M) for n in names
    )


def _raw_code(text: str) -> str:
    """Code in unfenced text: from the first line that starts a definition or import,
    dropping trailing lines (prose) until the rest parses; else the whole text if it is
    code or an indented function body."""
    start = _CODE_START.search(text)
    if start is None:  # a statement list, or an indented function body (HumanEval style)
        body = text.strip("\n")
        return body if _parses(body) or _parses("def _():\n" + body) else ""
    lines = text[start.start() :].rstrip().splitlines()
    while lines:
        candidate = "\n".join(lines)
        if _parses(candidate):
            return candidate
        lines.pop()
    return ""


def extract_code(completion: str, function_names: Iterable[str] = ()) -> str:
    """The program in a completion: the fenced Python block defining one of
    ``function_names`` (else the longest Python block; an unclosed fence runs to the
    end), or, without fences, the code found in the raw text. Empty string if none."""
    names = list(function_names)
    blocks = [body for tag, body in _FENCE.findall(completion) if tag.lower() in _PYTHON_TAGS]
    if not blocks:
        return _raw_code(completion)
    defining = [block for block in blocks if _defines(block, names)]
    return (defining[0] if defining else max(blocks, key=len)).strip("\n")


def called_functions(tests: Iterable[str]) -> list[str]:
    """Names of the functions that test asserts call (e.g. ``assert f(1) == 2`` gives f)."""
    names: list[str] = []
    for test in tests:
        for node in ast.walk(ast.parse(test)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id not in names:
                    names.append(node.func.id)
    return names


def mbpp_tests(test_list: list[str], setup_code: str = "") -> list[str]:
    """One test source per MBPP assert, each preceded by the task's ``test_setup_code``."""
    setup = setup_code.replace("\r\n", "\n").strip()
    return [f"{setup}\n{test}" if setup else test for test in test_list]


def _has_assert(node: ast.AST) -> bool:
    return any(isinstance(item, ast.Assert) for item in ast.walk(node))


def _trivial(node: ast.stmt) -> bool:
    """``assert True`` (HumanEval pads some checks with it): always passes, no signal."""
    return isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant) and node.test.value


def humaneval_tests(test_source: str, entry_point: str) -> list[str]:
    """Split HumanEval's ``check(candidate)`` into one test per top-level assert.

    Each test keeps the module prelude (``METADATA``, helpers) and every non-assert
    statement of ``check`` that precedes its assert (imports, set-up, computed inputs),
    so it runs exactly as in the original function; a loop that asserts inside is one
    test. ``assert True`` padding is dropped. The test ends with ``check(entry_point)``.
    """
    module = ast.parse(test_source)
    prelude = [node for node in module.body if not _is_check(node)]
    checks = [node for node in module.body if _is_check(node)]
    if len(checks) != 1:
        raise ValueError(
            f"expected one `def check(candidate)` in the HumanEval test of {entry_point}"
        )
    check = checks[0]
    tests, setup = [], []
    for statement in check.body:
        if not _has_assert(statement):
            setup.append(statement)
        elif not _trivial(statement):
            body = [*setup, statement]
            function = ast.FunctionDef(
                name="check", args=check.args, body=body, decorator_list=[], returns=None
            )
            call = ast.parse(f"check({entry_point})").body
            tree = ast.Module(body=[*prelude, function, *call], type_ignores=[])
            tests.append(ast.unparse(ast.fix_missing_locations(tree)))
    return tests


def _is_check(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef) and node.name == "check"


def humaneval_program(prompt: str, code: str, entry_point: str) -> str:
    """The program to test: the prompt (its imports, helper functions such as
    HumanEval/32's ``poly`` that the tests also call, and the documented stub) followed by
    the model's code, whose definition of the entry point replaces the stub. Code that
    does not define the entry point is taken as the stub's body and appended directly."""
    if not code.strip():
        return ""
    if _defines(code, [entry_point]):
        return f"{prompt.rstrip()}\n\n\n{code}"
    return prompt + code
