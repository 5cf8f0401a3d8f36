"""Group-aware data parallelism: 2 gloo processes with real DeepSpeed ZeRO-2 and ZeRO-3
engines (torch AdamW, tiny Llama) against the single-process local_trainer on the same batch
(advantages, gradients, updates, statistics); DeepSpeed checkpoints (an exact resume, and a
save killed mid-way); the pure helpers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from pkpo import distributed
from pkpo.trainers.base import PPOBatch
from pkpo.transforms import transform

B, N, K_OPT, TRANSFORM = 4, 4, 2, "pkpo_sloo_minus_one"
MAX_NEW = 8
# Two trainer settings: A exercises PPO epochs (ratio != 1 in epoch 2), KL to the reference,
# the entropy bonus and the warm-up schedule (lr/2 then lr) with raw (unclipped) gradients;
# B the token_mean normaliser (a global token count) with a binding gradient clip.
SETTINGS = {
    "A": dict(epochs=2, kl_coef=0.05, entropy_coef=0.01, max_grad_norm=0.0, warmup_steps=2),
    "B": dict(epochs=1, loss_aggregation="token_mean", max_grad_norm=0.05),
}
# name -> (ZeRO stage, setting); ZeRO-3 also shards the weights (gathered to compare them)
RUNS = {"A": (2, "A"), "B": (2, "B"), "A_zero3": (3, "A")}
COMMON = dict(
    pad_id=0,
    max_new_tokens=MAX_NEW,
    temperature=0.9,
    lr=1e-3,
    minibatch_size=B * N,  # one minibatch: the same sample set on 1 and 2 processes
    micro_batch_size=3,  # uneven micro-batches: 3 + 3 + 2 per rank
    seed=0,
)


# ----------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("num,world", [(4, 2), (5, 2), (7, 3), (2, 4), (0, 2), (9, 1)])
def test_shard_bounds_are_contiguous_balanced_and_cover_all(num, world):
    bounds = [distributed.shard_bounds(num, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == num
    assert all(bounds[r][1] == bounds[r + 1][0] for r in range(world - 1))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == num


def test_shard_bounds_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank 2 is not in a world of size 2"):
        distributed.shard_bounds(4, 2, 2)


def test_rendezvous_env_from_torchrun_srun_and_plain_process():
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    torchrun |= {"MASTER_ADDR": "n1", "MASTER_PORT": "29500"}
    assert distributed.rendezvous_env(torchrun) == torchrun
    with pytest.raises(RuntimeError, match="MASTER_ADDR, MASTER_PORT"):
        distributed.rendezvous_env({"RANK": "0", "WORLD_SIZE": "2"})
    srun = {
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu17",
        "SLURM_JOB_ID": "123456",
    }
    assert distributed.rendezvous_env(srun) == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu17",
        "MASTER_PORT": str(20000 + 123456 % 20000),
    }
    # the batch script of a multi-task job is not a rank of it: no SLURM_STEP_NUM_TASKS
    plain = distributed.rendezvous_env({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"})
    assert (plain["RANK"], plain["WORLD_SIZE"], plain["LOCAL_RANK"]) == ("0", "1", "0")
    assert 0 < int(plain["MASTER_PORT"]) < 65536


def test_deepspeed_config_keys_and_errors():
    pytest.importorskip("deepspeed")
    from pkpo.trainers.deepspeed import deepspeed_config

    cfg = deepspeed_config(
        zero_stage=3,
        micro_batch_size=4,
        max_grad_norm=1.0,
        bf16=True,
        offload_optimizer=True,
        offload_param=True,
        overrides={"zero_optimization": {"stage3_max_live_parameters": 10}, "x": 1},
    )
    assert cfg["bf16"] == {"enabled": True}
    assert cfg["managed_gradient_accumulation"] is False
    assert cfg["gradient_accumulation_steps"] == 1
    assert cfg["train_micro_batch_size_per_gpu"] == 4
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_max_live_parameters"] == 10
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert cfg["x"] == 1 and cfg["zero_force_ds_cpu_optimizer"] is False
    kw = dict(micro_batch_size=1, max_grad_norm=0.0, bf16=False, offload_optimizer=False)
    with pytest.raises(ValueError, match="offload_param needs ZeRO stage 3"):
        deepspeed_config(zero_stage=2, offload_param=True, **kw)
    with pytest.raises(ValueError, match="zero_stage must be"):
        deepspeed_config(zero_stage=4, offload_param=False, **kw)


# ----------------------------------------------------------------------------- fixtures


def tiny_llama(seed: int = 0, hidden: int = 32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=61,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).float()


def step_batch() -> tuple[list[list[int]], list[list[list[int]]], np.ndarray]:
    """B prompts, n completions each (1..MAX_NEW tokens) and binary rewards [B, n]."""
    rng = np.random.default_rng(7)
    prompts = [rng.integers(1, 61, rng.integers(2, 6)).tolist() for _ in range(B)]
    comps = [
        [rng.integers(1, 61, rng.integers(1, MAX_NEW + 1)).tolist() for _ in range(N)]
        for _ in range(B)
    ]
    rewards = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1], [0, 1, 0, 0]], dtype=float)
    return prompts, comps, rewards


def rollout_of(groups: list[int], advantages: torch.Tensor) -> PPOBatch:
    """The loop's flat rollout of ``groups`` (see pkpo.train.Run.train_step)."""
    prompts, comps, _ = step_batch()
    return PPOBatch(
        prompt_ids=[prompts[g] for g in groups for _ in range(N)],
        completion_ids=[c for g in groups for c in comps[g]],
        advantages=advantages.reshape(-1).float(),
        group=[b for b, _ in enumerate(groups) for _ in range(N)],
    )


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in model.parameters()])


