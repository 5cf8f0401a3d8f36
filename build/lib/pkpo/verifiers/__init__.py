"""Verifiers: answer extraction, math equivalence, code extraction/tests, ARC grids."""

from pkpo.verifiers.answers import final_answer, last_boxed, last_number, parse_integer
from pkpo.verifiers.code import extract_code, humaneval_program, humaneval_tests, mbpp_tests
from pkpo.verifiers.grids import cell_accuracy, format_grid, grid_reward, parse_grid
from pkpo.verifiers.math_equiv import math_equal

__all__ = [
    "cell_accuracy",
    "extract_code",
    "final_answer",
    "format_grid",
    "grid_reward",
    "humaneval_program",
    "humaneval_tests",
    "last_boxed",
    "last_number",
    "math_equal",
    "mbpp_tests",
    "parse_grid",
    "parse_integer",
]
