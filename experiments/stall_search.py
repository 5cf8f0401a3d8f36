"""Search for a split where pass@1 optimisation stalls (claim 7), by a committed criterion.

    python -m experiments.stall_search experiments/results/stall_search/criterion.yaml

For each candidate of the criterion file, in order: the base model's held-out pass@k on the
candidate's split (``base``); if that meets the base criterion, three k_opt = 1 pilot runs
(``pilot``, launched with ``experiments.repro_sweep`` into ``<folder>/<candidate>/``, skipped
when already done) and their mean held-out pass@1 gain. Every candidate's numbers go to
``search.json`` and ``search.md`` beside the criterion, whether it meets the criterion or not.
The k_opt > 1 arms are never run here: the criterion looks at the base model and k_opt = 1 only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pkpo import pretrain
from pkpo.analysis.runs import read_events
from pkpo.models import load_policy
from pkpo.train import CONF_DIR

REPO = Path(__file__).resolve().parents[1]


def compose_candidate(preset: str, overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={preset}", *overrides])


def base_eval(cfg, problems: int, n: int) -> dict[str, float]:
    """pass@1/4/16 of the untrained model on the first ``problems`` held-out problems."""
    torch.set_num_threads(1)
    task = instantiate(cfg.task)
    model, tokenizer, _ = load_policy(cfg.model)
    model.eval()
    held_out = task.load(cfg.task.eval_split)[:problems]
    max_new = int(cfg.sampler.max_new_tokens)
    return pretrain.evaluate(model, tokenizer, task, held_out, n, [1, 4, 16], 0, max_new)


def pilot_gain(folder: Path, arm: str, seeds: list[int]) -> dict[str, Any]:
    """Per seed: held-out pass@1 at step 0 and at the last eval, and the cumulative solve
    rate of the last train step."""
    per_seed = {}
    for seed in seeds:
        events = read_events(folder / f"{arm}_s{seed}" / "events.jsonl")
        evals = [e for e in events if e["event"] == "eval"]
        trains = [e for e in events if e["event"] == "train"]
        per_seed[seed] = {
            "pass@1_start": evals[0]["pass@1"],
            "pass@1_end": evals[-1]["pass@1"],
            "pass@16_start": evals[0]["pass@16"],
            "pass@16_end": evals[-1]["pass@16"],
            "end_step": evals[-1]["step"],
            "solve_rate": trains[-1]["cumulative_solve_rate"],
        }
    gains = [s["pass@1_end"] - s["pass@1_start"] for s in per_seed.values()]
    return {"per_seed": per_seed, "pass@1_gain": float(np.mean(gains))}


def run_pilot(spec: dict, name: str, overrides: list[str], out: Path, parallel: int) -> int:
    pilot = spec["pilot"]
    cmd = [
        sys.executable,
        "-m",
        "experiments.repro_sweep",
        "--preset",
        spec["preset"],
        "--arms",
        pilot["arm"],
        "--seeds",
        *map(str, pilot["seeds"]),
        "--out",
        str(out),
        "--parallel",
        str(parallel),
        "--",
        *overrides,
        *pilot["overrides"],
        f"+protocol_commit={commit()}",
    ]
    return subprocess.call(cmd, cwd=REPO)


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def table(results: dict[str, dict]) -> str:
    lines = [
        "| candidate | overrides | base pass@1 | base pass@16 | meets base | k_opt=1 pass@1 "
        "start → end (mean of seeds) | gain (points) | solve rate at end | stalls | meets |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        base = r["base"]
        row = [
            name,
            " ".join(f"`{o}`" for o in r["overrides"]),
            f"{100 * base['pass@1']:.2f} %",
            f"{100 * base['pass@16']:.1f} %",
            "yes" if r["meets_base"] else "no",
        ]
        if "pilot" in r:
            seeds = r["pilot"]["per_seed"].values()
            start = 100 * np.mean([s["pass@1_start"] for s in seeds])
            end = 100 * np.mean([s["pass@1_end"] for s in seeds])
            solve = 100 * np.mean([s["solve_rate"] for s in seeds])
            row += [
                f"{start:.2f} → {end:.2f} %",
                f"{100 * r['pilot']['pass@1_gain']:+.2f}",
                f"{solve:.1f} %",
                "yes" if r["stalls"] else "no",
            ]
        else:
            row += ["not run (base criterion not met)", "—", "—", "—"]
        row.append("**yes**" if r["meets"] else "no")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("criterion", type=Path, help="the committed criterion.yaml")
    parser.add_argument("--parallel", type=int, default=1, help="pilot runs at once")
    args = parser.parse_args(argv)
    spec = yaml.safe_load(args.criterion.read_text())
    folder = args.criterion.parent
    out_json = folder / "search.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    base_rule, pilot_rule = spec["base"], spec["pilot"]
    started = time.monotonic()
    for name, overrides in spec["candidates"].items():
        r = results.get(name, {"overrides": overrides})
        if "base" not in r:
            t0 = time.monotonic()
            cfg = compose_candidate(spec["preset"], overrides)
            r["task"] = OmegaConf.to_container(cfg.task)
            r["base"] = base_eval(cfg, base_rule["problems"], base_rule["n"])
            r["base_seconds"] = round(time.monotonic() - t0, 1)
        r["meets_base"] = bool(
            r["base"]["pass@1"] < base_rule["pass@1_below"]
            and r["base"]["pass@16"] >= base_rule["pass@16_at_least"]
        )
        r["meets"] = False
        if r["meets_base"]:
            t0 = time.monotonic()
            code = run_pilot(spec, name, overrides, folder / name, args.parallel)
            r.setdefault("pilot_seconds", round(time.monotonic() - t0, 1))
            if code == 0:
                r["pilot"] = pilot_gain(folder / name, pilot_rule["arm"], pilot_rule["seeds"])
                r["stalls"] = r["pilot"]["pass@1_gain"] < pilot_rule["pass@1_gain_below"]
                r["meets"] = r["stalls"]
            else:
                r["pilot_failed"] = code
        results[name] = r
        out_json.write_text(json.dumps(results, indent=1))
        print(f"[stall_search] {name}: base {r['meets_base']}, meets {r['meets']}", flush=True)
    chosen = next((name for name, r in results.items() if r["meets"]), None)
    verdict = (
        f"chosen split: {chosen}"
        if chosen
        else "no candidate meets the criterion: no stalling regime found at this scale"
    )
    elapsed = time.monotonic() - started
    (folder / "search.md").write_text(
        f"# Stall search ({spec['name']})\n\n{table(results)}\n{verdict}\n"
    )
    print(f"[stall_search] {verdict} ({elapsed:.0f} s this call)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
