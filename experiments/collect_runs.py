"""Copy a sweep's run logs into the repository: everything the analysis reads, nothing large.

    python -m experiments.collect_runs runs/tiny_arith experiments/results/tiny_arith

For each run folder under SRC (one with ``events.jsonl``) it copies ``events.jsonl``,
``config.yaml`` and ``train.log``; beside them the sweep's ``<run>.log`` files and
``manifest.json``. Checkpoints and Hydra's own folder stay behind. Machine-local paths
become relative (the repository's folder is cut from every path, the interpreter is written
``python``), and a progress bar's carriage-return redraws keep only their last state, so a
log reads as it looked when the run ended.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = ("events.jsonl", "config.yaml", "train.log")


def clean_text(text: str) -> str:
    """``text`` without machine-local paths and with progress-bar redraws collapsed."""
    text = text.replace(sys.executable, "python").replace(f"{REPO}/", "")
    return "\n".join(line.split("\r")[-1] for line in text.split("\n"))


def _read(path: Path) -> str:
    # bytes, not read_text: universal newlines would turn the bars' \r into line breaks
    return path.read_bytes().decode("utf-8", errors="replace")


def collect(src: Path, dst: Path) -> list[str]:
    """Copy the runs under ``src`` to ``dst``; returns the run folders copied."""
    copied = []
    for events in sorted(src.rglob("events.jsonl")):
        run = events.parent
        target = dst / run.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (run / name).is_file():
                (target / name).write_text(clean_text(_read(run / name)))
        copied.append(str(run.relative_to(src)))
    for extra in [*src.glob("*.log"), src / "manifest.json"]:
        if extra.is_file():
            (dst / extra.name).write_text(clean_text(_read(extra)))
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="the sweep's --out folder")
    parser.add_argument("dst", type=Path, help="where the logs go (e.g. experiments/results/x)")
    parser.add_argument("--replace", action="store_true", help="empty DST first")
    args = parser.parse_args(argv)
    if not args.src.is_dir():
        parser.error(f"{args.src} is not a folder")
    if args.replace and args.dst.exists():
        shutil.rmtree(args.dst)
    runs = collect(args.src, args.dst)
    print(f"{len(runs)} runs copied to {args.dst}")
    return 0 if runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