def record_steps(world: int, out: list[torch.Tensor]):
    """A global optimizer pre-step hook that stores the flat gradient each step applies.

    ZeRO-2 hands the client AdamW one flat fp32 partition per rank (parameters in model
    order, padded at the end): gathering the partitions restores the full flat gradient.
    """

    def hook(optimizer, args, kwargs):
        flat = [p.grad.detach().flatten() for g in optimizer.param_groups for p in g["params"]]
        grad = torch.cat(flat)
        if world > 1:
            parts = [torch.zeros_like(grad) for _ in range(world)]
            torch.distributed.all_gather(parts, grad)
            grad = torch.cat(parts)
        out.append(grad.clone())

    return register_optimizer_step_pre_hook(hook)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- the ranks


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank: the loop's shard -> transform -> gather, then DeepSpeed updates (RUNS)."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from pkpo.trainers.deepspeed import deepspeed_trainer

    _, _, rewards = step_batch()
    results: dict = {}
    for name, (stage, setting) in RUNS.items():
        trainer = deepspeed_trainer(tiny_llama(), zero_stage=stage, **COMMON, **SETTINGS[setting])
        mine = trainer.shard(list(range(B)))
        advantages = transform(TRANSFORM, torch.from_numpy(rewards[mine]), K_OPT)
        grads: list[torch.Tensor] = []
        handle = record_steps(world, grads)
        stats = trainer.update(rollout_of(mine, advantages))
        handle.remove()
        with trainer.gathered_weights():
            params = flat_params(trainer.model)
        results[name] = {
            "groups": mine,
            "advantages": trainer.gather(advantages.numpy()),
            "grads": grads if stage == 2 else None,  # ZeRO-3 partitions: another layout
            "params": params,
            "stats": stats,
        }
    # Checkpoint round trip with the last (ZeRO-3) engine: a fresh engine built as a resumed
    # run builds it (from the initial weights, which are also its KL reference) loads it, then
    # both take one more update, which also needs the AdamW moments, the warm-up schedule and
    # the minibatch shuffling state restored.
    ckpt = Path(out_dir) / "ckpt"
    extra = {"step": 1, "solved": ["p3"]}
    trainer.save(ckpt, extra)
    if rank == 0:  # what a save killed before its pointer moved leaves behind
        (ckpt / "ds_step999").mkdir()
        (ckpt / "ds_step999" / "mp_rank_00_model_states.pt").write_bytes(b"truncated")
    distributed.barrier()
    stage, setting = RUNS["A_zero3"]
    other = deepspeed_trainer(tiny_llama(), zero_stage=stage, **COMMON, **SETTINGS[setting])
    loaded = other.load(ckpt)
    with other.gathered_weights():
        restored = flat_params(other.model)
    trainer.update(rollout_of(mine, advantages))
    other.update(rollout_of(mine, advantages))
    other.save(ckpt, extra)  # a later save removes older and partial tags
    with trainer.gathered_weights(), other.gathered_weights():
        results["ckpt"] = {
            "extra": loaded,
            "saved": results["A_zero3"]["params"],
            "restored": restored,
            "next": flat_params(trainer.model),
            "next_restored": flat_params(other.model),
            "tags": sorted(p.name for p in ckpt.iterdir() if p.is_dir()),
        }
    if rank == 0:
        torch.save(results, Path(out_dir) / "ranks.pt")
    # Both ranks leave together and close the process group before the interpreter exits: a
    # rank that exits with the group open can abort in its communication threads' teardown
    # ("terminate called without an active exception", SIGABRT) while the other still works.
    distributed.barrier()
    torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------- reference


