"""``Sandbox``: runs untrusted programs with their tests on long-lived sandboxed runners
(``runner.py``), one per thread; see ``pkpo.sandbox`` for what is enforced."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import marshal
import os
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pkpo.sandbox.asserts import harden_test, modules_to_preimport
from pkpo.sandbox.limits import (
    ISOLATIONS,
    SandboxConfig,
    TestOutcome,
    _nproc_per_namespace,
    _prefix,
    available_isolation,
)

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("runner.py")
_UID_BASE = 1 << 30  # unique sandbox uids are drawn from [2**30, 2**30 + 2**29)
SIGXCPU = 24


def _wall_timeout(outcome: TestOutcome, cpu_limit: float) -> bool:
    """Stopped by a wall clock (or never started for lack of time) before it used its
    CPU budget: the verdict may be the machine's load, not the program's."""
    return (
        outcome.status == "timeout"
        and outcome.exit_code != -SIGXCPU
        and (outcome.cpu_s < cpu_limit)
    )


class MachineLock:
    """Shared while a job runs, exclusive while a timed-out job reruns alone: a
    readers-writer lock over two ``flock`` files that every ``Sandbox`` of this user on
    this machine (threads, scoring processes) shares. The writer holds the gate while it
    waits, so no new job starts and the rerun cannot starve."""

    def __init__(self, folder: str | None = None) -> None:
        base = Path(folder or tempfile.gettempdir())
        self.gate = base / f"pkpo-sandbox-{os.getuid()}.gate"
        self.jobs = base / f"pkpo-sandbox-{os.getuid()}.jobs"

    @contextlib.contextmanager
    def _flock(self, path: Path, mode: int) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._flock(self.gate, fcntl.LOCK_EX):
            jobs = self._flock(self.jobs, fcntl.LOCK_SH)
            jobs.__enter__()
        try:
            yield
        finally:
            jobs.__exit__(None, None, None)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._flock(self.gate, fcntl.LOCK_EX), self._flock(self.jobs, fcntl.LOCK_EX):
            yield


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
        self._machine = MachineLock()

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
        """Run ``program`` then each test in a fresh sandboxed child; one outcome per test.

        Tests stopped by a wall clock with CPU budget left are run once more alone (see
        ``pkpo.sandbox``, "Load"); their second outcome is the one returned."""
        if not tests:
            return []
        hardened = [harden_test(test) for test in tests]
        preimport = modules_to_preimport(program, tests)
        with self._machine.shared():
            outcomes = self._run(program, hardened, preimport)
        again = [i for i, o in enumerate(outcomes) if _wall_timeout(o, self.config.cpu_time_s)]
        if again:
            log.info("sandbox: %d wall-clock timeout(s) with CPU left, rerun alone", len(again))
            with self._machine.exclusive():
                rerun = self._run(program, [hardened[i] for i in again], preimport)
            for i, outcome in zip(again, rerun, strict=True):
                outcomes[i] = dataclasses.replace(outcome, rerun=True)
        return outcomes

    def _run(self, program: str, tests: list[str], preimport: list[str]) -> list[TestOutcome]:
        job = {"program": program, "tests": tests, "preimport": preimport}
        runner = self._borrow()
        budget = min(len(tests) * self.config.test_wall_s, self.config.job_wall_s)
        deadline = time.monotonic() + budget + 5.0 + 0.5 * len(tests)
        results = runner.run(job, deadline)
        if results is None or len(results) != len(tests):
            detail = runner.close()
            log.warning("sandbox runner failed: %s", detail[-500:])
            status = "timeout" if time.monotonic() >= deadline else "sandbox_error"
            return [TestOutcome(status, -1, detail) for _ in tests]
        self._give_back(runner)
        return [
            TestOutcome(status, code, output.decode("utf-8", "replace"), cpu_s)
            for status, code, output, cpu_s in results
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
    """One sandboxed ``runner.py`` process serving jobs over a pair of pipes."""

    def __init__(self, isolation: str, config: SandboxConfig) -> None:
        root = isolation == "root"
        self.uid = _UID_BASE + secrets.randbelow(1 << 29) if root else None
        # as root the runner works in its private /tmp; otherwise in a folder of ours
        self.home = None if root else tempfile.mkdtemp(prefix="pkpo-sandbox-")
        spec = {
            "timeout_s": float(config.test_wall_s),
            "job_timeout_s": float(config.job_wall_s),
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
