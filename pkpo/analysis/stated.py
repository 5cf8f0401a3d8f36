"""The paper's claims as the paper states them: each claim written once as data, as the
hypothesis its sentence implies, with the decision rule that follows (:mod:`.decisions`).

A study file's ``claims:`` section (in a ``protocol.yaml`` before its runs, or in a
``rereading.yaml`` beside a finished study, labelled exploratory) lists, per claim, its
**parts**. A part is one of the decision rules of :data:`pkpo.analysis.decisions.RULES` on
one metric of the final held-out eval:

* ``{rule: best, arm: k4, rivals: [k1, k2, k8], metric: pass@4}``: the arm beats, or is
  within margin of, every rival (intersection-union); contradicted if a rival beats it;
* ``{rule: greater | noninferior | equivalent, terms: {k8: 1, tang: -1}, metric: ...}``: a
  contrast of arms, ``sum_a c_a * value(a)`` per seed;
* ``{rule: trend, arms: {k1: 1, k2: 2, k4: 4, k8: 8}, metric: entropy}``: "higher k_opt,
  higher metric" as the least-squares line of the metric on log2 k_opt, read as its change
  from the smallest to the largest k_opt, decided as ``greater``; a trend, not each
  adjacent pair.

Every part's contrasts form one family (one row each; a ``best`` part one per rival) with
simultaneous Bonferroni intervals; each metric has a margin (the smallest effect of
interest) with its reason (``margins: {pass@1: {value: 0.7, why: ...}}``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import decisions as D
from .claims import STATEMENTS, Comparison, run_values
from .render import Grid, number

STATUSES = ("confirmatory", "exploratory")
PART_RULES = ("best", "greater", "noninferior", "equivalent", "trend")


def metric_source(metric: str) -> str:
    """Where a metric is read: the final held-out eval (pass@k), the last train event before
    it (cumulative solve rate) or the mean of the train steps before it (entropy)."""
    if metric.startswith("pass@"):
        return "eval"
    sources = {"cumulative_solve_rate": "train_last", "entropy": "train_window"}
    if metric not in sources:
        raise ValueError(f"metric must be pass@<k>, {' or '.join(sources)}; got {metric!r}")
    return sources[metric]


Terms = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Part:
    """One hypothesis of a claim; ``rows`` its contrasts (one per rival for ``best``)."""

    claim: str
    rule: str
    metric: str
    rows: tuple[Terms, ...]
    arms: tuple[str, ...]
    """The arms it names, in the order written (for ``best``: the arm, then its rivals)."""

    @property
    def decision(self) -> str:
        """The rule of :mod:`.decisions` that decides it (a trend is a ``greater``)."""
        return "greater" if self.rule == "trend" else self.rule

    def tested(self, label: Mapping[str, str]) -> str:
        """What the part tests, in words."""
        names = [label[a] for a in self.arms]
        if self.rule == "best":
            return f"{names[0]} ≥ each of {', '.join(names[1:])} − margin, {self.metric}"
        if self.rule == "trend":
            return f"fitted {self.metric} rises from {names[0]} to {names[-1]} (line in log2 k)"
        symbol = {"greater": ">", "noninferior": "≥ − margin", "equivalent": "≈"}[self.rule]
        return f"{row_text(self.rows[0], label)} {symbol} 0, {self.metric}".replace(
            "≥ − margin 0", "> − margin"
        )


def row_text(terms: Terms, label: Mapping[str, str]) -> str:
    """``k_opt=8 − k_opt=1``; ``A − ½ (B + C)``; a trend's weights as ``trend(...)``."""
    positive = [a for a, c in terms if c > 0]
    negative = [(a, c) for a, c in terms if c < 0]
    if len(positive) != 1 or not math.isclose(sum(c for _, c in terms), 0, abs_tol=1e-9):
        return "trend(" + ", ".join(label[a] for a, _ in terms) + ")"
    first, (coef,) = positive[0], [c for a, c in terms if c > 0]
    if coef != 1:
        return "trend(" + ", ".join(label[a] for a, _ in terms) + ")"
    if len(negative) == 2 and all(c == -0.5 for _, c in negative):
        return f"{label[first]} − ½ ({label[negative[0][0]]} + {label[negative[1][0]]})"
    return f"{label[first]} − " + " − ".join(
        label[a] if c == -1 else f"{-c:g} {label[a]}" for a, c in negative
    )


