"""PKPO estimators with verl's advantage-estimator signature and, where installed, verl itself.

The first part needs no verl: it calls the estimators the way verl 0.9.1's
``ray_trainer.compute_advantage`` does (keyword arguments, uids as a numpy object array,
groups scattered through the batch) and checks them against the all-subsets oracles of
``test_estimators.py``. The second part (slow: importing verl imports Ray) runs where verl
0.9.1 is installed (``--no-deps``, see docs/integrations.md): verl's own registry, Hydra config and
``compute_advantage`` on a real ``DataProto``, and verl's plugin entry-point discovery.
"""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_estimators import oracle_sloo, oracle_sloo_centred, oracle_sloo_minus_one

from pkpo import transforms
from pkpo.integrations import verl as pkpo_verl

REPO = Path(__file__).resolve().parents[1]
N = 6
L = 7  # response length


def oracle_tang(g, k):
    return oracle_sloo_minus_one(g, len(g))


def oracle_loo(g, k):
    """Eq. 26 by hand: g_i minus the mean of the others (PKPO's k = 1)."""
    return [g[i] - Fraction(sum(g) - g[i]) / (len(g) - 1) for i in range(len(g))]


ORACLE = {
    "pkpo_sloo": oracle_sloo,
    "pkpo_sloo_minus_one": oracle_sloo_minus_one,
    "pkpo_sloo_centred": oracle_sloo_centred,
    "pkpo_tang": oracle_tang,
}


def verl_batch(seed: int, groups: int = 3, n: int = N):
    """A batch as verl hands it over: groups shuffled through the batch (as after its
    sequence-length balancing), variable response lengths, rewards summed over tokens."""
    rng = np.random.default_rng(seed)
    rewards = rng.choice([0.0, 0.25, 0.5, 1.0], size=groups * n)  # ties on purpose
    uids = np.repeat(np.array([f"uid-{g}" for g in range(groups)], dtype=object), n)
    perm = rng.permutation(groups * n)
    rewards, uids = rewards[perm], uids[perm]
    lengths = rng.integers(1, L + 1, size=groups * n)
    mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.float32)
    # an outcome reward sits on the last response token; part of it on the first token
    # checks that the estimator uses the sum over tokens
    token_rewards = np.zeros((groups * n, L), dtype=np.float32)
    token_rewards[np.arange(groups * n), lengths - 1] += rewards * 0.75
    token_rewards[:, 0] += rewards * 0.25
    return torch.from_numpy(token_rewards), torch.from_numpy(mask), uids, rewards


def expected_advantages(oracle, rewards, uids, mask, k) -> np.ndarray:
    out = np.zeros(len(rewards))
    for uid in set(uids):
        rows = np.flatnonzero(uids == uid)
        values = [Fraction(float(r)) for r in rewards[rows]]
        out[rows] = [float(v) for v in oracle(values, k)]
    return out[:, None] * mask.numpy()


# ------------------------------------------------------------- verl's signature, no verl


@pytest.mark.parametrize("name", sorted(ORACLE))
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_estimators_match_the_subset_oracles(name, k):
    if name in ("pkpo_sloo", "pkpo_sloo_centred") and k == N:
        pytest.skip("no baseline for k = n")
    oracle = oracle_loo if (name == "pkpo_sloo_minus_one" and k == 1) else ORACLE[name]
    token_rewards, mask, uids, rewards = verl_batch(seed=k)
    config = OmegaConf.create({"adv_estimator": name, "pkpo_k": k})  # verl passes a DictConfig
    advantages, returns = pkpo_verl.ESTIMATORS[name](
        token_level_rewards=token_rewards, response_mask=mask, index=uids, config=config
    )
    assert advantages.dtype == token_rewards.dtype and advantages.shape == (3 * N, L)
    want = expected_advantages(oracle, rewards, uids, mask, k)
    np.testing.assert_allclose(advantages.numpy(), want, atol=1e-6)
    assert np.abs(want).max() > 0
    assert torch.equal(returns, advantages)


def test_accepts_the_extra_keywords_verl_passes():
    token_rewards, mask, uids, rewards = verl_batch(seed=0)
    got, _ = pkpo_verl.ESTIMATORS["pkpo_sloo_minus_one"](
        token_level_rewards=token_rewards,
        response_mask=mask,
        index=uids,
        config={"pkpo_k": 4},
        reward_baselines=torch.zeros(3 * N),
        epsilon=1e-6,
        norm_adv_by_std_in_grpo=True,
    )
    want = expected_advantages(oracle_sloo_minus_one, rewards, uids, mask, 4)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_unequal_groups_are_refused_with_their_sizes():
    token_rewards, mask, uids, _ = verl_batch(seed=1)
    keep = np.flatnonzero(uids != "uid-2")[:-1]  # uid-0 or uid-1 loses a sample
    short = uids[keep[-1]]
    with pytest.raises(ValueError, match=rf"1 group\(s\) of 5, 1 group\(s\) of 6.*{short}"):
        pkpo_verl.ESTIMATORS["pkpo_sloo_minus_one"](
            token_level_rewards=token_rewards[keep],
            response_mask=mask[keep],
            index=uids[keep],
            config={"pkpo_k": 2},
        )


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("pkpo_sloo_minus_one", {"config": {}}, r"\+algorithm\.pkpo_k=4"),
        ("pkpo_sloo", {"config": None}, r"\+algorithm\.pkpo_k"),
        ("pkpo_sloo_minus_one", {"config": {"pkpo_k": 7}}, r"pkpo_k=7.*k=7 > n=6"),
        ("pkpo_sloo", {"config": {"pkpo_k": 6}}, r"pkpo_k=6.*k=n=6"),
        ("pkpo_sloo_minus_one", {"config": {"pkpo_k": 2.5}}, "k must be an integer"),
        ("pkpo_sloo_minus_one", {"config": {"pkpo_k": 2}, "index": None}, "needs `index`"),
    ],
)
def test_bad_configuration_is_named(name, kwargs, message):
    token_rewards, mask, uids, _ = verl_batch(seed=2)
    call = {"token_level_rewards": token_rewards, "response_mask": mask, "index": uids} | kwargs
    with pytest.raises(ValueError, match=message):
        pkpo_verl.ESTIMATORS[name](**call)


