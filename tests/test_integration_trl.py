"""PKPO inside TRL's GRPOTrainer (trl 1.16.0), trained for real on CPU.

The end-to-end test launches this file under ``torch.distributed.run`` with two processes
(gloo on CPU) so that a group of samples is split across processes: the advantages each
process trains on must be the transform of the *whole* group, which only holds if the
transform runs on the gathered rewards before TRL's per-process slice.

Importing trl also imports vLLM when it is installed (~10-30 s), so every test is slow;
the in-process import happens once, in a fixture, not at collection.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from test_estimators import oracle_rho, oracle_sloo_minus_one

from pkpo import transforms

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
N = 8  # num_generations
PROMPTS_PER_STEP = 3  # 24 samples per step: rank 0 gets group 0 and half of group 1
PROMPTS = ["1+2=", "3+4=", "5+6=", "7+8=", "9+0=", "2+5="]
K_BY_STEP = [4, 2]  # the "step" schedule below, at global steps 0 and 1


def tokenizer():
    """A character-level tokenizer over digits, '+' and '=' (nothing to download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate("0123456789+=")}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")


def tiny_llama(vocab_size: int) -> torch.nn.Module:
    """A randomly initialised 2-layer Llama with hidden size 32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
    )
    return LlamaForCausalLM(config)


def config(pkpo_trl, output_dir: str, **overrides):
    base = dict(
        output_dir=output_dir,
        per_device_train_batch_size=N,
        num_generations=N,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        seed=0,
    )
    return pkpo_trl.PKPOConfig(**(base | overrides))


def toy_reward(prompts, completions, **kwargs) -> list[float]:
    """How often the completion repeats the prompt's first digit, capped at 1."""
    return [min(1.0, c.count(p[0]) / 2) for p, c in zip(prompts, completions, strict=True)]


def train_and_record(output_dir: str) -> None:
    """Two PKPO steps; each process writes what it scored and what its loss received."""
    from datasets import Dataset

    from pkpo.integrations import trl as pkpo_trl

    tok = tokenizer()
    scored = []

    def reward(prompts, completions, completion_ids, **kwargs):
        out = toy_reward(prompts, completions)
        scored.append({"prompts": prompts, "ids": [list(i) for i in completion_ids], "r": out})
        return out

    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = config(
        pkpo_trl,
        output_dir,
        per_device_train_batch_size=PROMPTS_PER_STEP * N // world,
        pkpo_transform="pkpo_sloo_minus_one",
        pkpo_schedule="step",
        pkpo_schedule_kwargs={"k_start": K_BY_STEP[0], "k_end": K_BY_STEP[1], "switch_step": 1},
    )
    trainer = pkpo_trl.PKPOGRPOTrainer(
        model=tiny_llama(len(tok)),
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tok,
    )
    seen_by_loss = []
    compute_loss = trainer._compute_loss  # what GRPOTrainer.compute_loss calls per micro-batch

    def recording_compute_loss(model, inputs):
        rows = range(len(inputs["advantages"]))
        prompt = [inputs["prompt_ids"][i][inputs["prompt_mask"][i] == 1] for i in rows]
        ids = [inputs["completion_ids"][i][inputs["completion_mask"][i] == 1] for i in rows]
        seen_by_loss.append(
            {
                "advantages": inputs["advantages"].tolist(),
                "prompts": [tok.decode(p) for p in prompt],
                "ids": [i.tolist() for i in ids],
            }
        )
        return compute_loss(model, inputs)

    trainer._compute_loss = recording_compute_loss
    trainer.train()
    record = {
        "world": trainer.accelerator.num_processes,
        "config": {"scale_rewards": args.scale_rewards, "loss_type": args.loss_type},
        "scored": scored,
        "seen_by_loss": seen_by_loss,
        "log_history": trainer.state.log_history,
        "table_advantages": list(trainer._logs["advantages"]),
    }
    rank = trainer.accelerator.process_index
    Path(output_dir, f"rank{rank}.json").write_text(json.dumps(record))


# ------------------------------------------------------------- independent references


def oracle_advantages(g: np.ndarray, k: int) -> np.ndarray:
    """Eq. 33 by enumerating subsets, per group."""
    return np.array([[float(a) for a in oracle_sloo_minus_one(list(row), k)] for row in g])


def oracle_pass_at_k(g: np.ndarray, k: int) -> float:
    """Mean over groups of the mean over size-k subsets of their max reward (Theorem 3)."""
    return float(np.mean([float(oracle_rho(list(row), k)) for row in g]))


