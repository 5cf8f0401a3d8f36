"""Sampling with Hugging Face ``generate`` on the trainer's own model object.

No second copy of the weights exists, so ``sync_weights`` has nothing to do. Works on CPU and
GPU. On GPU, ``cache_implementation: static`` with ``compile: true`` lets ``generate`` compile
the decoding step (several times faster for long completions, after a compile per new shape);
without compilation the static cache was no faster than the dynamic one on an H100 for
32-token completions of a 135M model (docs/benchmarks.md), where decoding is Python-bound.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from pkpo.samplers.base import Completion, SamplingParams, backend_options, check_generate_args

log = logging.getLogger(__name__)

CACHE_IMPLEMENTATIONS = (None, "static")


class _LogprobRecorder(LogitsProcessor):
    """Records the log-probability of each sampled token under the final (processed) scores.

    Placed last in the processor list, it sees the scores that ``generate`` samples from. The
    token sampled from step ``t``'s scores only shows up in ``input_ids`` at step ``t + 1``,
    so it keeps one step of log-softmax (``[batch, vocab]``) instead of all of them, which
    ``output_scores`` would hold (``steps x batch x vocab``: GBs for Gemma's 262k vocabulary).
    """

    def __init__(self) -> None:
        self._pending: torch.Tensor | None = None
        self._steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        if self._pending is not None:
            self._gather(input_ids[:, -1])
        self._pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _gather(self, tokens: torch.Tensor) -> None:
        self._steps.append(self._pending.gather(1, tokens[:, None]).squeeze(1))
        self._pending = None

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """Log-probs ``[batch, steps]``, given the token sampled at the last step."""
        self._gather(last_tokens)
        return torch.stack(self._steps, dim=1)


class HFSampler:
    """Samples with ``model.generate``; see the module docstring.

    ``batch_size`` bounds how many sequences (prompts x samples) one ``generate`` call holds.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 64,
        cache_implementation: str | None = None,
        compile: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if cache_implementation not in CACHE_IMPLEMENTATIONS:
            raise ValueError(
                f"cache_implementation must be one of {CACHE_IMPLEMENTATIONS}, "
                f"got {cache_implementation!r}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.cache_implementation = cache_implementation
        self.compile = compile
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        )

    @classmethod
    def for_policy(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        checkpoint_path: Any,
        *,
        hf: Mapping[str, Any] | None = None,
        **sampling: Any,
    ) -> HFSampler:
        """``sampler=hf`` (``conf/sampler/hf.yaml``): generates with the policy object itself.

        ``hf``: this class's options; ``sampling``: the rest of the sampler config (per-call
        keys, the other backends' blocks), which it leaves alone (``backend_options``).
        """
        return cls(model, tokenizer, **backend_options("hf", hf, sampling))

    def generate(
        self, prompt_ids: list[list[int]], n: int, params: SamplingParams
    ) -> list[list[Completion]]:
        check_generate_args(prompt_ids, n)
        rows = [list(ids) for ids in prompt_ids for _ in range(n)]
        completions: list[Completion] = []
        with _inference(self.model), _seeded(params.seed, self.model.device):
            for start in range(0, len(rows), self.batch_size):
                completions += self._generate_batch(rows[start : start + self.batch_size], params)
        return [completions[i * n : (i + 1) * n] for i in range(len(prompt_ids))]

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Nothing to copy: generation runs on the trainer's model object itself."""

    def close(self) -> None:
        """Nothing to release: the model belongs to the trainer."""

    def _generate_batch(self, rows: list[list[int]], params: SamplingParams) -> list[Completion]:
        device = self.model.device
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):  # left padding: every row's last token is at -1
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention_mask[i, width - len(ids) :] = 1
        recorder = _LogprobRecorder()
        with _neutral_generation_config(self.model):
            sequences = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=self._generation_config(params),
                logits_processor=_processors(params, recorder),
            )
        generated = sequences[:, width:].cpu()
        logprobs = recorder.finish(sequences[:, -1]).cpu()
        return [
            self._completion(prompt, generated[i], logprobs[i]) for i, prompt in enumerate(rows)
        ]

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        # Temperature and top-p are applied by our own processors (before the recorder), so
        # generate's built-in warpers are all switched off here (greedy uses none).
        sample = params.temperature > 0
        neutral = {"temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {}
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            **neutral,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            cache_implementation=self.cache_implementation,
            disable_compile=not self.compile,
        )

    def _completion(
        self, prompt: list[int], generated: torch.Tensor, logprobs: torch.Tensor
    ) -> Completion:
        tokens = generated.tolist()
        stop = next((t for t, token in enumerate(tokens) if token in self.eos_ids), None)
        if stop is None:
            finish_reason = "length"
        else:  # keep the EOS token; what follows it is padding
            tokens, finish_reason = tokens[: stop + 1], "stop"
        return Completion(
            prompt_ids=prompt,
            token_ids=tokens,
            text=self.tokenizer.decode(tokens, skip_special_tokens=True),
            logprobs=logprobs[: len(tokens)].tolist(),
            finish_reason=finish_reason,
        )


def _processors(params: SamplingParams, recorder: _LogprobRecorder) -> LogitsProcessorList:
    processors = LogitsProcessorList()
    if params.temperature > 0:  # greedy: the recorder sees the raw scores
        if params.temperature != 1:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_p < 1:
            processors.append(TopPLogitsWarper(params.top_p))
    processors.append(recorder)
    return processors


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        configured = [configured]
    ids = list(dict.fromkeys([*(configured or []), tokenizer.eos_token_id]))
    ids = [i for i in ids if i is not None]
    if not ids:
        raise ValueError(
            f"{tokenizer.name_or_path}: neither model nor tokenizer names an EOS token"
        )
    return ids


@contextlib.contextmanager
def _inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd graph, restoring the train/eval mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed the sampling RNG without disturbing the trainer's global RNG stream."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _neutral_generation_config(model: PreTrainedModel) -> Iterator[None]:
    """Hide the model's own generation defaults (e.g. Llama-3.1's temperature 0.6, top-p 0.9).

    ``generate`` fills every setting we leave unset from ``model.generation_config``; a
    default warper slipping in after our recorder would make the recorded log-probs wrong.
    """
    target = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    original = target.generation_config
    target.generation_config = GenerationConfig(
        bos_token_id=original.bos_token_id,
        eos_token_id=original.eos_token_id,
        pad_token_id=original.pad_token_id,
    )
    try:
        yield
    finally:
        target.generation_config = original