def test_tang_needs_no_k():
    token_rewards, mask, uids, rewards = verl_batch(seed=3)
    got, _ = pkpo_verl.ESTIMATORS["pkpo_tang"](
        token_level_rewards=token_rewards, response_mask=mask, index=uids, config={}
    )
    want = expected_advantages(oracle_tang, rewards, uids, mask, None)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_every_transform_is_exposed_under_the_naming_rule():
    want = {t if t.startswith("pkpo_") else f"pkpo_{t}" for t in transforms.names()}
    assert set(pkpo_verl.estimators()) == want
    assert {"pkpo_tang", "pkpo_sloo_minus_one", "pkpo_maxpo", "pkpo_grpo"} <= want
    with pytest.raises(ValueError, match=r"unknown PKPO verl estimator 'grpo'.*pkpo_grpo"):
        pkpo_verl.pkpo_advantage("grpo", torch.zeros(6, 2), torch.ones(6, 2), np.zeros(6))


def test_index_shape_is_checked():
    token_rewards, mask, uids, _ = verl_batch(seed=4)
    with pytest.raises(ValueError, match=r"index has shape \(17,\), expected \(18,\)"):
        pkpo_verl.ESTIMATORS["pkpo_sloo_minus_one"](
            token_level_rewards=token_rewards, response_mask=mask, index=uids[1:], config={}
        )


# ------------------------------------------------------------- verl itself


@pytest.fixture(scope="module")
def core_algos():
    return pytest.importorskip("verl.trainer.ppo.core_algos")


def verl_config(overrides: list[str]):
    """verl's own ppo_trainer.yaml composed by Hydra with command-line overrides."""
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


@pytest.mark.slow
def test_registered_in_verls_registry(core_algos):
    token_rewards, mask, uids, rewards = verl_batch(seed=5)
    for name, oracle in ORACLE.items():
        fn = core_algos.get_adv_estimator_fn(name)
        assert fn is pkpo_verl.ESTIMATORS[name]
        got, _ = fn(
            token_level_rewards=token_rewards, response_mask=mask, index=uids, config={"pkpo_k": 3}
        )
        want = expected_advantages(oracle, rewards, uids, mask, 3)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    assert set(ORACLE) <= set(pkpo_verl.register())  # registering again is harmless


@pytest.mark.slow
@pytest.mark.slow
def test_verl_compute_advantage_from_command_line_config(core_algos):
    """verl's trainer step: Hydra overrides -> ray_trainer.compute_advantage on a DataProto."""
    from hydra.errors import ConfigCompositionException
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    overrides = ["algorithm.adv_estimator=pkpo_sloo_minus_one", f"actor_rollout_ref.rollout.n={N}"]
    with pytest.raises(ConfigCompositionException, match=r"use \+algorithm.pkpo_k=4"):
        verl_config([*overrides, "algorithm.pkpo_k=4"])
    config = verl_config([*overrides, "+algorithm.pkpo_k=4"])

    token_rewards, mask, uids, rewards = verl_batch(seed=6)
    data = DataProto.from_dict(
        tensors={"token_level_rewards": token_rewards, "response_mask": mask},
        non_tensors={"uid": uids},
    )
    algorithm = config.algorithm
    data = compute_advantage(
        data,
        adv_estimator=algorithm.adv_estimator,
        gamma=algorithm.gamma,
        lam=algorithm.lam,
        num_repeat=config.actor_rollout_ref.rollout.n,
        norm_adv_by_std_in_grpo=algorithm.norm_adv_by_std_in_grpo,
        config=algorithm,
    )
    want = expected_advantages(oracle_sloo_minus_one, rewards, uids, mask, 4)
    np.testing.assert_allclose(data.batch["advantages"].numpy(), want, atol=1e-6)
    np.testing.assert_allclose(data.batch["returns"].numpy(), want, atol=1e-6)


@pytest.mark.slow
def test_verl_plugin_entry_point_registers_on_import(core_algos, tmp_path):
    """With the entry point pyproject.toml declares, `import verl` registers PKPO."""
    dist = tmp_path / "pkpo_entry_point-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pkpo-entry-point\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[verl.plugins]\npkpo = pkpo.integrations.verl\n")
    script = (
        "import verl\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
        "print(get_adv_estimator_fn('pkpo_sloo_minus_one').__module__)\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "pkpo.integrations.verl"