# ------------------------------------------------------------- end-to-end training


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> list[dict]:
    pytest.importorskip("trl", minversion="1.16")
    out = tmp_path_factory.mktemp("trl_two_processes")
    env = os.environ | {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, __file__, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_config_defaults_for_pkpo(two_process_run):
    assert two_process_run[0]["world"] == 2
    assert two_process_run[0]["config"] == {"scale_rewards": "none", "loss_type": "dr_grpo"}


def test_each_process_trains_on_the_whole_group_transform(two_process_run):
    """The advantages TRL's loss received equal the transform of the full gathered groups."""
    rank0, rank1 = two_process_run
    assert len(rank0["scored"]) == len(rank0["seen_by_loss"]) == 2  # one batch per step
    for step, k in enumerate(K_BY_STEP):
        # TRL gathers in process order: rank 0's samples, then rank 1's
        local = [rank0["scored"][step], rank1["scored"][step]]
        assert [len(x["r"]) for x in local] == [PROMPTS_PER_STEP * N // 2] * 2
        prompts = local[0]["prompts"] + local[1]["prompts"]
        ids = local[0]["ids"] + local[1]["ids"]
        g = np.asarray(local[0]["r"] + local[1]["r"]).reshape(-1, N)
        assert all(len(set(prompts[i : i + N])) == 1 for i in range(0, len(prompts), N))
        assert local[0]["prompts"][N:] == local[1]["prompts"][: N // 2]  # group 1 is split

        expected = transforms.transform("pkpo_sloo_minus_one", g, k)
        np.testing.assert_allclose(expected, oracle_advantages(g, k), atol=1e-12)
        assert np.abs(expected).max() > 0, "all-equal rewards: the test could not fail"
        assert not np.allclose(expected, g - g.mean(axis=1, keepdims=True))  # TRL's own

        expected_by_sample = defaultdict(set)
        for prompt, sample, adv in zip(prompts, ids, expected.reshape(-1), strict=True):
            expected_by_sample[prompt, tuple(sample)].add(round(float(adv), 9))
        assert all(len(v) == 1 for v in expected_by_sample.values())  # equal samples, equal adv
        for rank in (rank0, rank1):
            seen = rank["seen_by_loss"][step]  # shuffled by TRL: match rows by content
            assert len(seen["advantages"]) == PROMPTS_PER_STEP * N // 2
            for prompt, sample, got in zip(
                seen["prompts"], seen["ids"], seen["advantages"], strict=True
            ):
                (want,) = expected_by_sample[prompt, tuple(sample)]
                assert got == pytest.approx(want, abs=1e-6)

        # the completions table holds the last batch's PKPO advantages, in gathered order
        if step == len(K_BY_STEP) - 1:
            np.testing.assert_allclose(rank0["table_advantages"], expected.reshape(-1), atol=1e-6)


def test_logs_pass_at_k_and_cumulative_solve_rate(two_process_run):
    rank0, rank1 = two_process_run
    logs = [entry for entry in rank0["log_history"] if "pkpo/k_opt" in entry]
    assert len(logs) == 2
    solved: set[str] = set()
    for step, (k, log) in enumerate(zip(K_BY_STEP, logs, strict=True)):
        local = [rank0["scored"][step], rank1["scored"][step]]
        prompts = local[0]["prompts"] + local[1]["prompts"]
        g = np.asarray(local[0]["r"] + local[1]["r"]).reshape(-1, N)
        assert log["pkpo/k_opt"] == k
        for k_eval in (1, 2, 4, 8):
            assert log[f"pkpo/pass@{k_eval}"] == pytest.approx(oracle_pass_at_k(g, k_eval))
        assert "pkpo/pass@12" not in log  # k_eval > n has no unbiased estimate
        solved |= {prompts[i * N] for i in range(len(g)) if g[i].max() >= 1}
        assert log["pkpo/cumulative_solve_rate"] == pytest.approx(len(solved) / len(PROMPTS))


# ------------------------------------------------------------- in-process checks


@pytest.fixture(scope="module")
def pkpo_trl():
    pytest.importorskip("trl", minversion="1.16")
    from pkpo.integrations import trl as pkpo_trl

    return pkpo_trl


def make_trainer(pkpo_trl, args, **kwargs):
    from datasets import Dataset

    tok = tokenizer()
    kwargs.setdefault("train_dataset", Dataset.from_dict({"prompt": PROMPTS}))
    return pkpo_trl.PKPOGRPOTrainer(
        model=tiny_llama(len(tok)),
        reward_funcs=toy_reward,
        args=args,
        processing_class=tok,
        **kwargs,
    )


def test_trainer_requires_pkpo_config(pkpo_trl, tmp_path):
    from trl import GRPOConfig

    args = GRPOConfig(
        output_dir=str(tmp_path),
        num_generations=N,
        per_device_train_batch_size=N,
        report_to=[],
        use_cpu=True,
        bf16=False,
    )
    with pytest.raises(TypeError, match="PKPOConfig"):
        make_trainer(pkpo_trl, args)


def test_callable_schedule_is_validated_against_n(pkpo_trl, tmp_path):
    args = config(pkpo_trl, str(tmp_path))
    with pytest.raises(ValueError, match=r"k_opt=9.*n=8"):
        make_trainer(pkpo_trl, args, pkpo_k_schedule=lambda step: 4 if step == 0 else 9)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scale_rewards": "group"}, "scale_rewards"),
        ({"scale_rewards": True}, "scale_rewards"),
        ({"multi_objective_aggregation": "normalize_then_sum"}, "sum_then_normalize"),
        ({"pkpo_transform": "pkpo"}, "registered transforms: .*pkpo_sloo_minus_one"),
        ({"pkpo_k": 9}, r"k_opt=9.*n=8"),
        ({"pkpo_k": 0}, r"k_opt=0"),
        ({"pkpo_transform": "pkpo_sloo", "pkpo_k": N}, "k=n=8"),
        (
            {"pkpo_k": 2, "num_generations_eval": 1, "per_device_eval_batch_size": 1},
            r"k_opt=2.*n=1",
        ),
        (
            {"pkpo_schedule": "step", "pkpo_schedule_kwargs": {"k_start": 16, "k_end": 1}},
            "bad arguments",
        ),
        (
            {
                "pkpo_schedule": "step",
                "pkpo_schedule_kwargs": {"k_start": 16, "k_end": 1, "switch_step": 1},
            },
            r"k_opt=16",
        ),
        ({"pkpo_schedule": "cosine"}, "unknown schedule"),
    ],
)
def test_config_rejects_what_pkpo_cannot_run(pkpo_trl, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(pkpo_trl, str(tmp_path), **overrides)


def test_config_accepts_schedule_kwargs_as_json(pkpo_trl, tmp_path):
    """The CLI passes dicts as JSON strings; the paper's annealing 8 -> 1 then works."""
    args = config(
        pkpo_trl,
        str(tmp_path),
        pkpo_schedule="step",
        pkpo_schedule_kwargs='{"k_start": 8, "k_end": 1, "switch_step": 1}',
    )
    schedule = args.k_schedule()
    assert [schedule(0), schedule(1), schedule(5)] == [8, 1, 1]


def test_group_rewards_weights_functions_and_zeroes_unscorable(pkpo_trl, caplog):
    nan = math.nan
    per_func = torch.tensor([[1.0, 0.5], [nan, 2.0], [nan, nan], [0.0, 1.0]])
    with caplog.at_level(logging.WARNING, logger="pkpo.integrations.trl"):
        got = pkpo_trl.group_rewards(per_func, torch.tensor([2.0, 1.0]), n=2)
    # by hand: 2*1 + 0.5; a None counts 0; the all-None row scores 0; 0 + 1
    torch.testing.assert_close(got, torch.tensor([[2.5, 2.0], [0.0, 1.0]], dtype=torch.float64))
    assert "1 completions got no reward" in caplog.text
    with pytest.raises(ValueError, match="whole groups of n=3"):
        pkpo_trl.group_rewards(per_func, torch.ones(2), n=3)


def test_solve_rate_of_a_stream_counts_the_prompts_seen_so_far(pkpo_trl, tmp_path):
    """Without a dataset length, the denominator is the distinct prompts seen so far."""
    from datasets import Dataset

    stream = Dataset.from_dict({"prompt": PROMPTS}).to_iterable_dataset()
    assert pkpo_trl.distinct_prompts(stream) is None
    assert pkpo_trl.distinct_prompts(Dataset.from_dict({"prompt": ["a", "b", "a"]})) == 2
    assert pkpo_trl.distinct_prompts(Dataset.from_dict({"question": ["a"]})) is None

    trainer = make_trainer(pkpo_trl, config(pkpo_trl, str(tmp_path)), train_dataset=stream)
    batches = [  # (prompt of each sample, rewards [groups, n])
        (["a"] * 2 + ["b"] * 2, torch.tensor([[0.0, 1.0], [0.0, 0.5]])),
        (["c"] * 2 + ["a"] * 2, torch.tensor([[0.0, 0.0], [0.0, 0.0]])),
        (["b"] * 2 + ["d"] * 2, torch.tensor([[1.0, 0.0], [0.0, 0.0]])),
    ]
    for prompts, rewards in batches:
        trainer._log_pkpo_metrics("train", rewards.double(), 2, prompts)
    # solved/seen by hand: {a}/{a,b}; {a}/{a,b,c}; {a,b}/{a,b,c,d}
    assert trainer._metrics["train"][pkpo_trl.SOLVE_RATE] == [1 / 2, 1 / 3, 2 / 4]


def test_group_keys_checks_that_groups_repeat_one_prompt(pkpo_trl):
    chat = [{"role": "user", "content": "2+2="}]
    keys = pkpo_trl.group_keys(["a", "a", chat, [dict(chat[0])]], n=2)
    assert keys == ["a", json.dumps(chat, sort_keys=True)]
    with pytest.raises(ValueError, match="group 1 mixes different prompts"):
        pkpo_trl.group_keys(["a", "a", "b", "c"], n=2)


if __name__ == "__main__":  # run by torch.distributed.run in two_process_run
    train_and_record(sys.argv[1])
