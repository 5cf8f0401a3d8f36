"""Search for a split where pass@1 optimisation stalls (claim 7), by a committed criterion.

    python -m experiments.stall_search experiments/results/stall_search/criterion.yaml

For each candidate of the criterion file, in order: the base model's held-out pass@k on the
candidate's split (into ``search.json``); if that meets the base criterion, the k_opt = 1
pilot runs (launched with ``experiments.repro_sweep`` into ``<folder>/<candidate>/``, skipped
when already done). The judgement (``pkpo.analysis.stall``, which ``pkpo-analyze`` also runs
on the committed logs) goes to ``search.md``: every candidate, whether it meets the criterion
or not.
The k_opt > 1 arms are never run here: the criterion looks at the base model and k_opt = 1 only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pkpo import pretrain
from pkpo.analysis.render import to_markdown
from pkpo.analysis.runs import load_runs
from pkpo.analysis.stall import SEARCH_FILE, StallCriterion, stall_grid, stall_table
from pkpo.config import CONF_DIR
from pkpo.models import load_policy

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


def run_pilot(criterion: StallCriterion, overrides: list[str], out: Path, parallel: int) -> int:
    cmd = [
        sys.executable,
        "-m",
        "experiments.repro_sweep",
        "--preset",
        criterion.preset,
        "--arms",
        criterion.arm,
        "--seeds",
        *map(str, criterion.seeds),
        "--out",
        str(out),
        "--parallel",
        str(parallel),
        "--",
        *overrides,
        *criterion.pilot_overrides,
        f"+protocol_commit={commit()}",
    ]
    return subprocess.call(cmd, cwd=REPO)


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("criterion", type=Path, help="the committed criterion.yaml")
    parser.add_argument("--parallel", type=int, default=1, help="pilot runs at once")
    args = parser.parse_args(argv)
    criterion = StallCriterion.load(args.criterion)
    folder = criterion.folder
    out_json = folder / SEARCH_FILE
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    started = time.monotonic()
    for name, overrides in criterion.candidates.items():
        r = results.get(name, {"overrides": overrides})
        if "base" not in r:
            t0 = time.monotonic()
            cfg = compose_candidate(criterion.preset, overrides)
            r["task"] = OmegaConf.to_container(cfg.task)
            r["base"] = base_eval(cfg, criterion.base_problems, criterion.base_n)
            r["base_seconds"] = round(time.monotonic() - t0, 1)
        if criterion.meets_base(r["base"]) and "pilot_seconds" not in r:
            t0 = time.monotonic()
            r["pilot_exit"] = run_pilot(criterion, overrides, folder / name, args.parallel)
            r["pilot_seconds"] = round(time.monotonic() - t0, 1)
        results[name] = r
        out_json.write_text(json.dumps(results, indent=1))
    table = stall_table(load_runs([folder]), criterion)
    (folder / "search.md").write_text(to_markdown(stall_grid(table)))
    print(f"[stall_search] {table.verdict} ({time.monotonic() - started:.0f} s this call)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
