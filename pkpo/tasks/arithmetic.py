"""Arithmetic tasks: the loop's default (and small-scale reproduction) task, and
reasoning-gym's ``basic_arithmetic``."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

from pkpo.tasks import check_split, stable_id
from pkpo.tasks.base import Problem
from pkpo.verifiers.answers import final_answer, parse_integer

log = logging.getLogger(__name__)

_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class ArithmeticTask:
    """``a op b`` with ``digits``-digit operands (10..99 for 2 digits; 0..9 for 1 digit).

    Problems are drawn without repetition by ``random.Random(seed)``: the first
    ``n_train`` form the training set and the next ``n_test`` the (disjoint) evaluation
    set, so both depend only on (digits, ops, seed, sizes). Ids are ``arith-37+45``.
    Reward: 1.0 if the completion's final integer (``parse_integer``) equals the result.
    """

    def __init__(
        self,
        name: str = "arithmetic",
        digits: int = 2,
        ops: Sequence[str] = ("+", "-"),
        n_train: int = 256,
        n_test: int = 200,
        seed: int = 0,
        train_split: str = "train",
        eval_split: str = "test",
        template: str = "What is {question}? Answer with the number only.",
        system_prompt: str | None = None,
    ) -> None:
        ops = tuple(ops)
        unknown = set(ops) - set(_OPERATIONS)
        if not ops or unknown:
            raise ValueError(f"arithmetic ops must be a non-empty subset of {list(_OPERATIONS)}")
        if digits < 1 or n_train < 0 or n_test < 0:
            raise ValueError(f"need digits >= 1 and sizes >= 0 (got {digits}, {n_train}, {n_test})")
        low, high = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
        available = (high - low + 1) ** 2 * len(ops)
        if n_train + n_test > available:
            raise ValueError(
                f"{n_train} + {n_test} problems requested but only {available} distinct "
                f"{digits}-digit problems with ops {list(ops)} exist"
            )
        self.name, self.digits, self.ops, self.seed = name, digits, ops, seed
        self.n_train, self.n_test = n_train, n_test
        self.train_split, self.eval_split = train_split, eval_split
        self.template, self.system_prompt = template, system_prompt
        self._range = (low, high)

    def _draw(self) -> list[tuple[int, str, int]]:
        rng = random.Random(self.seed)
        low, high = self._range
        drawn: dict[tuple[int, str, int], None] = {}  # insertion-ordered set
        while len(drawn) < self.n_train + self.n_test:
            drawn[(rng.randint(low, high), rng.choice(self.ops), rng.randint(low, high))] = None
        return list(drawn)

    def load(self, split: str) -> list[Problem]:
        check_split(self.name, split, ("train", "test"))
        drawn = self._draw()
        chosen = drawn[: self.n_train] if split == "train" else drawn[self.n_train :]
        return [
            Problem(
                id=f"arith-{a}{op}{b}",
                question=f"{a} {op} {b}",
                answer=_OPERATIONS[op](a, b),
                meta={"a": a, "op": op, "b": b},
            )
            for a, op, b in chosen
        ]

    def prompt(self, problem: Problem) -> list[dict[str, str]]:
        return _messages(self.system_prompt, self.template.format(question=problem.question))

    def score(self, problem: Problem, completion: str) -> float:
        answer = parse_integer(completion)
        if answer is None:
            log.debug("%s: no integer answer in %r", problem.id, completion[-200:])
        return float(answer == problem.answer)


class BasicArithmeticTask:
    """reasoning-gym's ``basic_arithmetic`` (procedural, seeded), scored by its own
    ``score_answer`` on the extracted final answer (``<answer>`` tags, ``\\boxed``,
    "answer is", else the last number). That score gives partial credit
    (len(oracle)/len(answer) when the oracle is a substring of the answer), in [0, 1].

    Train: ``create_dataset(seed=seed, size=n_train)``; test: drawn with ``seed + 1``,
    skipping questions that also occur in train, until ``n_test`` remain.
    ``dataset_config`` goes to reasoning-gym (min_terms, max_digits, operators, ...).
    """

    def __init__(
        self,
        name: str = "basic_arithmetic",
        n_train: int = 1000,
        n_test: int = 200,
        seed: int = 0,
        dataset_config: Mapping[str, Any] | None = None,
        train_split: str = "train",
        eval_split: str = "test",
        template: str = "{question} Give the final answer as <answer>number</answer>.",
        system_prompt: str | None = None,
    ) -> None:
        self.name, self.n_train, self.n_test, self.seed = name, n_train, n_test, seed
        self.dataset_config = _plain(dataset_config or {})
        self.train_split, self.eval_split = train_split, eval_split
        self.template, self.system_prompt = template, system_prompt
        self._scorer = None
        self._dataset(1, seed)  # fail at construction on a bad dataset_config

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_scorer": None}

    def _dataset(self, size: int, seed: int):
        import reasoning_gym  # heavy import: only for this task

        return reasoning_gym.create_dataset(
            "basic_arithmetic", size=size, seed=seed, **self.dataset_config
        )

    def _entries(self, size: int, seed: int, exclude: set[str]) -> list[dict]:
        """``size`` distinct entries not in ``exclude`` (draws more if duplicates occur)."""
        entries: dict[str, dict] = {}
        draw = size
        for attempt in range(10):
            for entry in self._dataset(draw, seed + 1000 * attempt):
                if entry["question"] not in exclude:
                    entries.setdefault(entry["question"], entry)
            if len(entries) >= size:
                return list(entries.values())[:size]
            draw *= 2
        raise ValueError(f"basic_arithmetic: cannot draw {size} distinct problems with this config")

    def load(self, split: str) -> list[Problem]:
        check_split(self.name, split, ("train", "test"))
        train = self._entries(self.n_train, self.seed, set())
        if split == "train":
            entries = train
        else:
            entries = self._entries(self.n_test, self.seed + 1, {e["question"] for e in train})
        return [
            Problem(
                id=stable_id("rg-arith", entry["question"]),
                question=entry["question"],
                answer=entry["answer"],
                meta={"entry": _plain(entry)},
            )
            for entry in entries
        ]

    def prompt(self, problem: Problem) -> list[dict[str, str]]:
        return _messages(self.system_prompt, self.template.format(question=problem.question))

    def score(self, problem: Problem, completion: str) -> float:
        if self._scorer is None:
            self._scorer = self._dataset(1, self.seed)
        answer = final_answer(completion, fallback_to_last_number=True)
        if answer is None:
            log.debug("%s: no answer in %r", problem.id, completion[-200:])
        return float(self._scorer.score_answer(answer, problem.meta["entry"]))


def _plain(value: Any) -> Any:
    """A deep copy made of plain dicts and lists (e.g. of Hydra's DictConfig/ListConfig)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    return value


def _messages(system_prompt: str | None, user: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": user}]
