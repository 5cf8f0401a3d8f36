"""Tasks on real data: loading, splits, prompts, scores, configs."""

from __future__ import annotations

import json
import os
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import conftest
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments.bench_scoring import cpu_hogs
from pkpo.config import group_config
from pkpo.sandbox import available_isolation
from pkpo.tasks import resolve_data_path
from pkpo.tasks.arc import ArcTask, arc_path
from pkpo.tasks.arithmetic import ArithmeticTask, BasicArithmeticTask
from pkpo.tasks.base import Task
from pkpo.tasks.math import GSM8KTask, MathTask

REPO = Path(__file__).parents[1]
DATA = conftest.SHARED_DATA  # None where $PKPO_DATA is unset: those tests are skipped
CONFIGS = sorted((REPO / "conf" / "task").glob("*.yaml"))
needs_sandbox = pytest.mark.skipif(available_isolation() == "none", reason="no sandbox here")


# --- arithmetic ------------------------------------------------------------------------


def test_arithmetic_sets_are_deterministic_disjoint_and_correct():
    task = ArithmeticTask()
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (256, 200)
    assert [p.id for p in train] == [p.id for p in ArithmeticTask().load("train")]
    assert not {p.id for p in train} & {p.id for p in test}
    for problem in train + test:
        a, op, b = problem.question.split()
        assert 10 <= int(a) <= 99 and 10 <= int(b) <= 99 and op in "+-"
        assert problem.answer == eval(problem.question)  # our own digits
        assert problem.id == f"arith-{a}{op}{b}"
    other_seed = {p.id for p in ArithmeticTask(seed=1).load("train")}
    assert other_seed != {p.id for p in train}


def test_arithmetic_options_and_errors():
    task = ArithmeticTask(digits=3, ops=["*"], n_train=5, n_test=5)
    assert all(
        p.question.split()[1] == "*" and len(p.question.split()[0]) == 3 for p in task.load("train")
    )
    with pytest.raises(ValueError, match="distinct"):
        ArithmeticTask(digits=1, n_train=256, n_test=200)
    with pytest.raises(ValueError, match="ops"):
        ArithmeticTask(ops=["/"])
    with pytest.raises(ValueError, match="no split 'validation'"):
        ArithmeticTask().load("validation")


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("82", 1.0),
        ("37 + 45 = 82", 1.0),
        ("**82**", 1.0),
        ("The sum is \\boxed{82}.", 1.0),
        ("81", 0.0),
        ("", 0.0),
        ("I don't know", 0.0),
    ],
)
def test_arithmetic_score(completion, reward):
    task = ArithmeticTask()
    problem = next(p for p in task.load("train") + task.load("test") if p.answer == 82)
    assert task.score(problem, completion) == reward


def test_arithmetic_negative_answers_and_prompt():
    task = ArithmeticTask()
    problem = next(p for p in task.load("train") if p.answer < 0)
    assert task.score(problem, f"= {problem.answer}") == 1.0
    assert task.score(problem, f"= {-problem.answer}") == 0.0
    messages = task.prompt(problem)
    assert messages == [
        {"role": "user", "content": f"What is {problem.question}? Answer with the number only."}
    ]
    assert ArithmeticTask(system_prompt="Be brief.").prompt(problem)[0]["role"] == "system"


def test_basic_arithmetic_uses_reasoning_gym_scores():
    import reasoning_gym

    task = BasicArithmeticTask(
        n_train=30, n_test=10, dataset_config={"max_terms": 2, "max_digits": 2}
    )
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (30, 10)
    assert not {p.question for p in train} & {p.question for p in test}
    reference = reasoning_gym.create_dataset(
        "basic_arithmetic", size=30, seed=0, max_terms=2, max_digits=2
    )
    assert [p.question for p in train] == [entry["question"] for entry in reference][: len(train)]
    problem = pickle.loads(pickle.dumps(task)).load("train")[0]
    assert task.score(problem, f"<answer>{problem.answer}</answer>") == 1.0
    assert task.score(problem, "<answer>banana</answer>") == 0.0


