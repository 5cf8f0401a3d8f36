"""Timeouts are counted apart from wrong answers, and decided by CPU time, not machine load."""

from __future__ import annotations

import json
import pickle
import signal
import threading
import time

import pytest

from pkpo.sandbox import Sandbox, SandboxConfig, available_isolation
from pkpo.sandbox.client import MachineLock
from pkpo.scoring import Scorer
from pkpo.tasks.arithmetic import ArithmeticTask
from pkpo.tasks.base import Reward
from pkpo.tasks.code import MbppTask
from pkpo.verifiers.math_equiv import math_verdict

needs_sandbox = pytest.mark.skipif(available_isolation() == "none", reason="no sandbox here")

RIGHT = "def f(x):\n    return x\n"
WRONG = "def f(x):\n    return x + 1\n"
SLEEPS = "def f(x):\n    import time\n    time.sleep(60)\n    return x\n"
LOOPS = "def f(x):\n    while True:\n        pass\n"


def _fenced(code: str) -> str:
    return f"```python\n{code}```"


@pytest.fixture
def tiny_mbpp(tmp_path) -> MbppTask:
    """An MBPP task over one problem of our own (f returns its argument), with short limits."""
    record = {
        "task_id": 601,
        "text": "Return x.",
        "code": RIGHT,
        "test_list": ["assert f(1) == 1", "assert f(2) == 2"],
        "test_setup_code": "",
        "challenge_test_list": [],
    }
    (tmp_path / "mbpp").mkdir()
    (tmp_path / "mbpp" / "mbpp.jsonl").write_text(json.dumps(record) + "\n")
    return MbppTask(data_dir=str(tmp_path), sandbox={"cpu_time_s": 1, "timeout_s": 3})


@needs_sandbox
@pytest.mark.slow
def test_sleeping_and_looping_programs_count_as_timeouts_wrong_answers_do_not(tiny_mbpp):
    problem = tiny_mbpp.load("train")[0]
    scorer = Scorer(tiny_mbpp, workers=2)
    try:
        completions = [[_fenced(code) for code in (SLEEPS, LOOPS, WRONG, RIGHT)]]
        rewards, failures, timeouts = scorer.score([problem], completions)
    finally:
        scorer.close()
    assert rewards.tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert timeouts.tolist() == [[True, True, False, False]]
    assert failures == []


@needs_sandbox
@pytest.mark.slow
def test_only_wall_clock_timeouts_with_cpu_left_are_rerun_alone():
    # a short wall clock for the sleeper; a long one for the loop, so that it meets its CPU
    # limit first however loaded the machine is
    short = Sandbox({"cpu_time_s": 1, "timeout_s": 1.5})
    long = Sandbox({"cpu_time_s": 1, "timeout_s": 60})
    try:
        slept = short.run(SLEEPS, ["assert f(1) == 1"])[0]
        looped = long.run(LOOPS, ["assert f(1) == 1"])[0]
        passed = short.run(RIGHT, ["assert f(1) == 1"])[0]
    finally:
        short.close()
        long.close()
    # the sleeper met the wall clock with its CPU unused: run again alone, and again a timeout
    assert (slept.status, slept.exit_code, slept.rerun) == ("timeout", -signal.SIGKILL, True)
    assert slept.cpu_s < 1
    # the loop used its whole CPU budget: that verdict is final whatever the load
    assert (looped.status, looped.exit_code, looped.rerun) == ("timeout", -signal.SIGXCPU, False)
    assert looped.cpu_s > 0.9  # RLIMIT_CPU fires at the limit, as the kernel counts ticks
    assert (passed.status, passed.rerun) == ("pass", False)


def test_wall_clocks_derive_from_the_cpu_limit():
    config = SandboxConfig(cpu_time_s=7)
    assert SandboxConfig(cpu_time_s=1).test_wall_s == 2
    assert config.test_wall_s == 2 * 7 and config.job_wall_s == 2 * 2 * 7
    given = SandboxConfig(cpu_time_s=7, timeout_s=3, job_timeout_s=5)
    assert (given.test_wall_s, given.job_wall_s) == (3, 5)
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        SandboxConfig(timeout_s=-1)


def test_machine_lock_rerun_waits_for_running_jobs_and_holds_back_new_ones(tmp_path):
    lock = MachineLock(str(tmp_path))
    order: list[str] = []
    running, rerun_waiting = threading.Event(), threading.Event()

    def job(name: str, hold: float) -> None:
        with lock.shared():
            order.append(f"{name} start")
            running.set()
            time.sleep(hold)
            order.append(f"{name} end")

    def rerun() -> None:
        running.wait()
        rerun_waiting.set()
        with lock.exclusive():
            order.append("rerun")

    first = threading.Thread(target=job, args=("first", 0.5))
    writer = threading.Thread(target=rerun)
    first.start()
    writer.start()
    rerun_waiting.wait()
    time.sleep(0.1)  # the writer now holds the gate: a job started now must wait for it
    late = threading.Thread(target=job, args=("late", 0.0))
    late.start()
    for thread in (first, writer, late):
        thread.join(timeout=10)
    assert order == ["first start", "first end", "rerun", "late start", "late end"]


def test_reward_keeps_its_timeout_flag_through_pickling():
    reward = Reward(0.5, timed_out=True)
    copy = pickle.loads(pickle.dumps(reward))
    assert copy == 0.5 and isinstance(copy, Reward) and copy.timed_out
    assert not Reward(1.0).timed_out and Reward(1.0) + 1 == 2.0


def test_math_comparison_is_limited_by_cpu_time_and_reported_as_a_timeout():
    # 9^(9^9) has ~370 million digits: SymPy cannot finish; the limit is CPU seconds
    start = time.process_time()
    assert math_verdict("5", "9^{9^{9}}", timeout_s=1, exact_shortcut=False) == (False, True)
    assert time.process_time() - start < 10
    assert math_verdict("\\frac{1}{2}", "0.5", exact_shortcut=False) == (True, False)
    assert math_verdict("\\frac{1}{2}", "0.4", exact_shortcut=False) == (False, False)


def test_consecutive_scorers_of_one_task_share_the_worker_pool():
    """A closed Scorer's workers serve the next Scorer of the same task and size (the same
    processes, by pid); another task gets workers of its own."""
    task = ArithmeticTask(digits=1, ops=["+"], n_train=4, n_test=4, seed=0)
    problem = task.load("train")[0]
    first = Scorer(task, workers=1)
    assert first.score([problem], [[str(problem.answer)]])[0].tolist() == [[1.0]]
    pids = [worker.pid for worker in first._pool._pool]
    first.close()
    second = Scorer(task, workers=1)
    other = Scorer(ArithmeticTask(digits=1, ops=["+"], n_train=4, n_test=4, seed=1), workers=1)
    try:
        assert [worker.pid for worker in second._pool._pool] == pids
        assert second.score([problem], [["no answer"]])[0].tolist() == [[0.0]]
        assert not set(pids) & {worker.pid for worker in other._pool._pool}
    finally:
        second.close()
        other.close()
