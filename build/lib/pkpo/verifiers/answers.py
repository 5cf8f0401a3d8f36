"""Final-answer extraction from model completions (pure string functions, never raise).

Order of precedence in ``final_answer``: the last ``\\boxed{...}`` (nested braces allowed),
then the last ``<answer>...</answer>``, then the last ``#### ...`` line (GSM8K style), then
the last "the (final) answer is ..." phrase, then (optionally) the last number.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
_NOT_INTEGER = re.compile(r"\\frac|\\sqrt|/|\^|\\pi")  # a marked answer that is no integer
_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|:|=)\s*:?\s*([^\n]+)", re.IGNORECASE | re.DOTALL
)
# A number not glued to a preceding word or digit (so "45-8" gives 8, "= -8" gives -8),
# with optional thousands separators and decimals; U+2212 is the typographic minus.
_NUMBER = re.compile(
    r"(?<![\w.])[-\u2212]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.,])[-\u2212]?\d+(?:\.\d+)?"
)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``/``\\fbox{...}`` (balanced braces), or of
    ``\\boxed 5`` (space form, up to the next ``$`` or whitespace); None if absent/unclosed."""
    start = max(text.rfind(command) for command in _BOX_COMMANDS)
    if start < 0:
        return None
    rest = text[start:]
    command = next(c for c in _BOX_COMMANDS if rest.startswith(c))
    rest = rest[len(command) :]
    if rest.startswith(" "):
        match = re.match(r" +([^\s$]+)", rest)
        return match.group(1) if match else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for position, char in enumerate(rest):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:position]
    return None


def _strip_answer_phrase(answer: str) -> str:
    """Trim what follows an answer phrase: trailing period, surrounding ``$``/``**``."""
    answer = answer.strip()
    answer = re.sub(r"\s*\.$", "", answer)
    answer = answer.strip().strip("*").strip()
    if len(answer) >= 2 and answer.startswith("$") and answer.endswith("$"):
        answer = answer.strip("$").strip()
    return answer


def last_number(text: str) -> str | None:
    """The last number in ``text`` as written (commas removed, typographic minus made ASCII)."""
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    return matches[-1].replace(",", "").replace("\u2212", "-")


def final_answer(text: str, fallback_to_last_number: bool = False) -> str | None:
    """The completion's final answer as a string, or None if it states none."""
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    for pattern in (_ANSWER_TAG, _HASHES):
        matches = pattern.findall(text)
        if matches and matches[-1].strip():
            return _strip_answer_phrase(matches[-1])
    matches = _ANSWER_IS.findall(text)
    if matches:
        phrase = _strip_answer_phrase(matches[-1])
        if phrase:
            return phrase
    return last_number(text) if fallback_to_last_number else None


def parse_integer(text: str) -> int | None:
    """The integer a completion gives as its answer: the (last) number inside its
    final-answer marker (boxed, answer tag, ``####``, "answer is") if any, else the last
    number in the text; integral decimals ("42.0") count, fractions/roots do not."""
    marked = final_answer(text)
    if marked is not None and _NOT_INTEGER.search(marked):
        return None
    number = last_number(marked) if marked is not None else None
    if number is None:
        number = last_number(text)
    if number is None:
        return None
    value = float(number)
    if not value.is_integer():
        return None
    return int(number) if "." not in number else int(value)
