"""Mathematical equivalence of two final answers with ``math-verify`` (not string equality).

Both answers are parsed by ``math_verify.parse`` from ``$answer$`` with the LaTeX
extractor, then with both extractors if that gave only text (all 1000 reference answers of
the local MATH subset parse to SymPy objects this way), and compared with
``math_verify.verify(gold, predicted)``. Two exact shortcuts skip SymPy: answers equal up
to formatting are equal, and two plain integers are compared as integers.

SymPy can take very long on adversarial input (``9^{9^{9}}``), so parsing and comparing
run under math-verify's ``signal.alarm`` timeouts, which work in a process's main thread
(the RL loop scores in worker processes). In other threads no alarm can be set: answers
longer than ``MAX_ANSWER_CHARS`` are still rejected outright, but the comparison runs
without a timeout (a warning is logged once).
"""

from __future__ import annotations

import functools
import logging
import re
import threading

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 1000
_FORMATTING = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\ |\s|\$")
_INTEGER = re.compile(r"-?\d{1,100}")
_warned_thread = False


def normalize(answer: str) -> str:
    """Formatting-only normalisation (spacing, ``\\left``, ``\\dfrac``, final period)."""
    answer = _FORMATTING.sub("", answer)
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return answer.rstrip(".")


def _timeout(timeout_s: int) -> int | None:
    global _warned_thread
    if threading.current_thread() is threading.main_thread():
        return timeout_s
    if not _warned_thread:
        log.warning("math-verify called outside the main thread: running without a timeout")
        _warned_thread = True
    return None


@functools.lru_cache(maxsize=16384)
def _parse(answer: str, timeout_s: int | None) -> list:
    """LaTeX extraction first (half the cost); both extractors if that gives only text."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse  # SymPy: slow

    latex = [LatexExtractionConfig()]
    parsed = parse(f"${answer}$", latex, parsing_timeout=timeout_s)
    if parsed and not isinstance(parsed[0], str):
        return parsed
    return parse(f"${answer}$", [*latex, ExprExtractionConfig()], parsing_timeout=timeout_s)


@functools.lru_cache(maxsize=65536)
def _equal(gold: str, predicted: str, timeout_s: int | None) -> bool:
    from math_verify import verify

    gold_parsed = _parse(gold, timeout_s)
    predicted_parsed = _parse(predicted, timeout_s)
    if not gold_parsed or not predicted_parsed:
        return False
    return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=timeout_s))


def math_equal(
    gold: str, predicted: str | None, timeout_s: int = 3, exact_shortcut: bool = True
) -> bool:
    """True if ``predicted`` is mathematically equal to ``gold``; False for None, empty,
    over-long or unparsable answers and on timeout (never raises). With
    ``exact_shortcut``, answers equal up to formatting (``normalize``), and pairs of plain
    integers, are decided without math-verify."""
    if predicted is None or not predicted.strip() or len(predicted) > MAX_ANSWER_CHARS:
        return False
    if exact_shortcut:
        gold_form, predicted_form = normalize(gold), normalize(predicted)
        if gold_form == predicted_form:
            return True
        if _INTEGER.fullmatch(gold_form) and _INTEGER.fullmatch(predicted_form):
            return int(gold_form) == int(predicted_form)
    try:
        return _equal(gold, predicted, _timeout(timeout_s))
    except Exception:  # an answer SymPy chokes on is simply not correct
        log.debug("math-verify failed on %r vs %r", gold, predicted, exc_info=True)
        return False
