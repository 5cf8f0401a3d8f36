"""The reproduction launcher: each arm's overrides compose into the run the analysis labels
as that arm, and a bad arm is refused before anything runs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import repro_sweep
from pkpo import analysis as A
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
