"""The PPO objective on token log-probabilities, shared by every trainer backend.

A sample's transformed reward (its PKPO advantage) is the advantage of each of its tokens.
With one epoch and no clipping the gradient is ``1/(N L) sum_i A_i grad log p(x_i)``: the
paper's estimator (Eq. 18) up to the constant ``N L`` (samples times ``max_new_tokens``), so
the default ``seq_sum`` aggregation keeps the estimator unbiased whatever the lengths.
``token_mean`` and ``seq_mean`` are the common length-normalised alternatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

AGGREGATIONS = ("seq_sum", "token_mean", "seq_mean")


@dataclass
class Batch:
    """Padded sequences ``prompt + completion`` of one micro-batch.

    ``completion_mask[b, t]`` is 1 where ``input_ids[b, t]`` is a generated token; the
    per-token tensors below are aligned with ``input_ids[:, 1:]`` (the predicted tokens).
    """

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    completion_mask: torch.Tensor  # [B, T]
    advantages: torch.Tensor  # [B]
    old_logprobs: torch.Tensor | None = None  # [B, T-1]
    ref_logprobs: torch.Tensor | None = None  # [B, T-1]

    def to(self, device: torch.device) -> Batch:
        return Batch(*(None if x is None else x.to(device) for x in self.__dict__.values()))


def pad_batch(
    prompts: list[list[int]], completions: list[list[int]], advantages: torch.Tensor, pad_id: int
) -> Batch:
    """Right-padded ``prompt + completion`` sequences (positions stay 0..len-1)."""
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    comp = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[b, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        attn[b, : len(p) + len(c)] = 1
        comp[b, len(p) : len(p) + len(c)] = 1
    return Batch(ids, attn, comp, advantages.to(torch.float32))


def token_logprobs(
    model: torch.nn.Module, batch: Batch, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each next token ``[B, T-1]`` (and the entropy of its distribution).

    Logits are divided by the sampling temperature so that the ratio is taken against the
    distribution the samples were actually drawn from.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logits = logits[:, :-1].float()
    if temperature != 1.0:  # a [B, T, vocab] copy (~275 MB at 8 x 175 x 49k) only when needed
        logits = logits / temperature
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
    return logp, entropy


def aggregate(values: torch.Tensor, mask: torch.Tensor, how: str, norm: float) -> torch.Tensor:
    """Reduce per-token ``values [B, T-1]`` over the completion tokens of a micro-batch.

    Returns a sum over samples, so that accumulating micro-batches and dividing by the
    number of samples in the minibatch gives the same value for any micro-batch split.
    ``seq_sum``: sum over a sample's tokens / ``norm`` (a constant, ``max_new_tokens``);
    ``seq_mean``: mean over a sample's tokens; ``token_mean`` needs the minibatch token
    count as ``norm`` (tokens per sample on average) to stay split-invariant.
    """
    per_sample = (values * mask).sum(-1)
    if how == "seq_sum" or how == "token_mean":
        return per_sample.sum() / norm
    if how == "seq_mean":
        return (per_sample / mask.sum(-1).clamp(min=1)).sum()
    raise ValueError(f"unknown loss aggregation {how!r}; choose one of {AGGREGATIONS}")


@dataclass(frozen=True)
class LossConfig:
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    aggregation: str = "seq_sum"
    temperature: float = 1.0


def _k3(delta: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || q) per token from ``delta = log q - log pi`` (>= 0, unbiased)."""
    return torch.exp(delta) - delta - 1


def ppo_loss(
    model: torch.nn.Module,
    batch: Batch,
    cfg: LossConfig,
    norm: float,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate (+ KL to the reference, - entropy bonus), summed over samples.

    ``loss = -min(r A, clip(r, 1-eps, 1+eps) A) + kl_coef * KL - entropy_coef * H`` per token,
    with ``r = exp(logp - old_logp)`` and the k3 estimator of KL(pi || pi_ref). Also reports
    ``kl_old``, the same estimate of KL(pi || pi_old): how far the update has moved. Without
    ``batch.old_logprobs`` the policy is its own old policy (``r = 1``, the first step of an
    epoch). ``with_entropy`` (or an entropy bonus) adds ``entropy_sum``, the token entropy
    summed over completion tokens, and ``tokens``, their count.
    """
    logp, entropy = token_logprobs(
        model, batch, cfg.temperature, with_entropy or cfg.entropy_coef > 0
    )
    mask = batch.completion_mask[:, 1:].to(logp.dtype)
    old = logp.detach() if batch.old_logprobs is None else batch.old_logprobs
    ratio = torch.exp(logp - old)
    adv = batch.advantages[:, None].to(logp.dtype)
    clipped = torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    stats = {
        "clip_frac": aggregate(((ratio - clipped).abs() > 0).to(logp.dtype), mask, "seq_mean", 1),
        "ratio_dev": aggregate((ratio - 1).abs().detach(), mask, "seq_mean", 1),
        "kl_old": aggregate(_k3(old - logp.detach()), mask, "seq_mean", 1),
    }
    if batch.ref_logprobs is not None:
        kl = _k3(batch.ref_logprobs - logp)
        stats["kl"] = aggregate(kl.detach(), mask, "seq_mean", 1)
        if cfg.kl_coef:
            per_token = per_token + cfg.kl_coef * kl
    if entropy is not None:
        stats["entropy_sum"] = (entropy.detach() * mask).sum()
        stats["tokens"] = mask.sum()
        per_token = per_token - cfg.entropy_coef * entropy
    return aggregate(per_token, mask, cfg.aggregation, norm), stats
