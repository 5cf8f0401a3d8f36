"""Tables 1-8 and Figures 1-8 of the paper, regenerated from run logs.

Inputs are the RL loop's run folders (``config.yaml`` + ``events.jsonl``, schema in
:mod:`pkpo.logger`) and the toy experiment's CSV folders (``fig1_maxg_at_k.csv`` ...).
Everything here is a small function over pandas frames so that the notebooks in
``analysis/`` and the tests share one implementation; the names below are importable from
``pkpo.analysis`` itself (``from pkpo import analysis as A; A.scan_runs(...)``):

* :mod:`~pkpo.analysis.runs`, reading: :func:`scan_runs` (tolerant of crashed, running,
  resumed and older logs), :func:`load_runs` (long format: one row per run x step x
  metric), :func:`run_inventory`;
* :mod:`~pkpo.analysis.tables`, numbers: :func:`final_metrics`, :func:`aggregate_seeds`
  (mean +- s.e. over seeds), :func:`results_table` (the paper's Table 1 layout, or Table 5's
  for ARC);
* :mod:`~pkpo.analysis.confirmatory`, pre-registered studies (``protocol.yaml`` beside
  their runs): :func:`find_protocols`, :func:`confirmatory_table` (blocked tests, TOST,
  probability of improvement, Holm per family, verdicts), :func:`confirmatory_grid`;
* :mod:`~pkpo.analysis.stated`, the paper's claims as it states them (a ``claims:``
  section of a protocol, or a ``rereading.yaml``): :func:`stated_table`, decided by the
  simultaneous intervals of :mod:`~pkpo.analysis.decisions`; :func:`power_table` (design-time
  power of every decision type from a pilot);
* :mod:`~pkpo.analysis.problems`, per-problem eval outcomes: :func:`eval_counts`,
  :func:`resample_se` (eval noise), :func:`paired_comparison` and
  :func:`fig_pass_at_k_curves` (passk-inference's simultaneous bands over k);
* :mod:`~pkpo.analysis.stall`, claim 7's stall search (``criterion.yaml``):
  :func:`find_searches`, :func:`stall_table`, :func:`stall_grid`;
* :mod:`~pkpo.analysis.claims`, exploratory verdicts: :func:`claims_table` (each claim of
  the paper's comparisons over seeds, Welch's t, Holm-Bonferroni and a verdict by a declared rule),
  :func:`claims_grid`; :mod:`~pkpo.analysis.switch`: :func:`switch_frame` and
  :func:`switch_grid` (the scale shock at an annealed run's k_opt switch);
* :mod:`~pkpo.analysis.render`: :func:`table_grid`, :func:`comparison_grid` and
  :func:`to_markdown`, :func:`to_latex`, :func:`to_html`;
* figures (matplotlib ``Figure`` objects; :class:`NoDataError` when a figure has nothing to
  show): :mod:`~pkpo.analysis.toy_figures` (``fig_toy_*``, Figures 1, 2, 4 and 5;
  :func:`find_toy_dirs`; :mod:`~pkpo.analysis.toy_tables` adds Figure 4+ and the tables
  comparing every registered transform on the toy) and :mod:`~pkpo.analysis.figures`
  (:func:`fig_annealing` (3),
  :func:`fig_solve_rate_entropy` (6), :func:`fig_rolling_pass_at_k` (7),
  :func:`fig_arc_progress` (8)), coloured by :mod:`~pkpo.analysis.style`;
* the report: :mod:`~pkpo.analysis.notebook` (a notebook's parameters),
  :mod:`~pkpo.analysis.report` (:class:`Report`, files + a manifest per notebook, and
  :func:`write_index`) and :mod:`~pkpo.analysis.cli` (``pkpo-analyze``).

A run's arm is the structured :class:`pkpo.arms.ArmConfig` of its config
(:func:`~pkpo.analysis.runs.arms_in`); its label (``k_opt=4``, ``tang``, ``annealed (8→1)``,
``EntropyReg (0.01)``), colour and order are computed from it for display.
"""

