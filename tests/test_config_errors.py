"""Bad configs get one line naming the key and a non-zero exit, with and without dry_run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pkpo import config

BAD = [  # (override, what the line must name)
    ("trainer.lr=abc", "trainer.lr"),
    ("trainer.lr=-1e-4", "trainer.lr"),
    ("trainer.clip_eps=0", "trainer.clip_eps"),
    ("trainer.betas=[0.9,1.5]", "trainer.betas"),
    ("trainer.micro_batch_size=0", "trainer.micro_batch_size"),
    ("sampler.top_p=2", "sampler.top_p"),
    ("sampler.temperature=0", "sampler.temperature"),
    ("n=0", "n must"),
    ("eval.n=-2", "eval.n"),
    ("transform.name=foo", "transform.name"),
    ("schedule.k_opt=32", "k_opt=32"),  # bound that depends on n = 16
    ("schedule=step schedule.switch_step=-3", "schedule.switch_step"),
    ("schedule=step schedule.switch_step=999", "schedule.switch_step"),  # > steps
    ("model.path=/no/such/folder", "model.path"),
    ("model.sha256=0000", "model.sha256"),
    ("resume=/no/such/run", "resume"),
    ("task.digits=0", "task"),
    ("score_timeout_s=-5", "score_timeout_s"),
    ("transform=nosuch", "transform=nosuch"),  # a group option: Hydra's message is many lines
    ("sampler=nosuch", "sampler=nosuch"),
]


def _run(override: str, dry: bool, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = [sys.executable, "-m", "pkpo.train", "experiment=tiny_arith_noisy", *override.split()]
    if dry:
        args.append("dry_run=true")
    args.append(f"hydra.run.dir={out}")
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("dry", [True, False], ids=["dry_run", "run"])
def test_each_bad_config_gets_one_line_and_a_non_zero_exit(dry, tmp_path):
    with ThreadPoolExecutor(2) as pool:  # a folder each: a run folder holds one config
        folders = [tmp_path / f"run{i}" for i in range(len(BAD))]
        results = list(pool.map(lambda case, out: _run(case[0], dry, out), BAD, folders))
    for (override, key), done in zip(BAD, results, strict=True):
        lines = [line for line in done.stderr.splitlines() if line.startswith("pkpo-train: error:")]
        assert done.returncode == 2, (override, done.returncode, done.stderr[-2000:])
        assert len(lines) == 1 and key in lines[0], (override, done.stderr[-2000:])
        assert "Traceback" not in done.stderr + done.stdout, override


@pytest.mark.slow
def test_hydra_full_error_still_shows_the_traceback():
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    args = [
        sys.executable,
        "-m",
        "pkpo.train",
        "experiment=tiny_arith_noisy",
        "n=0",
        "dry_run=true",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        ["transform=loo", "sampler=hf", "model=tiny_arith_noisy", "experiment=tiny_arith"],
        ["transform=loo,tang", "+trainer=local", "hydra/launcher=basic", "transform.scale=loo"],
        ["task=null", "schedule=step", "seed=3", "transform=range(1,3)"],
    ],
)
def test_existing_group_options_pass_the_check(overrides: list[str]) -> None:
    config.check_group_choices(overrides)


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("transform=nosuch", "transform=nosuch: no such transform config; choose one of dr_grpo"),
        ("transform=loo,nosuch", "transform=nosuch: no such transform config"),
        ("+sampler=tgi", "sampler=tgi: no such sampler config; choose one of auto, hf, vllm"),
        ("experiment=none", "experiment=none: no such experiment config"),
    ],
)
def test_a_missing_group_option_is_named_with_the_choices(override: str, line: str) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(line)):
        config.check_group_choices([override])


def test_a_plugin_that_cannot_be_imported_gets_one_line(tmp_path) -> None:
    env = {**os.environ, "PKPO_PLUGINS": "no_such_plugin_module"}
    args = [sys.executable, "-m", "pkpo.train", "dry_run=true", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "pkpo-train: error: PKPO_PLUGINS: cannot import 'no_such_plugin_module': "
        "No module named 'no_such_plugin_module'"
    ]


@pytest.mark.slow
def test_a_dry_run_leaves_no_run_folder_and_keeps_what_was_there(tmp_path) -> None:
    args = [sys.executable, "-m", "pkpo.train", "experiment=tiny_arith_noisy", "dry_run=true"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # Hydra's runs/<date>/<time>_... is gone
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    done = subprocess.run(
        [*args, "hydra.run.dir=mine"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "mine",
        "mine/notes.txt",
    ]


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("sampler.top_p=2", "sampler.top_p must be in (0, 1], got 2.0"),
        ("sampler.temperature=-1", "sampler.temperature must be >= 0 (0 = greedy), got -1.0"),
        ("sampler.temperature=0", "sampler.temperature must be > 0 to train: the PPO loss"),
        ("sampler.temperature=abc", "sampler.temperature must be a number, got 'abc'"),
        ("sampler.max_new_tokens=2.5", "sampler.max_new_tokens must be an integer, got 2.5"),
        ("sampler.max_new_tokens=0", "sampler.max_new_tokens must be >= 1, got 0"),
    ],
)
def test_sampling_values_are_checked_by_sampling_params_and_named_by_key(override, line) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config.CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=tiny_arith_noisy", override])
    with pytest.raises(config.ConfigError, match=re.escape(line)):
        config.validate(cfg)
