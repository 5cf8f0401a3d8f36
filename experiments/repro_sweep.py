"""Run a sweep of arms x seeds of ``pkpo-train`` (small-scale reproductions, confirmatory studies).

Each run is a plain ``python -m pkpo.train experiment=<preset> <arm overrides> seed=S``
in its own folder ``<out>/<arm>_s<seed>``; several run at once on one GPU (a 135M model
leaves the GPU mostly idle between Python-bound kernel launches, so concurrent runs fill it):
``--parallel auto`` sizes how many from the device (``pkpo.placement``).
Runs start seed-major (every arm of seed 0 first), so a sweep cut short still has whole
seeds. ``<out>/manifest.json`` records every command, its exit status and wall time, and
each run's stdout/stderr goes to ``<out>/<arm>_s<seed>.log``. A run that fails is resumed
from its last checkpoint (``--retries`` times); every attempt's exit status is recorded.

    python -m experiments.repro_sweep --out runs/repro_arith --parallel auto
    python -m experiments.repro_sweep --preset repro_gsm8k --arms k1 k8 --seeds 0 -- steps=5
    python -m experiments.repro_sweep --protocol experiments/results/X/protocol.yaml --parallel 2

With ``--protocol`` (a pre-registered study, see ``pkpo.analysis.confirmatory``) the preset,
arms, seeds and overrides come from the protocol file, the runs go beside it, the checkout
must be clean (the protocol committed), and every run records the commit it was launched
from as ``protocol_commit`` in its ``config.yaml``. A run that the manifest lists as done
is skipped, so launching again resumes a stopped sweep.

Arms (same optimizer and learning rate for all, nothing tuned per arm): ``k1`` ``k2`` ``k4``
``k8`` ``tang`` ``anneal`` ``anneal_loo`` (the default; ``anneal_loo`` is ``anneal`` with
``transform.scale=loo``) and ``ent<coef>``; :func:`pkpo.arms.sweep_arm`
defines each one's overrides and the label the analysis gives its runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from tqdm import tqdm

from pkpo import placement, plugins
from pkpo.analysis.confirmatory import Protocol
from pkpo.arms import SWEEP_ARMS, sweep_arm
from pkpo.config import CONF_DIR

REPO = Path(__file__).resolve().parents[1]


def preset_config(preset: str, extra: list[str]) -> DictConfig:
    """The run config of the preset as Hydra composes it (with its own defaults, such as
    a preset built on another, and the sweep's overrides)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={preset}", *extra])


def preset_steps(preset: str, extra: list[str]) -> int:
    """The run length of the preset with the sweep's overrides."""
    return int(preset_config(preset, extra).steps)


def side_by_side(parallel: str, preset: str, extra: list[str]) -> int:
    """``--parallel``: a number, or ``auto``: as many runs as this device holds
    (``pkpo.placement``, from the preset's ``footprint_gib`` and ``torch_threads``)."""
    number = placement.parse_parallel(parallel)
    cfg = preset_config(preset, extra)
    if number != "auto":
        return number
    device = placement.this_device()
    number = placement.runs_per_device(device, cfg.footprint_gib, cfg.torch_threads)
    print(
        f"[repro_sweep] --parallel auto: {number} runs side by side on {device.name} "
        f"({device.free_gib:.1f} GiB free, {device.cores} cores; {cfg.footprint_gib} GiB "
        f"and {cfg.torch_threads or 'all'} threads a run)"
    )
    return number


def command(preset: str, arm: str, seed: int, run_dir: Path, extra: list[str]) -> list[str]:
    steps = preset_steps(preset, extra)
    return [
        sys.executable,
        "-m",
        "pkpo.train",
        f"experiment={preset}",
        *sweep_arm(arm, steps).overrides,
        f"seed={seed}",
        f"run_dir={run_dir}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def run_one(cmd: list[str], log_path: Path, retries: int) -> tuple[list[int], float]:
    """Run ``cmd`` until it exits 0, at most ``1 + retries`` times; returns the exit codes.

    A retry is a resume: the run folder holds the failed attempt's last checkpoint.
    """
    start, codes = time.monotonic(), []
    with log_path.open("ab") as log:
        while not codes or (codes[-1] != 0 and len(codes) <= retries):
            log.write(f"[repro_sweep] attempt {len(codes) + 1}: {' '.join(cmd)}\n".encode())
            log.flush()
            codes.append(subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
    return codes, time.monotonic() - start


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def protocol_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill preset, arms, seeds, overrides and the output folder from ``--protocol``, and
    pin the runs to the commit that holds it (refused in a checkout with changes)."""
    path = args.protocol.resolve()
    try:
        protocol = Protocol.load(path)
    except (OSError, ValueError) as err:
        parser.error(f"--protocol: {err}")
    if git("status", "--porcelain"):
        parser.error("--protocol: the checkout has uncommitted changes; commit them first")
    if not git("log", "-1", "--format=%H", "--", str(path)):
        parser.error(f"--protocol: {path} is not committed")
    args.preset, args.arms, args.seeds = protocol.preset, list(protocol.arms), protocol.seeds
    args.out = path.parent
    args.extra = [
        *protocol.overrides,
        *args.extra,
        f"+protocol_commit={git('rev-parse', 'HEAD')}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="repro_arith", help="conf/experiment/<preset>.yaml")
    parser.add_argument("--arms", nargs="+", default=list(SWEEP_ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="folder for the run folders")
    parser.add_argument(
        "--protocol", type=Path, help="a committed protocol.yaml: arms, seeds and overrides"
    )
    parser.add_argument(
        "--parallel", default="1", help="runs at once on this device: a number, or auto"
    )
    parser.add_argument(
        "--retries", type=int, default=1, help="resume a failed run this many times"
    )
    parser.add_argument("extra", nargs="*", help="overrides for every run (after --)")
    args = parser.parse_args(argv)
    try:
        plugins.load()  # the runs inherit PKPO_PLUGINS and import them again
    except plugins.PluginError as err:
        parser.error(str(err))
    if args.protocol is not None:
        protocol_args(args, parser)
    if args.out is None:
        parser.error("--out (or --protocol) is required")
    if not (REPO / "conf" / "experiment" / f"{args.preset}.yaml").is_file():
        parser.error(f"no preset conf/experiment/{args.preset}.yaml")
    try:  # composes the preset with the overrides: a bad override is caught here
        args.parallel = side_by_side(args.parallel, args.preset, args.extra)
    except (ValueError, HydraException) as err:
        parser.error(" ".join(str(err).split()))
    for arm in args.arms:
        try:
            sweep_arm(arm, 2)
        except ValueError as err:
            parser.error(str(err))

    args.out.mkdir(parents=True, exist_ok=True)
    jobs = {
        f"{arm}_s{seed}": command(args.preset, arm, seed, args.out / f"{arm}_s{seed}", args.extra)
        for seed in args.seeds
        for arm in args.arms
    }
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    done = [name for name in jobs if manifest.get(name, {}).get("status") == "done"]
    for name in done:
        print(f"[repro_sweep] {name}: done before, skipped")
        del jobs[name]
    manifest.update({name: {"command": cmd, "status": "queued"} for name, cmd in jobs.items()})

    def save() -> None:
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, manifest_path)

    save()
    failed = 0
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = {
            pool.submit(run_one, cmd, args.out / f"{name}.log", args.retries): name
            for name, cmd in jobs.items()
        }
        bar = tqdm(as_completed(futures), total=len(futures), desc="runs", unit="run")
        for future in bar:
            name = futures[future]
            codes, seconds = future.result()
            code = codes[-1]
            manifest[name].update(status="done" if code == 0 else "failed", exit_codes=codes)
            manifest[name]["wall_s"] = round(seconds, 1)
            failed += code != 0
            bar.set_postfix(last=f"{name}:{code}", failed=failed)
            save()
    print(f"{len(jobs) - failed}/{len(jobs)} runs finished; manifest: {manifest_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
