"""What a notebook of the report starts from: its parameters and the runs it reads.

``pkpo-analyze`` writes the parameters to a JSON file and names it in
``$PKPO_ANALYSIS_PARAMS``; run by hand, a notebook falls back to its defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from pkpo import plugins

from .runs import run_inventory, runs_frame, scan_runs

PARAMS_ENV = "PKPO_ANALYSIS_PARAMS"
"""Environment variable naming the JSON file of parameters the notebooks read."""


def notebook_params(defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters of a notebook run: the JSON file named by ``$PKPO_ANALYSIS_PARAMS``
    (written by ``pkpo-analyze``), over ``defaults`` for interactive use. Imports the
    ``PKPO_PLUGINS`` modules first, so their transforms label their runs here too."""
    plugins.load()
    params = {
        "runs": ["runs"],
        "toy_dirs": None,
        "out": "report",
        "cache": None,
        "rolling_window": 20,
        "split": None,
        "fig3_k_evals": [1, 4, 16],
        "stale_after_s": 3600.0,
    }
    params.update(defaults or {})
    path = os.environ.get(PARAMS_ENV)
    if path:
        params.update(json.loads(Path(path).read_text(encoding="utf-8")))
    return params


def load_for_notebook(params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long runs frame, inventory): the CLI's cache when present, else read the runs."""
    cache = params.get("cache")
    if cache and Path(cache).is_file():
        cached = pd.read_pickle(cache)
        return cached["runs"], cached["inventory"]
    runs = scan_runs(params["runs"], stale_after_s=params["stale_after_s"])
    return runs_frame(runs), run_inventory(runs, params["split"])
