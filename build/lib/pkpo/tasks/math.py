"""MATH (Hendrycks et al.) and GSM8K, loaded with ``datasets`` and scored with math-verify.

``source: local`` (the default; works offline) reads JSONL files under ``data_dir``
(``$PKPO_DATA`` by default) with ``load_dataset("json", data_files=...)``; ``source: hub``
calls ``load_dataset`` on the Hugging Face hub. The local MATH copy holds only 1000
*test* problems, so offline the task trains on a seeded ``local_train_fraction`` of them
and evaluates on the rest; with hub access it uses the real train (7500) and test (5000)
splits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pkpo.tasks import (
    check_split,
    load_hub,
    load_jsonl,
    require_file,
    resolve_data_path,
    seeded_sample,
    seeded_split,
    stable_id,
)
from pkpo.tasks.base import Problem, Reward, chat
from pkpo.verifiers.answers import final_answer, last_boxed
from pkpo.verifiers.math_equiv import math_verdict

log = logging.getLogger(__name__)

MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


class _AnswerTask:
    """Shared prompt/score of tasks whose completion ends in a final answer."""

    name: str
    template: str
    system_prompt: str | None
    timeout_s: int
    fallback_to_last_number: bool

    def prompt(self, problem: Problem) -> list[dict[str, str]]:
        return chat(self.system_prompt, self.template.format(question=problem.question))

    def score(self, problem: Problem, completion: str) -> float:
        predicted = final_answer(completion, self.fallback_to_last_number)
        if predicted is None:
            log.debug("%s: no final answer in %r", problem.id, completion[-200:])
        equal, timed_out = math_verdict(problem.answer, predicted, self.timeout_s)
        return Reward(float(equal), timed_out=timed_out)


class MathTask(_AnswerTask):
    """Hendrycks MATH; answer = the last ``\\boxed{}`` of the reference solution.

    ``levels`` keeps only those difficulty levels (1-5); ``n_train``/``n_test`` take
    seeded subsets (None: all). Reward 1.0 iff math-verify accepts the completion's final
    answer (``\\boxed{}``, "The answer is ...").
    """

    def __init__(
        self,
        name: str = "math",
        source: str = "local",
        data_dir: str | None = None,
        local_file: str = "math/test_subset1000.jsonl",
        local_train_fraction: float = 0.8,
        hub_path: str = "EleutherAI/hendrycks_math",
        hub_configs: Sequence[str] | None = MATH_SUBJECTS,
        levels: Sequence[int] | None = None,
        n_train: int | None = None,
        n_test: int | None = None,
        seed: int = 0,
        train_split: str = "train",
        eval_split: str = "test",
        template: str = "{question}\n\nPut your final answer within \\boxed{{}}.",
        system_prompt: str | None = None,
        timeout_s: int = 3,
    ) -> None:
        if source not in ("local", "hub"):
            raise ValueError(f"MATH source must be 'local' or 'hub', got {source!r}")
        self.name, self.source, self.seed = name, source, seed
        local = source == "local"  # the hub needs no data folder
        self.local_path = resolve_data_path(data_dir, local_file) if local else None
        self.local_train_fraction = local_train_fraction
        self.hub_path = hub_path
        self.hub_configs = list(hub_configs) if hub_configs else [None]
        self.levels = None if levels is None else {f"Level {level}" for level in levels}
        self.n_train, self.n_test = n_train, n_test
        self.train_split, self.eval_split = train_split, eval_split
        self.template, self.system_prompt, self.timeout_s = template, system_prompt, timeout_s
        self.fallback_to_last_number = False
        if source == "local":
            require_file(self.local_path, self._how_to_get())

    def _how_to_get(self) -> str:
        return (
            "Offline, set data_dir (or $PKPO_DATA) to the folder holding "
            "math/test_subset1000.jsonl (source=local); online, use source=hub "
            f"(load_dataset({self.hub_path!r}, <subject>))."
        )

    def _records(self, split: str) -> list[dict]:
        if self.source == "hub":
            return [
                record
                for config in self.hub_configs
                for record in load_hub(self.hub_path, config, split, self._how_to_get())
            ]
        records = load_jsonl(self.local_path, self._how_to_get())
        train, test = seeded_split(records, self.local_train_fraction, self.seed)
        return train if split == "train" else test

    def load(self, split: str) -> list[Problem]:
        check_split(self.name, split, ("train", "test"))
        problems = []
        for record in self._records(split):
            answer = last_boxed(record["solution"])
            if answer is None or (self.levels and record.get("level") not in self.levels):
                continue
            problems.append(
                Problem(
                    id=stable_id("math", record["problem"]),
                    question=record["problem"],
                    answer=answer,
                    meta={"level": record.get("level"), "type": record.get("type")},
                )
            )
        size = self.n_train if split == "train" else self.n_test
        return seeded_sample(problems, size, self.seed)


class GSM8KTask(_AnswerTask):
    """GSM8K; answer = the number after ``####``. Evaluation uses a seeded subset of
    ``n_test`` test problems (default 200). A completion's answer is its ``\\boxed{}``,
    "The answer is N" or ``#### N``, else its last number."""

    def __init__(
        self,
        name: str = "gsm8k",
        source: str = "local",
        data_dir: str | None = None,
        train_file: str = "gsm8k/train.jsonl",
        test_file: str = "gsm8k/test.jsonl",
        hub_path: str = "openai/gsm8k",
        hub_name: str = "main",
        n_train: int | None = None,
        n_test: int | None = 200,
        seed: int = 0,
        train_split: str = "train",
        eval_split: str = "test",
        template: str = "{question}\n\nEnd your answer with 'The answer is N.'",
        system_prompt: str | None = None,
        timeout_s: int = 3,
    ) -> None:
        if source not in ("local", "hub"):
            raise ValueError(f"GSM8K source must be 'local' or 'hub', got {source!r}")
        self.name, self.source, self.seed = name, source, seed
        files = {"train": train_file, "test": test_file}
        local = source == "local"  # the hub needs no data folder
        self.paths = {s: resolve_data_path(data_dir, f) for s, f in files.items()} if local else {}
        self.hub_path, self.hub_name = hub_path, hub_name
        self.n_train, self.n_test = n_train, n_test
        self.train_split, self.eval_split = train_split, eval_split
        self.template, self.system_prompt, self.timeout_s = template, system_prompt, timeout_s
        self.fallback_to_last_number = True
        if source == "local":
            for path in self.paths.values():
                require_file(path, self._how_to_get())

    def _how_to_get(self) -> str:
        return (
            "Offline, set data_dir (or $PKPO_DATA) to the folder holding "
            "gsm8k/{train,test}.jsonl (source=local); online, use source=hub "
            f"(load_dataset({self.hub_path!r}, {self.hub_name!r}))."
        )

    def load(self, split: str) -> list[Problem]:
        check_split(self.name, split, ("train", "test"))
        if self.source == "hub":
            records = load_hub(self.hub_path, self.hub_name, split, self._how_to_get())
        else:
            records = load_jsonl(self.paths[split], self._how_to_get())
        problems = [
            Problem(
                id=stable_id("gsm8k", record["question"]),
                question=record["question"],
                answer=gsm8k_answer(record["answer"]),
                meta={"solution": record["answer"]},
            )
            for record in records
        ]
        return seeded_sample(problems, self.n_train if split == "train" else self.n_test, self.seed)


def gsm8k_answer(solution: str) -> str:
    """The reference answer: what follows ``####``, without thousands separators."""
    if "####" not in solution:
        raise ValueError(f"GSM8K solution without '####': {solution[-80:]!r}")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")
