"""Plugins: modules of the user's that the commands import first, so that what they
register (a reward transform's ``@pkpo.transforms.register``) exists in every process.

``PKPO_PLUGINS`` holds comma-separated module names (``mylab.transforms,other``). The
commands that read registries (``pkpo-train``, ``pkpo-toy``, ``pkpo-analyze`` and
``experiments/repro_sweep.py``) call :func:`load` before anything else, and a sweep's
runs inherit the variable, so a transform defined outside the package runs as a sweep arm
without a change to the package.
"""

from __future__ import annotations

import importlib
import os

ENV = "PKPO_PLUGINS"


class PluginError(ImportError):
    """A module named in ``PKPO_PLUGINS`` could not be imported."""


def load() -> list[str]:
    """Import every module named in ``PKPO_PLUGINS``; returns their names."""
    names = [name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise PluginError(f"{ENV}: cannot import {name!r}: {err}") from err
    return names
