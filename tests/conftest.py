"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# The real datasets the tests read: where $PKPO_DATA (where the tasks look) names them; CI
# sets it to the copies it lays out beside the clone.
SHARED_DATA = (
    Path(os.environ.get("PKPO_DATA", "")).resolve() if os.environ.get("PKPO_DATA") else None
)


def pytest_collection_modifyitems(config, items):
    """Skip ``shared_data`` tests, saying why, where $PKPO_DATA names no datasets folder."""
    if SHARED_DATA is not None and SHARED_DATA.is_dir():
        return
    where = f"at {SHARED_DATA}" if SHARED_DATA is not None else "named ($PKPO_DATA is unset)"
    skip = pytest.mark.skip(
        reason=f"no datasets {where}: set PKPO_DATA to the MATH/GSM8K/MBPP copies (CI does)"
    )
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on shared 2-core machines two run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LARGE_FILE_BYTES = 8 << 20


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    """After each test, delete the large files it left under its ``tmp_path`` (checkpoints
    of real models are 1.6 GB): a test checks them while it runs, and pytest would keep
    them until the end of the session."""
    folder = getattr(item, "funcargs", {}).get("tmp_path")
    if folder is None:
        return
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size > LARGE_FILE_BYTES:
            path.unlink()


@pytest.fixture
def hold_elsewhere():
    """``hold_elsewhere(folder)``: another process takes ``folder``'s lock
    (:func:`pkpo.rundir.hold`) and keeps it until killed; returns that process (killed at
    teardown if still alive). SIGKILL it to see the kernel drop the lock."""
    procs: list[subprocess.Popen] = []
    code = (
        "import sys, time; from pkpo import rundir; rundir.hold(sys.argv[1]); "
        "print('held', flush=True); time.sleep(600)"
    )

    def hold(folder: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
