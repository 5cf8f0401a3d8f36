"""Time per phase of the RL loop's step, for each sampler backend.

Runs ``pkpo-train`` (the default config unless overridden) for a few steps per backend,
reads the run's ``events.jsonl``, and prints a Markdown table of median seconds per phase
(the first step, which warms caches up, is dropped) and sampled tokens per second.
The loop's performance targets: scoring + transform + logging + checkpoint under 5% of the step;
vLLM sampling at least 4x the HF sampler's tokens per second on the same batch.

    python -m experiments.bench_loop                      # hf and vllm, default config
    python -m experiments.bench_loop --backends hf --steps 4 -- prompts_per_step=8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PHASES = ["sample", "score", "transform", "update", "sync", "log"]


def run_backend(backend: str, steps: int, overrides: list[str], root: Path) -> dict:
    run_dir = root / backend
    cmd = [
        sys.executable,
        "-m",
        "pkpo.train",
        f"sampler={backend}",
        f"steps={steps}",
        "save_every=1",
        "eval.problems=0",
        "logger.wandb.mode=disabled",
        f"run_dir={run_dir}",
        *overrides,
    ]
    subprocess.run(cmd, check=True)
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    train = [e for e in events if e["event"] == "train"][1:] or [
        e for e in events if e["event"] == "train"
    ]
    ckpt = [e["seconds"] for e in events if e["event"] == "checkpoint"]
    row = {p: statistics.median(e[f"time/{p}"] for e in train) for p in PHASES if p != "log"}
    row["log"] = statistics.median(_log_seconds(events) or [0.0])
    row["checkpoint"] = statistics.median(ckpt) if ckpt else 0.0
    row["step"] = statistics.median(e["time/step"] for e in train) + row["log"] + row["checkpoint"]
    row["tokens_per_s"] = statistics.median(e["tokens_per_s"] for e in train)
    row["sampled_tokens"] = statistics.median(e["sampled_tokens"] for e in train)
    return row


def _log_seconds(events: list[dict]) -> list[float]:
    """Per step, the time spent writing its own train event (which that event cannot hold):
    the wall time between consecutive train events' timestamps, less the later step's
    ``time/step`` and any checkpoint written between them."""
    out, previous, saved = [], None, 0.0
    for event in events:
        if event["event"] == "checkpoint":
            saved += event["seconds"]
        elif event["event"] == "train":
            if previous is not None:
                out.append(event["time"] - previous["time"] - event["time/step"] - saved)
            previous, saved = event, 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for pkpo-train")
    args = parser.parse_args()

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            rows[backend] = run_backend(backend, args.steps, args.overrides, Path(tmp))

    cols = ["step", *PHASES, "checkpoint"]
    lines = [
        "| sampler | "
        + " | ".join(f"{c} (s)" for c in cols)
        + " | overhead | tokens/step | tok/s |",
        "|---" * (len(cols) + 4) + "|",
    ]
    for backend, r in rows.items():
        overhead = (r["score"] + r["transform"] + r["log"] + r["checkpoint"]) / r["step"]
        cells = " | ".join(f"{r[c]:.3f}" for c in cols)
        lines.append(
            f"| {backend} | {cells} | {overhead:.1%} | {r['sampled_tokens']:.0f} |"
            f" {r['tokens_per_s']:.1f} |"
        )
    if "hf" in rows and "vllm" in rows:
        ratio = rows["vllm"]["tokens_per_s"] / rows["hf"]["tokens_per_s"]
        lines.append(f"\nvLLM / HF sampled tokens per second: {ratio:.1f}x (target >= 4x)")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
