"""The reproduction launcher: each arm's overrides compose into the run the analysis labels
as that arm, and a bad arm is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import repro_sweep
from pkpo import analysis as A
from pkpo.arms import sweep_arm
from pkpo.train import CONF_DIR

ARMS = {
    "k1": "k_opt=1",
    "k2": "k_opt=2",
    "k4": "k_opt=4",
    "k8": "k_opt=8",
    "tang": "tang",
    "anneal": "annealed (8→1)",
    "anneal_loo": "annealed (8→1) [loo scale]",
    "ent0.01": "EntropyReg (0.01)",
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


@pytest.mark.parametrize("arm", ["k3", "ent", "ent-1", "anneal2"])
def test_an_unknown_arm_is_refused_before_any_run(arm: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        repro_sweep.main(["--arms", arm, "--out", str(tmp_path / "out")])
    assert f"unknown arm {arm!r}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
