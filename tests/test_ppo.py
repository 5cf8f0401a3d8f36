"""PPO loss against a hand-computed example, and the k_opt = 1 update against RLOO."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pkpo.ppo import Batch, LossConfig, pad_batch, ppo_loss
from pkpo.trainers.base import PPOBatch
from pkpo.trainers.local import local_trainer
from pkpo.trainers.update import token_budget_groups
from pkpo.transforms import transform


class ConstantPolicy(torch.nn.Module):
    """Next-token logits theta at every position, whatever the input: p = softmax(theta)."""

    def __init__(self, theta: list[float]):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(theta))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.theta.expand(*input_ids.shape, -1))


def test_clipped_surrogate_by_hand():
    # p = [0.5, 0.5]. Sample 1: tokens [1, 1], A = +1, old p = 0.25 -> ratio 2, clipped to 1.2.
    # Sample 2: token [0], A = -0.5, old p = 0.5 -> ratio 1.
    model = ConstantPolicy([0.0, 0.0])
    batch = pad_batch([[0], [0]], [[1, 1], [0]], torch.tensor([1.0, -0.5]), pad_id=0)
    batch.old_logprobs = torch.log(torch.tensor([[0.25, 0.25], [0.5, 0.5]]))
    loss, stats = ppo_loss(model, batch, LossConfig(clip_eps=0.2), norm=2.0)
    # per-sample token sums: -1.2 * 2 = -2.4 and +0.5; seq_sum divides by norm = 2.
    assert loss.item() == pytest.approx((-2.4 + 0.5) / 2, abs=1e-6)
    assert float(stats["clip_frac"]) == pytest.approx(1.0)  # sample 1 fully, sample 2 not
    loss.backward()
    # Clipped tokens carry no gradient; d(-A r)/dtheta for sample 2 is 0.5 * [0.5, -0.5] / 2.
    torch.testing.assert_close(model.theta.grad, torch.tensor([0.125, -0.125]))


def test_kl_and_entropy_terms_by_hand():
    model = ConstantPolicy([math.log(3.0), 0.0])  # p = [0.75, 0.25]
    batch = pad_batch([[0]], [[0]], torch.tensor([0.0]), pad_id=0)
    batch.ref_logprobs = torch.log(torch.tensor([[0.5]]))
    cfg = LossConfig(kl_coef=0.1, entropy_coef=0.01)
    loss, stats = ppo_loss(model, batch, cfg, norm=1.0)
    delta = math.log(0.5) - math.log(0.75)
    kl = math.exp(delta) - delta - 1
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(stats["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(stats["entropy_sum"]) == pytest.approx(entropy, rel=1e-5)
    assert float(stats["tokens"]) == 1.0
    assert loss.item() == pytest.approx(0.1 * kl - 0.01 * entropy, rel=1e-5)


def test_micro_batch_split_does_not_change_loss():
    torch.manual_seed(0)
    model = _tiny_llama()
    prompts = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
    comps = [[11, 12], [13], [14, 15, 16], [17]]
    adv = torch.tensor([0.5, -1.0, 2.0, 0.1])
    whole = pad_batch(prompts, comps, adv, pad_id=0)
    loss_whole, _ = ppo_loss(model, whole, LossConfig(), norm=3.0)
    parts = [pad_batch(prompts[i : i + 1], comps[i : i + 1], adv[i : i + 1], 0) for i in range(4)]
    loss_parts = sum(ppo_loss(model, b, LossConfig(), norm=3.0)[0] for b in parts)
    torch.testing.assert_close(loss_whole, loss_parts, rtol=1e-5, atol=1e-6)


def _tiny_llama() -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).float()


@pytest.mark.parametrize(
    "split",
    [
        {"micro_batch_size": 4},  # uneven micro-batches exercise padding and accumulation
        {"micro_batch_tokens": 12},  # lengths 6 4 5 6 3 4 -> samples [0, 3] [2, 1] [5, 4]
        {"micro_batch_tokens": 1},  # a budget under every length: one sample per batch
    ],
)
def test_k1_loo_update_equals_rloo_gradient(split):
    """First PPO step with k_opt = 1 (loo) has the RLOO gradient (1/(N L)) sum A_i grad log p,
    computed here sample by sample, whatever the micro-batches (by count or by tokens)."""
    torch.manual_seed(1)
    model = _tiny_llama()
    prompts = [[1, 2, 3], [1, 2, 3], [1, 2, 3], [4, 5], [4, 5], [4, 5]]
    comps = [[6, 7, 8], [9], [10, 11], [12, 13, 14, 15], [16], [17, 18]]
    rewards = torch.tensor([[1.0, 0.0, 0.0], [0.3, 1.0, 0.6]], dtype=torch.float64)
    max_new = 4

    # Independent RLOO: A_i = g_i - mean of the other samples of its group, by hand.
    rloo = torch.stack([row - (row.sum() - row) / (len(row) - 1) for row in rewards]).reshape(-1)
    seq_logp = []
    for p, c in zip(prompts, comps, strict=True):
        ids = torch.tensor([p + c])
        logits = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        seq_logp.append(logits[len(p) - 1 :].gather(-1, torch.tensor(c)[:, None]).sum())
    objective = (rloo.float() * torch.stack(seq_logp)).sum() / (len(comps) * max_new)
    want = torch.autograd.grad(objective, list(model.parameters()))

    adv = transform("pkpo_sloo_minus_one", rewards, 1).reshape(-1).float()
    trainer = local_trainer(
        model,
        pad_id=0,
        max_new_tokens=max_new,
        lr=1e-3,
        minibatch_size=len(comps),
        max_grad_norm=0.0,
        device="cpu",
        **split,
    )
    trainer.update(PPOBatch(prompts, comps, adv, [0, 0, 0, 1, 1, 1]))
    for g_want, p in zip(want, model.parameters(), strict=True):
        # the loss is the negative objective
        torch.testing.assert_close(-p.grad, g_want, rtol=1e-4, atol=1e-7)


def test_token_budget_groups_by_hand():
    # lengths 5 3 9 2 3 under 10 padded tokens: 9 alone (2 x 9 > 10), then 5 with 3
    # (2 x 5 = 10), then 3 with 2 (3 x 3 = 9; the 3 of index 1 came first, ties keep order)
    assert token_budget_groups([5, 3, 9, 2, 3], 10) == [[2], [0, 1], [4, 3]]
    assert token_budget_groups([], 10) == []


def test_token_batched_ppo_epochs_match_per_sample_micro_batches():
    """Two epochs of two minibatches each (old log-probs scored, then looked up per sample):
    grouping by tokens reorders samples, and must still pair each with its own old log-probs.
    The reference is the same update one sample per micro-batch."""
    prompts = [[1, 2, 3], [1, 2, 3], [4, 5], [4, 5], [6], [6]]
    comps = [[6, 7, 8], [9], [12, 13, 14, 15], [16], [17, 18], [19, 20, 21, 22]]
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    params = []
    for split in ({"micro_batch_size": 1}, {"micro_batch_tokens": 18}):
        torch.manual_seed(3)
        model = _tiny_llama()
        trainer = local_trainer(
            model, pad_id=0, max_new_tokens=4, lr=1e-2, epochs=2, minibatch_size=3,
            max_grad_norm=0.0, device="cpu", **split,
        )  # fmt: skip
        stats = trainer.update(PPOBatch(prompts, comps, adv, [0, 0, 1, 1, 2, 2]))
        assert stats["ratio_dev"] > 0  # the second epoch's ratios are not 1: old log-probs used
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(params[1], params[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("epochs", [1, 2])
def test_update_entropy_is_the_token_mean_over_completions(epochs):
    """The logged entropy, whether the old-policy pass runs (2 epochs) or is skipped (one
    optimizer step), is the mean over completion tokens of the policy's next-token entropy
    before the update, computed here sample by sample."""
    torch.manual_seed(2)
    model = _tiny_llama()
    prompts = [[1, 2, 3], [1, 2, 3], [4, 5], [4, 5]]
    comps = [[6, 7, 8], [9], [12, 13, 14, 15], [16]]
    with torch.no_grad():
        ents = []
        for p, c in zip(prompts, comps, strict=True):
            logp = model(input_ids=torch.tensor([p + c])).logits[0, :-1].log_softmax(-1)
            ents.extend((-(logp.exp() * logp).sum(-1))[len(p) - 1 :].tolist())
    trainer = local_trainer(
        model,
        pad_id=0,
        max_new_tokens=4,
        lr=1e-3,
        epochs=epochs,
        minibatch_size=len(comps),
        micro_batch_size=3,
        device="cpu",
    )
    stats = trainer.update(
        PPOBatch(prompts, comps, torch.tensor([1.0, -1, 0.5, -0.5]), [0, 0, 1, 1])
    )
    assert stats["entropy"] == pytest.approx(sum(ents) / len(ents), rel=1e-5)
    assert "entropy_sum" not in stats and "tokens" not in stats
    if epochs == 1:  # the policy is its own old policy on the only step
        assert stats["kl_old"] == 0.0 and stats["ratio_dev"] == 0.0


def test_batch_to_keeps_optional_fields():
    b = Batch(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), torch.zeros(1))
    assert b.to(torch.device("cpu")).old_logprobs is None