# --- MATH and GSM8K ------------------------------------------------------------------


@pytest.mark.shared_data
def test_math_offline_split_is_seeded_and_disjoint():
    task = MathTask()
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (800, 200)
    ids = {p.id for p in train} | {p.id for p in test}
    assert len(ids) == 1000
    with open(DATA / "math" / "test_subset1000.jsonl") as handle:
        problems = {json.loads(line)["problem"] for line in handle}
    assert {p.question for p in train + test} == problems
    assert [p.id for p in MathTask().load("test")] == [p.id for p in test]
    assert [p.id for p in MathTask(seed=1).load("test")] != [p.id for p in test]


@pytest.mark.shared_data
def test_math_prompt_and_score():
    task = MathTask(levels=[1], n_test=5)
    problems = task.load("test")
    assert len(problems) == 5 and all(p.meta["level"] == "Level 1" for p in problems)
    problem = problems[0]
    content = task.prompt(problem)[0]["content"]
    assert content.startswith(problem.question) and "\\boxed{}" in content
    assert task.score(problem, f"... so the answer is $\\boxed{{{problem.answer}}}$.") == 1.0
    assert task.score(problem, "\\boxed{\\text{no idea}}") == 0.0
    assert task.score(problem, "") == 0.0


def test_missing_data_fails_at_construction_with_a_useful_message(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path)) + ".*data_dir"):
        MathTask(data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="load_dataset\\('openai/gsm8k', 'main'\\)"):
        GSM8KTask(data_dir=str(tmp_path))


@pytest.mark.shared_data
def test_data_folder_comes_from_config_or_pkpo_data_not_from_the_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    assert resolve_data_path("here", "gsm8k") == tmp_path / "here" / "gsm8k"  # working dir
    monkeypatch.setenv("PKPO_DATA", str(DATA))
    assert resolve_data_path(None, "gsm8k") == (DATA / "gsm8k").resolve()
    assert len(GSM8KTask(n_test=3).load("test")) == 3
    monkeypatch.delenv("PKPO_DATA")
    with pytest.raises(ValueError, match="PKPO_DATA"):
        GSM8KTask()


@pytest.mark.shared_data
def test_gsm8k_eval_subset_and_score():
    task = GSM8KTask()
    test = task.load("test")
    assert len(test) == 200 and len({p.id for p in test}) == 200
    assert [p.id for p in GSM8KTask().load("test")] == [p.id for p in test]
    with open(DATA / "gsm8k" / "test.jsonl") as handle:
        answers = {json.loads(line)["question"]: json.loads(line)["answer"] for line in handle}
    for problem in test[:50]:
        number = answers[problem.question].split("####")[1].strip().replace(",", "")
        assert problem.answer == number
        assert task.score(problem, f"Reasoning...\nThe answer is {number}.") == 1.0
        assert task.score(problem, f"The answer is {int(float(number)) + 1}.") == 0.0


# --- MBPP / HumanEval ---------------------------------------------------------------


@pytest.fixture(scope="module")
def code_task():
    if available_isolation() == "none":
        pytest.skip("no sandbox here")
    from pkpo.tasks.code import MbppTask

    return MbppTask()


@needs_sandbox
@pytest.mark.shared_data
def test_mbpp_splits_follow_task_ids(code_task):
    expected = {"train": (601, 974), "test": (11, 510), "validation": (511, 600), "prompt": (1, 10)}
    for split, (low, high) in expected.items():
        numbers = [int(p.id.split("-")[1]) for p in code_task.load(split)]
        assert numbers == list(range(low, high + 1))
    humaneval = code_task.load("humaneval")
    assert [p.id for p in humaneval] == [f"humaneval-{i}" for i in range(164)]


