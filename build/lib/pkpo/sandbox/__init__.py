"""Sandbox for model-generated code: every test runs in its own process, never in ours.

``Sandbox.run(program, tests)`` runs ``program`` followed by each test (e.g. one MBPP
``assert``) and returns one ``TestOutcome`` per test. The work is done by a trusted runner
(``pkpo/sandbox/runner.py``) started inside the sandbox; it forks a fresh child for every
test, so a failing, crashing or looping test hides nothing from the next one. A runner is
long-lived (one per scoring thread, reused across completions) to save an interpreter
start per completion; it never executes untrusted code itself.

What is enforced with ``isolation="root"`` (the scorer started as root, e.g. in a container):

- fresh PID, network and mount namespaces (``unshare``) with a private ``/proc``: the
  program cannot see or signal any process outside (not the scorer, not other runners)
  and has no network but a loopback interface that is down;
- a unique unprivileged uid/gid per runner, no supplementary groups: the program can write
  only to its working directory and world-writable places (``/tmp``, where the sticky bit
  stops it deleting others' files), cannot read root-only files, and its processes count
  against their own ``RLIMIT_NPROC``;
- per-test limits: CPU seconds, address space, file size, processes, open files, no core
  dumps, and a wall-clock timeout (a test stopped by either clock has status "timeout"),
  plus a wall-clock budget per completion (``job_timeout_s``); see "Load" below;
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

Load: a reward must not depend on how busy the machine is. CPU time is what decides: the
CPU limit (``RLIMIT_CPU``) counts only the program's own work, so it is sized with a wide
margin over the slowest reference solution (``experiments/bench_scoring.py --references``
measures it), and the wall clocks, which only exist to stop programs that sleep or block,
are derived from it (``SandboxConfig.timeout_s``). A wall clock still runs out when the
machine is saturated, so a test stopped by the wall clock before it used its CPU budget
(and every test its job had no time left for) is run once more with the machine's
sandboxes to itself (a file lock that every ``Sandbox`` on the machine shares; waiting
jobs do not start until the rerun is done), and that second verdict counts. A sleeper
therefore costs two wall timeouts; a correct program that was merely starved passes.

The package: ``limits`` (the settings of one test, and which isolation this machine
allows), ``asserts`` (the assert rewriting the verdict relies on), ``client`` (``Sandbox``,
which runs jobs on long-lived runners) and ``runner`` (the trusted harness, run as a
script inside the namespaces, never imported).
"""

from pkpo.sandbox.asserts import PREIMPORTABLE, harden_test
from pkpo.sandbox.client import Sandbox
from pkpo.sandbox.limits import ISOLATIONS, SandboxConfig, TestOutcome, available_isolation

__all__ = [
    "ISOLATIONS",
    "PREIMPORTABLE",
    "Sandbox",
    "SandboxConfig",
    "TestOutcome",
    "available_isolation",
    "harden_test",
]
