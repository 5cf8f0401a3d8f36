"""Copy a sweep's run logs into the repository: everything the analysis reads, nothing large.

    python -m experiments.collect_runs runs/tiny_arith experiments/results/tiny_arith

For each run folder under SRC (one with ``events.jsonl``) it copies ``events.jsonl``,
``config.yaml`` and ``train.log``; beside them the sweep's ``<run>.log`` files and
``manifest.json``. Checkpoints and Hydra's own folder stay behind. Machine-local paths
become relative (the repository's folder is cut from every path, the interpreter is written
``python``, an environment's packages ``<site-packages>``), and a progress bar's
carriage-return redraws keep only their last state, so a log reads as it looked when the
run ended.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = ("events.jsonl", "config.yaml", "train.log")


# an installed package's folder, wherever its environment lies (tracebacks name them)
SITE_PACKAGES = re.compile(r"/[^\s\"':()\[\]]*/(?:site|dist)-packages/")


def clean_text(text: str, roots: tuple[Path, ...] = (REPO,)) -> str:
    """``text`` without machine-local paths (the interpreter, the checkouts ``roots`` the
    runs came from, environments' ``site-packages``) and with progress-bar redraws
    collapsed."""
    text = text.replace(sys.executable, "python")
    for root in roots:
        text = text.replace(f"{root}/.venv/bin/python", "python").replace(f"{root}/", "")
    text = SITE_PACKAGES.sub("<site-packages>/", text)
    return "\n".join(line.split("\r")[-1] for line in text.split("\n"))


def checkout_of(path: Path) -> Path:
    """The git checkout holding ``path`` (a worktree, for a pinned sweep), else REPO."""
    found = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True
    )
    return Path(found.stdout.strip()) if found.returncode == 0 else REPO


def _read(path: Path) -> str:
    # bytes, not read_text: universal newlines would turn the bars' \r into line breaks
    return path.read_bytes().decode("utf-8", errors="replace")


def ended(events: Path) -> bool:
    """Whether a run's log closes with its ``end`` event (finished or failed)."""
    lines = _read(events).strip().splitlines()
    return bool(lines) and '"event": "end"' in lines[-1]


def collect(src: Path, dst: Path, ended_only: bool = False) -> list[str]:
    """Copy the runs under ``src`` to ``dst``; returns the run folders copied. With
    ``ended_only``, runs still going are left for a later call (a sweep in progress)."""
    copied = []
    roots = (REPO, checkout_of(src.resolve()))
    for events in sorted(src.rglob("events.jsonl")):
        if ended_only and not ended(events):
            continue
        run = events.parent
        target = dst / run.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (run / name).is_file():
                (target / name).write_text(clean_text(_read(run / name), roots))
        copied.append(str(run.relative_to(src)))
    logs = [log for log in src.glob("*.log") if not ended_only or log.stem in copied]
    for extra in [*logs, src / "manifest.json"]:
        if extra.is_file():
            (dst / extra.name).write_text(clean_text(_read(extra), roots))
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="the sweep's --out folder")
    parser.add_argument("dst", type=Path, help="where the logs go (e.g. experiments/results/x)")
    parser.add_argument("--replace", action="store_true", help="empty DST first")
    parser.add_argument(
        "--ended-only", action="store_true", help="skip runs still going (a sweep in progress)"
    )
    args = parser.parse_args(argv)
    if not args.src.is_dir():
        parser.error(f"{args.src} is not a folder")
    if args.replace and args.dst.exists():
        shutil.rmtree(args.dst)
    runs = collect(args.src, args.dst, args.ended_only)
    print(f"{len(runs)} runs copied to {args.dst}")
    return 0 if runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
