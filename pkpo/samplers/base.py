"""The sampler interface of the RL loop: prompts (token ids) in, ``n`` completions each out.

Both backends return, for every generated token, its log-probability under the distribution
it was actually sampled from (temperature and top-p applied; the raw model distribution for
greedy decoding, ``temperature == 0``). With ``top_p == 1`` that is exactly what the trainer
computes by teacher forcing at the same temperature, so a PPO ratio (paper §5) starts at 1.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling settings; ``seed`` makes a call reproducible (None: fresh randomness)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = None

    def __post_init__(self) -> None:
        # the one home of these ranges: the loop's config check reports them as sampler.<key>
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Completion:
    """One sampled continuation of a prompt.

    ``token_ids`` include the EOS token when generation stopped on it (``finish_reason ==
    "stop"``) so the trainer learns to stop; ``"length"`` means ``max_new_tokens`` ran out.
    ``logprobs[t]`` is the sampler's log-probability of ``token_ids[t]`` (see module doc);
    ``text`` is the decoded completion without special tokens.
    """

    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str


@runtime_checkable
class Sampler(Protocol):
    def generate(
        self, prompt_ids: list[list[int]], n: int, params: SamplingParams
    ) -> list[list[Completion]]:
        """``n`` completions of every prompt: result ``[i][j]`` is sample ``j`` of prompt ``i``."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Generate from ``model``'s current weights from now on (after every optimizer step)."""

    def close(self) -> None:
        """Release the engine and its memory."""


def check_generate_args(prompt_ids: Sequence[Sequence[int]], n: int) -> None:
    """Raise ``ValueError`` on malformed ``generate`` arguments, before any expensive work."""
    if n < 1:
        raise ValueError(f"n (samples per prompt) must be >= 1, got {n}")
    for i, ids in enumerate(prompt_ids):
        if len(ids) == 0:
            raise ValueError(f"prompt {i} is empty")
        if any(not isinstance(t, int | np.integer) or t < 0 for t in ids):
            raise ValueError(f"prompt {i} holds something other than non-negative token ids")


@torch.no_grad()
def iter_merged_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hf_name, tensor)`` for every weight of ``model`` as a plain HF checkpoint names it.

    For a PEFT LoRA model the adapters are merged on the fly (``W + scale * B @ A`` per
    layer, computed by PEFT's own ``get_delta_weight``) without touching the model, and the
    adapter tensors themselves are skipped: samplers load the merged weights into a plain
    copy of the base architecture. Tensors are detached views of the live parameters except
    where merged, so consume them before the next optimizer step.
    """
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if not isinstance(model, PeftModel):
        yield from model.state_dict(keep_vars=False).items()
        return
    base = model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for module_name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not module.disable_adapters:
            delta = sum(module.get_delta_weight(name) for name in module.active_adapters)
            deltas[f"{module_name}.weight"] = delta
    for name, tensor in base.state_dict().items():
        if ".lora_" in name or "lora_embedding" in name:
            continue
        plain_name = name.replace(".base_layer.", ".")
        delta = deltas.get(plain_name)
        yield plain_name, tensor if delta is None else tensor + delta.to(tensor.dtype)


# ------------------------------------------------------------ a backend's config

PER_CALL_KEYS = tuple(f.name for f in fields(SamplingParams))
"""Keys of a sampler config that are each call's ``SamplingParams``, not a backend's options."""


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def backend_options(
    backend: str, options: Mapping[str, Any] | None, sampling: Mapping[str, Any]
) -> dict[str, Any]:
    """The keyword arguments in ``backend``'s options block, as a plain dict.

    ``sampling``: the rest of the sampler config a ``for_policy`` got: the per-call keys
    (``PER_CALL_KEYS``, read by ``sampling_params``) and the blocks named after other sampler
    configs (``conf/sampler/<name>.yaml``: their backends' options), which it ignores; any
    other key is an error.
    """
    ignored = {*PER_CALL_KEYS, *sampler_configs()} - {backend}
    unknown = sorted(set(sampling) - ignored)
    if unknown:
        keys = ", ".join(PER_CALL_KEYS)
        raise TypeError(
            f"unknown sampler keys {unknown}: sampler={backend} reads {keys} and {backend}"
        )
    if isinstance(options, DictConfig):
        return OmegaConf.to_container(options, resolve=True)
    return dict(options or {})


@functools.cache
def sampler_configs() -> frozenset[str]:
    """The names of the sampler configs (``conf/sampler/<name>.yaml``): ``sampler=<name>``."""
    folder = importlib.resources.files("pkpo.conf") / "sampler"
    return frozenset(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
