"""Scoring throughput: samples scored per second, printed as a Markdown table; with
``--references``, whether every reference solution scores 1.0 on a saturated machine.

    python -m experiments.bench_scoring [--cores 2] [--threads 4] [--processes 2]
    python -m experiments.bench_scoring --references [--hogs 2] [--repeats 2]

``--references`` scores all 974 MBPP and 164 HumanEval reference solutions with
``--threads`` sandbox threads (more than cores) while ``--hogs`` CPU-bound processes run
on the same cores (started before, stopped after each pass), ``--repeats`` times in a
row, and prints the references that did not score 1.0 and a table of the slowest tests:
their CPU seconds (as the sandbox measured them, under that load) and the margin to the
sandbox's CPU limit.

Rows:
- MBPP reference solutions (974, all three asserts each, every test in its own
  sandboxed child) and HumanEval canonical solutions (164, ~7 tests each), dispatched by
  a thread pool: the work happens in the sandboxed processes, the threads only wait.
- MATH (local problems) scored by ``MathTask.score`` in a pool of worker processes, with
  ``--samples`` completions per problem as in RL (so each reference answer is parsed once
  per worker and reused): completions restating the reference answer (found equal by the
  formatting shortcut) and completions giving other problems' answers (wrong: a full
  math-verify parse and compare unless both are plain integers).

The process is pinned to ``--cores`` CPUs (children inherit the affinity), so the numbers
are for that many cores whatever the machine. Wall-clock rates suffer from other load on
the machine, so the table also gives the CPU time per sample (this process, its workers
and every sandboxed process, counted once they have exited) and the rate it implies on
``--cores`` otherwise idle cores (``cores / cpu_per_sample``).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from pkpo.sandbox import TestOutcome
from pkpo.tasks.base import Problem
from pkpo.tasks.code import MbppTask
from pkpo.tasks.math import MathTask

_MATH_TASK: MathTask | None = None


Row = tuple[str, int, float, float, float]  # label, samples, samples/s, CPU s/sample, reward


def _cpu_seconds() -> float:
    """CPU time of this process and of all its exited (and waited-for) descendants."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(score: Callable, jobs: Sequence, map_) -> tuple[float, list[float]]:
    """(wall seconds, rewards) of scoring ``jobs`` with ``map_``."""
    start = time.perf_counter()
    rewards = list(map_(score, jobs))
    return time.perf_counter() - start, rewards


def _row(label: str, jobs: Sequence, elapsed: float, cpu: float, rewards: list[float]) -> Row:
    return (label, len(jobs), len(jobs) / elapsed, cpu / len(jobs), sum(rewards) / len(rewards))


def _fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def bench_code(threads: int) -> list[Row]:
    task = MbppTask()
    rows = []
    for label, splits in (
        ("MBPP reference solutions", ("prompt", "test", "validation", "train")),
        ("HumanEval canonical solutions", ("humaneval",)),
    ):
        problems = [p for split in splits for p in task.load(split)]
        jobs = [(p, _fenced(p.answer)) for p in problems]
        task.sandbox.close()  # runners are started (and their CPU counted) in the timing
        cpu = _cpu_seconds()
        with ThreadPoolExecutor(threads) as pool:
            elapsed, rewards = _timed(lambda job: task.score(*job), jobs, pool.map)
        task.sandbox.close()  # runners exit and are waited for: their CPU is counted now
        rows.append(
            _row(f"{label} ({threads} threads)", jobs, elapsed, _cpu_seconds() - cpu, rewards)
        )
    return rows


def _hog(until: float) -> None:
    while time.monotonic() < until:  # CLOCK_MONOTONIC is system-wide: same deadline in all
        pass


@contextlib.contextmanager
def cpu_hogs(count: int, max_seconds: float) -> Iterator[None]:
    """``count`` CPU-bound processes on this process's cores while the block runs (each
    ends by itself after ``max_seconds`` at the latest, so none outlives a crashed caller)."""
    context = multiprocessing.get_context("spawn")
    until = time.monotonic() + max_seconds
    hogs = [context.Process(target=_hog, args=(until,), daemon=True) for _ in range(count)]
    for hog in hogs:
        hog.start()
    try:
        yield
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join()


def reference_outcomes(
    task: MbppTask, problems: Sequence[Problem], threads: int
) -> list[list[TestOutcome]]:
    """Every test's outcome for each problem's reference solution, scored on ``threads``."""

    def run(problem: Problem) -> list[TestOutcome]:
        program = task.program(problem, _fenced(problem.answer))
        return task.sandbox.run(program, problem.meta["tests"])

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(run, problems))


