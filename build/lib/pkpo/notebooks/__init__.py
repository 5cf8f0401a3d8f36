"""Notebooks that regenerate the paper's tables and figures from run logs.

Each notebook is a Jupytext percent-format ``.py`` file (the source of truth) paired with
an ``.ipynb``; ``pkpo-analyze`` executes them headless in the order of :data:`NOTEBOOKS`,
with parameters from ``$PKPO_ANALYSIS_PARAMS`` (:func:`pkpo.analysis.notebook_params`).
``paper/tables.csv`` holds the paper's numbers. Installed, this folder is the package
``pkpo.notebooks``.
"""

NOTEBOOKS = ("tables", "toy_figures", "rl_figures")
"""Tables 1-8; Figures 1, 2, 4, 5 (toy experiment); Figures 3, 6, 7, 8 (RL runs)."""
