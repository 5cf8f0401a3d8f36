"""ARC grids as text: formatting for prompts, robust parsing of model output, rewards."""

from __future__ import annotations

import re

Grid = list[list[int]]

_ROW_BREAK = re.compile(r"\]\s*,?\s*\[")  # "[[1, 2], [3, 4]]" -> rows on separate lines
_ROW_LINE = re.compile(r"^[\s\d,;|\[\]]*\d[\s\d,;|\[\]]*$")  # digits and separators only


def format_grid(grid: Grid, separator: str = "") -> str:
    """One row per line, one digit per cell (cells joined by ``separator``)."""
    return "\n".join(separator.join(str(cell) for cell in row) for row in grid)


def parse_grid(text: str) -> Grid | None:
    """The last grid-like block of ``text``: consecutive lines made only of digits and
    separators (spaces, commas, ``|``, brackets), so fenced blocks, prose around the
    grid and Python/JSON nested lists all work. Every digit is one cell (ARC colours are
    0-9). Rows may be ragged. None if there is no such block."""
    lines = _ROW_BREAK.sub("\n", text).splitlines()
    blocks: list[Grid] = []
    current: Grid = []
    for line in lines:
        if _ROW_LINE.match(line):
            current.append([int(char) for char in line if char.isdigit()])
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks[-1] if blocks else None


def cell_accuracy(predicted: Grid, expected: Grid) -> float:
    """Matching cells (same row and column) over the larger of the two cell counts, so
    missing and extra cells both cost; 1.0 exactly when the grids are equal."""
    matches = sum(
        1
        for i, row in enumerate(expected)
        for j, cell in enumerate(row)
        if i < len(predicted) and j < len(predicted[i]) and predicted[i][j] == cell
    )
    size = max(sum(map(len, expected)), sum(map(len, predicted)))
    return matches / size if size else 0.0


def grid_reward(predicted: Grid | None, expected: Grid, reward: str = "exact") -> float:
    """``exact``: 1.0 iff the grids are equal; ``cells``: ``cell_accuracy`` (in [0, 1])."""
    if reward not in ("exact", "cells"):
        raise ValueError(f"ARC reward must be 'exact' or 'cells', got {reward!r}")
    if predicted is None:
        return 0.0
    if reward == "exact":
        return float(predicted == expected)
    return cell_accuracy(predicted, expected)
