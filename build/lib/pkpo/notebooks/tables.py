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
# # Tables 1–8 from run logs
#
# Each cell is the mean ± standard error over seeds of a run's last held-out `eval`
# (pass@k_eval in %; ARC also the cumulative solve rate of the last `train` event).
# For the paper's eight (model, benchmark) pairs the table puts the published numbers and
# the difference (ours − paper) beside ours; every other (model, task, n) with runs gets
# a table in the layout of Table 1 (Table 5 for ARC). Parameters come from
# `$PKPO_ANALYSIS_PARAMS` (written by `pkpo-analyze`); run interactively, the notebook
# reads `runs/` and writes `report/`.

# %%
from IPython.display import Markdown, display

from pkpo import analysis as A

params = A.notebook_params()
df, inventory = A.load_for_notebook(params)
split = params["split"]
final = A.final_metrics(df, split)
paper = A.paper_numbers()
report = A.Report(params["out"], "tables")
present = A.settings(df)

# %% [markdown]
# ## Runs

# %%
display(inventory.drop(columns=["run_dir"]))

# %% [markdown]
# ## The paper's Tables 1–8, ours beside the published numbers
#
# Rows without runs say so; a (model, benchmark) with runs at several n gets one table
# per n.

# %%
for spec in A.PAPER_TABLES:
    ns = sorted(n for model, task, n in present if (model, task) == (spec.model, spec.task))
    for n in ns or [None]:
        table = A.results_table(final, spec.model, spec.task, n, paper=spec, split=split)
        display(Markdown(report.results(table, A.comparison_grid(table, paper))))

# %% [markdown]
# ## Table-1-style tables for the other (model, task, n) settings with runs

# %%
paper_pairs = {(spec.model, spec.task) for spec in A.PAPER_TABLES}
others = [setting for setting in present if setting[:2] not in paper_pairs]
for model, task, n in others:
    table = A.results_table(final, model, task, n, split=split)
    display(Markdown(report.results(table, A.table_grid(table))))
if not others:
    report.missing("tables_other", "Table-1-style tables", "no runs outside the paper's pairs")

# %% [markdown]
# ## Confirmatory studies
#
# Every folder with a `protocol.yaml` under the run folders is a pre-registered study: its
# primary comparisons decide the claims' verdicts by the protocol's rules (blocked paired
# tests, TOST for equivalence, Holm per family), reported with 95 % confidence intervals
# and the probability of improvement over seeds (`pkpo/analysis/confirmatory.py`).

# %%
protocols = A.find_protocols(params["runs"])
for protocol in protocols:
    study = A.confirmatory_table(df, protocol)
    grid = A.confirmatory_grid(study)
    tidy = A.confirmatory_tidy(study)
    display(Markdown(report.table(study.key, grid, tidy=tidy, used_runs=study.used_runs)))
if not protocols:
    report.missing("confirmatory", "Confirmatory claims table", "no protocol.yaml under the runs")
# %% [markdown]
# ## Claim 7: the stall search
#
# Every folder with a `criterion.yaml` is a search for a split where pass@1 optimisation
# stalls, judged on the base model and the k_opt = 1 arm only by the committed criterion
# (`pkpo/analysis/stall.py`); the verdict of claim 7 is in the table's notes.

# %%
searches = A.find_searches(params["runs"])
for criterion in searches:
    stall = A.stall_table(df, criterion)
    key = f"claim7_{criterion.name}"
    display(Markdown(report.table(key, A.stall_grid(stall), tidy=stall.rows)))
if not searches:
    report.missing("claim7", "Claim 7: stall search", "no criterion.yaml under the runs")

# %%
in_studies = set()
for protocol in protocols:
    in_studies |= set(A.runs_under(df, protocol.folder)["run_dir"].astype(str))
exploratory = df[~df["run_dir"].astype(str).isin(in_studies).to_numpy()]

# %% [markdown]
# ## The paper's claims, by the exploratory rule
#
# Runs of confirmatory studies are left out here. For every (model, task, n) with runs:
# each claim's comparisons of arms over seeds
# (effect ± s.e., Welch's t, Holm–Bonferroni over the table's tests) and a verdict —
# reproduced, contradicted or inconclusive — by the rule in `pkpo/analysis/claims.py`,
# written down before the sweeps ran (docs/results-smollm2.md).

# %%
for model, task, n in A.settings(exploratory):
    claims = A.claims_table(exploratory, model, task, n)
    grid = A.claims_grid(claims)
    display(
        Markdown(
            report.table(claims.key, grid, tidy=A.claims_tidy(claims), used_runs=claims.used_runs)
        )
    )
if not present:
    report.missing("claims", "Claims table", "no runs")

# %% [markdown]
# ## The k_opt switch of annealed runs
# The paper's transforms carry a k/n-like factor, so annealing k_opt 8 → 1 multiplies the
# advantages at the switch; `transform.scale=loo` removes the factor. Advantage s.d.,
# gradient norm and `kl_old` just before and just after the switch (`pkpo/analysis/switch.py`).

# %%
for model, task, n in present:
    frame = A.switch_frame(df, model, task, n)
    if len(frame):
        grid = A.switch_grid(frame, model, task, n)
        display(Markdown(report.table(f"switch_{model}_{task}_n{n}", grid, tidy=frame)))
