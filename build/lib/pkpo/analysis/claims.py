"""The paper's claims, tested over seeds, with a verdict by a rule declared in advance.

Each claim is a set of comparisons. A comparison is a contrast of arm means at one
evaluation step, ``effect = sum_a c_a * mean_a`` over seeds (two arms: ``c = (+1, -1)``),
with claimed sign +1. The rule (docs/results-smollm2.md, "Verdicts by a declared rule"),
fixed before any result was looked at and the same for every setting:

1. **Test.** Welch's t over seeds: ``se = sqrt(sum_a c_a^2 s_a^2 / n_a)`` (``s_a`` the
   standard deviation over the arm's seeds, ddof = 1), ``t = effect / se``, degrees of
   freedom by Welch-Satterthwaite, two-sided p. For two arms this is Welch's two-sample
   t-test. An arm with fewer than 2 seeds has no s.d.: no test.
2. **Eligibility.** A comparison counts only if every arm in it has at least
   :data:`MIN_SEEDS` = 3 seeds at that step; otherwise its verdict is inconclusive whatever
   its p (which is still shown, uncorrected).
3. **Multiple comparisons.** Holm-Bonferroni over all eligible comparisons of one setting
   at the final held-out eval (every claim together), family-wise alpha = :data:`ALPHA`.
   The estimator-zoo comparisons (claims Z1-Z4, :data:`ZOO_STATEMENTS`; in a setting only
   when one of their arms has runs) are a second family of their own, so adding them does
   not change the paper's claims' verdicts.
4. **Comparison verdict.** reproduced if the effect has the claimed sign and the Holm p <
   alpha; contradicted if it has the opposite sign and the Holm p < alpha; else
   inconclusive.
5. **Claim verdict.** From its final-eval comparisons that have runs in every arm:
   contradicted if any is contradicted, reproduced if all are reproduced, else
   inconclusive; "no data" if none has runs.
6. **Steps.** The verdict uses each run's last held-out eval (the latest eval step of the
   setting; a run that did not reach it is left out). The first intermediate eval (the
   first after step 0, for annealing the first at or after the switch) is reported too,
   with its own Holm family, and does not enter the verdict.

Metrics: pass@k of the held-out eval (in points, x100); the cumulative solve rate of the
last train event before the eval (in points); the train entropy averaged over the
:data:`TRAIN_WINDOW` train steps before the eval (nats per token, as logged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from pkpo.arms import ANNEAL_K, TANG, annealed_label, arm_label, k_opt_label

from .render import Grid, number
from .style import display_model, display_task
from .tables import held_out, one_run_per_seed, setting_frame

MIN_SEEDS = 3
"""Seeds every arm of a comparison needs for a verdict other than inconclusive."""
ALPHA = 0.05
"""Family-wise error rate of the Holm-Bonferroni correction."""
TRAIN_WINDOW = 10
"""Train steps averaged for the entropy claim (one step's entropy is noisy)."""
PAPER_K_OPTS = (1, 2, 4, 8)
"""The constant k_opt arms of the paper's tables, listed even without runs."""
VERDICTS = ("reproduced", "contradicted", "inconclusive", "no data")
ANNEALED = annealed_label(*ANNEAL_K)
ANNEALED_LOO = arm_label("pkpo_sloo_minus_one", None, "step", *ANNEAL_K, scale="loo")

STATEMENTS = {
    "1": "k_opt = k_eval is best at pass@k_eval",
    "2": "higher k_opt → higher cumulative solve rate",
    "3": "higher k_opt → higher entropy",
    "4": "k_opt = 1 is best at pass@1",
    "5": "annealing keeps pass@1 and most of the pass@k gain",
    "5′": "claim 5 with transform.scale=loo (no scale shock at the switch)",
    "6": "Tang's k = n is worse than k_opt = k_eval < n",
    "7": "pass@k optimisation unblocks the hard split",
}


ZOO_K = 4
"""k of the estimator-zoo arms that take a k (``<transform>-k4`` sweep arms)."""
ZOO_STATEMENTS = {
    "Z1": "MaxPO's exactly centred estimator beats PKPO's at the same k",
    "Z2": "Pass@k Training's analytical advantage beats PKPO's at the same k",
    "Z3": "MaxRL beats GRPO at pass@k",
    "Z4": "PKPO at k_opt = 4 beats GRPO, Dr. GRPO and verl's grpo_passk at pass@4",
}
"""Comparisons of the other published estimators (not claims of the PKPO paper): each
states its source's claim against PKPO or GRPO (Z1-Z3) or the paper's claim against them
(Z4), with the same rule and sign convention as the paper's claims."""


@dataclass(frozen=True)
class Comparison:
    """One contrast: ``effect = sum(coef * mean over seeds of arm's metric)``, claimed > 0.

    ``source``: ``eval`` (held-out metric at the eval step), ``train_last`` (the last train
    event before it) or ``train_window`` (the mean of the :data:`TRAIN_WINDOW` train events
    before it). ``after``: the intermediate step is the first eval at or after this step.
    """

    claim: str
    text: str
    terms: tuple[tuple[str, float], ...]
    metric: str
    source: str = "eval"
    after: int = 1

    @property
    def arms(self) -> list[str]:
        return [arm for arm, _ in self.terms]

    @property
    def family(self) -> str:
        """The Holm family: ``zoo`` for the estimator-zoo claims, else ``paper``."""
        return "zoo" if self.claim in ZOO_STATEMENTS else "paper"


def zoo_comparisons(k_max: int) -> list[Comparison]:
    """Claims Z1-Z4 (:data:`ZOO_STATEMENTS`); ``k_max``: the largest k_eval."""
    pkpo = k_opt_label(ZOO_K)

    def minus(claim: str, a: str, b: str, metric: str) -> Comparison:
        return Comparison(claim, f"{a} − {b}, {metric}", ((a, 1), (b, -1)), metric)

    return [
        minus("Z1", k_opt_label(ZOO_K, "maxpo"), pkpo, f"pass@{ZOO_K}"),
        minus("Z2", k_opt_label(ZOO_K, "passk_training"), pkpo, f"pass@{ZOO_K}"),
        minus("Z3", "maxrl", "grpo", f"pass@{k_max}"),
        *(minus("Z4", pkpo, base, f"pass@{ZOO_K}") for base in ("grpo", "dr_grpo", "grpo_passk")),
    ]


def is_hard_task(task: str) -> bool:
    """A task where base pass@1 is near 0 (Figure 8's regime): ARC or a ``*_hard`` split."""
    return task == "arc" or task.endswith("_hard")


def comparisons(
    constant_ks: Sequence[int],
    k_evals: Sequence[int],
    n: int,
    hard: bool,
    switch: int = 1,
    zoo: bool = False,
) -> list[Comparison]:
    """Every claim's comparisons for a setting with these k_opt arms, k_evals and n.

    ``constant_ks``: the constant k_opt arms with runs (the paper's 1, 2, 4, 8 are added);
    ``switch``: the annealed arm's switch step; ``zoo``: add claims Z1-Z4.
    """
    ks = sorted(k for k in {*PAPER_K_OPTS, *constant_ks} if k < n)
    arm = {k: k_opt_label(k) for k in ks}
    top, k_max = max(ks), max(k for k in k_evals if k <= n)
    out = []
    for k in (k for k in ks if k > 1 and k in k_evals):
        out += [
            Comparison(
                "1", f"{arm[k]} − {arm[j]}, pass@{k}", ((arm[k], 1), (arm[j], -1)), f"pass@{k}"
            )
            for j in ks
            if j != k
        ]
    top_vs_1 = ((arm[top], 1.0), (arm[1], -1.0))
    out.append(
        Comparison(
            "2",
            f"{arm[top]} − {arm[1]}, cumulative solve rate",
            top_vs_1,
            "cumulative_solve_rate",
            "train_last",
        )
    )
    out.append(
        Comparison(
            "3",
            f"{arm[top]} − {arm[1]}, entropy (mean of {TRAIN_WINDOW} train steps)",
            top_vs_1,
            "entropy",
            "train_window",
        )
    )
    out += [
        Comparison("4", f"{arm[1]} − {arm[j]}, pass@1", ((arm[1], 1), (arm[j], -1)), "pass@1")
        for j in ks
        if j != 1
    ]
    start = k_opt_label(ANNEAL_K[0])
    for claim, annealed in (("5", ANNEALED), ("5′", ANNEALED_LOO)):
        out.append(
            Comparison(
                claim,
                f"{annealed} − {arm[1]}, pass@1",
                ((annealed, 1), (arm[1], -1)),
                "pass@1",
                after=switch,
            )
        )
        out.append(
            Comparison(
                claim,
                f"{annealed} − ½ ({arm[1]} + {start}), pass@{k_max}",
                ((annealed, 1), (arm[1], -0.5), (start, -0.5)),
                f"pass@{k_max}",
                after=switch,
            )
        )
    out += [
        Comparison("6", f"{arm[k]} − {TANG}, pass@{k}", ((arm[k], 1), (TANG, -1)), f"pass@{k}")
        for k in ks
        if k in k_evals
    ]
    if hard:
        out.append(
            Comparison(
                "7",
                f"{arm[top]} − {arm[1]}, cumulative solve rate",
                top_vs_1,
                "cumulative_solve_rate",
                "train_last",
            )
        )
        out.append(Comparison("7", f"{arm[top]} − {arm[1]}, pass@1", top_vs_1, "pass@1"))
    if zoo:
        out += zoo_comparisons(k_max)
    return out


# ------------------------------------------------------------------------- statistics


def contrast_test(values: Sequence[np.ndarray], coefs: Sequence[float]) -> dict[str, float]:
    """Welch's t for ``sum_a c_a mean(values_a)``: effect, se, t, df, two-sided p.

    ``se`` and the test are NaN when an arm has fewer than 2 values, or when every arm's
    values are constant (no spread to test against).
    """
    means = np.array([np.mean(v) if len(v) else math.nan for v in values])
    effect = float(np.dot(coefs, means))
    nan = {"se": math.nan, "t": math.nan, "df": math.nan, "p": math.nan}
    if any(len(v) < 2 for v in values):
        return {"effect": effect, **nan}
    parts = np.array(
        [c**2 * np.var(v, ddof=1) / len(v) for v, c in zip(values, coefs, strict=True)]
    )
    var = parts.sum()
    if var <= 0:
        return {"effect": effect, **nan}
    df = var**2 / sum(p**2 / (len(v) - 1) for p, v in zip(parts, values, strict=True))
    t = effect / math.sqrt(var)
    return {
        "effect": effect,
        "se": math.sqrt(var),
        "t": t,
        "df": df,
        "p": float(2 * stats.t.sf(abs(t), df)),
    }


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values: the i-th smallest is ``max_{j<=i} (m-j+1) p_(j)``,
    capped at 1; NaN entries stay NaN and do not count in m."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def verdict(effect: float, p_holm: float, eligible: bool, alpha: float = ALPHA) -> str:
    """Rule 4: the claimed sign is positive; inconclusive unless eligible and significant."""
    if not eligible or math.isnan(p_holm) or p_holm >= alpha or effect == 0:
        return "inconclusive"
    return "reproduced" if effect > 0 else "contradicted"


def claim_verdict(verdicts: Sequence[str]) -> str:
    """Rule 5, over the final-eval comparisons that have runs in every arm."""
    if not verdicts:
        return "no data"
    if "contradicted" in verdicts:
        return "contradicted"
    return "reproduced" if all(v == "reproduced" for v in verdicts) else "inconclusive"


# ---------------------------------------------------------------------- per-run values


def run_values(sub: pd.DataFrame, evals: pd.DataFrame, comparison: Comparison, step: int):
    """One row per run with a held-out eval at ``step``: run, arm, seed, value.

    ``sub`` is the setting's long frame, ``evals`` its held-out eval rows.
    """
    at_step = evals[(evals["step"] == step) & (evals["arm"].isin(comparison.arms))]
    runs = set(at_step["run"].astype(str))
    if comparison.source == "eval":
        rows = at_step[at_step["metric"] == comparison.metric]
        values = rows.groupby(rows["run"].astype(str))["value"].last()
    else:
        train = sub[
            (sub["event"] == "train")
            & (sub["metric"] == comparison.metric)
            & (sub["step"] < step)
            & sub["run"].astype(str).isin(runs)
        ].sort_values("step")
        if comparison.source == "train_window":
            train = train[train["step"] >= step - TRAIN_WINDOW]
            values = train.groupby(train["run"].astype(str))["value"].mean()
        else:
            values = train.groupby(train["run"].astype(str))["value"].last()
    scale = 100.0 if comparison.metric != "entropy" else 1.0
    return pd.DataFrame({"run": values.index, "value": scale * values.to_numpy(dtype=float)}).merge(
        at_step[["run", "arm", "seed"]].astype({"run": str, "arm": str}).drop_duplicates()
    )


# ----------------------------------------------------------------------------- table


@dataclass
class ClaimsTable:
    """The claims of one setting: ``rows`` one per comparison and step kind (final,
    intermediate), ``claims`` one per claim with its verdict."""

    key: str
    title: str
    rows: pd.DataFrame
    claims: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    used_runs: dict[str, str] = field(default_factory=dict)


def _test_rows(sub, evals, comps: Sequence[Comparison], kind: str) -> list[dict]:
    """One row per comparison at the final eval or (``kind="intermediate"``) at the first
    eval at or after the comparison's ``after`` step and before the final one."""
    steps = sorted(set(evals["step"].astype(int)))
    rows = []
    for c in comps:
        later = [s for s in steps if c.after <= s < steps[-1]] if steps else []
        step = (steps[-1] if steps else None) if kind == "final" else next(iter(later), None)
        row = {"claim": c.claim, "family": c.family, "comparison": c.text, "kind": kind}
        row["step"] = step
        if step is None:
            nan = dict.fromkeys(("effect", "se", "t", "df", "p"), math.nan)
            empty = {"n_seeds": (), "has_data": False, "eligible": False, "runs": ()}
            rows.append({**row, **nan, **empty})
            continue
        values = run_values(sub, evals, c, step)
        per_arm = [values.loc[values["arm"] == arm, "value"].to_numpy() for arm in c.arms]
        seeds = tuple(len(v) for v in per_arm)
        test = contrast_test(per_arm, [coef for _, coef in c.terms])
        rows.append(
            {
                **row,
                **test,
                "n_seeds": seeds,
                "has_data": all(seeds),
                "eligible": min(seeds) >= MIN_SEEDS and not math.isnan(test["p"]),
                "runs": tuple(sorted(values["run"])),
            }
        )
    return rows


def claims_table(df: pd.DataFrame, model: str, task: str, n: int) -> ClaimsTable:
    """The claims table of one (model, task, n) from the long runs frame (:func:`load_runs`)."""
    where = f"{model}/{task}/n={n}"
    sub = setting_frame(df, model, task, n).copy()
    sub["arm"] = sub["arm"].astype(str)
    evals = held_out(sub)
    kept, _ = one_run_per_seed(sub, where)
    sub = sub[sub["run"].astype(str).isin(kept)]
    evals = evals[evals["run"].astype(str).isin(kept)]

    k_evals = sorted(
        int(m.split("@")[1])
        for m in set(evals["metric"].astype(str))
        if m.startswith("pass@") and m.split("@")[1].isdigit()
    ) or [1]
    constant = sub.loc[sub["schedule"].astype(str) == "constant", "arm"]
    ks = [k for k in range(1, n) if k_opt_label(k) in set(constant)]
    annealed = sub[sub["arm"].isin([ANNEALED, ANNEALED_LOO])]["switch_step"].dropna()
    switch = int(annealed.min()) if len(annealed) else 1
    zoo_arms = {arm for c in zoo_comparisons(max(k_evals)) for arm in c.arms}
    zoo = bool((zoo_arms - {k_opt_label(ZOO_K)}) & set(sub["arm"]))  # a zoo arm has runs
    comps = comparisons(ks, k_evals, n, is_hard_task(task), switch, zoo)
    rows = pd.DataFrame(
        _test_rows(sub, evals, comps, "final") + _test_rows(sub, evals, comps, "intermediate")
    )
    final = int(evals["step"].max()) if len(evals) else None
    rows["p_holm"] = math.nan
    for kind in ("final", "intermediate"):
        for name in ("paper", "zoo"):
            family = (rows["kind"] == kind) & (rows["family"] == name) & rows["eligible"]
            rows.loc[family, "p_holm"] = holm(rows.loc[family, "p"])
    rows["verdict"] = [
        verdict(r.effect, r.p_holm, r.eligible) if r.has_data else "no data"
        for r in rows.itertuples()
    ]
    final_rows = rows[(rows["kind"] == "final") & rows["has_data"]]
    claims = pd.DataFrame(
        [
            {
                "claim": claim,
                "statement": statement,
                "verdict": claim_verdict(
                    list(final_rows.loc[final_rows["claim"] == claim, "verdict"])
                ),
                "step": final,
            }
            for claim, statement in {**STATEMENTS, **(ZOO_STATEMENTS if zoo else {})}.items()
        ]
    )
    eligible = (rows["kind"] == "final") & rows["eligible"]
    m = int((eligible & (rows["family"] == "paper")).sum())
    m_zoo = int((eligible & (rows["family"] == "zoo")).sum())
    family = (
        f"the {m} eligible final-eval comparisons of claims 1–7 and, as a family of its own, "
        f"the {m_zoo} of the estimator zoo (Z1–Z4)"
        if zoo
        else f"the {m} eligible final-eval comparisons of this table"
    )
    notes = [
        f"Verdict rule (declared in advance, pkpo/analysis/claims.py): Welch's t over seeds, "
        f"Holm–Bonferroni over {family} "
        f"(α = {ALPHA}); reproduced = claimed sign (effect > 0) and Holm p < {ALPHA}, "
        f"contradicted = opposite sign and Holm p < {ALPHA}, otherwise inconclusive. A "
        f"comparison with an arm of fewer than {MIN_SEEDS} seeds is inconclusive by rule "
        "(its p is shown uncorrected). A claim is contradicted if any of its comparisons is, "
        "reproduced if all are.",
        f"Final: each run's held-out eval at step {final} (runs that stopped earlier are left "
        "out); intermediate: the first eval after step 0 (claim 5: at or after the switch, "
        f"step {switch}), its own Holm family, not in the verdict.",
        "Effects in points (pass@k, cumulative solve rate of the last train event before the "
        f"eval, ×100) or nats (train entropy, mean of the {TRAIN_WINDOW} train steps before "
        "the eval). Seeds: per arm, in the comparison's order.",
    ]
    if not is_hard_task(task):
        notes.append("Claim 7 needs a hard split (ARC or a *_hard task): no data here.")
    key = f"claims_{model}_{task}_n{n}"
    title = f"Claims: {display_model(model)} on {display_task(task)} (n={n})"
    used = {run: "claims" for run in sorted({r for runs in rows["runs"] for r in runs})}
    return ClaimsTable(key, title, rows, claims, notes, used)


# ---------------------------------------------------------------------------- render


def _effect(r) -> str:
    if math.isnan(r.effect):
        return "—"
    if math.isnan(r.se):
        return f"{r.effect:+.2f} (no s.e.)"
    return f"{r.effect:+.2f} ± {r.se:.2f}"


def claims_grid(table: ClaimsTable) -> Grid:
    """One line per comparison (final eval; the intermediate one in the last column), a
    claim's verdict on its first line."""
    header = [
        "Claim",
        "Verdict",
        "Comparison",
        "Step",
        "Effect ± s.e.",
        "Seeds",
        "t (df)",
        "p",
        "p Holm",
        "Comparison verdict",
        "Intermediate eval: effect ± s.e.",
    ]
    rows = table.rows
    body = []
    for claim in table.claims.itertuples():
        first = [f"{claim.claim}: {claim.statement}", f"**{claim.verdict}**"]
        final = rows[(rows["claim"] == claim.claim) & (rows["kind"] == "final")]
        if final.empty:
            body.append([*first, *["—"] * 7, "no data", "—"])
            continue
        mids = rows[(rows["claim"] == claim.claim) & (rows["kind"] == "intermediate")]
        for i, r in enumerate(final.itertuples()):
            mid = mids[mids["comparison"] == r.comparison]
            later = "—"
            if not mid.empty and not pd.isna(mid.iloc[0]["step"]):
                m = next(mid.itertuples())
                later = f"step {int(m.step)}: {_effect(m)}"
                if not math.isnan(m.p):
                    later += f" (p {number(m.p, '.3f')}, Holm {number(m.p_holm, '.3f')})"
            body.append(
                [
                    *(first if i == 0 else ["", ""]),
                    r.comparison,
                    "—" if pd.isna(r.step) else str(int(r.step)),
                    _effect(r),
                    " / ".join(map(str, r.n_seeds)) or "—",
                    "—" if math.isnan(r.t) else f"{r.t:+.2f} ({r.df:.1f})",
                    number(r.p, ".3f"),
                    number(r.p_holm, ".3f"),
                    r.verdict,
                    later,
                ]
            )
    return Grid(table.title, header, body, table.notes)


def claims_tidy(table: ClaimsTable) -> pd.DataFrame:
    """The comparison rows with their claim's statement and verdict (the CSV)."""
    claims = table.claims.rename(columns={"verdict": "claim_verdict"}).drop(columns="step")
    return table.rows.merge(claims, on="claim", how="left")
