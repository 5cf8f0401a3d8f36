"""What one sandboxed test may use (``SandboxConfig``), what it did (``TestOutcome``), and
which isolation this machine allows (see ``pkpo.sandbox``)."""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, fields

ISOLATIONS = ("auto", "root", "userns", "none")
WALL_PER_CPU = 2.0
"""Default wall clock of a test, per CPU second it may use: a program that computes all the
time never meets the wall clock on an idle machine, and one that was starved meets it only
past twice its CPU budget (and is then run again alone, see ``pkpo.sandbox``)."""
TESTS_PER_JOB_BUDGET = 2.0
"""Default wall budget of a completion, in test wall clocks (bounds the time to score one
sample whatever the number of its tests)."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one test: ``cpu_time_s`` of CPU (``RLIMIT_CPU``: the program's own work,
    whatever the machine's load) and ``timeout_s`` of wall-clock time (catches sleeping or
    blocked programs; default ``WALL_PER_CPU * cpu_time_s``); ``job_timeout_s``: wall-clock
    budget of all tests of one completion (tests that would start after it is spent count
    as timeouts; default ``TESTS_PER_JOB_BUDGET * timeout_s``); ``scratch_mb``: size of
    each private tmpfs (``/tmp``, ``/var/tmp``, ``/dev/shm``) of a runner with root
    isolation.

    ``cpu_time_s`` = 20 is about 4x the CPU time of the slowest test of the 974 MBPP and
    164 HumanEval reference solutions (``mbpp-123``: 3.4-3.9 s on an idle machine, up to
    5.1 s on a saturated one, where CPU time grows a little too; the next slowest takes
    0.06 s; table in ``docs/benchmarks.md``), so a correct program is not stopped by
    it, and a runaway loop costs at most 20 s of CPU per test."""

    cpu_time_s: int = 20
    timeout_s: float | None = None
    job_timeout_s: float | None = None
    memory_mb: int = 1024
    file_size_mb: int = 16
    max_processes: int = 32
    max_open_files: int = 64
    output_limit_kb: int = 1024
    scratch_mb: int = 64
    isolation: str = "auto"

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {self.isolation!r}")
        for item in fields(self):
            value = getattr(self, item.name)
            derived = item.name in ("timeout_s", "job_timeout_s") and value is None
            if item.name != "isolation" and not derived and not value > 0:
                raise ValueError(f"sandbox {item.name} must be positive, got {value!r}")

    @property
    def test_wall_s(self) -> float:
        """The wall clock of one test, given or derived from the CPU limit."""
        return self.timeout_s if self.timeout_s is not None else WALL_PER_CPU * self.cpu_time_s

    @property
    def job_wall_s(self) -> float:
        """The wall budget of one completion's tests, given or derived."""
        if self.job_timeout_s is not None:
            return self.job_timeout_s
        return TESTS_PER_JOB_BUDGET * self.test_wall_s

    @property
    def worst_case_s(self) -> float:
        """The longest one ``Sandbox.run`` can take: the job, its rerun alone, start-ups."""
        return 2 * (self.job_wall_s + 10.0)

    @classmethod
    def from_mapping(cls, values: Mapping | SandboxConfig | None) -> SandboxConfig:
        """Build from a (Hydra) mapping; unknown keys are an error naming the valid ones."""
        if isinstance(values, SandboxConfig):
            return values
        values = dict(values or {})
        known = {item.name for item in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown sandbox settings {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class TestOutcome:
    """Result of one test: status is pass, fail, timeout, output_limit, syntax_error or
    sandbox_error; ``output`` is the tail of what the test printed (for logs); ``cpu_s``
    the CPU time it used (0 for a test that never ran); ``rerun``: this is the outcome of
    the rerun alone after a wall-clock timeout (see ``pkpo.sandbox``, "Load")."""

    status: str
    exit_code: int
    output: str
    cpu_s: float = 0.0
    rerun: bool = False

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@functools.cache
def available_isolation() -> str:
    """The strongest isolation this machine allows: root, userns or none."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "none"
    if os.geteuid() == 0 and _command_works(_prefix("root", unshare)):
        return "root"
    if _command_works(_prefix("userns", unshare)):
        return "userns"
    return "none"


def _nproc_per_namespace() -> bool:
    """Linux >= 5.14 counts RLIMIT_NPROC per user namespace; before, a limit set in a user
    namespace would count every process of the calling user."""
    release = re.match(r"(\d+)\.(\d+)", platform.release())
    return release is not None and tuple(map(int, release.groups())) >= (5, 14)


def _prefix(isolation: str, unshare: str | None) -> list[str]:
    namespaces = ["--pid", "--net", "--mount-proc", "--fork", "--kill-child"]
    if isolation == "root":
        return [unshare, *namespaces]
    if isolation == "userns":
        return [unshare, "--user", *namespaces]
    return []


def _command_works(prefix: list[str]) -> bool:
    try:
        done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0
