"""The warning and the error of the analysis: a log read partially, a result with no data."""

from __future__ import annotations

import warnings

from pkpo.logger import EventLogWarning


class AnalysisWarning(EventLogWarning):
    """A log read partially or with defaults (corrupted line, missing key, duplicate seed)."""


class NoDataError(ValueError):
    """A table or figure has no runs (or no logged metric) to show; the message says which."""


def warn(message: str) -> None:
    """An :class:`AnalysisWarning` attributed to the caller of the function that warns."""
    warnings.warn(message, AnalysisWarning, stacklevel=3)
