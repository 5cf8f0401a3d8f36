"""Arithmetic tasks: the loop's default (and small-scale reproduction) task, the tiny-model
testbed's (answers written least-significant digit first), and reasoning-gym's
``basic_arithmetic``."""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pkpo.tasks import check_split, stable_id
from pkpo.tasks.base import Problem, chat
from pkpo.verifiers.answers import final_answer, parse_integer

log = logging.getLogger(__name__)

_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
ANSWER_FORMATS = ("plain", "reversed")
POOLS = ("all", "rl", "supervised")
# One problem in RL_POOL_SHARE (by a hash of its text) is reserved for RL tasks: the
# supervised start (pkpo/pretrain.py) draws from the others only, so no RL problem, train or
# held-out, of any seed was ever a supervised example.
RL_POOL_SHARE = 8
_REVERSED = re.compile(r"0|-?[0-9]*[1-9]")  # well-formed reversed answers (for the log)


def operand_range(digits: int) -> tuple[int, int]:
    """Smallest and largest ``digits``-digit operand (0..9 for one digit, 10..99 for two)."""
    if digits < 1:
        raise ValueError(f"arithmetic digits must be >= 1, got {digits}")
    return (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1


def in_pool(a: int, op: str, b: int, pool: str) -> bool:
    """Whether ``a op b`` belongs to ``pool``: all, rl (1 in RL_POOL_SHARE) or supervised."""
    if pool == "all":
        return True
    if pool not in POOLS:
        raise ValueError(f"arithmetic pool must be one of {POOLS}, got {pool!r}")
    digest = hashlib.sha256(f"{a}{op}{b}".encode()).digest()
    reserved = int.from_bytes(digest[:8], "big") % RL_POOL_SHARE == 0
    return reserved == (pool == "rl")


def format_answer(value: int, answer_format: str) -> str:
    """The answer as the model writes it: ``plain`` 1234, ``reversed`` 4321 (-4321 for -1234)."""
    if answer_format == "plain":
        return str(value)
    if answer_format == "reversed":
        return ("-" if value < 0 else "") + str(abs(value))[::-1]
    raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")


class ArithmeticTask:
    """``a op b`` with ``digits``-digit operands (10..99 for 2 digits; 0..9 for 1 digit).

    Problems are drawn without repetition by ``random.Random(seed)`` from ``pool`` (see
    ``in_pool``): the first ``n_train`` form the training set and the next ``n_test`` the
    (disjoint) evaluation set, so both depend only on (digits, ops, pool, seed, sizes). Ids
    are ``arith-37+45``. Reward with ``answer_format: plain``: 1.0 if the completion's final
    integer (``parse_integer``) equals the result; with ``reversed`` (the testbed's format,
    ``format_answer``): 1.0 if the whole completion, surrounding whitespace aside, is the
    result written least-significant digit first; anything else (extra text, the reversed
    form of a leading zero, "-0") gets 0.
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
        answer_format: str = "plain",
        pool: str = "all",
    ) -> None:
        ops = tuple(ops)
        unknown = set(ops) - set(_OPERATIONS)
        if not ops or unknown:
            raise ValueError(f"arithmetic ops must be a non-empty subset of {list(_OPERATIONS)}")
        if digits < 1 or n_train < 0 or n_test < 0:
            raise ValueError(f"need digits >= 1 and sizes >= 0 (got {digits}, {n_train}, {n_test})")
        format_answer(0, answer_format)  # raises on an unknown format
        in_pool(0, "+", 0, pool)  # raises on an unknown pool
        self.name, self.digits, self.ops, self.seed = name, digits, ops, seed
        self.n_train, self.n_test = n_train, n_test
        self.train_split, self.eval_split = train_split, eval_split
        self.template, self.system_prompt = template, system_prompt
        self.answer_format, self.pool = answer_format, pool
        self._range = operand_range(digits)
        available = self._pool_size()
        if n_train + n_test > available:
            raise ValueError(
                f"{n_train} + {n_test} problems requested but only {available} distinct "
                f"{digits}-digit problems with ops {list(ops)} exist in pool {pool!r}"
            )

    def _pool_size(self) -> int:
        low, high = self._range
        size = (high - low + 1) ** 2 * len(self.ops)
        if self.pool == "all":
            return size
        if size > 10**5:  # too many to hash each: the reserved share is close to its expectation
            return size // RL_POOL_SHARE if self.pool == "rl" else size - size // RL_POOL_SHARE
        operands = range(low, high + 1)
        return sum(
            in_pool(a, op, b, self.pool) for a in operands for op in self.ops for b in operands
        )

    def draw(self, rng: random.Random) -> Problem:
        """One problem of the pool, drawn with ``rng`` (repetitions possible)."""
        low, high = self._range
        while True:
            a, op, b = rng.randint(low, high), rng.choice(self.ops), rng.randint(low, high)
            if in_pool(a, op, b, self.pool):
                return _problem(a, op, b)

    def load(self, split: str) -> list[Problem]:
        check_split(self.name, split, ("train", "test"))
        rng = random.Random(self.seed)
        drawn: dict[str, Problem] = {}  # insertion-ordered, by id
        while len(drawn) < self.n_train + self.n_test:
            problem = self.draw(rng)
            drawn.setdefault(problem.id, problem)
        problems = list(drawn.values())
        return problems[: self.n_train] if split == "train" else problems[self.n_train :]

    def prompt(self, problem: Problem) -> list[dict[str, str]]:
        # the template may name the whole question or its parts: "{a}{op}{b}="
        text = self.template.format(question=problem.question, **problem.meta)
        return chat(self.system_prompt, text)

    def target(self, problem: Problem) -> str:
        """The correct completion's text (the supervised start's target)."""
        return format_answer(problem.answer, self.answer_format)

    def score(self, problem: Problem, completion: str) -> float:
        if self.answer_format == "reversed":  # exact: the whole text is the canonical form
            text = completion.strip()
            if not _REVERSED.fullmatch(text):
                log.debug("%s: malformed reversed answer %r", problem.id, text[-200:])
            return float(text == self.target(problem))
        answer = parse_integer(completion)
        if answer is None:
            log.debug("%s: no integer answer in %r", problem.id, completion[-200:])
        return float(answer == problem.answer)


def _problem(a: int, op: str, b: int) -> Problem:
    return Problem(
        id=f"arith-{a}{op}{b}",
        question=f"{a} {op} {b}",
        answer=_OPERATIONS[op](a, b),
        meta={"a": a, "op": op, "b": b},
    )


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
        return chat(self.system_prompt, self.template.format(question=problem.question))

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
