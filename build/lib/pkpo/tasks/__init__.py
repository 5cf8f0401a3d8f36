"""Tasks of the RL loop (see ``base.Task``), instantiated by Hydra from ``conf/task/*.yaml``.

| config | class | train split | eval split | reward |
|---|---|---|---|---|
| arithmetic | ``ArithmeticTask`` | 256 seeded problems | 200 disjoint | 0/1 |
| basic_arithmetic | ``BasicArithmeticTask`` | reasoning-gym | disjoint | reasoning-gym's |
| math | ``MathTask`` | MATH train (offline: 80% of 1000) | MATH test (the rest) | 0/1 |
| gsm8k | ``GSM8KTask`` | GSM8K train | 200 seeded test problems | 0/1 |
| mbpp | ``MbppTask`` | MBPP 601-974 | HumanEval | fraction of tests or 0/1 |
| arc | ``ArcTask`` | 80% of an ARC-AGI-1 subset | the other 20% | exact or cells |

Every reward is in [0, 1] and 1.0 means solved. Tasks that read data files find them
under ``data_dir`` (the configs default it to ``$PKPO_DATA``; relative paths are taken from
the working directory), never from where the package is installed. This module stays
import-light: Hydra imports it before every task module.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import TypeVar

DATA_ENV = "PKPO_DATA"
T = TypeVar("T")


def resolve_data_path(data_dir: str | Path | None, relative: str | Path = "") -> Path:
    """``data_dir / relative``; ``data_dir`` None takes ``$PKPO_DATA`` (an error naming
    both if neither is set)."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV)
    if not data_dir:
        raise ValueError(
            f"no data folder: set the task's data_dir or ${DATA_ENV} to the folder holding "
            f"{relative or 'the data files'}"
        )
    return (Path(data_dir).expanduser() / relative).resolve()


def require_file(path: Path, how_to_get: str) -> Path:
    """``path`` if it exists, else a FileNotFoundError saying where we looked and what to do."""
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}. {how_to_get}")
    return path


def check_split(task: str, split: str, valid: tuple[str, ...]) -> None:
    if split not in valid:
        raise ValueError(f"task {task!r} has no split {split!r}; valid splits: {list(valid)}")


def stable_id(prefix: str, text: str) -> str:
    """An id that depends only on the problem text (stable across runs and sources)."""
    return f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def seeded_sample(items: list[T], size: int | None, seed: int) -> list[T]:
    """``size`` items drawn without replacement with ``random.Random(seed)`` (all if None),
    kept in their original order."""
    if size is None or size >= len(items):
        return list(items)
    if size < 0:
        raise ValueError(f"subset size must be non-negative, got {size}")
    chosen = sorted(random.Random(seed).sample(range(len(items)), size))
    return [items[i] for i in chosen]


def seeded_split(items: list[T], train_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Shuffle with ``random.Random(seed)`` and cut at ``round(train_fraction * n)``."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    order = list(items)
    random.Random(seed).shuffle(order)
    cut = round(train_fraction * len(order))
    return order[:cut], order[cut:]


def load_jsonl(path: Path, how_to_get: str) -> list[dict]:
    """Records of a local JSONL file, read with ``load_dataset("json", data_files=...)``."""
    from datasets import load_dataset  # heavy import: only when data is loaded

    require_file(path, how_to_get)
    return list(load_dataset("json", data_files=str(path), split="train"))


def load_hub(path: str, name: str | None, split: str, how_to_get: str) -> list[dict]:
    """Records of ``load_dataset(path, name, split=split)``; a failure (e.g. offline) is
    re-raised saying what to do instead."""
    from datasets import load_dataset

    try:
        return list(load_dataset(path, name, split=split))
    except Exception as error:  # any loading failure: re-raised with what to do instead
        raise RuntimeError(
            f"could not load_dataset({path!r}, {name!r}, split={split!r}) "
            f"({type(error).__name__}: {error}). {how_to_get}"
        ) from error
