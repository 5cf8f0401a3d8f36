"""Sampled tokens per second of the HF and vLLM samplers on the same batch.

    python -m experiments.bench_samplers                      # CPU: 4 prompts x 8 samples x 64
    python -m experiments.bench_samplers --prompts 64 --n 16  # e.g. on a GPU

Both samplers get the same prompt ids and sampling settings (temperature 1, fixed seed); the
throughput counts the tokens the completions actually hold (EOS included), after one warm-up
call. On CUDA the HF sampler is measured with the dynamic and the static KV cache (bf16). The
result is a Markdown table on stdout. Weights are SmolLM2-135M de-quantized from Q4 GGUF.
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass

import psutil
import torch

from pkpo.config import group_config
from pkpo.models import load_policy
from pkpo.prompts import encode_prompts
from pkpo.samplers import vllm_installed
from pkpo.samplers.base import Sampler, SamplingParams
from pkpo.samplers.hf import HFSampler

TOPICS = ["a dragon who bakes bread", "a lighthouse keeper", "a lost robot", "two rival chefs"]


@dataclass
class Row:
    backend: str
    device: str
    seconds: float
    tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def measure(sampler: Sampler, prompts: list[list[int]], n: int, params: SamplingParams, repeats):
    """Best of ``repeats`` timed calls after one warm-up call: (seconds, generated tokens)."""
    sampler.generate(prompts, n, params)
    best = None
    for repeat in range(repeats):
        call = SamplingParams(params.temperature, params.top_p, params.max_new_tokens, repeat)
        started = time.perf_counter()
        groups = sampler.generate(prompts, n, call)
        seconds = time.perf_counter() - started
        tokens = sum(len(c.token_ids) for group in groups for c in group)
        if best is None or tokens / seconds > best[1] / best[0]:
            best = (seconds, tokens)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model/*.yaml name")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--kv-cache-space-gib", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (vLLM decodes with 1 anyway)"
    )
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_cfg = group_config("model", args.model)
    model, tokenizer, checkpoint = load_policy(model_cfg)
    chats = [
        [{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]} (#{i})."}]
        for i in range(args.prompts)
    ]
    prompts = encode_prompts(tokenizer, chats, model_cfg.chat_template)
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens)
    cuda = torch.cuda.is_available()
    rows: list[Row] = []
    notes: list[str] = []
    backends = args.backends.split(",")

    if "hf" in backends:
        device = "cuda" if cuda else "cpu"
        model.to(device, torch.bfloat16 if cuda else torch.float32)
        caches = [None, "static"] if cuda else [None]
        for cache in caches:
            sampler = HFSampler(
                model, tokenizer, batch_size=args.prompts * args.n, cache_implementation=cache
            )
            seconds, tokens = measure(sampler, prompts, args.n, params, args.repeats)
            rows.append(Row(f"hf ({cache or 'dynamic'} cache)", device, seconds, tokens))
        model.to("cpu", torch.float32)
        gc.collect()

    if "vllm" in backends:
        if not vllm_installed():
            notes.append("vLLM is not installed here: no vLLM row.")
        else:
            from pkpo.samplers.vllm import VLLMSampler

            sampler = VLLMSampler(
                checkpoint,
                dtype="bfloat16" if cuda else "float32",
                kv_cache_space_gib=None if cuda else args.kv_cache_space_gib,
                max_model_len=1024,
                env={"VLLM_USE_AOT_COMPILE": "0"},
            )
            rss = psutil.Process().memory_info().rss / 2**30
            notes.append(
                f"vLLM engine start-up {sampler.startup_s:.1f} s; process RSS {rss:.1f} GiB"
            )
            seconds, tokens = measure(sampler, prompts, args.n, params, args.repeats)
            rows.append(Row("vllm", "cuda" if cuda else "cpu", seconds, tokens))
            sampler.close()

    print(
        f"\n{args.prompts} prompts x {args.n} samples, up to {args.max_new_tokens} new tokens, "
        f"model {args.model}, torch threads {torch.get_num_threads()}\n"
    )
    print("| sampler | device | seconds | tokens | tokens/s | vs first row |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        ratio = row.tokens_per_s / rows[0].tokens_per_s
        print(
            f"| {row.backend} | {row.device} | {row.seconds:.1f} | {row.tokens} | "
            f"{row.tokens_per_s:.0f} | {ratio:.1f}x |"
        )
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
