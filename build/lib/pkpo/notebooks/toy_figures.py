# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Figures 1, 2, 4 and 5: the one-dimensional toy problem (Section 5.1), and Figure 4+
#
# Redrawn, with the toy experiment's own plotting code (`pkpo/toy/figures.py`), from the
# CSVs that `pkpo-toy` writes (a folder is a toy folder when it holds `fig1_maxg_at_k.csv`),
# plus its short training run of θ and the comparison of every registered transform on it
# (Figure 4+ and two tables, `pkpo/toy/compare.py`). The policy is x ~ N(θ, σ²) and
# the raw reward is g(x) = x² on [0, 1], zero elsewhere (Eq. 35).

# %%
import json
from functools import partial
from pathlib import Path

from IPython.display import Image, Markdown, display

from pkpo import analysis as A

params = A.notebook_params()
report = A.Report(params["out"], "toy_figures")
toy_dirs = params["toy_dirs"]
if toy_dirs is None:
    toy_dirs = A.find_toy_dirs(params["runs"])
toy_dirs = [Path(d) for d in toy_dirs]
FIGURES = {
    "fig1": ("Figure 1: max_g@k and its derivative against θ", A.fig_toy_maxg),
    "fig2": ("Figure 2: effective weights of sorted samples", A.fig_toy_weights),
    "fig4": ("Figure 4: gradient estimator variance against n", A.fig_toy_variance),
    "fig5": ("Figure 5: effective rewards per estimator", A.fig_toy_effective_rewards),
    "toy_training": ("Toy training: θ per k during PKPO training", A.fig_toy_training),
    "fig4plus": (
        "Figure 4+: every registered transform's variance against n",
        A.fig_toy_variance_all,
    ),
}

# %% [markdown]
# ## Figures

# %%
if not toy_dirs:
    for key, (title, _) in FIGURES.items():
        report.missing(key, title, "no toy experiment folder (with fig1_maxg_at_k.csv) found")
for toy_dir in toy_dirs:
    suffix = "" if len(toy_dirs) == 1 else f"_{toy_dir.name}"
    display(Markdown(f"### `{toy_dir}`"))
    for key, (title, make) in FIGURES.items():
        png = report.figure_or_missing(key + suffix, title, partial(make, toy_dir))
        if png is not None:
            display(Image(filename=str(png)))

# %% [markdown]
# ## Every registered transform on the toy problem
#
# Bias of each transform's gradient estimate (Eq. 18) against the exact ∇max_g@k and against
# what the transform itself targets, its variance and its realised group sum Σ_i A_i, at
# each θ of the `estimators` stage; then the θ each transform's training settles at.

# %%
for toy_dir in toy_dirs:
    suffix = "" if len(toy_dirs) == 1 else f"_{toy_dir.name}"
    try:
        grids = A.toy_estimator_grids(toy_dir)
    except A.NoDataError as err:
        report.missing("toy_estimators" + suffix, "Every transform: bias and variance", str(err))
        grids = []
    for i, grid in enumerate(grids):
        display(Markdown(report.table(f"toy_estimators_{i}{suffix}", grid)))
    try:
        grid = A.toy_training_grid(toy_dir)
    except A.NoDataError as err:
        report.missing("toy_train_estimators" + suffix, "Every transform: settled θ", str(err))
    else:
        display(Markdown(report.table("toy_train_estimators" + suffix, grid)))

# %% [markdown]
# ## The toy run's summary

# %%
for toy_dir in toy_dirs:
    summary = toy_dir / "summary.json"
    if summary.is_file():
        text = json.dumps(json.loads(summary.read_text()), indent=1)
        display(Markdown(f"`{summary}`:\n```json\n{text}\n```"))
