"""The reproduction launcher: each arm's overrides compose into the run the analysis labels
as that arm, a bad arm is refused before anything runs, one launcher holds a sweep folder,
no run outlives its launcher and the manifest keeps every attempt."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import repro_sweep
from pkpo import analysis as A
from pkpo import rundir
from pkpo.arms import sweep_arm
from pkpo.config import CONF_DIR

ARMS = {
    "k1": "k_opt=1",
    "k2": "k_opt=2",
    "k4": "k_opt=4",
    "k8": "k_opt=8",
    "tang": "tang",
    "anneal": "annealed (8→1)",
    "anneal_loo": "annealed (8→1) [loo scale]",
    "ent0.01": "EntropyReg (0.01)",
    "pkpo_sloo_centred-k4": "k_opt=4 [pkpo_sloo_centred]",
    "maxpo-k4": "k_opt=4 [maxpo]",
    "grpo": "grpo",
    "grpo_passk": "grpo_passk",
}


@pytest.mark.parametrize(("arm", "label"), ARMS.items())
def test_each_arm_composes_into_the_run_the_analysis_names_so(
    arm: str, label: str, tmp_path: Path
) -> None:
    cmd = repro_sweep.command("repro_arith", arm, 2, tmp_path / arm, [])
    overrides = cmd[cmd.index("pkpo.train") + 1 :]
    overrides = [o for o in overrides if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    raw = OmegaConf.to_container(cfg, resolve=False)
    if "k_opt" in cfg.schedule:  # the constant schedule's (tang's interpolates ${n})
        raw["schedule"]["k_opt"] = cfg.schedule.k_opt
    config = A.parse_config(raw, arm)
    assert config.arm == label
    assert sweep_arm(arm, cfg.steps).label == label  # the arm's own label says the same
    assert (config.seed, config.n, cfg.steps, cfg.prompts_per_step) == (2, 16, 60, 32)
    if arm.startswith("anneal"):
        assert (config.k_start, config.k_end, config.switch_step) == (8, 1, 30)
    if arm == "tang":
        assert config.k_opt == 16


def test_a_bad_protocol_is_refused_before_any_run(tmp_path: Path, capsys) -> None:
    path = tmp_path / "protocol.yaml"
    path.write_text("name: x\npreset: tiny_arith_noisy\narms: [k1]\n")
    with pytest.raises(SystemExit):
        repro_sweep.main(["--protocol", str(path)])
    err = capsys.readouterr().err
    assert "--protocol: " in err and "missing key 'seeds'" in err


@pytest.mark.parametrize("arm", ["k3", "ent", "ent-1", "anneal2", "maxpo-k0", "nosuch-k4", "maxpo"])
def test_an_unknown_arm_is_refused_before_any_run(arm: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        repro_sweep.main(["--arms", arm, "--out", str(tmp_path / "out")])
    assert f"unknown arm {arm!r}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_collect_copies_logs_without_checkpoints_or_local_paths(tmp_path: Path) -> None:
    from experiments import collect_runs

    src, dst = tmp_path / "sweep", tmp_path / "results"
    run = src / "k1_s0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"\0" * 1024)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("x: 1\n")
    (run / "events.jsonl").write_text('{"event": "start", "step": 0}\n')
    (run / "config.yaml").write_text(f"run_dir: {collect_runs.REPO}/runs/sweep/k1_s0\n")
    bar = "pkpo:   0%| 0/2\rpkpo:  50%| 1/2\rpkpo: 100%| 2/2"
    (src / "k1_s0.log").write_text(f"{sys.executable} -m pkpo.train\n{bar}\ndone\n")
    (src / "manifest.json").write_text(f'{{"k1_s0": {{"command": ["{sys.executable}"]}}}}')

    assert collect_runs.main([str(src), str(dst)]) == 0
    copied = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert copied == ["k1_s0.log", "k1_s0/config.yaml", "k1_s0/events.jsonl", "manifest.json"]
    assert (dst / "k1_s0" / "config.yaml").read_text() == "run_dir: runs/sweep/k1_s0\n"
    assert (dst / "k1_s0.log").read_text() == "python -m pkpo.train\npkpo: 100%| 2/2\ndone\n"
    assert (dst / "manifest.json").read_text() == '{"k1_s0": {"command": ["python"]}}'


def test_the_run_length_of_a_preset_built_on_another_is_its_parent_s() -> None:
    parent = OmegaConf.load(Path(CONF_DIR) / "experiment" / "tiny_arith.yaml").steps
    assert "steps" not in OmegaConf.load(Path(CONF_DIR) / "experiment" / "tiny_arith_hard.yaml")
    assert repro_sweep.preset_steps("tiny_arith_hard", []) == parent == 150
    assert repro_sweep.preset_steps("tiny_arith_hard", ["steps=40"]) == 40


# ----------------------------------------------------------------------------- one launcher

SWEEP = ["--preset", "tiny_arith_noisy", "--arms", "k1", "--seeds", "0"]
SHORT = [
    "steps=14",
    "save_every=2",
    "prompts_per_step=4",
    "n=4",
    "eval.problems=2",
    "eval.n=2",
    "score_workers=0",
    "torch_threads=1",
    "logger.wandb.mode=disabled",
]


def test_a_second_launcher_on_one_sweep_folder_stops_at_once(
    tmp_path: Path, hold_elsewhere, capsys
) -> None:
    out = tmp_path / "sweep"
    holder = hold_elsewhere(out)
    assert repro_sweep.main([*SWEEP, "--out", str(out), "--", *SHORT]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"repro_sweep: error: sweep folder {out} is held by pid {holder.pid} on host "
        f"{socket.gethostname()}: another process is writing to it; wait for it to end or stop it"
    )
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no manifest, no run


def _wait_for(what: str, check, timeout_s: float = 300.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _checkpointed(run: Path, attempt: int) -> bool:
    """Whether the ``attempt``-th start of the run's log is followed by a checkpoint."""
    if not (run / "events.jsonl").exists():
        return False
    lines = (run / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.endswith("}")]
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    return len(starts) == attempt and any(e["event"] == "checkpoint" for e in events[starts[-1] :])


