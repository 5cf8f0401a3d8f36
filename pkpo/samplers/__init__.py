"""Samplers: generate completions for the RL loop (``conf/sampler/*.yaml``).

A sampler config's ``_target_`` is its backend's constructor for a policy, which Hydra's
``instantiate`` calls with the policy, its tokenizer and checkpoint folder and the config's
keys: ``sampler=hf`` is ``HFSampler.for_policy`` (Hugging Face ``generate``), ``sampler=vllm``
is ``VLLMSampler.for_policy``, and ``sampler=auto`` (the default) is ``auto``, the vLLM one
when vLLM is installed (the ``cpu``/``gpu`` extras), else the HF one. All three configs have
the same keys (``conf/sampler/auto.yaml``): a backend's options are the block of its name
(``vllm:``, ``hf:``: the keyword arguments of its class), the other blocks are ignored, so a
preset's or an override's options of one backend compose with any ``sampler=``;
``temperature``, ``top_p`` and ``max_new_tokens`` are the per-call ``SamplingParams``
(``sampling_params``), which each ``generate`` call gets instead.

A backend is a class with the ``Sampler`` methods and a classmethod ``for_policy(model,
tokenizer, checkpoint_path, *, <name>=None, **sampling)`` (the loop passes all three by
keyword) that returns ``cls(..., **backend_options("<name>", <name>, sampling))``, plus
``conf/sampler/<name>.yaml`` naming it as ``_target_`` (``defaults: [auto, _self_]`` and its
``<name>:`` block); nothing here lists the backends. vLLM is imported only when a vLLM
sampler is built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from pkpo.samplers import base
from pkpo.samplers.base import (
    PER_CALL_KEYS,
    Completion,
    Sampler,
    SamplingParams,
    backend_options,
    sampler_configs,
    vllm_installed,
)

__all__ = [
    "PER_CALL_KEYS",
    "Completion",
    "Sampler",
    "SamplingParams",
    "auto",
    "backend_options",
    "sampler_configs",
    "sampling_params",
    "vllm_installed",
]

log = logging.getLogger(__name__)


def auto(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    checkpoint_path: str | Path,
    **settings: Any,
) -> Sampler:
    """``sampler=auto``: the vLLM sampler when vLLM is installed, else the HF one, built by its
    ``for_policy`` from the same ``settings`` (the config: per-call keys and option blocks)."""
    if base.vllm_installed():  # vLLM is heavy: imported only when chosen
        from pkpo.samplers.vllm import VLLMSampler as chosen
    else:
        from pkpo.samplers.hf import HFSampler as chosen
    log.info("sampler=auto: using %s", chosen.__name__)
    return chosen.for_policy(model, tokenizer, checkpoint_path, **settings)


def sampling_params(cfg: Mapping[str, Any], seed: int | None = None) -> SamplingParams:
    """The ``SamplingParams`` a sampler config asks for, with this call's ``seed``; a
    ValueError names the key of a value that is not a number or out of its range."""
    values = {}
    for key, kind in (("temperature", float), ("top_p", float), ("max_new_tokens", int)):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int if kind is int else int | float):
            what = "an integer" if kind is int else "a number"
            raise ValueError(f"{key} must be {what}, got {value!r}")
        values[key] = kind(value)
    return SamplingParams(**values, seed=seed)