def trend_terms(k_of_arm: Mapping[str, float]) -> Terms:
    """Weights that give the least-squares line of a metric on log2 k, as its change from the
    smallest to the largest k: ``w_a = (x_a - mean x) / sum (x - mean x)^2 * (max x - min x)``
    with ``x = log2 k`` (so a margin of the metric's own size applies to the whole range)."""
    x = np.log2(np.array(list(k_of_arm.values()), dtype=float))
    centred = x - x.mean()
    weights = centred / float((centred**2).sum()) * float(x.max() - x.min())
    return tuple((arm, float(w)) for arm, w in zip(k_of_arm, weights, strict=True))


@dataclass(frozen=True)
class Margin:
    value: float
    why: str


@dataclass(frozen=True)
class StatedClaims:
    """A study's claims as stated: status, alpha, margins with reasons, parts by claim."""

    status: str
    alpha: float
    margins: dict[str, Margin]
    parts: tuple[Part, ...]

    @property
    def comparisons(self) -> int:
        """m, the size of the one family (every row of every part)."""
        return sum(len(p.rows) for p in self.parts)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], arms: Sequence[str], where: str) -> StatedClaims:
        """Check and read a ``claims:`` section; ``ValueError`` names the key that is wrong."""
        status = raw.get("status", "confirmatory")
        if status not in STATUSES:
            raise ValueError(f"{where} status must be one of {STATUSES}, got {status!r}")
        margins: dict[str, Margin] = {}
        for metric, entry in (raw.get("margins") or {}).items():
            if not isinstance(entry, Mapping) or "value" not in entry or not entry.get("why"):
                raise ValueError(f"{where} margins.{metric} needs `value` and `why` (its reason)")
            margins[metric] = Margin(float(entry["value"]), str(entry["why"]))
        parts = []
        for i, item in enumerate(raw.get("claims") or []):
            for j, spec in enumerate(item.get("parts") or []):
                parts.append(
                    _part(
                        str(item["claim"]), spec, arms, margins, f"{where} claims[{i}].parts[{j}]"
                    )
                )
        if not parts:
            raise ValueError(f"{where} `claims` needs at least one claim with parts")
        return cls(status, float(raw.get("alpha", 0.05)), margins, tuple(parts))


def _part(
    claim: str, spec: Mapping[str, Any], arms: Sequence[str], margins: Mapping, at: str
) -> Part:
    rule, metric = spec.get("rule"), spec.get("metric")
    if rule not in PART_RULES:
        raise ValueError(f"{at}.rule must be one of {PART_RULES}, got {rule!r}")
    if metric not in margins:
        raise ValueError(f"{at}.metric {metric!r} has no entry in `margins`")
    metric_source(metric)
    if rule == "best":
        named = [spec.get("arm"), *(spec.get("rivals") or [])]
        rows = tuple(((named[0], 1.0), (rival, -1.0)) for rival in named[1:])
    elif rule == "trend":
        k_of_arm = spec.get("arms") or {}
        named = list(k_of_arm)
        rows = (trend_terms(k_of_arm),) if len(named) >= 2 else ()
    else:
        terms = spec.get("terms") or {}
        named = list(terms)
        rows = (tuple((a, float(c)) for a, c in terms.items()),)
    unknown = [a for a in named if a not in arms]
    if unknown or not rows:
        raise ValueError(f"{at} names arms {unknown or named} that are not the study's arms")
    return Part(claim, rule, metric, rows, tuple(named))


# ------------------------------------------------------------------------- values


def seed_values(
    df: pd.DataFrame, label: Mapping[str, str], step: int, terms: Terms, metric: str
) -> pd.DataFrame:
    """One row per seed with every arm of the contrast at eval ``step``: the arms' values
    (columns by sweep name; ``label`` maps them to the runs' labels) and the contrast ``d``.
    Seeds missing an arm are left out."""
    comparison = Comparison(
        "", "", tuple((label[a], c) for a, c in terms), metric, metric_source(metric)
    )
    evals = df[(df["event"] == "eval")]
    values = run_values(df, evals, comparison, step)
    by_label = {label[a]: a for a, _ in terms}
    values = values.assign(arm=values["arm"].map(by_label))
    wide = values.pivot_table(index="seed", columns="arm", values="value", aggfunc="first")
    arms = [a for a, _ in terms]
    wide = wide.reindex(columns=arms).dropna()
    wide["d"] = sum(c * wide[a] for a, c in terms)
    wide.index = wide.index.astype(int)
    return wide