from .claims import ClaimsTable, claims_grid, claims_table, claims_tidy, is_hard_task
from .confirmatory import (
    ConfirmatoryTable,
    Protocol,
    confirmatory_grid,
    confirmatory_table,
    confirmatory_tidy,
    find_protocols,
    headline_grid,
    stated_tables,
    sweep_grid,
)
from .errors import AnalysisWarning, NoDataError
from .figures import (
    PANEL_HEIGHT,
    PANEL_WIDTH,
    TRAIN_K_EVALS,
    fig_annealing,
    fig_arc_progress,
    fig_held_out_progress,
    fig_rolling_pass_at_k,
    fig_solve_rate_entropy,
    seed_curves,
)
from .notebook import PARAMS_ENV, load_for_notebook, notebook_params
from .problems import eval_counts, fig_pass_at_k_curves, paired_comparison, resample_se
from .render import (
    Grid,
    comparison_grid,
    format_cell,
    latex_escape,
    number,
    table_grid,
    to_html,
    to_latex,
    to_markdown,
)
from .report import Report, write_index
from .runs import (
    CONFIG_COLUMNS,
    PREFERRED_SPLIT,
    RunConfig,
    RunLog,
    load_runs,
    parse_config,
    pick_split,
    run_inventory,
    run_status,
    runs_frame,
    runs_under,
    scan_runs,
)
from .stall import (
    NO_REGIME,
    NOT_RUN,
    UNDECIDED,
    StallCriterion,
    StallTable,
    find_searches,
    stall_grid,
    stall_table,
)
from .stated import (
    StatedClaims,
    StatedTable,
    power_table,
    stated_grid,
    stated_headline_grid,
    stated_table,
    stated_tidy,
)
from .style import ARM_COLORS, BENCHMARKS, MODEL_NAMES, arm_style, k_color
from .switch import switch_frame, switch_grid
from .tables import (
    PAPER_ROWS,
    PAPER_TABLES,
    TABLE_K_EVALS,
    Column,
    PaperTable,
    ResultsTable,
    aggregate_seeds,
    best_entropy_arm,
    final_metrics,
    held_out,
    paper_numbers,
    results_table,
    setting_frame,
    settings,
    table_columns,
)
from .toy_figures import (
    fig_toy_effective_rewards,
    fig_toy_maxg,
    fig_toy_training,
    fig_toy_variance,
    fig_toy_weights,
    find_toy_dirs,
    toy_settings,
)
from .toy_tables import fig_toy_variance_all, toy_estimator_grids, toy_training_grid

__all__ = [
    "ARM_COLORS",
    "BENCHMARKS",
    "CONFIG_COLUMNS",
    "MODEL_NAMES",
    "PANEL_HEIGHT",
    "PANEL_WIDTH",
    "PAPER_ROWS",
    "PAPER_TABLES",
    "PARAMS_ENV",
    "PREFERRED_SPLIT",
    "TABLE_K_EVALS",
    "TRAIN_K_EVALS",
    "AnalysisWarning",
    "ClaimsTable",
    "Column",
    "ConfirmatoryTable",
    "Grid",
    "NO_REGIME",
    "NOT_RUN",
    "UNDECIDED",
    "NoDataError",
    "PaperTable",
    "Protocol",
    "Report",
    "ResultsTable",
    "RunConfig",
    "RunLog",
    "StallCriterion",
    "StatedClaims",
    "StatedTable",
    "StallTable",
    "aggregate_seeds",
    "arm_style",
    "best_entropy_arm",
    "claims_grid",
    "claims_table",
    "claims_tidy",
    "comparison_grid",
    "confirmatory_grid",
    "confirmatory_table",
    "confirmatory_tidy",
    "fig_annealing",
    "fig_arc_progress",
    "fig_held_out_progress",
    "fig_rolling_pass_at_k",
    "fig_solve_rate_entropy",
    "fig_toy_effective_rewards",
    "fig_toy_maxg",
    "fig_toy_training",
    "fig_toy_variance",
    "fig_toy_variance_all",
    "fig_toy_weights",
    "final_metrics",
    "find_protocols",
    "find_searches",
    "find_toy_dirs",
    "format_cell",
    "number",
    "headline_grid",
    "held_out",
    "is_hard_task",
    "k_color",
    "latex_escape",
    "load_for_notebook",
    "load_runs",
    "notebook_params",
    "paper_numbers",
    "parse_config",
    "pick_split",
    "results_table",
    "run_inventory",
    "run_status",
    "runs_frame",
    "scan_runs",
    "seed_curves",
    "setting_frame",
    "settings",
    "stall_grid",
    "stated_grid",
    "stated_headline_grid",
    "stated_table",
    "stated_tables",
    "stated_tidy",
    "sweep_grid",
    "power_table",
    "eval_counts",
    "fig_pass_at_k_curves",
    "paired_comparison",
    "resample_se",
    "stall_table",
    "runs_under",
    "switch_frame",
    "switch_grid",
    "table_columns",
    "table_grid",
    "to_html",
    "to_latex",
    "to_markdown",
    "toy_estimator_grids",
    "toy_settings",
    "toy_training_grid",
    "write_index",
]
