"""A pre-registered confirmatory study: its protocol, its blocked tests and its verdicts.

A study is a folder holding ``protocol.yaml`` (:data:`PROTOCOL_FILE`) and the runs it
judges, launched by ``python -m experiments.repro_sweep --protocol <folder>/protocol.yaml``.
The protocol fixes, before the first run: the arms (sweep names, :func:`pkpo.arms.sweep_arm`),
the seeds, the final step, alpha, an equivalence margin per metric, a **primary** family of
comparisons (one or two per claim) and a **secondary** family.

Runs of one seed share the starting model, the training prompts, the eval problems and the
sampling seeds, so the seed is a block. Each comparison is a contrast of arms, per seed
``d_s = sum_a c_a * value(a, s)`` at the final eval, and is tested on the ``d_s`` alone
(with two arms, the paired t-test), with statsmodels:

* the two-sided one-sample t-test of mean(d) = 0 and its 95 % t confidence interval;
* two one-sided tests (TOST) of |mean(d)| < margin, for equivalence;
* the probability of improvement P(d > 0) over seeds, as Agarwal et al. (2021) recommend,
  with its exact binomial interval (ties left out).

A protocol may also state the claims as the paper states them (a ``claims:`` section,
:mod:`.stated`, decided by :mod:`.decisions`), and a finished study may carry an exploratory
re-reading of them (``rereading.yaml`` beside the protocol).

Holm's correction runs over each family, separately for the two-sided and the TOST p-values.
Verdicts (claimed ``greater``): *reproduced* (Holm p < alpha, d > 0), *contradicted* (Holm p
< alpha, d < 0), *equivalent* (otherwise, TOST Holm p < alpha), else *inconclusive*.
Claimed ``keeps`` (non-inferiority): *reproduced* if equivalent or significantly greater,
*contradicted* if significantly smaller and not equivalent, else *inconclusive*. A claim is
contradicted if one of its primary comparisons is, reproduced (or equivalent) if all are,
else inconclusive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import DescrStatsW

from pkpo.arms import run_name, sweep_arm

from . import decisions
from .claims import STATEMENTS, TRAIN_WINDOW
from .render import Grid, number
from .runs import runs_under
from .stated import (
    StatedClaims,
    StatedTable,
    metric_source,
    row_text,
    seed_values,
    stated_table,
)

PROTOCOL_FILE = "protocol.yaml"
REREADING_FILE = "rereading.yaml"
FAMILIES = ("primary", "secondary")
CLAIMED = ("greater", "keeps")
VERDICTS = ("reproduced", "contradicted", "equivalent", "inconclusive", "no data")
CONFIDENCE = 0.95
EXTRA_STATEMENTS = {"E": "EntropyReg against k_opt = 1 and k_opt = 8 (not a claim of the paper)"}


@dataclass(frozen=True)
class Contrast:
    """``sum_a coef_a * metric(arm a)``, arms by sweep name; ``claimed``: greater or keeps."""

    claim: str
    terms: tuple[tuple[str, float], ...]
    metric: str
    claimed: str

    def text(self, label: dict[str, str]) -> str:
        """``k_opt=8 − k_opt=1, pass@8``; ``A − ½ (B + C), pass@16`` for a half-half contrast."""
        return f"{row_text(self.terms, label)}, {self.metric}"


@dataclass(frozen=True)
class Protocol:
    """A parsed ``protocol.yaml`` (see the module docstring); ``folder`` holds its runs."""

    name: str
    folder: Path
    preset: str
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    final_step: int
    alpha: float
    margins: dict[str, float]
    families: dict[str, tuple[Contrast, ...]]
    overrides: tuple[str, ...] = ()
    """Hydra overrides of every run on top of the preset."""
    stated: StatedClaims | None = None
    """The claims as stated (the protocol's ``claims:`` section, :mod:`.stated`)."""
    rereading: StatedClaims | None = None
    """An exploratory re-reading written after the runs (``rereading.yaml`` beside it)."""

    @classmethod
    def load(cls, path: str | Path) -> Protocol:
        """Read and check a protocol; ``ValueError`` names the key that is wrong."""
        path = Path(path)
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        where = f"{path}:"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} expected a mapping of protocol keys")
        for key in ("name", "preset", "arms", "seeds", "steps", "final_step", "alpha", "margins"):
            if key not in raw:
                raise ValueError(f"{where} missing key {key!r}")
        families = {}
        for family in FAMILIES:
            contrasts = []
            for i, item in enumerate(raw.get(family) or []):
                at = f"{where} {family}[{i}]"
                if item.get("claimed") not in CLAIMED:
                    raise ValueError(f"{at}.claimed must be one of {CLAIMED}")
                unknown = set(item["terms"]) - set(raw["arms"])
                if unknown:
                    raise ValueError(f"{at}.terms names arms {sorted(unknown)} not in `arms`")
                if item["metric"] not in raw["margins"]:
                    raise ValueError(f"{at}.metric {item['metric']!r} has no entry in `margins`")
                metric_source(item["metric"])
                terms = tuple((arm, float(c)) for arm, c in item["terms"].items())
                contrasts.append(
                    Contrast(str(item["claim"]), terms, item["metric"], item["claimed"])
                )
            families[family] = tuple(contrasts)
        stated = StatedClaims.parse(raw, raw["arms"], where) if raw.get("claims") else None
        if not families["primary"] and stated is None:
            raise ValueError(f"{where} needs `claims` (or a `primary` family of comparisons)")
        rereading = None
        if (path.parent / REREADING_FILE).is_file():
            again = path.parent / REREADING_FILE
            reread = yaml.safe_load(again.read_text(encoding="utf-8"))
            rereading = StatedClaims.parse(reread, raw["arms"], f"{again}:")
            if rereading.status != "exploratory":
                raise ValueError(f"{again}: status must be exploratory (it follows the runs)")
        return cls(
            name=str(raw["name"]),
            folder=path.parent,
            preset=str(raw["preset"]),
            arms=tuple(raw["arms"]),
            seeds=tuple(int(s) for s in raw["seeds"]),
            steps=int(raw["steps"]),
            final_step=int(raw["final_step"]),
            alpha=float(raw["alpha"]),
            margins={
                k: float(v["value"] if isinstance(v, dict) else v)
                for k, v in raw["margins"].items()
            },
            families=families,
            overrides=tuple(str(o) for o in raw.get("overrides") or ()),
            stated=stated,
            rereading=rereading,
        )

    @property
    def labels(self) -> dict[str, str]:
        """Sweep arm name -> the analysis label its runs carry (:func:`pkpo.arms.sweep_arm`)."""
        return {arm: sweep_arm(arm, self.steps).label for arm in self.arms}


