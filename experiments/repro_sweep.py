"""Run a sweep of arms x seeds of ``pkpo-train`` (small-scale reproductions, confirmatory studies).

Each run is a plain ``python -m pkpo.train experiment=<preset> <arm overrides> seed=S``
in its own folder ``<out>/<arm>_s<seed>``; several run at once on one GPU (a 135M model
leaves the GPU mostly idle between Python-bound kernel launches, so concurrent runs fill it):
``--parallel auto`` sizes how many from the device (``pkpo.placement``).
Runs start seed-major (every arm of seed 0 first), so a sweep cut short still has whole
seeds. ``<out>/manifest.json`` records every run's command, status (queued, running, done,
failed) and every attempt of it, across launches: its start time (UTC), exit status or the
signal that ended it, the steps its run reached and its wall time (an attempt with neither
exit nor signal was cut off by the launcher's own death). Each run's stdout/stderr goes to
``<out>/<arm>_s<seed>.log``. A run that fails is resumed from its last checkpoint
(``--retries`` times).

One launcher holds a sweep folder at a time, and one process a run folder
(:func:`pkpo.rundir.hold`): a second launcher on the same ``--out`` stops at once. Each run
is its own process group, killed with the launcher (SIGTERM, SIGINT, SIGHUP; a SIGKILLed
launcher's runs get SIGKILL from the kernel), so no run outlives it; a launch that finds a
run folder still held (a run of a launcher killed on another node) waits for it.

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
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from tqdm import tqdm

from pkpo import placement, plugins, rundir
from pkpo.analysis.confirmatory import Protocol
from pkpo.arms import SWEEP_ARMS, run_name, sweep_arm
from pkpo.config import CONF_DIR
from pkpo.logger import EventLogWarning, read_events

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


class Manifest:
    """``<out>/manifest.json``: per run its command, status and attempts; saved (atomically,
    under a thread lock) at every change, so a killed launcher leaves what it knew."""

    def __init__(self, path: Path):
        self.path, self._lock = path, threading.Lock()
        self.runs: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
        for entry in self.runs.values():  # older manifests kept only the exit codes
            if "exit_codes" in entry:
                entry.setdefault("attempts", [{"exit": c} for c in entry.pop("exit_codes")])
                entry.pop("wall_s", None)

    def queue(self, name: str, cmd: list[str]) -> None:
        with self._lock:
            entry = self.runs.setdefault(name, {"attempts": []})
            entry.update(command=cmd, status="queued")
            self._save()

    def begin(self, name: str) -> dict[str, Any]:
        """A new attempt of ``name``, recorded as started now."""
        attempt = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "exit": None}
        with self._lock:
            self.runs[name]["attempts"].append(attempt)
            self.runs[name]["status"] = "running"
            self._save()
        return attempt

    def end(self, name: str, attempt: dict[str, Any], code: int, steps: int, wall_s: float):
        """Record how ``attempt`` ended: a negative ``code`` is the signal that killed it."""
        with self._lock:
            if code < 0:
                attempt["signal"] = signal.Signals(-code).name
            else:
                attempt["exit"] = code
            attempt.update(steps=steps, wall_s=round(wall_s, 1))
            self.runs[name]["status"] = "done" if code == 0 else "failed"
            self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.runs, indent=1))
        os.replace(tmp, self.path)


def steps_reached(run_dir: Path) -> int:
    """The training steps a run folder's log holds (0 if none)."""
    if not (run_dir / "events.jsonl").exists():
        return 0
    with warnings.catch_warnings():  # a line torn by the kill is the run's own business
        warnings.simplefilter("ignore", EventLogWarning)
        records = read_events(run_dir / "events.jsonl")
    return max((r["step"] + 1 for r in records if r["event"] == "train"), default=0)


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_launcher() -> None:
    """In the child before exec: SIGKILL from the kernel when the launcher dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Runs:
    """The launcher's live runs, each its own process group, and the switch that stops it."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def run_one(
        self, name: str, cmd: list[str], run_dir: Path, retries: int, manifest: Manifest
    ) -> int | None:
        """Run ``cmd`` until it exits 0, at most ``1 + retries`` times; the last exit status
        (None: stopped before its first attempt). A retry is a resume: the run folder holds
        the failed attempt's last checkpoint. A run folder still held by another process
        (:func:`pkpo.rundir.holder`) is waited for, never run twice at once."""
        code, tries = None, 0
        with (run_dir.parent / f"{name}.log").open("ab") as log:
            while tries <= retries and code != 0 and not self.stopping.is_set():
                self._wait_for_holder(run_dir, log)
                tries += 1
                log.write(f"[repro_sweep] attempt {tries}: {' '.join(cmd)}\n".encode())
                log.flush()
                attempt, start = manifest.begin(name), time.monotonic()
                code = self._call(cmd, log)
                manifest.end(name, attempt, code, steps_reached(run_dir), time.monotonic() - start)
        return code

    def _wait_for_holder(self, run_dir: Path, log) -> None:
        told = False
        while (held_by := rundir.holder(run_dir)) and not self.stopping.is_set():
            if not told:
                log.write(f"[repro_sweep] {run_dir} is held by {held_by}: waiting\n".encode())
                log.flush()
                told = True
            time.sleep(5)

    def _call(self, cmd: list[str], log) -> int:
        with self._lock:
            if self.stopping.is_set():
                return -signal.SIGTERM
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed whole, with its workers
                preexec_fn=_die_with_launcher,  # noqa: PLW1509 - one libc call, no locks
            )
            self._live.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._live.discard(proc)

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop starting runs and end the live ones: SIGTERM to each group, SIGKILL after
        ``grace_s``."""
        with self._lock:
            self.stopping.set()
            live = list(self._live)
        for proc in live:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in live:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # already gone


def _raise_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def git(*args: str, repo: Path = REPO) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def tracked_changes(repo: Path = REPO) -> str:
    """``git status`` of the tracked files only: what the runs' code could differ by from
    the commit. Untracked files, such as a resumed sweep's own run folders, do not count."""
    return git("status", "--porcelain", "--untracked-files=no", repo=repo)


