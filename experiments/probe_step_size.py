"""How large a policy-gradient step the testbed's supervised start survives.

    python -m experiments.probe_step_size --lrs 1 0.1 0.03 0.01 --steps 3

From the start of ``experiment=tiny_arith`` (the first step's 16 prompts), each step samples
16 completions per prompt, takes one plain SGD step along the REINFORCE gradient with the
LOO baseline (Eq. 26), ``grad of mean_i A_i log p(x_i)`` (no PPO, no clipping, no Adam),
and then measures the mean reward of 64 fresh completions per prompt. Printed per
learning rate: the gradient norm of the first step, the parameter step's norm and the
fresh reward after each step. A step along the ascent direction that *lowers* the reward
means the step was too large for the curvature there.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from pkpo.config import CONF_DIR
from pkpo.ppo import pad_batch, token_logprobs
from pkpo.samplers import sampling_params
from pkpo.train import Run, problems_for_step
from pkpo.transforms import transform


def fresh_reward(run: Run, problems, seed: int, n: int = 64) -> tuple[list, np.ndarray]:
    params = sampling_params(run.cfg.sampler, seed)
    completions = run.sampler.generate(run.encode(problems), n, params)
    rewards, _, _ = run.scorer.score(problems, [[c.text for c in g] for g in completions])
    return completions, np.asarray(rewards, dtype=np.float64)


def probe(run: Run, start: dict, lr: float, steps: int) -> list[str]:
    model = run.trainer.model
    model.load_state_dict(start)
    run.sampler.sync_weights(model)
    problems = problems_for_step(run.train_set, 0, run.cfg.prompts_per_step, run.cfg.seed)
    _, base = fresh_reward(run, problems, seed=10_000)
    lines = [f"lr {lr:g}: fresh reward before {base.mean():.4f}"]
    for step in range(steps):
        completions, rewards = fresh_reward(run, problems, seed=step, n=run.cfg.n)
        advantages = transform("loo", torch.from_numpy(rewards), 1).reshape(-1).float()
        flat = [c for group in completions for c in group]
        batch = pad_batch([c.prompt_ids for c in flat], [c.token_ids for c in flat],
                          advantages, run.tokenizer.pad_token_id)  # fmt: skip
        logp, _ = token_logprobs(model, batch)
        mask = batch.completion_mask[:, 1:].to(logp.dtype)
        loss = -(batch.advantages * (logp * mask).sum(-1)).mean()
        model.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = float(torch.sqrt(sum((g * g).sum() for g in grads)))
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= lr * p.grad
        run.sampler.sync_weights(model)
        _, after = fresh_reward(run, problems, seed=10_001 + step)
        lines.append(
            f"  step {step + 1}: gradient norm {norm:.3f}, parameter step {lr * norm:.4f}, "
            f"fresh reward {after.mean():.4f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lrs", nargs="+", type=float, default=[1.0, 0.1, 0.03, 0.01])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=["experiment=tiny_arith", "transform=loo"])
    with TemporaryDirectory() as folder:
        run = Run(cfg, Path(folder))
        start = copy.deepcopy(run.trainer.model.state_dict())
        for lr in args.lrs:
            print("\n".join(probe(run, start, lr, args.steps)), flush=True)
        run.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
