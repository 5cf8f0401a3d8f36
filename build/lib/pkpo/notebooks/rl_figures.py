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
# # Figures 3, 6, 7 and 8: RL training curves (Section 5.2)
#
# One set per (model, task, n) with runs: Figure 3 (annealed vs constant k_opt, when
# annealed runs exist), Figure 6 (cumulative solve rate and entropy), Figure 7 (rolling
# training pass@k_eval, one panel per k_eval, with `tang`); for the hard tasks (ARC, the
# `*_hard` splits) Figure 8 instead.
# Curves are the mean over seeds with a ± s.e. band; EntropyReg is shown at its best
# coefficient (the one in the tables). The rolling window is the `rolling_window`
# parameter (`pkpo-analyze --window`).

# %%
from functools import partial

from IPython.display import Image, Markdown, display

from pkpo import analysis as A

params = A.notebook_params()
df, _ = A.load_for_notebook(params)
report = A.Report(params["out"], "rl_figures")
options = {"window": params["rolling_window"], "split": params["split"]}
present = A.settings(df)

# %%
FIGURES = {
    "fig3": ("Figure 3", partial(A.fig_annealing, k_evals=params["fig3_k_evals"], **options)),
    "fig6": ("Figure 6", partial(A.fig_solve_rate_entropy, **options)),
    "fig7": ("Figure 7", partial(A.fig_rolling_pass_at_k, **options)),
    "fig8": ("Figure 8", partial(A.fig_arc_progress, **options)),
}
for model, task, n in present:
    runs = A.setting_frame(df, model, task, n)
    display(Markdown(f"## {model} on {task}, n={n}"))
    for key, (title, make) in FIGURES.items():
        if (key == "fig8") != A.is_hard_task(task):
            continue
        name = f"{key}_{model}_{task}_n{n}"
        png = report.figure_or_missing(
            name, f"{title} ({model}, {task}, n={n})", partial(make, runs)
        )
        if png is not None:
            display(Image(filename=str(png)))

# %%
for key, (title, _) in FIGURES.items():
    if key == "fig8" and not any(A.is_hard_task(task) for _, task, _ in present):
        report.missing(key, title, "no runs on a hard task (task=arc or a *_hard split)")
    elif key != "fig8" and all(A.is_hard_task(task) for _, task, _ in present):
        report.missing(key, title, "no RL runs outside the hard tasks")

# %% [markdown]
# ## Confirmatory studies: held-out pass@k over steps per arm
# Mean over the study's seeds with its 95 % t interval (`A.fig_held_out_progress`).

# %%
for protocol in A.find_protocols(params["runs"]):
    runs = A.runs_under(df, protocol.folder)
    arms = list(protocol.labels.values())
    title = f"Confirmatory study {protocol.name}: held-out progress per arm"
    png = report.figure_or_missing(
        f"confirmatory_{protocol.name}",
        title,
        partial(A.fig_held_out_progress, runs, arms, title, split=params["split"]),
    )
    if png is not None:
        display(Image(filename=str(png)))

# %% [markdown]
# ## Claim 7: Figure 8's analogue for the stall search
# Held-out progress of each candidate's k_opt = 1 pilot (mean over its seeds, 95 % t band).

# %%
for criterion in A.find_searches(params["runs"]):
    for candidate in criterion.candidates:
        pilot = A.runs_under(df, criterion.folder / candidate)
        if pilot.empty:
            continue
        title = f"Figure 8 analogue: {candidate} ({criterion.name}), held-out progress"
        png = report.figure_or_missing(
            f"fig8_{criterion.name}_{candidate}",
            title,
            partial(A.fig_held_out_progress, pilot, [criterion.label], title),
        )
        if png is not None:
            display(Image(filename=str(png)))