def single_process(setting: dict) -> dict:
    """The same batch through local_trainer on one process."""
    from pkpo.trainers.local import local_trainer

    _, _, rewards = step_batch()
    trainer = local_trainer(tiny_llama(), device="cpu", **COMMON, **setting)
    advantages = transform(TRANSFORM, torch.from_numpy(rewards), K_OPT)
    grads: list[torch.Tensor] = []
    handle = record_steps(1, grads)
    try:
        stats = trainer.update(rollout_of(list(range(B)), advantages))
    finally:
        handle.remove()
    return {
        "advantages": advantages.numpy(),
        "grads": grads,
        "params": flat_params(trainer.model),
        "stats": stats,
    }


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("ranks")
    torch.multiprocessing.spawn(_rank_main, args=(2, free_port(), str(out)), nprocs=2)
    return torch.load(out / "ranks.pt", weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_two_ranks_match_one_process(two_ranks, name):
    setting = SETTINGS[RUNS[name][1]]
    got, want = two_ranks[name], single_process(setting)
    assert got["groups"] == [0, 1]  # rank 0 holds whole groups 0 and 1, rank 1 groups 2, 3
    np.testing.assert_allclose(got["advantages"], want["advantages"], rtol=0, atol=1e-12)
    assert len(want["grads"]) == setting["epochs"]
    for g_got, g_want in zip(got["grads"] or want["grads"], want["grads"], strict=True):
        g_got = g_got[: g_want.numel()]  # ZeRO pads the flat partitions at the end
        assert g_want.abs().max() > 1e-4
        torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-7)
    moved = (want["params"] - flat_params(tiny_llama())).abs().max()
    assert moved > 1e-4
    # Adam moves a coordinate by ~lr * g / |g|: where g is at float-noise level (~1e-8) the
    # step itself is noise, so the parameters get an absolute tolerance of a few % of lr.
    torch.testing.assert_close(got["params"], want["params"], rtol=0, atol=0.03 * COMMON["lr"])
    close = (got["params"] - want["params"]).abs() < 1e-6
    assert close.float().mean() > 0.99
    assert set(got["stats"]) == set(want["stats"])
    for key, value in want["stats"].items():
        assert got["stats"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    if setting["max_grad_norm"]:
        assert want["stats"]["grad_norm"] > setting["max_grad_norm"]  # the clip was active


@pytest.mark.slow
def test_two_rank_checkpoint_resumes_exactly(two_ranks):
    ckpt = two_ranks["ckpt"]
    assert ckpt["extra"] == {"step": 1, "solved": ["p3"]}
    assert (ckpt["saved"] - flat_params(tiny_llama())).abs().max() > 1e-4  # trained, not initial
    torch.testing.assert_close(ckpt["restored"], ckpt["saved"], rtol=0, atol=0)
    assert (ckpt["next"] - ckpt["saved"]).abs().max() > 1e-5
    torch.testing.assert_close(ckpt["next_restored"], ckpt["next"], rtol=0, atol=0)
    assert len(ckpt["tags"]) == 1 and ckpt["tags"][0].startswith("ds_step")


# ----------------------------------------------------------------------------- killed save

KILL_SAVES = 200


def _saver(ckpt: str, port: int) -> None:
    """Update, print the checksum it is about to save, save: until killed."""
    os.environ.update(MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from pkpo.trainers.deepspeed import deepspeed_trainer

    trainer = deepspeed_trainer(tiny_llama(hidden=128), **COMMON, **SETTINGS["B"])
    _, _, rewards = step_batch()
    advantages = transform(TRANSFORM, torch.from_numpy(rewards), K_OPT)
    for step in range(KILL_SAVES):
        trainer.update(rollout_of(list(range(B)), advantages))
        print(f"saving {step} {float(flat_params(trainer.model).double().sum())!r}", flush=True)
        trainer.save(Path(ckpt), {"step": step})


def _loader(ckpt: str, port: int, queue) -> None:
    os.environ.update(MASTER_PORT=str(port))
    from pkpo.trainers.deepspeed import deepspeed_trainer

    trainer = deepspeed_trainer(tiny_llama(hidden=128, seed=3), **COMMON, **SETTINGS["B"])
    extra = trainer.load(Path(ckpt))
    queue.put((extra["step"], float(flat_params(trainer.model).double().sum())))


@pytest.mark.slow
def test_save_killed_midway_leaves_a_loadable_checkpoint(tmp_path):
    pytest.importorskip("deepspeed")
    ctx = multiprocessing.get_context("spawn")
    log = tmp_path / "saver.log"
    log.touch()
    saver = ctx.Process(target=_run_logged, args=(_saver, str(log), str(tmp_path / "c")))
    saver.start()
    ckpt = tmp_path / "c"
    deadline = time.monotonic() + 300
    # After a few complete saves, wait for a new tag folder beside the current one (a save
    # is under way), then kill at a random point of the ~0.1 s save: files empty or partly
    # written, fsynced but the pointer not yet moved, or the pointer moved (all seen here).
    while log.read_text().count("saving") < 4 or len(list(ckpt.glob("ds_step*"))) < 2:
        assert saver.is_alive() and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.001)
    time.sleep(float(np.random.default_rng().uniform(0, 0.1)))
    os.kill(saver.pid, signal.SIGKILL)
    saver.join()
    assert saver.exitcode == -signal.SIGKILL, log.read_text()[-2000:]
    checksums = {}
    for line in log.read_text().splitlines():
        if line.startswith("saving "):
            _, step, value = line.split()
            checksums[int(step)] = float(value)
    queue = ctx.Queue()
    loader = ctx.Process(target=_loader, args=(str(ckpt), free_port(), queue))
    loader.start()
    step, value = queue.get(timeout=300)
    loader.join()
    assert step in checksums and step >= 2
    assert value == pytest.approx(checksums[step], rel=1e-12)


def _run_logged(fn, log: str, ckpt: str) -> None:
    """Run ``fn`` with stdout and stderr going to ``log`` (the parent polls it)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    fn(ckpt, free_port())