@dataclass
class StatedTable:
    """One row per contrast (``rows``) with its part's and claim's verdicts. ``interim``:
    None once every planned run has reached the final eval, else the sentence that says how
    far the study is (its verdicts are then shown as an interim look that decides nothing)."""

    title: str
    claims: StatedClaims
    rows: pd.DataFrame
    parts: pd.DataFrame
    verdicts: dict[str, str]
    notes: list[str]
    interim: str | None = None


def stated_table(
    df: pd.DataFrame,
    claims: StatedClaims,
    label: Mapping[str, str],
    step: int,
    title: str,
) -> StatedTable:
    """Decide every part of ``claims`` on the runs in ``df`` at eval ``step``."""
    m = claims.comparisons
    rows, parts = [], []
    for index, part in enumerate(claims.parts):
        margin = claims.margins[part.metric].value
        intervals = []
        for terms in part.rows:
            wide = seed_values(df, label, step, terms, part.metric)
            d = wide["d"].to_numpy()
            interval = D.simultaneous_interval(d, claims.alpha, m)
            intervals.append(interval)
            pi, pi_low, pi_high = D.improvement_probability(d)
            rows.append(
                {
                    "part": index,
                    "claim": part.claim,
                    "rule": part.rule,
                    "metric": part.metric,
                    "comparison": row_text(terms, label),
                    "margin": margin,
                    "seeds": tuple(int(s) for s in wide.index),
                    "d": tuple(float(x) for x in d),
                    "effect": interval.effect,
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                    "pi": pi,
                    "pi_low": pi_low,
                    "pi_high": pi_high,
                    "row_verdict": D.row_verdict(
                        "greater" if part.rule in ("best", "trend") else part.rule,
                        interval,
                        margin,
                    ),
                }
            )
        if part.rule == "best":
            verdict = D.best_verdict(intervals, margin)
        else:
            verdict = D.row_verdict(part.decision, intervals[0], margin)
        parts.append(
            {
                "part": index,
                "claim": part.claim,
                "tested": part.tested(label),
                "verdict": verdict,
                "margin": margin,
                "decisive_margin": D.decisive_margin(part.decision, intervals),
            }
        )
    parts_frame = pd.DataFrame(parts)
    verdicts = {
        claim: D.claim_verdict(list(group["verdict"]))
        for claim, group in parts_frame.groupby("claim", sort=False)
    }
    notes = [
        f"{claims.status.capitalize()}: "
        + (
            "the claims, rules and margins were committed before the runs they judge."
            if claims.status == "confirmatory"
            else "written after the runs were seen (post hoc), so never confirmatory."
        ),
        f"One family of {m} comparisons: per seed the contrast d of that seed's runs; each "
        f"interval is the two-sided t interval of mean(d) at level 1 − {claims.alpha:g}/{m} "
        "(Bonferroni, simultaneous), and every decision — difference, non-inferiority, "
        "equivalence, best of a set — is read from these intervals "
        "(pkpo/analysis/decisions.py).",
        "best: contradicted if a rival's interval lies below 0, reproduced if every lower end "
        "is above −margin. greater (and trend): reproduced if the interval is above 0, "
        "contradicted if below, equivalent if inside ±margin. noninferior: reproduced if the "
        "lower end is above −margin, contradicted if the upper end is below it.",
        "Decisive margin: the smallest margin with which the part would pass (best, "
        "non-inferiority, equivalence); compare it with the declared one.",
        "P(A > B): the share of seeds with d > 0 (ties left out), exact Clopper–Pearson "
        "95 % interval (scipy's binomial test).",
    ]
    notes += [f"Margin of {metric}: ±{g.value:g} — {g.why}" for metric, g in claims.margins.items()]
    return StatedTable(title, claims, pd.DataFrame(rows), parts_frame, verdicts, notes)