def _trainer_pid(run: Path) -> int:
    holder = rundir.holder(run)
    return int(holder.split()[1]) if holder else 0


def _gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped by a container's init counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_killed_runs_and_a_killed_launcher_leave_every_attempt_and_one_writer(
    tmp_path: Path,
) -> None:
    out, run = tmp_path / "sweep", tmp_path / "sweep" / "k1_s0"
    launch = [sys.executable, "-m", "experiments.repro_sweep", *SWEEP, "--out", str(out)]
    launch += ["--retries", "1", "--", *SHORT]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(launch, cwd=repro_sweep.REPO, env=env)
    try:
        # attempt 1: the run is killed; the launcher resumes it (attempt 2)
        _wait_for("a checkpoint", lambda: _checkpointed(run, 1))
        first = _trainer_pid(run)
        os.kill(first, signal.SIGKILL)
        # attempt 2: the launcher is killed, its run must not outlive it
        second = _wait_for("the resumed run", lambda: (p := _trainer_pid(run)) != first and p)
        _wait_for("a checkpoint of the resumed run", lambda: _checkpointed(run, 2))
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=30)
        _wait_for("the orphan's end", lambda: _gone(second), timeout_s=30)
        assert rundir.holder(run) is None and rundir.holder(out) is None
    finally:
        if launcher.poll() is None:
            launcher.kill()
    # a new launch resumes the run (attempt 3) and finishes it
    rerun = subprocess.run(launch, cwd=repro_sweep.REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "1/1 runs finished" in rerun.stdout

    entry = json.loads((out / "manifest.json").read_text())["k1_s0"]
    assert entry["status"] == "done"
    attempts = entry["attempts"]
    assert [(a["exit"], a.get("signal")) for a in attempts] == [
        (None, "SIGKILL"),  # the run, killed
        (None, None),  # cut off with its launcher: started, never ended
        (0, None),
    ]
    assert 2 <= attempts[0]["steps"] < 14 and attempts[2]["steps"] == 14
    assert "steps" not in attempts[1]  # its launcher died first: nobody saw it end
    assert all(a["started"].endswith("+00:00") for a in attempts)

    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    assert len(starts) == 3
    for begin, end in zip(starts, [*starts[1:], len(events)], strict=True):
        # one writer per attempt: its train steps run up one by one from where it resumed
        steps = [e["step"] for e in events[begin:end] if e["event"] == "train"]
        resumed = events[begin]["resumed_from_step"] or 0
        assert steps == list(range(resumed, resumed + len(steps)))
    cut_off = events[starts[1] : starts[2]]  # killed with its launcher: it wrote no end
    assert cut_off and not [e for e in cut_off if e["event"] == "end"]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "finished"
    assert events[-1]["step"] == 14


@pytest.mark.slow
def test_a_terminated_launcher_ends_its_runs_and_records_the_signal(tmp_path: Path) -> None:
    out, run = tmp_path / "sweep", tmp_path / "sweep" / "k1_s0"
    launch = [sys.executable, "-m", "experiments.repro_sweep", *SWEEP, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen([*launch, "--", *SHORT], cwd=repro_sweep.REPO, env=env)
    try:
        _wait_for("a checkpoint", lambda: _checkpointed(run, 1))
        trainer = _trainer_pid(run)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert _gone(trainer)  # the launcher waited for its run's process group to end
    assert rundir.holder(run) is None and rundir.holder(out) is None
    entry = json.loads((out / "manifest.json").read_text())["k1_s0"]
    assert entry["status"] == "failed"
    assert [(a["exit"], a.get("signal")) for a in entry["attempts"]] == [(None, "SIGTERM")]


def test_clean_text_cuts_any_environment_s_packages_folder() -> None:
    from experiments.collect_runs import clean_text

    line = "step 3/4]/opt/x/.venv/lib/python3.12/site-packages/torch/a.py:8: UserWarning: w"
    assert clean_text(line) == "step 3/4]<site-packages>/torch/a.py:8: UserWarning: w"
    assert clean_text('  File "/usr/lib/python3/dist-packages/b.py", line 1') == (
        '  File "<site-packages>/b.py", line 1'
    )


def test_committed_logs_name_no_machine_path() -> None:
    results = Path(__file__).resolve().parents[1] / "experiments" / "results"
    machine = re.compile(r"(?<![\w.<>-])/(?:work|home|root|opt|tmp|usr|mnt|scratch)/")
    found = [
        f"{log.relative_to(results)}:{number}"
        for log in sorted(results.rglob("*.log"))
        for number, line in enumerate(log.read_text(errors="replace").splitlines(), 1)
        if machine.search(line)
    ]
    assert found == []


def test_the_clean_checkout_check_counts_tracked_changes_only(tmp_path: Path) -> None:
    """A resumed sweep's untracked run folders must not block it; an edited file must."""

    def run_git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    run_git("init", "-q")
    (tmp_path / "train.py").write_text("lr = 1\n")
    run_git("add", "train.py")
    run_git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "protocol")
    (tmp_path / "k1_s0").mkdir()
    (tmp_path / "k1_s0" / "events.jsonl").write_text("{}\n")
    assert repro_sweep.tracked_changes(tmp_path) == ""
    (tmp_path / "train.py").write_text("lr = 2\n")
    assert repro_sweep.tracked_changes(tmp_path) == "M train.py"