def find_protocols(paths: Iterable[str | Path]) -> list[Protocol]:
    """Every ``protocol.yaml`` under ``paths`` (searched recursively), parsed."""
    found = {p.resolve() for root in paths for p in Path(root).rglob(PROTOCOL_FILE)}
    return [Protocol.load(p) for p in sorted(found)]


# ------------------------------------------------------------------------- statistics


def blocked_test(d: Sequence[float], margin: float) -> dict[str, float]:
    """The tests of one contrast from its per-seed values ``d``: mean effect, its 95 % t
    interval, the two-sided p of mean = 0, the TOST p of |mean| < margin, and P(d > 0) with
    its exact binomial interval (:func:`pkpo.analysis.decisions.improvement_probability`).
    NaN where ``d`` has fewer than 2 values or no spread."""
    d = np.asarray(d, dtype=float)
    out = dict.fromkeys(("effect", "ci_low", "ci_high", "p", "p_tost", "pi", "pi_low", "pi_high"))
    out = {k: math.nan for k in out} | {"n": len(d)}
    if len(d) == 0:
        return out
    out["effect"] = float(d.mean())
    out["pi"], out["pi_low"], out["pi_high"] = decisions.improvement_probability(d, CONFIDENCE)
    if len(d) < 2 or float(d.std()) == 0.0:
        return out
    described = DescrStatsW(d)
    out["ci_low"], out["ci_high"] = map(float, described.tconfint_mean(alpha=1 - CONFIDENCE))
    out["p"] = float(described.ttest_mean(0.0)[1])
    out["p_tost"] = float(described.ttost_mean(-margin, margin)[0])
    return out


