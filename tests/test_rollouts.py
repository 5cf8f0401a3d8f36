"""The one rollout (``pkpo.rollouts.sample_and_score``) the loop's steps and evaluations and the
supervised start's report share, against a hand computation with a scripted sampler."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from pkpo.metrics import pass_at_k_metrics
from pkpo.rollouts import sample_and_score
from pkpo.samplers.base import Completion, SamplingParams
from pkpo.scoring import Scorer
from pkpo.tasks.base import Problem, Reward

TEXTS = {"p0": ["ok", "x", "ok"], "p1": ["boom", "slow", "x"]}  # what the sampler "samples"


class ScriptedSampler:
    """Returns ``TEXTS`` of each prompt (its first token id indexes the problem)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[list[int]], int, SamplingParams]] = []

    def generate(self, prompt_ids, n, params):
        self.calls.append((prompt_ids, n, params))
        return [
            [Completion(ids, [0], text, [0.0], "stop") for text in TEXTS[f"p{ids[0]}"][:n]]
            for ids in prompt_ids
        ]


class Task:
    """1 for 'ok', 1 decided by a time limit for 'slow', raises on 'boom', else 0."""

    name = "scripted"

    def score(self, problem: Problem, completion: str) -> float:
        if completion == "boom":
            raise RuntimeError("verifier exploded")
        if completion == "slow":
            return Reward(1.0, timed_out=True)
        return float(completion == "ok")


PROBLEMS = [Problem("p0", "q0", None), Problem("p1", "q1", None)]


def _rollout(**kwargs):
    sampler, params = ScriptedSampler(), SamplingParams(seed=7)
    rollout = sample_and_score(
        sampler, Scorer(Task(), workers=0), PROBLEMS, [[0, 5], [1, 5]], 3, params, **kwargs
    )
    assert sampler.calls == [([[0, 5], [1, 5]], 3, params)]
    return rollout


def test_one_process_rollout_is_the_hand_scored_samples():
    rollout = _rollout()
    assert [[c.text for c in g] for g in rollout.completions] == list(TEXTS.values())
    np.testing.assert_array_equal(rollout.local_rewards, [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(rollout.rewards, rollout.local_rewards)
    assert [(f.problem_id, f.sample) for f in rollout.local_failures] == [("p1", 0)]
    assert (rollout.score_failures, rollout.score_timeouts) == (1, 1)
    # pass@k by hand (Eq. 3, c of n = 3 correct): p0 c = 2, p1 c = 1
    # pass@1: 2/3 and 1/3; pass@2: 1 - C(1,2)/C(3,2) = 1 and 1 - C(2,2)/C(3,2) = 2/3;
    # s.e. of two values a, b over problems: |a - b| / 2
    got = pass_at_k_metrics(rollout.rewards, [1, 2, 4], with_se=True)
    want = {"pass@1": 1 / 2, "pass@1_se": 1 / 6, "pass@2": 5 / 6, "pass@2_se": 1 / 6}
    assert got == pytest.approx(want, abs=1e-12)


def test_phases_are_timed_and_rows_gathered_over_ranks():
    phases = []

    @contextmanager
    def timer(phase):
        phases.append(phase)
        yield

    def two_ranks(rows):  # a second rank that drew and scored the same as this one
        return np.concatenate([rows, rows])

    rollout = _rollout(timer=timer, gather=two_ranks)
    assert phases == ["sample", "score"]
    np.testing.assert_array_equal(rollout.local_rewards, [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(rollout.rewards, [[1, 0, 1], [0, 1, 0]] * 2)
    assert len(rollout.local_failures) == 1  # this rank's, the ones it logs
    assert (rollout.score_failures, rollout.score_timeouts) == (2, 2)
