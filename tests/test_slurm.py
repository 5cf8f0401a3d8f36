"""The Slurm launchers on a real one-node cluster (slurm/local_cluster.sh: slurmctld, slurmd
and munged on this machine, started here and stopped after): slurm/sweep_kopt.sbatch as an
array job, including a task requeued mid-run that must resume from its checkpoint, and the
hydra-submitit launcher config running a 2-rank DeepSpeed job from Slurm's variables.

Needs root and Debian's slurm-wlm and munge; where the cluster cannot start the tests are
skipped with the reason.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "slurm" / "local_cluster.sh"
# One CPU, the HF sampler, 2 prompts x 2 samples, 8 new tokens, no evaluation, no wandb.
TINY = [
    "sampler=hf",
    "n=2",
    "prompts_per_step=2",
    "sampler.max_new_tokens=8",
    "eval.problems=0",
    "logger.wandb.mode=disabled",
    "score_workers=0",
    "torch_threads=1",
]
# Resources a CPU-only node has: the script's header asks for GPUs and 32 CPUs.
CPU_ONLY = ["--gpus-per-node=0", "--cpus-per-task=1"]
TIMEOUT_S = 900


def _why_no_slurm() -> str | None:
    missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(c)]
    if missing:
        return f"{', '.join(missing)} not found: apt-get install -y slurm-wlm munge"
    if os.geteuid() != 0:
        return "the local Slurm cluster runs slurmctld/slurmd/munged as root"
    return None


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """Environment for sbatch/scontrol against a fresh local cluster (stopped afterwards)."""
    reason = _why_no_slurm()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(
        [str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=120
    )
    try:
        if started.returncode != 0:
            pytest.skip(f"the local Slurm cluster did not start: {started.stderr[-1500:]}")
        yield {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    finally:
        subprocess.run([str(CLUSTER), "stop", str(state)], capture_output=True, timeout=120)


def _slurm(env: dict, *args: str) -> str:
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{' '.join(args)}: {out.stderr}"
    return out.stdout


def _job_field(env: dict, job: str, field: str) -> str:
    """A field of ``scontrol show job`` (e.g. JobState, Restarts), or '' if unknown yet."""
    out = subprocess.run(
        ["scontrol", "show", "job", job], env=env, capture_output=True, text=True, timeout=60
    )
    for word in out.stdout.split():
        if word.startswith(f"{field}="):
            return word.split("=", 1)[1]
    return ""


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(predicate, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
            pytest.fail(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.5)


@pytest.mark.slow
def test_sweep_array_tasks_train_and_a_requeued_task_resumes(slurm_env, tmp_path):
    """Two array tasks (k_opt 1 and 2, seed 0), two steps each; task 0 is requeued right
    after its first checkpoint (what pre-emption does) and must continue from it."""
    root = tmp_path / "runs"
    env = {**slurm_env, "PKPO_ROOT": str(root), "PKPO_PYTHON": sys.executable}
    out = str(tmp_path / "slurm-%A_%a.out")
    job = _slurm(
        env,
        "sbatch",
        "--parsable",
        "--array=0-1",
        f"--output={out}",
        *CPU_ONLY,
        str(REPO / "slurm" / "sweep_kopt.sbatch"),
        *TINY,
        "steps=2",
        "save_every=1",
        "trainer=local",
        "trainer.device=cpu",
    ).strip()
    runs = [root / f"{job}_{i}" for i in (0, 1)]
    logs = [tmp_path / f"slurm-{job}_{i}.out" for i in (0, 1)]

    def checkpointed() -> bool:
        return any(e["event"] == "checkpoint" for e in _events(runs[0]))

    _wait(checkpointed, "task 0's first checkpoint", logs)
    _slurm(env, "scontrol", "requeue", f"{job}_0")
    # A requeued job waits ~2 minutes (BeginTime) before it may start again: start it now.
    _wait(lambda: _job_field(env, f"{job}_0", "JobState") == "PENDING", "the requeue", logs)
    _slurm(env, "scontrol", "update", f"jobid={job}_0", "StartTime=now")
    for i in (0, 1):
        _wait(
            lambda i=i: _job_field(env, f"{job}_{i}", "JobState") in ("COMPLETED", "FAILED"),
            f"task {i} to finish",
            logs,
        )
    for i, (run, log) in enumerate(zip(runs, logs, strict=True)):
        assert _job_field(env, f"{job}_{i}", "JobState") == "COMPLETED", log.read_text()[-3000:]
        events = _events(run)
        assert {e["step"] for e in events if e["event"] == "train"} == {0, 1}
        assert events[-1]["event"] == "end" and events[-1]["status"] == "finished"
        assert (run / "checkpoints" / "last.pt").exists()
        assert (run / ".hydra" / "overrides.yaml").exists()  # Hydra's files go there too
        config = (run / "config.yaml").read_text()
        assert f"k_opt: {i + 1}\n" in config and "\nseed: 0\n" in config
        assert f"run_dir: {run}\n" in config
    starts = [e for e in _events(runs[0]) if e["event"] == "start"]
    assert len(starts) == 2 and starts[0]["resumed_from_step"] is None
    assert starts[1]["resumed_from_step"] >= 1
    assert "restart=1" in logs[0].read_text()
    assert [e["event"] for e in _events(runs[1])].count("start") == 1


@pytest.mark.slow
def test_submitit_launcher_runs_a_two_rank_deepspeed_job(slurm_env, tmp_path):
    """``-m hydra/launcher=submitit_slurm_pkpo``: one job, two Slurm tasks that become the two
    ranks of a ZeRO-2 run through pkpo.distributed (no torchrun)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("deepspeed")
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "pkpo.train",
        "-m",
        "hydra/launcher=submitit_slurm_pkpo",
        "hydra.launcher.partition=local",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.cpus_per_task=1",
        f"hydra.sweep.dir={sweep}",
        "schedule.k_opt=2",
        "seed=0",
        *TINY,
        "steps=1",
        "trainer=deepspeed_zero2",
        "trainer.bf16=false",
        "trainer.minibatch_size=4",
        "trainer.micro_batch_size=2",
    ]
    done = subprocess.run(
        cmd, cwd=REPO, env=slurm_env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    logs = sorted(sweep.glob(".submitit/*/*_log.*"))
    detail = done.stderr[-2000:] + "".join(p.read_text()[-2000:] for p in logs)
    assert done.returncode == 0, detail
    (run,) = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    events = _events(run)
    # one start event: rank 1 joined rank 0's group instead of logging a run of its own
    assert [e["event"] for e in events] == ["start", "train", "checkpoint", "end"], detail
    assert events[1]["k_opt"] == 2 and events[-1]["status"] == "finished"
    assert sum("global_rank=1(2)" in p.read_text() for p in logs) == 1, detail
    tags = [p.name for p in (run / "checkpoints").iterdir() if p.is_dir()]
    assert len(tags) == 1 and tags[0].startswith("ds_step")


# ----------------------------------------------------------------------------- presets (fast)


def _paper_presets() -> list[str]:
    names = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("paper_*.yaml"))
    return [n for n in names if n != "paper_common"]