def holm(p: Sequence[float], alpha: float) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels); NaN entries stay NaN and do not count."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, math.nan)
    valid = ~np.isnan(p)
    if valid.any():
        out[valid] = multipletests(p[valid], alpha=alpha, method="holm")[1]
    return out


def comparison_verdict(
    effect: float, p_holm: float, p_tost_holm: float, claimed: str, alpha: float
) -> str:
    """The protocol's verdict of one comparison (module docstring)."""
    if math.isnan(effect):
        return "no data"
    significant = not math.isnan(p_holm) and p_holm < alpha
    equivalent = not math.isnan(p_tost_holm) and p_tost_holm < alpha
    if claimed == "keeps":
        if equivalent or (significant and effect > 0):
            return "reproduced"
        return "contradicted" if significant and effect < 0 else "inconclusive"
    if significant:
        return "reproduced" if effect > 0 else "contradicted"
    return "equivalent" if equivalent else "inconclusive"


def claim_verdict(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its primary comparisons' verdicts."""
    if not verdicts or all(v == "no data" for v in verdicts):
        return "no data"
    if "contradicted" in verdicts:
        return "contradicted"
    for verdict in ("reproduced", "equivalent"):
        if all(v == verdict for v in verdicts):
            return verdict
    return "inconclusive"


# ---------------------------------------------------------------------- values and table


@dataclass
class ConfirmatoryTable:
    """Every comparison's tests and verdict (``rows``), each claim's verdict (``claims``)."""

    protocol: Protocol
    rows: pd.DataFrame
    claims: dict[str, str]
    used_runs: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"confirmatory_{self.protocol.name}"


def confirmatory_table(df: pd.DataFrame, protocol: Protocol) -> ConfirmatoryTable:
    """Test every comparison of the protocol on the study's runs in ``df``."""
    runs = runs_under(df, protocol.folder)
    runs = runs[runs["seed"].isin(protocol.seeds)]
    label = protocol.labels
    records: list[dict[str, Any]] = []
    for family, contrasts in protocol.families.items():
        start = len(records)
        for contrast in contrasts:
            wide = seed_values(runs, label, protocol.final_step, contrast.terms, contrast.metric)
            margin = protocol.margins[contrast.metric]
            records.append(
                {
                    "family": family,
                    "claim": contrast.claim,
                    "comparison": contrast.text(label),
                    "metric": contrast.metric,
                    "claimed": contrast.claimed,
                    "margin": margin,
                    "seeds": tuple(int(s) for s in wide.index),
                    "d": tuple(float(x) for x in wide["d"]),
                    **blocked_test(wide["d"].to_numpy(), margin),
                }
            )
        block = records[start:]
        p_holm = holm([r["p"] for r in block], protocol.alpha)
        tost_holm = holm([r["p_tost"] for r in block], protocol.alpha)
        for r, ph, th in zip(block, p_holm, tost_holm, strict=True):
            r["p_holm"], r["p_tost_holm"] = float(ph), float(th)
            r["verdict"] = comparison_verdict(r["effect"], ph, th, r["claimed"], protocol.alpha)
    rows = pd.DataFrame(records)
    primary = rows[rows["family"] == "primary"]
    claims = {
        claim: claim_verdict(list(group["verdict"]))
        for claim, group in primary.groupby("claim", sort=False)
    }
    final = runs[(runs["event"] == "eval") & (runs["step"] == protocol.final_step)]
    used = {str(r): f"{protocol.name}" for r in final["run"].astype(str).unique()}
    return ConfirmatoryTable(protocol, rows, claims, used)


def _p(x: float) -> str:
    return "—" if math.isnan(x) else ("< 0.001" if x < 0.001 else f"{x:.3f}")


def confirmatory_grid(table: ConfirmatoryTable) -> Grid:
    """The claims table: one row per comparison, the claim's verdict on its first row."""
    protocol = table.protocol
    header = [
        "Claim (tested only by the comparisons named)",
        "Pre-registered verdict of those comparisons",
        "Family",
        "Comparison",
        "Effect [95 % CI]",
        "P(A > B) [95 % CI]",
        "Seeds",
        "p",
        "p Holm",
        "TOST p Holm (margin)",
        "Comparison verdict",
    ]
    body, seen = [], set()
    for r in table.rows.itertuples():
        first = r.family == "primary" and r.claim not in seen
        if first:
            seen.add(r.claim)
        statement = STATEMENTS.get(r.claim) or EXTRA_STATEMENTS.get(r.claim, "")
        digits = 3 if r.metric == "entropy" else 2
        signed = f"+.{digits}f"
        effect = (
            f"{number(r.effect, signed)} [{number(r.ci_low, signed)}, {number(r.ci_high, signed)}]"
        )
        pi = "—" if math.isnan(r.pi) else f"{r.pi:.2f}"
        if not math.isnan(r.pi_low):
            pi += f" [{r.pi_low:.2f}, {r.pi_high:.2f}]"
        body.append(
            [
                f"{r.claim}: {statement}" if first else "",
                f"**{table.claims[r.claim]}**" if first else "",
                r.family,
                r.comparison + (" (non-inferiority)" if r.claimed == "keeps" else ""),
                effect,
                pi,
                str(r.n),
                _p(r.p),
                _p(r.p_holm),
                f"{_p(r.p_tost_holm)} (±{r.margin:g})",
                r.verdict,
            ]
        )
    notes = [
        f"Pre-registered in {protocol.folder.name}/{PROTOCOL_FILE} (committed before its runs); "
        f"final held-out eval at step {protocol.final_step}; seeds {list(protocol.seeds)}. "
        "Each verdict answers the comparisons named beside it, which can be narrower than the "
        "claim: the claims as the paper states them are decided in the claims-as-stated table.",
        "Per seed, the contrast d of the runs of that seed (blocked design); paired t-test "
        "of mean(d) = 0 (statsmodels), 95 % t interval, TOST within ±margin, P(A > B) = the "
        "share of seeds with d > 0 (ties left out) with its exact 95 % binomial interval "
        "(the protocol named a percentile bootstrap, which collapses to [1, 1] at 7 of 7).",
        f"Holm over each family (primary: the verdicts; secondary: reported only), alpha "
        f"{protocol.alpha:g}. reproduced / contradicted: Holm p < alpha with the claimed / "
        "opposite sign; equivalent: otherwise TOST Holm p < alpha; non-inferiority "
        "(claim 5's pass@1): reproduced if equivalent or significantly greater.",
        "Effects in points (pass@k, cumulative solve rate, ×100) or nats per token (entropy, "
        f"mean of the {TRAIN_WINDOW} train steps before the eval).",
    ]
    return Grid(f"Confirmatory claims table: {protocol.name}", header, body, notes)


def headline_grid(table: ConfirmatoryTable) -> Grid:
    """The primary comparisons only: claim, verdict, comparison, effect with its 95 % CI and
    P(A > B) -- the short form of :func:`confirmatory_grid`."""
    full = confirmatory_grid(table)
    keep = [0, 1, 3, 4, 5]
    rows = [
        [row[i] for i in keep]
        for row, family in zip(full.body, table.rows["family"], strict=True)
        if family == "primary"
    ]
    return Grid(full.title, [full.header[i] for i in keep], rows, full.notes[:1])


def confirmatory_tidy(table: ConfirmatoryTable) -> pd.DataFrame:
    """The rows with the claim verdict beside each comparison (for the CSV)."""
    return table.rows.assign(claim_verdict=table.rows["claim"].map(table.claims))


def stated_tables(df: pd.DataFrame, protocol: Protocol) -> list[tuple[str, StatedTable]]:
    """The study's claims as stated, decided on its runs: the protocol's own (confirmatory)
    and its exploratory re-reading, each with its report key."""
    runs = runs_under(df, protocol.folder)
    runs = runs[runs["seed"].isin(protocol.seeds)]
    out = []
    for suffix, claims in (("", protocol.stated), ("_rereading", protocol.rereading)):
        if claims is None:
            continue
        title = f"Claims as the paper states them: {protocol.name} ({claims.status})"
        table = stated_table(runs, claims, protocol.labels, protocol.final_step, title)
        table.interim = interim_look(runs, protocol)
        out.append((f"claims_{protocol.name}{suffix}", table))
    return out


def interim_look(runs: pd.DataFrame, protocol: Protocol) -> str | None:
    """None when every planned (arm, seed) run has reached the final eval; else how many
    have, and that the protocol's verdicts wait for all of them."""
    final = runs[(runs["event"] == "eval") & (runs["step"] == protocol.final_step)]
    done = set(zip(final["arm"], final["seed"].astype(int), strict=True))
    planned = {(label, seed) for label in protocol.labels.values() for seed in protocol.seeds}
    finished = planned & done
    if finished == planned:
        return None
    complete = [s for s in protocol.seeds if all((a, s) in done for a in protocol.labels.values())]
    return (
        f"Interim look: {len(finished)} of {len(planned)} planned runs have reached step "
        f"{protocol.final_step} ({len(complete)} of {len(protocol.seeds)} seeds in every arm). "
        "No interim analysis was declared: these verdicts decide nothing; the table on every "
        "seed does."
    )


def sweep_grid(protocol: Protocol) -> Grid | None:
    """Every planned run of the study by arm, from its launcher's ``manifest.json``: how
    many finished, failed, are still to run, and their attempts (a stopped or failed
    attempt is resumed or rerun by the next launch). None without a manifest."""
    path = protocol.folder / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    header = ["Arm", "Planned", "Done", "Failed", "Not done yet", "Attempts", "Wall s (median)"]
    body = []
    for arm, label in protocol.labels.items():
        runs = [manifest.get(run_name(arm, seed), {}) for seed in protocol.seeds]
        status = [run.get("status", "queued") for run in runs]
        attempts = [_attempts(run) for run in runs]
        walls = [
            tries[-1]["wall_s"]
            for run, tries in zip(runs, attempts, strict=True)
            if run.get("status") == "done" and tries
        ]
        body.append(
            [
                label,
                str(len(runs)),
                str(status.count("done")),
                str(status.count("failed")),
                str(len(runs) - status.count("done") - status.count("failed")),
                str(sum(len(tries) for tries in attempts)),
                number(float(np.median(walls)) if walls else None, ".0f"),
            ]
        )
    notes = [
        f"From {protocol.name}/manifest.json, written by the sweep launcher: every "
        "attempt of every run is kept there (start, exit or signal, steps, wall time); a run "
        "whose attempt was stopped or failed is resumed from its checkpoint, or rerun from the "
        "start without one, by the next launch. Wall time: the finished attempt's."
    ]
    return Grid(f"Sweep status: {protocol.name}", header, body, notes)


def _attempts(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A manifest entry's attempts; manifests before 0.3.0 kept only the exit codes and the
    last attempt's wall time."""
    if "attempts" in run:
        return run["attempts"]
    codes = run.get("exit_codes", [])
    return [{"exit": code, "wall_s": run.get("wall_s")} for code in codes]
