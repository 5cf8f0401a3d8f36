"""Mathematical equivalence of two final answers with ``math-verify`` (not string equality).

Both answers are parsed by ``math_verify.parse`` from ``$answer$`` with the LaTeX
extractor, then with both extractors if that gave only text (all 1000 reference answers of
the local MATH subset parse to SymPy objects this way), and compared with
``math_verify.verify(gold, predicted)``. Two exact shortcuts skip SymPy: answers equal up
to formatting are equal, and two plain integers are compared as integers.

SymPy can take very long on adversarial input (``9^{9^{9}}``), so parsing and comparing
run under a limit of ``timeout_s`` seconds of this process's CPU time (``ITIMER_PROF``),
not of wall-clock time: a verdict must not depend on how busy the machine is, and CPU time
counts only this comparison's own work. (math-verify's own timeouts are ``signal.alarm``
on the wall clock, so they are switched off.) The timer works in a process's main thread
(the RL loop scores in worker processes). In other threads no timer can be set: answers
longer than ``MAX_ANSWER_CHARS`` are still rejected outright, but the comparison runs
without a limit (a warning is logged once).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import signal
import threading
from collections.abc import Iterator

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


class ComparisonTimeout(BaseException):
    """The comparison used up its CPU-time limit. A BaseException, as math-verify's own
    timeout is, so that the ``except Exception`` blocks inside math-verify and SymPy do not
    swallow it and carry on computing."""


_expired = False  # set by the timer, in case a caller on the way swallows the exception


@contextlib.contextmanager
def cpu_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``ComparisonTimeout`` once the block has used ``seconds`` of this process's
    CPU time (main thread only; ``None``: no limit)."""
    global _expired
    if seconds is None:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        global _expired
        _expired = True
        raise ComparisonTimeout(f"math comparison over {seconds} s of CPU time")

    _expired = False
    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.1)  # fires again if swallowed anyway
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    if _expired:  # swallowed inside math-verify: still a timeout, and never cached
        raise ComparisonTimeout(f"math comparison over {seconds} s of CPU time")


def _timeout(timeout_s: float) -> float | None:
    global _warned_thread
    if threading.current_thread() is threading.main_thread():
        return timeout_s
    if not _warned_thread:
        log.warning("math-verify called outside the main thread: running without a timeout")
        _warned_thread = True
    return None


@functools.lru_cache(maxsize=16384)
def _parse(answer: str, timeout_s: float | None) -> list:
    """LaTeX extraction first (half the cost); both extractors if that gives only text.
    A timeout raises, so only finished parses are cached."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse  # SymPy: slow

    latex = [LatexExtractionConfig()]
    with cpu_time_limit(timeout_s):
        parsed = parse(f"${answer}$", latex, parsing_timeout=None)
        if parsed and not isinstance(parsed[0], str):
            return parsed
        return parse(f"${answer}$", [*latex, ExprExtractionConfig()], parsing_timeout=None)


@functools.lru_cache(maxsize=65536)
def _equal(gold: str, predicted: str, timeout_s: float | None) -> bool:
    from math_verify import verify

    gold_parsed = _parse(gold, timeout_s)
    predicted_parsed = _parse(predicted, timeout_s)
    if not gold_parsed or not predicted_parsed:
        return False
    with cpu_time_limit(timeout_s):
        return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=None))


def math_verdict(
    gold: str, predicted: str | None, timeout_s: float = 3, exact_shortcut: bool = True
) -> tuple[bool, bool]:
    """``(equal, timed_out)``: ``equal`` is True if ``predicted`` is mathematically equal to
    ``gold``, False for None, empty, over-long or unparsable answers and when the
    comparison ran out of its ``timeout_s`` CPU seconds (then ``timed_out``). Never raises.
    With ``exact_shortcut``, answers equal up to formatting (``normalize``), and pairs of
    plain integers, are decided without math-verify."""
    if predicted is None or not predicted.strip() or len(predicted) > MAX_ANSWER_CHARS:
        return False, False
    if exact_shortcut:
        gold_form, predicted_form = normalize(gold), normalize(predicted)
        if gold_form == predicted_form:
            return True, False
        if _INTEGER.fullmatch(gold_form) and _INTEGER.fullmatch(predicted_form):
            return int(gold_form) == int(predicted_form), False
    try:
        return _equal(gold, predicted, _timeout(timeout_s)), False
    except ComparisonTimeout:
        log.debug("math comparison timed out on %r vs %r", gold, predicted)
        return False, True
    except Exception:  # an answer SymPy chokes on is simply not correct
        log.debug("math-verify failed on %r vs %r", gold, predicted, exc_info=True)
        return False, False


def math_equal(
    gold: str, predicted: str | None, timeout_s: float = 3, exact_shortcut: bool = True
) -> bool:
    """The ``equal`` of ``math_verdict`` (False on timeout)."""
    return math_verdict(gold, predicted, timeout_s, exact_shortcut)[0]