def _fenced(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}\n```\nIt works."


@pytest.mark.slow
@needs_sandbox
@pytest.mark.shared_data
def test_every_mbpp_reference_solution_scores_one(code_task):
    problems = [
        p for split in ("prompt", "test", "validation", "train") for p in code_task.load(split)
    ]
    assert len(problems) == 974
    # more scoring threads than cores, and the cores saturated: the reward must not change
    with cpu_hogs(2, max_seconds=900), ThreadPoolExecutor(2 * os.cpu_count()) as pool:
        rewards = list(pool.map(lambda p: code_task.score(p, _fenced(p.answer)), problems))
    assert {p.id: r for p, r in zip(problems, rewards, strict=True) if r != 1.0} == {}


@pytest.mark.slow
@needs_sandbox
@pytest.mark.shared_data
def test_every_humaneval_canonical_solution_scores_one(code_task):
    problems = code_task.load("humaneval")
    with cpu_hogs(2, max_seconds=900), ThreadPoolExecutor(2 * os.cpu_count()) as pool:
        rewards = list(pool.map(lambda p: code_task.score(p, _fenced(p.answer)), problems))
    assert {p.id: r for p, r in zip(problems, rewards, strict=True) if r != 1.0} == {}


@needs_sandbox
@pytest.mark.shared_data
def test_code_rewards_fraction_and_binary(code_task):
    from pkpo.tasks.code import MbppTask

    problem = code_task.load("humaneval")[0]  # has_close_elements: 7 asserts, 4 expect True
    assert problem.meta["tests"] and len(problem.meta["tests"]) == 7
    always_true = "def has_close_elements(numbers, threshold):\n    return True"
    assert code_task.score(problem, _fenced(always_true)) == pytest.approx(4 / 7)
    binary = MbppTask(reward="binary", check_sandbox=False)
    assert binary.score(problem, _fenced(always_true)) == 0.0
    assert binary.score(problem, _fenced(problem.answer)) == 1.0
    assert code_task.score(problem, "") == 0.0
    assert code_task.score(problem, "I am not sure how to solve this.") == 0.0
    body_only = problem.answer[len(problem.meta["prompt"]) :]  # the canonical body alone
    assert code_task.score(problem, body_only) == 1.0


@needs_sandbox
@pytest.mark.shared_data
def test_humaneval_helpers_from_the_prompt_stay_available(code_task):
    """HumanEval/32's tests call ``poly``, defined only in the prompt."""
    problem = code_task.load("humaneval")[32]
    body = problem.answer[len(problem.meta["prompt"]) :]
    only_entry = "def find_zero(xs: list):\n" + body
    assert "def poly" not in only_entry
    assert code_task.score(problem, _fenced(only_entry)) == 1.0


@needs_sandbox
@pytest.mark.shared_data
def test_mbpp_prompt_shows_tests_and_setup_code_runs(code_task):
    problem = next(p for p in code_task.load("test") if p.id == "mbpp-367")  # uses test_setup_code
    assert "assert is_tree_balanced(root) == False" in code_task.prompt(problem)[0]["content"]
    assert code_task.score(problem, _fenced(problem.answer)) == 1.0
    assert all(test.startswith("root = Node(1)") for test in problem.meta["tests"])
    without_setup = code_task.sandbox.run(
        problem.answer, [problem.meta["tests"][0].splitlines()[-1]]
    )
    assert without_setup[0].status == "fail" and "NameError" in without_setup[0].output


# --- ARC ------------------------------------------------------------------------------


def test_arc_reads_arc_agi_1():
    with open(arc_path()) as handle:
        data = json.load(handle)
    assert (len(data["train"]), len(data["eval"])) == (400, 400)
    assert "007bbfb7" in data["train"]


def test_arc_subset_split_is_seeded_80_20_and_by_task():
    task = ArcTask()
    split = task.split_ids()
    assert split == ArcTask().split_ids()
    assert not set(split["train"]) & set(split["test"])
    total = len(split["train"]) + len(split["test"])
    assert len(split["train"]) == round(0.8 * total)
    assert ArcTask(seed=1).split_ids() != split
    with open(arc_path()) as handle:
        tasks = json.load(handle)["train"]
    for task_id in split["train"] + split["test"]:
        grids = [
            g for pair in tasks[task_id]["train"] + tasks[task_id]["test"] for g in pair.values()
        ]
        assert max(max(len(g), len(g[0])) for g in grids) <= 10
        assert sum(len(g) * len(g[0]) for g in grids) <= 400
    small = ArcTask(max_grid_size=5, max_total_cells=None).split_ids()
    assert len(small["train"]) + len(small["test"]) == 25  # counted independently below
    assert (
        sum(
            all(max(len(g), len(g[0])) <= 5 for p in t["train"] + t["test"] for g in p.values())
            for t in tasks.values()
        )
        == 25
    )


def test_arc_multi_test_tasks_give_one_problem_per_test_output():
    task = ArcTask(max_grid_size=None, max_total_cells=None)
    with open(arc_path()) as handle:
        tasks = json.load(handle)["train"]
    problems = task.load("train") + task.load("test")
    assert len(problems) == sum(len(t["test"]) for t in tasks.values())
    multi = [p for p in problems if p.meta["test_index"] == 1]
    assert multi and all(p.answer == tasks[p.meta["task_id"]]["test"][1]["output"] for p in multi)


def test_arc_prompt_and_scores():
    task = ArcTask()
    problem = task.load("test")[0]
    text = task.prompt(problem)[0]["content"]
    with open(arc_path()) as handle:
        source = json.load(handle)["train"][problem.meta["task_id"]]
    first_input = "\n".join("".join(map(str, row)) for row in source["train"][0]["input"])
    assert first_input in text and text.count("Example ") == len(source["train"])
    answer = problem.answer
    as_rows = "\n".join(" ".join(map(str, row)) for row in answer)
    assert task.score(problem, f"The output is:\n```\n{as_rows}\n```") == 1.0
    assert task.score(problem, str(answer)) == 1.0
    wrong = [row[:] for row in answer]
    wrong[0][0] = (wrong[0][0] + 1) % 10
    wrong_text = "\n".join("".join(map(str, row)) for row in wrong)
    assert task.score(problem, wrong_text) == 0.0
    cells = sum(map(len, answer))
    assert ArcTask(reward="cells").score(problem, wrong_text) == pytest.approx((cells - 1) / cells)
    assert task.score(problem, "no idea") == 0.0


# --- configs --------------------------------------------------------------------------


# the configs that read $PKPO_DATA (math, gsm8k, mbpp); mbpp also runs the sandbox
MARKS = {
    "math": [pytest.mark.shared_data],
    "gsm8k": [pytest.mark.shared_data],
    "mbpp": [pytest.mark.slow, needs_sandbox, pytest.mark.shared_data],
}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=MARKS.get(p.stem, [])) for p in CONFIGS],
    ids=lambda p: p.stem,
)
def test_task_configs_instantiate_and_work(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # configs must not depend on the working directory
    config = group_config("task", path.stem)
    if "sandbox" in config:  # the junk below includes an infinite loop: keep it short
        config.sandbox.cpu_time_s = 1
    assert config.name == path.stem
    task = instantiate(config)
    assert isinstance(task, Task) and task.name == config.name
    assert (task.train_split, task.eval_split) == (config.train_split, config.eval_split)
    train, evaluation = task.load(config.train_split), task.load(config.eval_split)
    assert train and evaluation
    assert len({p.id for p in train}) == len(train)
    copy = pickle.loads(pickle.dumps(task))
    messages = copy.prompt(evaluation[0])
    assert messages[-1]["role"] == "user" and messages[-1]["content"]
    for junk in ("", "\\boxed{", "```python\nwhile True: pass", "9" * 5000, "\x00\ud800"):
        assert copy.score(evaluation[0], junk) == 0.0


def test_config_keys_are_all_constructor_arguments():
    import inspect

    for path in CONFIGS:
        config = OmegaConf.to_container(group_config("task", path.stem), resolve=False)
        module, name = config.pop("_target_").rsplit(".", 1)
        cls = getattr(__import__(module, fromlist=[name]), name)
        assert set(config) <= set(inspect.signature(cls).parameters), path.name
