"""Sandbox for model-generated code: every test runs in its own process, never in ours.

``Sandbox.run(program, tests)`` runs ``program`` followed by each test (e.g. one MBPP
``assert``) and returns one ``TestOutcome`` per test. The work is done by a trusted runner
(``pkpo/sandbox_runner.py``) started inside the sandbox; it forks a fresh child for every
test, so a failing, crashing or looping test hides nothing from the next one. A runner is
long-lived (one per scoring thread, reused across completions) to save an interpreter
start per completion; it never executes untrusted code itself.

What is enforced with ``isolation="root"`` (started as root, as on this machine):

- fresh PID, network and mount namespaces (``unshare``) with a private ``/proc``: the
  program cannot see or signal any process outside (not the scorer, not other runners)
  and has no network but a loopback interface that is down;
- a unique unprivileged uid/gid per runner, no supplementary groups: the program can write
  only to its working directory and world-writable places (``/tmp``, where the sticky bit
  stops it deleting others' files), cannot read root-only files, and its processes count
  against their own ``RLIMIT_NPROC``;
- per-test limits: CPU seconds, address space, file size, processes, open files, no core
  dumps, and a wall-clock timeout (a test stopped by either clock has status "timeout"),
  plus a wall-clock budget per completion (``job_timeout_s``);
  after each test every process it left (daemons, fork bombs) is killed with ``kill(-1)``
  from PID 1 of the namespace, and the whole namespace dies with the runner;
- output read through a pipe and capped (``output_limit_kb``, beyond which the test is
  killed), so printing gigabytes costs neither memory nor disk;
- private tmpfs mounts on ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (``scratch_mb`` each),
  where each completion gets a fresh working directory; all three are emptied after every
  completion, so nothing written persists or reaches the host or the next completion;
- a scrubbed environment and ``python -I -S`` (no site-packages, no user paths,
  ``PYTHON*`` variables ignored);
- an unforgeable verdict: a random nonce per test, drawn by the runner and never passed
  through argv, environment or files, is written by the harness only after the test ran
  to its end; a pass needs that nonce and exit code 0. ``assert`` statements are rewritten
  into harness calls (immune to ``-O``, a patched ``AssertionError``, ``sys.exit`` or
  ``os._exit``), builtins and the standard modules the code imports are restored after the
  program ran, and every value an assert compares, combines or tests for truth must be
  built from standard types (an object whose ``__eq__`` always returns True fails).

``isolation="userns"`` (not root, unprivileged user namespaces allowed) keeps namespaces,
limits and verdict protocol but runs as the calling user: files that user can write stay
writable by the program, ``/tmp`` is the host's (the working directory is a fresh folder
under the runner's temporary directory, emptied after each completion), and
``RLIMIT_NPROC`` is set only on Linux >= 5.14, which counts it per user namespace.
``isolation="none"`` has only the limits, timeouts, scrubbed environment and verdict
protocol, and must be chosen explicitly.

Not defended: a program written against this harness that walks interpreter frames or
reads its own memory can find its own test's nonce (containment does not depend on it);
objects that reach an assert only through helper functions of the program itself (e.g.
``math.fabs(poly(xs, f()))`` where ``poly`` is the program's) are not type-checked.
"""

from __future__ import annotations

