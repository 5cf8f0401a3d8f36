"""Policy-gradient training of the toy policy's mean theta with PKPO (or other) advantages.

Each step draws ``groups`` independent groups of n samples from N(theta, sigma^2),
transforms each group's rewards with ``gradients.pkpo`` (Eq. 33; LOO for k = 1) or another
advantage function (a registered transform, say) and ascends the surrogate ``mean over
groups of sum_i adv_i log p(x_i | theta)``, whose gradient is the Eq. 18 estimate (for
PKPO, of d max_g@k / d theta). Adam with a cosine-decayed step
size lets theta settle at the k-optimal policy of Figure 1 rather than jitter around it.
"""

from __future__ import annotations

import numpy as np
import torch

from . import gradients as G
from . import problem


def train_theta(
    k: int,
    n: int,
    groups: int,
    steps: int,
    lr: float,
    theta0: float,
    sigma: float,
    rng: np.random.Generator,
    advantages: G.Advantages = G.pkpo,
) -> np.ndarray:
    """theta before the first and after every step: shape ``[steps + 1]``.

    ``advantages(rewards[groups, n], k) -> [groups, n]``; Adam makes its overall
    scale (k/n for PKPO, 1 for ``loo``) all but irrelevant to the path.
    """
    if steps < 1 or groups < 1:
        raise ValueError(f"train_theta: need steps >= 1 and groups >= 1, got {steps}, {groups}")
    theta = torch.tensor(float(theta0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr, maximize=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    path = [theta.item()]
    for _ in range(steps):
        x = problem.sample(rng, theta.item(), sigma, (groups, n))
        adv = torch.from_numpy(advantages(problem.reward(x), k))
        logp = torch.distributions.Normal(theta, sigma).log_prob(torch.from_numpy(x))
        surrogate = (adv * logp).sum(-1).mean()
        opt.zero_grad()
        surrogate.backward()
        opt.step()
        schedule.step()
        path.append(theta.item())
    return np.asarray(path)