def _accepted(*callables) -> set[str]:
    return {p for fn in callables for p in inspect.signature(fn).parameters} - {"self", "kwargs"}


@pytest.mark.parametrize("name", _paper_presets())
def test_paper_preset_composes_validates_and_uses_real_keys(name):
    """Every k_opt of the sweep passes the loop's checks, the paper's fixed settings hold, and
    every trainer/vLLM key is an argument the class accepts (instantiate would fail later)."""
    from hydra import compose, initialize_config_dir

    from pkpo import config
    from pkpo.config import CONF_DIR
    from pkpo.samplers.vllm import VLLMSampler
    from pkpo.trainers.deepspeed import DeepSpeedEngine
    from pkpo.trainers.local import LocalEngine
    from pkpo.trainers.update import PPOTrainer

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        # the annealing preset's schedule has no single k_opt: sweep its first k instead
        key = "schedule.k_start" if name == "paper_fig3_annealing" else "schedule.k_opt"
        for k in (1, 2, 4, 8):
            cfg = compose("train", overrides=[f"experiment={name}", f"{key}={k}"])
            config.validate(cfg)
        tang = compose("train", overrides=[f"experiment={name}", "transform=tang"])
        config.validate(tang)
    assert cfg.n == 16 and list(cfg.k_eval) == [1, 2, 4, 8, 12, 16]
    assert cfg.transform.name == "pkpo_sloo_minus_one"
    assert cfg.trainer._target_ == "pkpo.trainers.deepspeed.deepspeed_trainer"
    trainer_keys = set(cfg.trainer) - {"_target_"}
    assert trainer_keys <= _accepted(DeepSpeedEngine, LocalEngine, PPOTrainer)
    assert cfg.sampler._target_ == "pkpo.samplers.vllm.VLLMSampler.for_policy"
    assert set(cfg.sampler.vllm) <= _accepted(VLLMSampler.__init__)
    assert cfg.trainer.minibatch_size % 8 == 0 and cfg.prompts_per_step % 8 == 0  # 8 GPUs
    if name == "paper_fig3_annealing":
        assert cfg.schedule.name == "step" and cfg.schedule.switch_step == 1500
        assert (cfg.schedule.k_start, cfg.schedule.k_end) == (8, 1)


def test_submitit_launcher_config_defaults():
    from hydra import compose, initialize_config_dir

    from pkpo.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=submitit_slurm_pkpo", "hydra.launcher.gpus_per_node=4"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4  # one rank per GPU follows gpus_per_node
    assert launcher.max_num_timeout > 0 and launcher.timeout_min == 1440