import ast
import functools
import logging
import marshal
import os
import platform
import re
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("sandbox_runner.py")
ISOLATIONS = ("auto", "root", "userns", "none")
# Standard modules that the runner imports before the program runs and restores after it,
# so that patching them (``math.isclose = lambda *a: True``) cannot fake a test. Only pure
# computation modules: restoring ``sys`` or ``os`` would break the interpreter.
PREIMPORTABLE = frozenset(
    {
        "array",
        "bisect",
        "cmath",
        "collections",
        "copy",
        "datetime",
        "decimal",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "math",
        "operator",
        "random",
        "re",
        "statistics",
        "string",
        "typing",
    }
)
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([A-Za-z_]\w*)|import[ \t]+([^\n#;]+))", re.MULTILINE)
_UID_BASE = 1 << 30  # unique sandbox uids are drawn from [2**30, 2**30 + 2**29)


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one test: ``cpu_time_s`` of CPU (``RLIMIT_CPU``, independent of machine
    load) and ``timeout_s`` of wall-clock time (catches sleeping or blocked programs);
    ``job_timeout_s``: wall-clock budget of all tests of one completion (tests that would
    start after it is spent count as timeouts), which bounds the time to score one sample;
    ``scratch_mb``: size of each private tmpfs (``/tmp``, ``/var/tmp``, ``/dev/shm``) of a
    runner with root isolation."""

    timeout_s: float = 20.0
    cpu_time_s: int = 5
    job_timeout_s: float = 30.0
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
            if item.name != "isolation" and not value > 0:
                raise ValueError(f"sandbox {item.name} must be positive, got {value!r}")

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
    sandbox_error; ``output`` is the tail of what the test printed (for logs)."""

    status: str
    exit_code: int
    output: str

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


class _HardenAsserts(ast.NodeTransformer):
    """Rewrite ``assert X`` into ``__pkpo_assert__(X')`` where every operand that X compares,
    combines arithmetically or tests for truth is passed through ``__pkpo_v__`` (a check
    that it is built from standard types only). Statements other than asserts are kept."""

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        test = _CheckOperands().visit(node.test)
        call = ast.Call(ast.Name("__pkpo_assert__", ast.Load()), [test], [])
        return ast.copy_location(ast.Expr(call), node)


class _CheckOperands(ast.NodeTransformer):
    @staticmethod
    def _checked(node: ast.expr) -> ast.expr:
        return ast.copy_location(ast.Call(ast.Name("__pkpo_v__", ast.Load()), [node], []), node)

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        node.left = self._checked(node.left)
        node.comparators = [self._checked(item) for item in node.comparators]
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        node.left, node.right = self._checked(node.left), self._checked(node.right)
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        self.generic_visit(node)
        node.operand = self._checked(node.operand)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.expr:
        self.generic_visit(node)
        node.values = [self._checked(item) for item in node.values]
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.expr:
        self.generic_visit(node)
        node.test = self._checked(node.test)
        return node


@functools.lru_cache(maxsize=4096)
def harden_test(source: str) -> str:
    """The test with its asserts rewritten for the runner (see ``_HardenAsserts``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ValueError(f"test code does not parse ({error}): {source[:200]!r}") from error
    return ast.unparse(ast.fix_missing_locations(_HardenAsserts().visit(tree)))


def _imported_modules(source: str) -> set[str]:
    """Top-level module names of ``import``/``from`` lines (regex: works on broken code)."""
    names = set()
    for from_module, import_list in _IMPORT.findall(source):
        names.add(from_module)
        names.update(
            item.split()[0].split(".")[0] for item in import_list.split(",") if item.strip()
        )
    return names - {""}


def _modules_to_preimport(program: str, tests: Sequence[str]) -> list[str]:
    names = _imported_modules(program).union(*map(_imported_modules, tests))
    return sorted(names & PREIMPORTABLE)


class Sandbox:
    """Runs untrusted programs with tests. Picklable: a copy holds only the config and
    starts its own runners in the process that uses it.

    Each thread that calls ``run`` borrows a long-lived sandboxed runner (one namespace
    and uid per runner; a runner serves one job at a time and kills every process of a
    test before the next one starts), which saves an interpreter start per completion.
    """

    def __init__(self, config: SandboxConfig | Mapping | None = None) -> None:
        self.config = SandboxConfig.from_mapping(config)
        self._idle: list[_Runner] = []
        self._lock = threading.Lock()
        self._owner = os.getpid()

    def __getstate__(self) -> dict:
        return {"config": self.config}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    @property
    def isolation(self) -> str:
        wanted, available = self.config.isolation, available_isolation()
        if wanted == "auto":
            if available == "none":
                raise RuntimeError(
                    "no namespace isolation available (needs root or unprivileged user "
                    "namespaces and util-linux `unshare`); set sandbox isolation=none to "
                    "accept running generated code with resource limits only"
                )
            return available
        if wanted != "none" and ISOLATIONS.index(wanted) < ISOLATIONS.index(available):
            raise RuntimeError(f"sandbox isolation {wanted!r} unavailable (have {available!r})")
        return wanted

    def self_check(self) -> None:
        """Fail fast (at task construction) if the sandbox cannot run a trivial test."""
        outcomes = self.run("def f():\n    return 1\n", ["assert f() == 1", "assert f() == 2"])
        if [item.status for item in outcomes] != ["pass", "fail"]:
            raise RuntimeError(f"sandbox self-check failed ({self.isolation}): {outcomes}")

    def run(self, program: str, tests: Sequence[str]) -> list[TestOutcome]:
        """Run ``program`` then each test in a fresh sandboxed child; one outcome per test."""
        if not tests:
            return []
        job = {
            "program": program,
            "tests": [harden_test(test) for test in tests],
            "preimport": _modules_to_preimport(program, tests),
        }
        runner = self._borrow()
        budget = min(len(tests) * self.config.timeout_s, self.config.job_timeout_s)
        deadline = time.monotonic() + budget + 5.0 + 0.5 * len(tests)
        results = runner.run(job, deadline)
        if results is None or len(results) != len(tests):
            detail = runner.close()
            log.warning("sandbox runner failed: %s", detail[-500:])
            status = "timeout" if time.monotonic() >= deadline else "sandbox_error"
            return [TestOutcome(status, -1, detail) for _ in tests]
        self._give_back(runner)
        return [
            TestOutcome(status, code, output.decode("utf-8", "replace"))
            for status, code, output in results
        ]

    def run_many(
        self, jobs: Sequence[tuple[str, Sequence[str]]], max_workers: int = 4
    ) -> list[list[TestOutcome]]:
        """``run`` for many (program, tests) pairs on a thread pool (the work is in the
        sandboxed processes, so threads suffice to keep every core busy)."""
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            return list(pool.map(lambda job: self.run(*job), jobs))

    def close(self) -> None:
        """Stop the idle runners (they also exit on their own when this process ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for runner in idle:
            runner.close()

    def _borrow(self) -> _Runner:
        with self._lock:
            if self._owner != os.getpid():  # a forked copy: the runners belong to the parent
                self._idle, self._owner = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return _Runner(self.isolation, self.config)

    def _give_back(self, runner: _Runner) -> None:
        with self._lock:
            self._idle.append(runner)


class _Runner:
    """One sandboxed ``sandbox_runner.py`` process serving jobs over a pair of pipes."""

    def __init__(self, isolation: str, config: SandboxConfig) -> None:
        root = isolation == "root"
        self.uid = _UID_BASE + secrets.randbelow(1 << 29) if root else None
        # as root the runner works in its private /tmp; otherwise in a folder of ours
        self.home = None if root else tempfile.mkdtemp(prefix="pkpo-sandbox-")
        spec = {
            "timeout_s": float(config.timeout_s),
            "job_timeout_s": float(config.job_timeout_s),
            "cpu_s": int(config.cpu_time_s),
            "memory_bytes": config.memory_mb << 20,
            "file_bytes": config.file_size_mb << 20,
            "max_files": config.max_open_files,
            "max_processes": config.max_processes if root or _nproc_per_namespace() else None,
            "output_bytes": config.output_limit_kb << 10,
            "scratch_mb": config.scratch_mb,
            "uid": self.uid,
            "non_dumpable": isolation == "userns",
            "sweep": isolation != "none",
        }
        report_r, report_w = os.pipe()
        self.log = tempfile.TemporaryFile()  # the runner's stderr, kept open
        try:
            self.process = subprocess.Popen(
                [
                    *_prefix(isolation, shutil.which("unshare")),
                    sys.executable,
                    *("-I", "-S", "-u", "-B"),
                    str(RUNNER),
                    str(report_w),
                ],
                cwd=self.home or "/",
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self.log,
                pass_fds=(report_w,),
                start_new_session=True,
            )
        finally:
            os.close(report_w)
        self.report = report_r
        # also at interpreter exit: stop the runner, remove its folder
        self._finalizer = weakref.finalize(
            self, _shut_down, os.getpid(), self.process, self.report, self.log, self.home, self.uid
        )
        self._send(spec)

    def _send(self, message: dict) -> bool:
        payload = marshal.dumps(message)
        try:
            self.process.stdin.write(len(payload).to_bytes(8, "little") + payload)
            self.process.stdin.flush()
        except OSError:
            return False
        return True

    def run(self, job: dict, deadline: float) -> list | None:
        """The runner's answer to ``job``, or None if it died or overran ``deadline``."""
        if not self._send(job):
            return None
        header = _read_exact(self.report, 8, deadline)
        if header is None:
            return None
        payload = _read_exact(self.report, int.from_bytes(header, "little"), deadline)
        try:
            return None if payload is None else marshal.loads(payload)
        except (EOFError, ValueError, TypeError):
            return None

    def close(self) -> str:
        """Stop the runner (and, as root, every process of its uid); returns its log tail."""
        return self._finalizer() or ""


def _shut_down(owner: int, process: subprocess.Popen, report: int, log_file, home, uid):
    """End of a runner: EOF on its stdin ends it; one that does not end is killed. Only in
    the process that started it (a forked copy of a ``Sandbox`` drops inherited runners)."""
    if os.getpid() != owner:
        return ""
    try:
        process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        _kill_run(process, uid)
        process.wait()
    os.close(report)
    log_file.seek(0)
    detail = log_file.read().decode("utf-8", "replace")[-4096:]
    log_file.close()
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)
    return detail


def _read_exact(fd: int, size: int, deadline: float) -> bytes | None:
    """Exactly ``size`` bytes from ``fd``, or None at EOF or at the deadline."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks, missing = [], size
    while missing:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            return None
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _kill_run(process: subprocess.Popen, uid: int | None) -> None:
    """Kill a runner that overran: its session and, as root, every process of its unique
    uid (``kill -1`` run as that uid), wherever they are."""
    try:
        os.killpg(process.pid, 9)
    except ProcessLookupError:
        pass
    if uid is not None:
        subprocess.run(["kill", "-KILL", "-1"], user=uid, group=uid, check=False)
