"""A new reward transform is one decorated function.

``half_pkpo`` below is defined here and nowhere else: no config, no arm, no table entry.
It runs as a sweep arm of ``experiments/repro_sweep.py`` through ``pkpo-train`` (its runs
import this module through ``PKPO_PLUGINS``), through ``pkpo-toy``'s estimator stage,
``pkpo-analyze``, TRL and verl. Each is checked against values computed independently: the
subset oracle of Eq. 33 (``test_estimators``), the exact toy gradient, the logs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from test_estimators import oracle_sloo_minus_one
from test_integration_trl import PROMPTS, tiny_llama, tokenizer, toy_reward
from test_integration_trl import N as TRL_N
from test_integration_trl import config as trl_config
from test_integration_verl import expected_advantages, verl_batch

from experiments import repro_sweep
from pkpo import transforms
from pkpo.analysis import cli as analyze
from pkpo.config import CONF_DIR
from pkpo.integrations import verl as pkpo_verl
from pkpo.toy import compare, problem

NAME = "half_pkpo"


@transforms.register(NAME, min_n=2, gradient=transforms.Gradient("k", lambda n: 0.5, "½∇max_g@k"))
def half_pkpo(rewards, k):
    """Half the paper's PKPO advantages (Eq. 33; LOO at k = 1): unbiased for ½ ∇max_g@k."""
    return 0.5 * transforms.transform("pkpo_sloo_minus_one", rewards, k)


def oracle(g, k):
    return [v / 2 for v in oracle_sloo_minus_one(g, k)]


def as_plugin(env: pytest.MonkeyPatch) -> None:
    """Other processes (a sweep's runs, the report's notebook kernels) import this module."""
    env.setenv("PKPO_PLUGINS", __name__)
    here = Path(__file__).parent
    paths = [str(here), str(here.parent), os.environ.get("PYTHONPATH")]
    env.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Iterator[Path]:
    """One two-step run of the arm ``half_pkpo-k4`` on the pinned testbed model."""
    out = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as env:
        as_plugin(env)
        args = ["--preset", "tiny_arith_noisy", "--arms", f"{NAME}-k4", "--seeds", "0"]
        fast = ["steps=2", "prompts_per_step=2", "eval.problems=4", "eval.n=4", "eval.every=0"]
        assert repro_sweep.main([*args, "--out", str(out), "--", *fast]) == 0
        yield out
    shutil.rmtree(out)  # its checkpoint (~10 MB)


def test_it_trains_as_a_sweep_arm(sweep: Path) -> None:
    run = sweep / f"{NAME}-k4_s0"
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert config["transform"] == {"name": NAME, "scale": "paper"}
    records = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    train = [r for r in records if r["event"] == "train"]
    assert [(r["step"], r["transform"], r["k_opt"]) for r in train] == [(0, NAME, 4), (1, NAME, 4)]
    assert records[-1]["event"] == "end" and records[-1]["status"] == "finished"


def test_pkpo_analyze_labels_and_tabulates_its_runs(sweep: Path, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as env:
        as_plugin(env)
        assert analyze.main([str(sweep), "--out", str(tmp_path), "--notebooks", "tables"]) == 0
    with open(tmp_path / "inventory.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["arm"], row["status"], row["steps"]) == (f"k_opt=4 [{NAME}]", "finished", "1")
    (table,) = (tmp_path / "tables").glob("tiny_arith_noisy_*.md")
    assert f"k_opt=4 [{NAME}]" in table.read_text()


def test_the_toy_estimator_stage_measures_it_against_its_stated_gradient() -> None:
    toy = OmegaConf.load(Path(CONF_DIR) / "toy.yaml")
    bounds = tuple(toy.theta_star_bounds)
    table = compare.estimator_table(
        [1.0], [8], 4, toy.sigma, 20_000, 4.0, bounds, toy.quad_nodes, np.random.default_rng(0)
    )
    rows = table.set_index("estimator")
    half, pkpo = rows.loc[NAME], rows.loc["pkpo_sloo_minus_one"]
    exact = problem.dmaxg_at_k(1.0, 4, sigma=toy.sigma, n_nodes=toy.quad_nodes)
    assert (half["target"], half["target_value"]) == ("½∇max_g@k", pytest.approx(exact / 2))
    assert half["mean"] == pytest.approx(pkpo["mean"] / 2, rel=1e-12)  # the same draws
    assert abs(half["z_target"]) < 4 and not half["target_significant"]


def test_verl_exposes_it_under_the_naming_rule() -> None:
    token_rewards, mask, uids, rewards = verl_batch(seed=6)
    estimator = pkpo_verl.estimators()[f"pkpo_{NAME}"]
    got, _ = estimator(
        token_level_rewards=token_rewards, response_mask=mask, index=uids, config={"pkpo_k": 3}
    )
    np.testing.assert_allclose(
        got.numpy(), expected_advantages(oracle, rewards, uids, mask, 3), atol=1e-6
    )


def test_it_reaches_verls_own_registry() -> None:
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    assert f"pkpo_{NAME}" in pkpo_verl.register()
    estimator = pkpo_verl.ESTIMATORS[f"pkpo_{NAME}"]
    assert core_algos.get_adv_estimator_fn(f"pkpo_{NAME}") is estimator


def test_trl_trains_with_it_by_name(tmp_path: Path) -> None:
    pytest.importorskip("trl", minversion="1.16")
    from datasets import Dataset

    from pkpo.integrations import trl as pkpo_trl

    scored = []

    def recorded_reward(prompts, completions, **kwargs):
        scored.append(toy_reward(prompts, completions))
        return scored[-1]

    tok = tokenizer()
    trainer = pkpo_trl.PKPOGRPOTrainer(
        model=tiny_llama(len(tok)),
        reward_funcs=recorded_reward,
        args=trl_config(pkpo_trl, str(tmp_path), pkpo_transform=NAME, pkpo_k=3),
        processing_class=tok,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
    )
    trainer.model.train()
    output = trainer._generate_and_score_completions([{"prompt": PROMPTS[0]}] * TRL_N)
    rewards = [float(r) for r in scored[-1]]
    assert len(set(rewards)) > 1  # a group whose rewards differ, so this can fail
    want = torch.tensor([float(v) for v in oracle([Fraction(r) for r in rewards], 3)])
    torch.testing.assert_close(output["advantages"].double(), want.double(), rtol=0, atol=1e-6)