def bench_references(threads: int, hogs: int, repeats: int, slowest: int = 10) -> None:
    task = MbppTask()
    splits = ("prompt", "test", "validation", "train", "humaneval")
    problems = [p for split in splits for p in task.load(split)]
    limit = task.sandbox.config.cpu_time_s
    for attempt in range(1, repeats + 1):
        start = time.perf_counter()
        with cpu_hogs(hogs, max_seconds=3600):
            outcomes = reference_outcomes(task, problems, threads)
        elapsed = time.perf_counter() - start
        task.sandbox.close()
        wrong = {
            p.id: [o.status for o in tests]
            for p, tests in zip(problems, outcomes, strict=True)
            if not all(o.passed for o in tests)
        }
        reruns = sum(o.rerun for tests in outcomes for o in tests)
        print(
            f"\npass {attempt}/{repeats}: {len(problems) - len(wrong)}/{len(problems)} reference "
            f"solutions scored 1.0 with {threads} threads and {hogs} CPU hogs on "
            f"{len(os.sched_getaffinity(0))} cores in {elapsed:.0f} s ({reruns} tests rerun "
            f"alone after a wall-clock timeout); not 1.0: {wrong or 'none'}"
        )
        tests = sorted(
            (
                (o.cpu_s, p.id, i)
                for p, ts in zip(problems, outcomes, strict=True)
                for i, o in enumerate(ts)
            ),
            reverse=True,
        )
        print("\n| reference | test | CPU s (loaded) | CPU limit s | margin |")
        print("|---|---:|---:|---:|---:|")
        for cpu, pid, i in tests[:slowest]:
            print(f"| {pid} | {i} | {cpu:.2f} | {limit} | {limit / cpu:.1f}x |")


def _init_math_worker() -> None:
    global _MATH_TASK
    _MATH_TASK = MathTask()
    _MATH_TASK.score(_MATH_TASK.load("test")[0], "\\boxed{0}")  # import SymPy before timing


def _score_math(job: tuple[Problem, str]) -> tuple[float, float]:
    """(reward, CPU seconds spent on it in this worker)."""
    start = time.process_time()
    reward = _MATH_TASK.score(*job)
    return reward, time.process_time() - start


def bench_math(processes: int, samples: int) -> list[Row]:
    task = MathTask()
    problems = task.load("train") + task.load("test")
    restated = [
        (p, f"Reasoning...\nThe answer is $\\boxed{{{p.answer}}}$.")
        for p in problems[: len(problems) // samples]
        for _ in range(samples)
    ]
    wrong = [
        (p, f"So we get \\boxed{{{problems[(i + j + 1) % len(problems)].answer}}}.")
        for i, p in enumerate(problems[: len(problems) // samples])
        for j in range(samples)
    ]
    rows = []
    context = multiprocessing.get_context("fork")
    with context.Pool(processes, initializer=_init_math_worker) as pool:
        pool.map(_score_math, wrong[-4 * processes :])  # workers up and SymPy imported
        for label, jobs in (
            ("MATH, reference answer restated", restated),
            ("MATH, other problems' answers (math-verify)", wrong),
        ):
            own = resource.getrusage(resource.RUSAGE_SELF)
            elapsed, results = _timed(_score_math, jobs, lambda f, j: pool.map(f, j, chunksize=16))
            after = resource.getrusage(resource.RUSAGE_SELF)
            dispatch = after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime
            cpu = sum(spent for _, spent in results) + dispatch
            label = f"{label}, {samples} per problem ({processes} processes)"
            rows.append(_row(label, jobs, elapsed, cpu, [reward for reward, _ in results]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=2, help="CPUs to pin the benchmark to")
    parser.add_argument("--threads", type=int, default=4, help="threads dispatching sandbox runs")
    parser.add_argument("--processes", type=int, default=2, help="worker processes for MATH")
    parser.add_argument("--samples", type=int, default=4, help="MATH completions per problem")
    parser.add_argument(
        "--references", action="store_true", help="reference solutions under load (see above)"
    )
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes (--references)")
    parser.add_argument("--repeats", type=int, default=2, help="passes in a row (--references)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))[: args.cores]
    os.sched_setaffinity(0, cpus)
    if args.references:
        bench_references(args.threads, args.hogs, args.repeats)
        return
    rows = bench_code(args.threads) + bench_math(args.processes, args.samples)
    print(
        f"\nScoring throughput on {len(cpus)} cores (CPUs {cpus}), load {os.getloadavg()[0]:.1f}\n"
    )
    cores = len(cpus)
    header = ["workload", "samples", "samples/s (wall)", "CPU ms/sample"]
    print("| " + " | ".join([*header, f"samples/s on {cores} idle cores", "mean reward"]) + " |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, count, rate, cpu, mean in rows:
        cells = [
            label,
            count,
            f"{rate:.0f}",
            f"{1000 * cpu:.1f}",
            f"{cores / cpu:.0f}",
            f"{mean:.3f}",
        ]
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
