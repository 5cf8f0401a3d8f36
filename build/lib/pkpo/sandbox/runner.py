"""Trusted harness that executes untrusted code inside the sandbox (see ``pkpo.sandbox``).

Started by ``pkpo.sandbox`` as ``python -I -S -u -B runner.py REPORT_FD`` inside
fresh PID, network and mount namespaces, with a scrubbed environment. It reads its spec,
then jobs (a program and its tests), from stdin until EOF. It imports only cheap standard
modules and never runs untrusted code itself: every test runs in a forked child.

Protocol (what makes a pass unforgeable by the untrusted program):

1. The runner reads its spec (limits, uid) while still privileged, mounts private tmpfs
   scratch space (as root) and drops to the sandbox user (a unique uid when root).
2. For each test it draws a fresh random nonce, then forks a child that runs
   ``program`` and the test in a fresh namespace and, only if the test completed with every
   checked value trusted and true, writes the nonce to its stdout and exits 0. The output
   pipe is read by the runner, which alone decides pass/fail: pass = nonce seen and clean
   exit. ``sys.exit``/``os._exit`` before the asserts, a patched ``AssertionError`` or a
   printed guess never contain the nonce, which is fresh per test and never leaves this
   process family through argv, environment or files.
3. The verdicts go to the parent through ``REPORT_FD``, a pipe the children close before
   any untrusted code runs. The runner is PID 1 of its namespace, so the children can
   neither see nor signal anything outside, nor kill the runner (init ignores signals it
   has no handler for).

Residual risk (documented in ``pkpo.sandbox``): a program that deliberately introspects
this harness (walks interpreter frames or reads its own memory) can find the nonce of its
own test. Containment does not depend on the nonce.
"""

import builtins
import marshal
import os
import resource
import select
import sys
import time

SIGKILL, SIGXCPU = 9, 24  # numeric: importing ``signal`` pulls in ``enum`` (slow start-up)

# Exact types whose comparison, truth and arithmetic are implemented in C and cannot be
# patched by a program; values built only from these can be compared safely.
_ATOMS = frozenset({int, float, complex, bool, str, bytes, type(None), range, type(Ellipsis)})
_SEQUENCES = {list, tuple, set, frozenset, bytearray}
_MAPPINGS = {dict}
_ATOMS_EXTRA: set[type] = set()  # standard number classes, checked against a snapshot
_CLASS_SNAPSHOTS: dict[type, dict] = {}
_VALUE_BUDGET = 1_000_000  # container elements walked per checked value


def _register_stdlib_types() -> dict[type, dict]:
    """Add standard containers/numbers to the trusted types; Python-level classes keep a
    snapshot of their class dict so a patched method (``Counter.__eq__ = ...``) is caught."""
    snapshots: dict[type, dict] = {}
    import _collections  # C implementations, cheap

    _SEQUENCES.add(_collections.deque)
    _MAPPINGS.update({_collections.OrderedDict, _collections.defaultdict})
    collections = sys.modules.get("collections")
    if collections is not None:
        _MAPPINGS.add(collections.Counter)
        snapshots[collections.Counter] = dict(vars(collections.Counter))
    for module_name, class_name in (("fractions", "Fraction"), ("decimal", "Decimal")):
        module = sys.modules.get(module_name)
        if module is not None:
            cls = getattr(module, class_name)
            _ATOMS_EXTRA.add(cls)
            snapshots[cls] = dict(vars(cls))
    return snapshots


def _class_intact(cls: type) -> bool:
    snapshot = _CLASS_SNAPSHOTS.get(cls)
    if snapshot is None:
        return True
    current = vars(cls)
    return len(current) == len(snapshot) and all(
        current.get(key) is value for key, value in snapshot.items()
    )


def _is_trusted(value: object) -> bool:
    """True if ``value`` is built only from trusted types (iterative: no recursion limit)."""
    stack = [value]
    seen = set()
    budget = _VALUE_BUDGET
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _ATOMS:
            continue
        if kind in _ATOMS_EXTRA:
            if not _class_intact(kind):
                return False
            continue
        is_map = kind in _MAPPINGS
        if not is_map and kind not in _SEQUENCES:
            return False
        if not _class_intact(kind):
            return False
        if id(item) in seen:
            continue
        seen.add(id(item))
        budget -= len(item)
        if budget < 0:
            return False
        if is_map:
            stack.extend(dict.keys(item))
            stack.extend(dict.values(item))
        else:
            stack.extend(item)
    return True


