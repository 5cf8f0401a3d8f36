"""The scale shock of annealing: what happens to the update at an annealed run's k_opt switch.

The paper's transforms carry a factor that grows as k_opt falls (``pkpo_sloo_minus_one`` at
k = 8 is about k/n times ``loo``'s scale, :func:`pkpo.transforms.carried_scale`), so the
step schedule 8 → 1 multiplies the advantages, hence the gradient and the size of the step,
at the switch; ``transform.scale=loo`` divides the factor out. This table measures it from
the logs: the mean over seeds of the advantage s.d., the gradient norm and ``kl_old`` over
the :data:`WINDOW` train steps before the switch and the :data:`WINDOW` steps from it, and
their ratio (after / before), for every annealed arm of a setting.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pkpo.arms import ANNEALED

from .render import Grid
from .runs import arms_in
from .style import display_model, display_task
from .tables import setting_frame

WINDOW = 5
"""Train steps averaged on each side of the switch."""
METRICS = ("adv_std", "grad_norm", "kl_old")


def switch_frame(df: pd.DataFrame, model: str, task: str, n: int) -> pd.DataFrame:
    """Per annealed arm and metric: switch step, seeds, mean before, mean after, ratio."""
    sub = setting_frame(df, model, task, n)
    annealed = [label for label, arm in arms_in(sub).items() if arm.shown.kind == ANNEALED]
    sub = sub[sub["arm"].astype(str).isin(annealed) & (sub["event"] == "train")]
    rows = []
    for arm, runs in sub.groupby(sub["arm"].astype(str)):
        switch = int(runs["switch_step"].dropna().min())
        near = runs[runs["step"].between(switch - WINDOW, switch + WINDOW - 1)]
        side = np.where(near["step"] < switch, "before", "after")
        for metric in METRICS:
            mask = (near["metric"].astype(str) == metric).to_numpy()
            if not mask.any():
                continue
            of = near[mask]
            # each run's mean on each side, then the mean over runs (seeds)
            means = of.groupby([of["run"].astype(str), side[mask]])["value"].mean().unstack()
            b, a = float(means["before"].mean()), float(means["after"].mean())
            rows.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "switch_step": switch,
                    "seeds": len(means),
                    "before": b,
                    "after": a,
                    "ratio": a / b if b > 0 else math.nan,
                }
            )
    return pd.DataFrame(
        rows, columns=["arm", "metric", "switch_step", "seeds", "before", "after", "ratio"]
    )


def switch_grid(frame: pd.DataFrame, model: str, task: str, n: int) -> Grid:
    """The table of :func:`switch_frame`: one row per annealed arm, before → after (×ratio)."""
    header = ["Arm", "Switch step", "Seeds", *(f"{m}: before → after" for m in METRICS)]
    body = []
    for arm, rows in frame.groupby("arm", sort=True):
        cells = {r.metric: f"{r.before:.3g} → {r.after:.3g}"
                 + ("" if math.isnan(r.ratio) else f" (×{r.ratio:.2g})")
                 for r in rows.itertuples()}  # fmt: skip
        first = rows.iloc[0]
        body.append(
            [arm, str(first.switch_step), str(first.seeds), *(cells.get(m, "—") for m in METRICS)]
        )
    notes = [
        f"Mean over seeds of each run's mean over the {WINDOW} train steps before the k_opt "
        f"switch and the {WINDOW} steps from it. kl_old (how far a step's minibatches moved "
        "the policy from the sampling one) is 0 when a step is one epoch of one minibatch."
    ]
    return Grid(
        f"The k_opt switch of annealed runs: {display_model(model)} on {display_task(task)} "
        f"(n={n})",
        header,
        body,
        notes,
    )
