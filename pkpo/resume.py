"""Which folder and config a run trains with: a new run, a ``resume=<folder>``, or a rerun on
a ``run_dir`` that already holds a run (a requeued Slurm job, a relaunched sweep).

:func:`resolve_run` locks the folder first (:func:`pkpo.rundir.hold`), then reads, checks
and writes its ``config.yaml``: a resume is the same run, so a changed training key is
refused unless ``resume_allow`` names it (:func:`pkpo.rundir.check_changes`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pkpo import checkpoint, config, distributed, rundir

log = logging.getLogger("pkpo.train")


@dataclass
class RunFolder:
    """A run's folder, held by this process, and the config it trains with."""

    cfg: DictConfig
    path: Path
    lock: rundir.FolderLock | None
    """None on ranks other than the main one, which write nothing into the folder."""
    changes: dict[str, list[Any]] = field(default_factory=dict)
    """The keys whose change ``resume_allow`` let through: ``{key: [old, new]}``."""


NOT_APPLIED_ON_RESUME = ("run_dir", "resume", "resume_allow", "dry_run")


def with_overrides(saved: DictConfig, cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The config ``saved`` with each key the command line set (``overrides``, Hydra's
    ``key=value`` strings; a config group counts as the key of its node) taken from the
    composed ``cfg``: what ``resume=<folder> key=value`` asks to train with."""
    wanted = saved.copy()
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra.") or key in NOT_APPLIED_ON_RESUME:
            continue
        if key == "experiment":
            raise config.ConfigError(
                "resume: experiment= cannot be given with resume= (the run's config is the "
                "config.yaml of its folder)"
            )
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        OmegaConf.update(wanted, key, value, merge=False, force_add=True)
    return wanted


def _save_config(cfg: DictConfig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        OmegaConf.save(cfg, tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise rundir.WriteFailed(path, err) from err


def resolve_run(cfg: DictConfig, overrides: Sequence[str] = ()) -> RunFolder:
    """The folder of this run, locked (:func:`pkpo.rundir.hold`), and its config.

    ``resume=<folder>`` takes the config from the folder, with the command line's
    ``overrides`` applied; a ``run_dir`` that already holds a run (a requeued job, a rerun
    sweep) keeps that run's config. Either way a difference on a training key is refused
    unless ``resume_allow`` names it (:func:`pkpo.rundir.check_changes`); an allowed change
    is written into ``config.yaml``. Checkpoint temp files of a killed writer are removed.
    """
    folder = Path(cfg.resume or cfg.run_dir).expanduser().resolve()
    if cfg.resume and not (folder / "config.yaml").exists():
        raise config.ConfigError(f"resume={cfg.resume}: no config.yaml in {folder}")
    main = distributed.rendezvous_env(os.environ)["RANK"] == "0"
    lock = rundir.hold(folder) if main else None
    try:
        cfg, changes = _run_config(cfg, folder, overrides, write=main)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return RunFolder(cfg, folder, lock, changes)


RENAMED_TARGETS = {
    "pkpo.trainers.local.LocalTrainer": "pkpo.trainers.local.local_trainer",
    "pkpo.trainers.deepspeed.DeepSpeedTrainer": "pkpo.trainers.deepspeed.deepspeed_trainer",
}
"""The trainer factories' former class-like names, which run folders written by 0.2.0 name."""


def saved_config(path: Path) -> DictConfig:
    """A run folder's ``config.yaml``, with a trainer ``_target_`` renamed since it was
    written (:data:`RENAMED_TARGETS`) given its current name, so old runs resume."""
    saved = OmegaConf.load(path)
    target = OmegaConf.select(saved, "trainer._target_")
    if target in RENAMED_TARGETS:
        saved.trainer._target_ = RENAMED_TARGETS[target]
    return saved


def _run_config(
    cfg: DictConfig, folder: Path, overrides: Sequence[str], *, write: bool
) -> tuple[DictConfig, dict[str, list[Any]]]:
    """:func:`resolve_run`'s config and allowed changes, read and written under the lock."""
    saved_path = folder / "config.yaml"
    saved = saved_config(saved_path) if saved_path.exists() else None
    if cfg.resume:
        wanted = with_overrides(saved, cfg, overrides)
    else:
        wanted = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        wanted.run_dir = str(folder)
    if saved is None:
        if write:
            _save_config(wanted, saved_path)
        return wanted, {}
    changes = rundir.config_changes(saved, wanted)
    rundir.check_changes(changes, cfg.get("resume_allow") or [], f"run folder {folder}")
    if not cfg.resume:  # a requeue keeps the saved record (launch commit, logger) as it was
        for key, (_, new) in changes.items():
            OmegaConf.update(saved, key, new, merge=False, force_add=True)
        wanted = saved
    if write:
        if changes or (cfg.resume and overrides):
            _save_config(wanted, saved_path)
        for stale in checkpoint.remove_temporaries(folder / "checkpoints"):
            print(f"[pkpo] removed an unfinished checkpoint write: {stale}", flush=True)
    if cfg.resume is None and (folder / "checkpoints" / checkpoint.LAST).exists():
        log.info("run_dir %s has a checkpoint: resuming it", folder)
    return wanted, changes
