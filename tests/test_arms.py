"""Arm names and labels (pkpo/arms.py): the label of any run's config, written out by hand
here; tests/test_repro_sweep.py checks each sweep arm's label, and that its overrides,
composed by Hydra and read back by the analysis, give the same label."""

from __future__ import annotations

import re

import pytest

from pkpo.arms import SWEEP_ARMS, ArmConfig, arm_label, sweep_arm


def test_the_default_sweep_is_the_paper_arms_and_anneal_switches_halfway() -> None:
    assert SWEEP_ARMS == ("k1", "k2", "k4", "k8", "tang", "anneal", "anneal_loo")
    assert "schedule.switch_step=30" in sweep_arm("anneal", steps=60).overrides
    assert "schedule.switch_step=50" in sweep_arm("anneal", steps=101).overrides
    assert "trainer.entropy_coef=0.01" in sweep_arm("ent0.01", steps=60).overrides
    loo = sweep_arm("anneal_loo", steps=60).overrides
    assert loo == (*sweep_arm("anneal", steps=60).overrides, "transform.scale=loo")


@pytest.mark.parametrize(
    "name",
    ["k3", "k16", "ent", "ent0", "ent-1", "entx", "anneal2", "", "maxpo", "maxpo-k0", "x-k4"],
)
def test_an_unknown_arm_name_is_refused_with_the_known_ones(name: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown arm {name!r}: expected one of k1, k2"):
        sweep_arm(name, steps=60)


@pytest.mark.parametrize(
    ("config", "label"),
    [
        ({"transform": "loo", "k_opt": None}, "k_opt=1"),
        ({"transform": "loo", "k_opt": 7}, "k_opt=1"),  # loo ignores k
        ({"transform": "pkpo_sloo_minus_one", "k_opt": 4}, "k_opt=4"),
        ({"transform": "pkpo_sloo", "k_opt": 4}, "k_opt=4 [pkpo_sloo]"),
        ({"transform": "gone", "k_opt": 4}, "k_opt=4 [gone]"),  # no longer registered
        ({"transform": "raw", "k_opt": 4}, "k_opt=1 [raw]"),
        ({"transform": "raw", "k_opt": None}, "k_opt=1 [raw]"),
        ({"transform": "tang", "k_opt": 16, "schedule": "step"}, "tang"),
        ({"transform": "loo", "k_opt": 1, "schedule": "step", "k_start": 8, "k_end": 1},
         "annealed (8→1)"),
        ({"transform": "pkpo_sloo_minus_one", "k_opt": None, "schedule": "linear",
          "k_start": 8, "k_end": 2}, "annealed (linear 8→2)"),
        ({"transform": "loo", "k_opt": 1, "entropy_coef": 0.01}, "EntropyReg (0.01)"),
        ({"transform": "pkpo_sloo_minus_one", "k_opt": 4, "entropy_coef": 0.1},
         "k_opt=4 + EntropyReg (0.1)"),
        ({"transform": "pkpo_sloo_minus_one", "k_opt": None, "schedule": "step",
          "k_start": 8, "k_end": 1, "scale": "loo"}, "annealed (8→1) [loo scale]"),
        ({"transform": "pkpo_sloo_minus_one", "k_opt": 4, "scale": "loo"},
         "k_opt=4 [loo scale]"),
        ({"transform": "pkpo_sloo_minus_one", "k_opt": 4, "scale": "paper"}, "k_opt=4"),
        ({"transform": "grpo", "k_opt": 4}, "grpo"),  # ignores k: named by its transform
        ({"transform": "maxrl", "k_opt": None}, "maxrl"),
        ({"transform": "maxpo", "k_opt": 4}, "k_opt=4 [maxpo]"),
        ({"transform": None, "k_opt": 4}, "unknown"),
        ({"transform": "pkpo_sloo_minus_one", "k_opt": None}, "unknown"),
    ],
)  # fmt: skip
def test_arm_label_of_a_config(config: dict, label: str) -> None:
    assert arm_label(**config) == label


@pytest.mark.parametrize(
    ("config", "kind", "k", "dashed"),
    [
        ({"transform": "pkpo_sloo_minus_one", "k_opt": 4}, "k_opt", 4, False),
        ({"transform": "pkpo_sloo", "k_opt": 16}, "k_opt", 16, True),
        ({"transform": "loo", "k_opt": 7}, "k_opt", 1, False),
        ({"transform": "raw", "k_opt": 4}, "k_opt", 1, True),
        ({"transform": "pkpo_sloo_minus_one", "k_opt": 4, "entropy_coef": 0.1},
         "k_opt", 4, True),
        ({"transform": "pkpo_sloo_minus_one", "k_opt": 1, "entropy_coef": 0.1},
         "EntropyReg", None, False),
        ({"transform": "loo", "k_opt": 1, "entropy_coef": 0.01}, "EntropyReg", None, False),
        ({"transform": "pkpo_sloo_minus_one", "k_opt": 4, "scale": "loo"}, "k_opt", 4, True),
        ({"transform": "tang", "k_opt": 16}, "tang", None, False),
        ({"transform": "grpo", "k_opt": 1}, "named", None, False),
        ({"transform": "loo", "schedule": "step", "k_start": 8, "k_end": 1},
         "annealed", None, False),
        ({"transform": "loo", "schedule": "step", "k_start": 8, "k_end": 1, "scale": "loo"},
         "annealed", None, True),
        ({"transform": None, "k_opt": 4}, "unknown", None, False),
    ],
)  # fmt: skip
def test_an_arm_is_shown_from_its_fields(config: dict, kind: str, k, dashed: bool) -> None:
    shown = ArmConfig(**config).shown
    assert (shown.kind, shown.k, shown.dashed) == (kind, k, dashed)


def test_arms_sort_by_kind_then_k() -> None:
    arms = [
        ArmConfig("loo", schedule="step", k_start=8, k_end=1),
        ArmConfig("grpo"),
        ArmConfig("loo", 1, entropy_coef=0.01),
        ArmConfig("tang"),
        ArmConfig("pkpo_sloo_minus_one", 16),
        ArmConfig("pkpo_sloo_minus_one", 2),
        ArmConfig("loo"),
    ]
    labels = [a.label for a in sorted(arms, key=ArmConfig.sort_key)]
    assert labels == [
        "k_opt=1", "k_opt=2", "k_opt=16", "tang", "EntropyReg (0.01)", "annealed (8→1)", "grpo"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "line"),
    [
        (
            "loo-k4",
            "arm 'loo-k4': transform loo fixes k (k = 1) and ignores k_opt; name the arm 'loo'",
        ),
        ("tang-k2", "arm 'tang-k2': transform tang fixes k (k = n) and ignores k_opt"),
        ("grpo-k8", "arm 'grpo-k8': transform grpo fixes k (k = 1)"),
    ],
)
def test_a_k_for_a_transform_that_fixes_k_is_refused(name: str, line: str) -> None:
    with pytest.raises(ValueError, match=re.escape(line)):
        sweep_arm(name, 10)


def test_the_paper_s_arms_are_the_sweep_s_default_and_the_tables_rows() -> None:
    from pkpo.analysis.tables import PAPER_ROWS as table_rows
    from pkpo.arms import PAPER_ROWS

    assert PAPER_ROWS == ("k_opt=1", "k_opt=2", "k_opt=4", "k_opt=8", "tang", "EntropyReg")
    assert table_rows is PAPER_ROWS
    swept = [sweep_arm(name, 10).label for name in SWEEP_ARMS if name[1:].isdigit()]
    assert swept == list(PAPER_ROWS[:4])
