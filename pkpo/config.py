"""Configuration checks that run before anything slow (model loads, engine start-up)."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from pkpo import transforms
from pkpo.schedules import k_values, make_schedule


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        bound = ">= 0" if allow_zero else "a positive integer"
        raise ConfigError(f"{key} must be {bound}, got {value!r}")


def schedule_kwargs(cfg: DictConfig) -> dict:
    return {k: v for k, v in cfg.schedule.items() if k != "name"}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key for every value the run could not work with."""
    for key in ("n", "prompts_per_step", "trainer.minibatch_size", "trainer.micro_batch_size"):
        _positive(cfg, key)
    for key in ("steps", "save_every", "eval.every", "score_workers", "trainer.epochs"):
        _positive(cfg, key, allow_zero=True)
    if cfg.trainer.epochs == 0:
        raise ConfigError("trainer.epochs must be a positive integer, got 0")
    if cfg.eval.problems:
        _positive(cfg, "eval.n")
    if cfg.sampler.max_new_tokens <= 0:
        raise ConfigError(
            f"sampler.max_new_tokens must be positive, got {cfg.sampler.max_new_tokens}"
        )
    if not cfg.sampler.temperature > 0:
        raise ConfigError(f"sampler.temperature must be > 0, got {cfg.sampler.temperature}")
    if any(k < 1 for k in cfg.k_eval):
        raise ConfigError(f"k_eval values must be >= 1, got {list(cfg.k_eval)}")
    name = cfg.transform.name
    if name not in transforms.names():
        choices = ", ".join(transforms.names())
        raise ConfigError(f"transform.name={name!r} is not registered; choose one of {choices}")
    try:
        schedule = make_schedule(cfg.schedule.name, **schedule_kwargs(cfg))
    except ValueError as e:
        raise ConfigError(f"schedule: {e}") from None
    # Run the transform on a dummy group for every k_opt the schedule will use: the
    # estimators' own checks then say exactly what is wrong (k > n, k = n for sloo, ...).
    for k in sorted(k_values(schedule, cfg.steps)):
        try:
            transforms.transform(name, np.zeros((1, cfg.n)), k)
        except ValueError as e:
            raise ConfigError(f"transform {name} with k_opt={k} and n={cfg.n}: {e}") from None
