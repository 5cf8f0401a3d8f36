"""Configuration checks that run before anything slow (model loads, engine start-up).

Each check has one home, which the loop and the integrations share: batch sizes in
``trainers.update.check_batch_sizes``, the transform dry-run over a schedule's k values in
``schedules.check_schedule``, each value's own range in the constructor that takes it.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from pkpo import schedules, transforms
from pkpo.samplers import sampling_params
from pkpo.trainers.update import check_batch_sizes

CONF_DIR = str(importlib.resources.files("pkpo.conf"))
"""The shipped Hydra configs (the repository's ``conf/``, installed as ``pkpo.conf``)."""


def store_transforms() -> None:
    """Store every registered transform as the Hydra config ``transform=<name>``
    (:meth:`pkpo.transforms.Spec.config`): the group needs no YAML. Runs when this module is
    imported and again before each composition, so transforms that plugins register later
    are options too (storing a name again replaces its node)."""
    store = ConfigStore.instance()
    for name in transforms.names():
        store.store(group="transform", name=name, node=transforms.spec(name).config())


store_transforms()


def group_config(group: str, name: str) -> DictConfig:
    """The config ``<group>/<name>`` (e.g. ``"model", "tiny_arith_noisy"``) as ``pkpo-train``
    composes it, its defaults list resolved: a group config may inherit from another, so
    reading its file alone is not enough."""
    store_transforms()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"{group}={name}"])[group]


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


def group_options(group: str) -> set[str] | None:
    """The options of config group ``group``: its YAML files under ``conf/<group>/`` and the
    nodes registered for it (every transform); None if there is no such group."""
    store_transforms()
    folder, store = Path(CONF_DIR) / group, ConfigStore.instance()
    registered = group in store.repo
    if not folder.is_dir() and not registered:
        return None
    options = {path.stem for path in folder.glob("*.yaml")}
    if registered:
        options |= {name.removesuffix(".yaml") for name in store.list(group)}
    return options


def check_group_choices(overrides: Sequence[str]) -> None:
    """Each command-line ``group=option`` (or a multirun's ``group=a,b``) names an option of
    that group; raises :class:`ConfigError` naming it and the choices (Hydra's own message for
    a missing option is many lines, with its search path)."""
    for override in overrides:
        key, sep, value = override.partition("=")
        group = key.lstrip("+")
        if not sep or value in ("", "null") or "(" in value or any(c in group for c in "./~"):
            continue  # a value, a sweep function, or a nested group (hydra/launcher)
        options = group_options(group)
        missing = [v for v in value.split(",") if options is not None and v not in options]
        if missing:
            choices = ", ".join(sorted(options))
            raise ConfigError(
                f"{group}={missing[0]}: no such {group} config; choose one of {choices}"
            )


def _lookup(cfg: DictConfig, key: str):
    value = cfg
    for part in key.split("."):
        value = value[part]
    return value


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = _lookup(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        bound = ">= 0" if allow_zero else "a positive integer"
        raise ConfigError(f"{key} must be {bound}, got {value!r}")


def _real(cfg: DictConfig, key: str, low: float, high: float = float("inf"), open_low=False):
    """``key`` must be a number in [low, high] (``(low, high]`` with ``open_low``)."""
    value = _lookup(cfg, key)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not (value > low if open_low else value >= low) or value > high:
        bracket = "(" if open_low else "["
        raise ConfigError(f"{key} must be a number in {bracket}{low:g}, {high:g}], got {value!r}")


# (key, lower bound, upper bound, lower bound excluded): the trainer's numbers (the sampler's
# have their home in SamplingParams)
_REAL_RANGES = (
    ("trainer.lr", 0.0, float("inf"), True),
    ("trainer.weight_decay", 0.0, float("inf"), False),
    ("trainer.clip_eps", 0.0, float("inf"), True),
    ("trainer.max_grad_norm", 0.0, float("inf"), True),
    ("trainer.kl_coef", 0.0, float("inf"), False),
    ("trainer.entropy_coef", 0.0, float("inf"), False),
)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key for every value the run could not work with."""
    for key in ("n", "prompts_per_step"):
        _positive(cfg, key)
    for key in ("steps", "save_every", "eval.every", "score_workers"):
        _positive(cfg, key, allow_zero=True)
    try:
        check_batch_sizes(
            cfg.trainer.epochs,
            cfg.trainer.minibatch_size,
            cfg.trainer.micro_batch_size,
            cfg.trainer.get("micro_batch_tokens"),
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _positive(cfg, "trainer.warmup_steps", allow_zero=True)
    _positive(cfg, "torch_threads", allow_zero=True)
    _positive(cfg, "eval.problems", allow_zero=True)
    for key, low, high, open_low in _REAL_RANGES:
        _real(cfg, key, low, high, open_low)
    betas = cfg.trainer.get("betas")
    if betas is not None and (
        len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas)
    ):
        raise ConfigError(f"trainer.betas must be two numbers in [0, 1), got {list(betas)}")
    if cfg.score_timeout_s is not None:
        _real(cfg, "score_timeout_s", 0.0, open_low=True)
    if cfg.eval.problems:
        _positive(cfg, "eval.n")
    try:
        params = sampling_params(cfg.sampler)  # each sampling value's range: SamplingParams
    except (ValueError, TypeError) as e:
        raise ConfigError(f"sampler.{e}") from None
    if params.temperature == 0:  # the one rule of training's own
        raise ConfigError(
            "sampler.temperature must be > 0 to train: the PPO loss divides the logits by it "
            "(0, greedy decoding, is for evaluation only)"
        )
    if any(k < 1 for k in cfg.k_eval):
        raise ConfigError(f"k_eval values must be >= 1, got {list(cfg.k_eval)}")
    name = cfg.transform.name
    if name not in transforms.names():
        choices = ", ".join(transforms.names())
        raise ConfigError(f"transform.name={name!r} is not registered; choose one of {choices}")
    scale = cfg.transform.get("scale", "paper")
    if scale not in transforms.SCALES:
        choices = ", ".join(transforms.SCALES)
        raise ConfigError(
            f"transform.scale={scale!r} is not a scale; choose one of {choices} "
            "(paper: as published; loo: without the k/n of Eq. 19)"
        )
    try:
        schedule = instantiate(cfg.schedule)
    except InstantiationException as e:
        raise ConfigError(f"schedule: {e}") from None
    if isinstance(schedule, schedules.Step) and not 0 <= schedule.switch_step <= cfg.steps:
        raise ConfigError(
            f"schedule.switch_step must be in [0, steps={cfg.steps}], got {schedule.switch_step}"
        )
    try:
        schedules.check_schedule(name, schedule, cfg.n, cfg.steps)
    except ValueError as e:
        raise ConfigError(str(e)) from None