class _UntrustedValue(Exception):
    """A value whose comparison or truth could be faked by the program (e.g. ``__eq__``)."""


class _TestFailed(Exception):
    """An ``assert`` of the test was false."""


def _checked(value: object) -> object:
    """``__pkpo_v__``: pass ``value`` through if it is trusted, else fail the test."""
    if not _is_trusted(value):
        raise _UntrustedValue(type(value).__name__)
    return value


def _check_assert(value: object) -> None:
    """``__pkpo_assert__``: replaces the ``assert`` statement (immune to ``-O`` and patches)."""
    if not _is_trusted(value):
        raise _UntrustedValue(type(value).__name__)
    if not value:
        raise _TestFailed


def _limit_runner(spec: dict) -> None:
    """Limits of the long-lived runner; the per-test limits are set in each child, which may
    lower but never raise them (so they stay unlimited here)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if spec["max_processes"] is not None:
        nproc = spec["max_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _limit_test(spec: dict) -> None:
    cpu = spec["cpu_s"]
    for which, soft, hard in (
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, spec["memory_bytes"], spec["memory_bytes"]),
        (resource.RLIMIT_FSIZE, spec["file_bytes"], spec["file_bytes"]),
        (resource.RLIMIT_NOFILE, spec["max_files"], spec["max_files"]),
    ):
        resource.setrlimit(which, (soft, hard))


def _reach_stdlib_by_fd() -> list[int]:
    """Point ``sys.path`` at directory fds opened now, while privileged.

    The interpreter's standard library may live where the sandbox uid cannot traverse
    (e.g. ``/root/.pyenv``); ``/proc/self/fd/N`` reaches the directory without traversing
    its ancestors, and only grants what the directory's own permissions allow.
    """
    moved = {}
    for entry in sys.path:
        if os.path.isdir(entry):
            moved[entry] = f"/proc/self/fd/{os.open(entry, os.O_RDONLY | os.O_DIRECTORY)}"
    sys.path[:] = moved.values()
    for module in list(sys.modules.values()):  # packages already imported, e.g. encodings
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [_moved(path, moved) for path in search]
    return [int(path.rsplit("/", 1)[1]) for path in moved.values()]


def _moved(path: str, moved: dict) -> str:
    for old, new in moved.items():
        if path == old or path.startswith(old + os.sep):
            return new + path[len(old) :]
    return path


def _mount_private_scratch(size_mb: int) -> list[str]:
    """Mount empty tmpfs on the world-writable directories (in our own mount namespace,
    whose propagation ``unshare`` made private): nothing a test writes there reaches the
    host or a later job, and their total size is capped. Returns the scratch roots."""
    import ctypes  # once per runner, root mode only

    libc = ctypes.CDLL(None, use_errno=True)
    ms_nosuid, ms_nodev = 2, 4
    roots = []
    for target in ("/tmp", "/var/tmp", "/dev/shm"):
        if not os.path.isdir(target):
            continue
        options = f"size={size_mb}m,mode=1777".encode()
        if libc.mount(b"tmpfs", target.encode(), b"tmpfs", ms_nosuid | ms_nodev, options):
            raise OSError(ctypes.get_errno(), f"cannot mount a private tmpfs on {target}")
        roots.append(target)
    return roots


def _drop_privileges(spec: dict) -> None:
    uid = spec["uid"]
    if uid is not None:
        spec["path_fds"] = _reach_stdlib_by_fd()
        spec["scratch"] = _mount_private_scratch(spec["scratch_mb"])
        os.chdir(spec["scratch"][0])
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # also makes this process non-dumpable: children cannot ptrace it
    if spec["non_dumpable"]:
        import ctypes  # only in the user-namespace mode, where no uid change happens

        pr_set_dumpable = 4
        if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def _preimport(names: list, snapshots: dict) -> None:
    """Import the standard modules a job uses while they are pristine (this process never
    runs untrusted code), so that each child can restore them after the program ran
    (``math.isclose = lambda *a: True`` must not fake a test)."""
    for name in names:
        if name not in snapshots:
            try:
                module = __import__(name)
            except Exception:  # an unavailable module only loses the snapshot
                continue
            snapshots[name] = (module, dict(vars(module)))


def _restore(module_snapshots: dict, builtins_snapshot: dict) -> None:
    for namespace, snapshot in [(vars(builtins), builtins_snapshot)] + [
        (vars(module), module_snapshot) for module, module_snapshot in module_snapshots.values()
    ]:
        namespace.clear()
        namespace.update(snapshot)
    for name, (module, _) in module_snapshots.items():
        sys.modules[name] = module


def _child(spec: dict, job_dir: str, program, test, tokens: tuple, out_w: int, restore) -> None:
    """Runs in the forked child: sets the test's limits, runs the program, writes the
    ``loaded`` token (a hint only: the program ran to its end), runs the test and writes
    the ``passed`` nonce only if both completed. Never returns."""
    passed, loaded = tokens
    code = 1
    try:
        os.setpgid(0, 0)  # kill(0, ...) by the program reaches only its own group
        os.chdir(job_dir)
        os.environ["HOME"] = os.environ["TMPDIR"] = os.getcwd()
        for fd in range(3):
            os.dup2(out_w if fd else spec["devnull"], fd)
        _close_fds_from(3, keep=spec["path_fds"])  # report/control pipes: never reachable
        _limit_test(spec)
        sys.modules["__main__"] = type(sys)("__main__")  # hide the harness module
        namespace = {"__name__": "__solution__", "__builtins__": builtins}
        exec(program, namespace)
        os.write(1, b"\n" + loaded + b"\n")
        restore()
        namespace["__builtins__"] = builtins
        namespace["__pkpo_v__"] = _checked
        namespace["__pkpo_assert__"] = _check_assert
        exec(test, namespace)
        os.write(1, b"\n" + passed + b"\n")
        code = 0
    except BaseException as error:  # any exception is a failed test
        _report_error(error)
    finally:
        os._exit(code)


def _close_fds_from(low: int, keep: list) -> None:
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _report_error(error: BaseException) -> None:
    """Best-effort one-line diagnostic; the verdict never depends on it (and a hostile
    ``__str__`` can at worst turn this failure into a timeout)."""
    try:
        name = type.__getattribute__(type(error), "__name__")
        os.write(2, f"\n[sandbox] {name}: {str(error)[:300]}\n".encode("utf-8", "replace"))
    except BaseException:  # diagnostics only
        pass


def _watch(pid: int, out_r: int, tokens: tuple, timeout: float, output_limit: int):
    """Read the child's output until it exits; returns ((status, exit_code, output_tail,
    cpu_s), loaded) where loaded says whether the program (before the test) ran to its end
    and cpu_s is the CPU time the test used (its process and the children it waited for).

    status: "pass" (nonce seen and exit code 0), "fail", "timeout" or "output_limit".
    """
    nonce, marker = tokens
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(pid)  # Linux >= 5.3: lets poll() wait for exit and output at once
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    keep = 4096
    tail, total, seen, loaded, status, exited = b"", 0, False, False, None, False

    def take(chunk: bytes) -> None:
        nonlocal tail, total, seen, loaded
        total += len(chunk)
        tail = (tail + chunk)[-keep:]
        seen = seen or nonce in tail
        loaded = loaded or marker in tail

    while not exited and status is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            status = "timeout"
            break
        for fd, _ in poller.poll(remaining * 1000):
            if fd == pidfd:
                exited = True
            elif chunk := os.read(out_r, 65536):
                take(chunk)
            else:
                poller.unregister(out_r)
        if total > output_limit:
            status = "output_limit"
    if status is not None:
        _kill(pid)
    os.set_blocking(out_r, False)
    try:  # the child has exited: take what is left in the pipe, never wait for EOF
        while chunk := os.read(out_r, 65536):
            take(chunk)
    except BlockingIOError:
        pass
    os.close(pidfd)
    _, wait_status, usage = os.wait4(pid, 0)
    code = _exit_code(wait_status)
    if status is None:
        status = "pass" if seen and code == 0 else "timeout" if code == -SIGXCPU else "fail"
    tail = tail.replace(nonce, b"<nonce>").replace(marker, b"")
    return (status, code, tail[-2048:], usage.ru_utime + usage.ru_stime), loaded


def _exit_code(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _kill(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, SIGKILL)
        except OSError:
            pass


def _sweep(spec: dict) -> None:
    """Kill whatever a test left behind (daemons, fork bombs) and reap it.

    ``kill(-1)`` reaches every process this uid may signal in this PID namespace, i.e.
    exactly the sandbox's own processes; it is only used inside a fresh namespace.
    """
    if spec["sweep"]:
        try:
            os.kill(-1, SIGKILL)
        except OSError:
            pass
    while True:
        try:
            if os.waitpid(-1, 0 if spec["sweep"] else os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _wipe(roots: list) -> None:
    """Empty the scratch directories after a job. Everything in them belongs to the sandbox
    uid, so directories a test made unreadable are first given back their permissions."""
    import shutil

    for root in roots:
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False):
                _make_removable(entry.path)
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def _make_removable(top: str) -> None:
    pending = [top]
    while pending:
        directory = pending.pop()
        os.chmod(directory, 0o700)
        with os.scandir(directory) as entries:
            pending += [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]


def _compile(job: dict):
    """(program, tests) code objects, or an error message: compiling is trusted work."""
    try:
        program = compile(job["program"], "<program>", "exec")
        tests = [compile(test, f"<test {i}>", "exec") for i, test in enumerate(job["tests"])]
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as error:
        return None, None, f"[sandbox] {type(error).__name__}: {error}".encode()[-2048:]
    return program, tests, b""


def _run_job(spec: dict, job: dict, job_dir: str, restore) -> list:
    program, tests, error = _compile(job)
    if program is None:
        return [("syntax_error", 1, error, 0.0)] * len(job["tests"])
    results = []
    job_deadline = time.monotonic() + spec["job_timeout_s"]
    for test in tests:
        timeout = min(spec["timeout_s"], job_deadline - time.monotonic())
        if timeout <= 0:
            skipped = ("timeout", -SIGKILL, b"[sandbox] the job's time budget is spent", 0.0)
            return results + [skipped] * (len(tests) - len(results))
        tokens = (os.urandom(16).hex().encode(), os.urandom(16).hex().encode())
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _child(spec, job_dir, program, test, tokens, out_w, restore)
        os.close(out_w)
        result, loaded = _watch(pid, out_r, tokens, timeout, spec["output_bytes"])
        os.close(out_r)
        _sweep(spec)
        results.append(result)
        if result[0] == "timeout" and not loaded:
            # the program itself never finishes: every remaining test would time out too
            skipped = ("timeout", result[1], b"[sandbox] program timed out before the test", 0.0)
            return results + [skipped] * (len(tests) - len(results))
    return results


def _read_exact(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_message(fd: int):
    header = _read_exact(fd, 8)
    if header is None:
        return None
    payload = _read_exact(fd, int.from_bytes(header, "little"))
    return None if payload is None else marshal.loads(payload)


def _write_message(fd: int, message) -> None:
    payload = marshal.dumps(message)
    data = len(payload).to_bytes(8, "little") + payload
    while data:
        data = data[os.write(fd, data) :]


def main() -> None:
    """Read the spec (limits, uid), then serve jobs ``{"program", "tests", "preimport"}``
    from stdin until EOF; answer each with one list of (status, exit_code, output_tail,
    cpu_s) on the report pipe."""
    report_fd = int(sys.argv[1])
    control_fd = os.dup(0)
    spec = _read_message(control_fd)
    spec["path_fds"], spec["scratch"] = [], ["."]
    _limit_runner(spec)
    _drop_privileges(spec)
    spec["devnull"] = os.open(os.devnull, os.O_RDONLY)
    module_snapshots: dict = {}
    builtins_snapshot = dict(vars(builtins))

    def restore() -> None:
        _restore(module_snapshots, builtins_snapshot)

    while (job := _read_message(control_fd)) is not None:
        _preimport(job["preimport"], module_snapshots)
        _CLASS_SNAPSHOTS.update(_register_stdlib_types())
        job_dir = os.path.join(spec["scratch"][0], "job-" + os.urandom(8).hex())
        os.mkdir(job_dir, 0o700)
        try:
            results = _run_job(spec, job, os.path.abspath(job_dir), restore)
        finally:
            _wipe(spec["scratch"])
        _write_message(report_fd, results)


if __name__ == "__main__":
    main()