def stated_grid(table: StatedTable) -> Grid:
    """The claims table: claim and its verdict, what each part tests and its verdict, then
    each comparison's effect, simultaneous interval and P(A > B)."""
    header = [
        "Claim",
        "Verdict",
        "Tested",
        "Part verdict (decisive margin / margin)",
        "Comparison",
        "Effect [simultaneous CI]",
        "P(A > B) [95 % CI]",
        "Seeds",
    ]
    body, seen_claims, seen_parts = [], set(), set()
    parts = table.parts.set_index("part")
    shown = " (interim)" if table.interim else ""
    for r in table.rows.itertuples():
        digits = 3 if r.metric == "entropy" else 2
        signed = f"+.{digits}f"
        first_claim = r.claim not in seen_claims
        first_part = r.part not in seen_parts
        seen_claims.add(r.claim)
        seen_parts.add(r.part)
        part = parts.loc[r.part]
        pi = number(r.pi, ".2f")
        if not math.isnan(r.pi_low):
            pi += f" [{r.pi_low:.2f}, {r.pi_high:.2f}]"
        decisive = number(part.decisive_margin, f".{digits}f")
        body.append(
            [
                f"{r.claim}: {STATEMENTS.get(r.claim, '')}" if first_claim else "",
                f"**{table.verdicts[r.claim]}**{shown}" if first_claim else "",
                part.tested if first_part else "",
                f"{part.verdict} ({decisive} / {part.margin:g})" if first_part else "",
                r.comparison,
                f"{number(r.effect, signed)} [{number(r.ci_low, signed)}, "
                f"{number(r.ci_high, signed)}]",
                pi,
                str(len(r.seeds)),
            ]
        )
    notes = [table.interim, *table.notes] if table.interim else table.notes
    return Grid(table.title, header, body, notes)


def stated_headline_grid(table: StatedTable) -> Grid:
    """The short form: per part, the claim and its verdict, what was tested and the part's
    verdict with its decisive and declared margins."""
    header = ["Claim", "Verdict", "Tested", "Part verdict (decisive margin / margin)"]
    full = stated_grid(table)
    body = [[row[0], row[1], row[2], row[3]] for row in full.body if row[2]]
    return Grid(table.title, header, body, full.notes[: 2 if table.interim else 1])


def stated_tidy(table: StatedTable) -> pd.DataFrame:
    """The rows with their part's and claim's verdicts beside them (for the CSV)."""
    parts = table.parts.set_index("part")
    return table.rows.assign(
        tested=table.rows["part"].map(parts["tested"]),
        part_verdict=table.rows["part"].map(parts["verdict"]),
        decisive_margin=table.rows["part"].map(parts["decisive_margin"]),
        claim_verdict=table.rows["claim"].map(table.verdicts),
    )


def power_table(
    claims: StatedClaims,
    pilot: pd.DataFrame,
    label: Mapping[str, str],
    step: int,
    seeds: int,
) -> pd.DataFrame:
    """Design-time power of every part at ``seeds`` seeds, by simulation of its rule
    (:func:`pkpo.analysis.decisions.simulate_power`) with each contrast's per-seed s.d.
    from a pilot's runs at eval ``step``. The scenario is the part's smallest effect of
    interest: a difference (``greater``, trend) of exactly the margin; a tie (0) for
    non-inferiority, equivalence and each rival of ``best``. Also the fewest seeds for 80 %."""
    m = claims.comparisons
    out = []
    for part in claims.parts:
        margin = claims.margins[part.metric].value
        sds = [
            float(np.std(seed_values(pilot, label, step, terms, part.metric)["d"], ddof=1))
            for terms in part.rows
        ]
        effects = [margin if part.decision == "greater" else 0.0] * len(sds)
        args = (part.decision, effects, sds)
        valid = all(math.isfinite(s) and s > 0 for s in sds)
        out.append(
            {
                "claim": part.claim,
                "tested": part.tested(label),
                "pilot_sd": tuple(round(s, 4) for s in sds),
                "margin": margin,
                "power": D.simulate_power(*args, seeds, margin, claims.alpha, m)
                if valid
                else math.nan,
                "seeds_for_80": D.seeds_for_power(*args, margin, claims.alpha, m)
                if valid
                else None,
            }
        )
    return pd.DataFrame(out)
