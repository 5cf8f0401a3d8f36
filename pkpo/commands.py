"""The console commands (``pkpo-train``, ``pkpo-pretrain``, ``pkpo-analyze``, ``pkpo-toy``).

``pip install pkpo`` brings NumPy alone, so each command first checks that the extra it
runs on is installed, and says which to install in one line if not (rather than a
traceback from its first import), then runs the command's own ``main``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable


def _needs(command: str, extra: str, modules: tuple[str, ...]) -> None:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"{command}: error: needs {', '.join(missing)}, which `pip install pkpo` leaves "
            f"out; install the extra: pip install 'pkpo[{extra}]'",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(2)


_LOOP = ("torch", "hydra", "transformers", "peft", "datasets", "tqdm")


def train() -> None:
    _needs("pkpo-train", "train", _LOOP)
    _run(importlib.import_module("pkpo.train").main)


def pretrain() -> None:
    _needs("pkpo-pretrain", "train", _LOOP)
    _run(importlib.import_module("pkpo.pretrain").main)


def analyze() -> None:
    _needs(
        "pkpo-analyze",
        "analysis",
        ("pandas", "scipy", "statsmodels", "matplotlib", "passk_inference"),
    )
    _run(importlib.import_module("pkpo.analysis.cli").main)


def toy() -> None:
    _needs("pkpo-toy", "toy", ("torch", "hydra", "pandas", "scipy", "matplotlib"))
    _run(importlib.import_module("pkpo.toy.__main__").main)


def _run(main: Callable[[], object]) -> None:
    code = main()
    sys.exit(code if isinstance(code, int) else 0)