def protocol_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill preset, arms, seeds, overrides and the output folder from ``--protocol``, and
    pin the runs to the commit that holds it (refused when a tracked file has changed)."""
    path = args.protocol.resolve()
    try:
        protocol = Protocol.load(path)
    except (OSError, ValueError) as err:
        parser.error(f"--protocol: {err}")
    if tracked_changes():
        parser.error("--protocol: tracked files have uncommitted changes; commit them first")
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

    try:
        lock = rundir.hold(args.out, "sweep folder")
    except rundir.FolderBusy as err:
        print(f"repro_sweep: error: {err}", file=sys.stderr)
        return 2
    jobs = {
        run_name(arm, seed): command(
            args.preset, arm, seed, args.out / run_name(arm, seed), args.extra
        )
        for seed in args.seeds
        for arm in args.arms
    }
    manifest_path = args.out / "manifest.json"
    manifest = Manifest(manifest_path)
    done = [name for name in jobs if manifest.runs.get(name, {}).get("status") == "done"]
    for name in done:
        print(f"[repro_sweep] {name}: done before, skipped")
        del jobs[name]
    for name, cmd in jobs.items():
        manifest.queue(name, cmd)

    runs, failed = Runs(), 0
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_on_signal)
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = {
            pool.submit(runs.run_one, name, cmd, args.out / name, args.retries, manifest): name
            for name, cmd in jobs.items()
        }
        try:
            bar = tqdm(as_completed(futures), total=len(futures), desc="runs", unit="run")
            for future in bar:
                name, code = futures[future], future.result()
                failed += code != 0
                bar.set_postfix(last=f"{name}:{code}", failed=failed)
        finally:  # on a signal or an error: no run outlives the launcher
            runs.stop()
    lock.release()
    print(f"{len(jobs) - failed}/{len(jobs)} runs finished; manifest: {manifest_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
