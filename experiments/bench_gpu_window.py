"""Step time and its parts, before and after the GPU-window changes, and per-run fixed costs.

``--runs DIR``: one table row per run folder under ``DIR`` (what ``experiments/gpu_study.sh``
writes beside its runs). Otherwise runs the testbed on this machine in each configuration of
``CONFIGS`` (micro-batches by count or by tokens, eager or compiled sampling), one after the
other, and also times the scoring pool's start, fresh and reused:

    python -m experiments.bench_gpu_window --steps 4 --out timing.md
    python -m experiments.bench_gpu_window --runs $OUT/runs --out $OUT/timing.md

Columns: median seconds per train step and per phase over the steps after the first; the
first step apart (it compiles the sampler when compilation is on); sampled tokens per second;
peak memory (GPU memory on a GPU, else resident; what ``footprint_gib`` estimates); the run's
wall time from the launcher's manifest, or from this script's clock.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (name, overrides) on top of the testbed preset: 16 prompts x 16 samples a step
CONFIGS = {
    "testbed preset (256 samples a micro-batch, eager sampler)": [],
    "micro-batches of 32 samples": ["trainer.micro_batch_size=32"],
    "micro-batches of 2048 tokens": ["trainer.micro_batch_tokens=2048"],
    "+ compiled static-cache sampler, cold compile cache": [
        "trainer.micro_batch_tokens=2048",
        "sampler.hf.cache_implementation=static",
        "sampler.hf.compile=true",
    ],
}
WARM = "+ compiled static-cache sampler, warm compile cache"
PHASES = ("sample", "score", "update")


def run_row(run_dir: Path, wall_s: float | None) -> dict[str, float]:
    """Medians over a run's train steps after the first, its first step and wall time."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    train = [e for e in events if e["event"] == "train"]
    later = train[1:] or train
    row = {p: statistics.median(e[f"time/{p}"] for e in later) for p in PHASES}
    row["step"] = statistics.median(e["time/step"] for e in later)
    row["first step"] = train[0]["time/step"]
    row["tok/s"] = statistics.median(e["tokens_per_s"] for e in later)
    row["steps"] = len(train)
    # the run's high-water mark: GPU memory on a GPU, else resident memory
    peak = "gpu_peak_gib" if "gpu_peak_gib" in train[-1] else "peak_rss_gib"
    row["peak GiB"] = max(e.get(peak, float("nan")) for e in train)
    row["wall"] = wall_s if wall_s is not None else float("nan")
    return row


def table(rows: dict[str, dict[str, float]]) -> str:
    cols = ["step", *PHASES, "first step", "tok/s", "peak GiB", "steps", "wall"]
    lines = [
        "| configuration | " + " | ".join(cols) + " |",
        "|---" + "|---:" * len(cols) + "|",
    ]
    for name, row in rows.items():
        cells = [f"{row[c]:.0f}" if c in ("tok/s", "steps") else f"{row[c]:.2f}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_rows(runs: Path) -> dict[str, dict[str, float]]:
    """Rows of a sweep's run folders, with wall times from its ``manifest.json``."""
    manifest_path = runs / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    return {
        folder.name: run_row(folder, manifest.get(folder.name, {}).get("wall_s"))
        for folder in sorted(runs.iterdir())
        if (folder / "events.jsonl").is_file()
    }


def testbed_rows(steps: int, root: Path) -> dict[str, dict[str, float]]:
    """Each configuration as one testbed run in this process's environment, its own compile
    cache (cold for the first compiled run, warm for the second)."""
    env_cache = [f"TORCHINDUCTOR_CACHE_DIR={root / 'compile_cache'}"]
    configs = {**CONFIGS, WARM: CONFIGS["+ compiled static-cache sampler, cold compile cache"]}
    rows = {}
    for i, (name, overrides) in enumerate(configs.items()):
        run_dir = root / f"run{i}"
        cmd = [
            "env",
            *env_cache,
            sys.executable,
            "-m",
            "pkpo.train",
            "experiment=tiny_arith_noisy",
            f"steps={steps}",
            "eval.problems=0",
            "save_every=0",
            f"run_dir={run_dir}",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ]
        start = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        rows[name] = run_row(run_dir, time.monotonic() - start)
    return rows


def scoring_pool_start() -> str:
    """Seconds to a first score with a fresh pool of one worker, and with the pool a closed
    Scorer of the same task left (``pkpo.scoring``)."""
    from pkpo.scoring import Scorer
    from pkpo.tasks.arithmetic import ArithmeticTask

    task = ArithmeticTask(digits=2, ops=["+", "-"], n_train=256, n_test=200, seed=0)
    problem = task.load("train")[0]
    seconds = []
    for _ in range(2):
        start = time.monotonic()
        scorer = Scorer(task, workers=1)
        scorer.score([problem], [[str(problem.answer)]])
        seconds.append(time.monotonic() - start)
        scorer.close()
    fresh, reused = seconds
    return f"scoring pool, start to first score: fresh {fresh:.2f} s, reused {reused:.3f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, help="a sweep's folder: tabulate its runs")
    parser.add_argument("--steps", type=int, default=4, help="testbed steps per configuration")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.runs is not None:
        if not args.runs.is_dir():
            parser.error(f"--runs: no folder {args.runs}")
        text = table(sweep_rows(args.runs))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            text = table(testbed_rows(args.steps, Path(tmp))) + "\n\n" + scoring_pool_start()
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
