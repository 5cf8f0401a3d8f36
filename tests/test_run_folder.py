"""A run folder belongs to one process and holds one config: the lock, the config check on
resume, whole log lines, and a full disk ending a run with one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pkpo import checkpoint, rundir
from pkpo.logger import EventLog, read_events

TINY = [
    "experiment=tiny_arith_noisy",
    "steps=2",
    "save_every=1",
    "prompts_per_step=2",
    "n=4",
    "eval.problems=2",
    "eval.n=2",
    "score_workers=0",
    "torch_threads=1",
    "logger.wandb.mode=disabled",
]


def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``pkpo-train`` in a subprocess (from ``cwd``: Hydra writes its own folders there)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "pkpo.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("pkpo-train: error:")]


# ----------------------------------------------------------------------------- one writer


def test_a_second_process_is_refused_naming_the_holder_and_a_dead_holder_frees_it(
    tmp_path, hold_elsewhere
):
    folder = tmp_path / "run"
    holder = hold_elsewhere(folder)
    where = f"pid {holder.pid} on host {socket.gethostname()}"
    assert rundir.holder(folder) == where
    with pytest.raises(rundir.FolderBusy, match=f"held by {where}"):
        rundir.hold(folder)
    holder.send_signal(signal.SIGKILL)  # nothing of the holder runs: the kernel drops the lock
    holder.wait(timeout=30)
    assert rundir.holder(folder) is None
    rundir.hold(folder).release()


@pytest.mark.slow
def test_pkpo_train_on_a_held_run_folder_stops_at_once_with_one_line(tmp_path, hold_elsewhere):
    folder = tmp_path / "run"
    holder = hold_elsewhere(folder)
    proc = _train(*TINY, f"run_dir={folder}", cwd=tmp_path)
    assert proc.returncode == 2
    assert _error_lines(proc) == [
        f"pkpo-train: error: run folder {folder} is held by pid {holder.pid} on host "
        f"{socket.gethostname()}: another process is writing to it; wait for it to end or stop it"
    ]
    assert "Traceback" not in proc.stderr
    assert not (folder / "events.jsonl").exists() and not (folder / "config.yaml").exists()


# ----------------------------------------------------------------------------- one config


def test_config_changes_list_training_keys_only():
    saved = OmegaConf.create(
        {"seed": 0, "trainer": {"lr": 1e-4, "clip": 0.2}, "run_dir": "/a", "logger": {"x": 1}}
    )
    wanted = OmegaConf.create(
        {"seed": 0, "trainer": {"lr": 1e-3, "clip": 0.2}, "run_dir": "/b", "logger": {"x": 2}}
    )
    wanted.trainer.beta = 0.5  # a key the saved config lacks counts as a change from None
    changes = rundir.config_changes(saved, wanted)
    assert changes == {"trainer.beta": [None, 0.5], "trainer.lr": [1e-4, 1e-3]}
    with pytest.raises(rundir.ConfigChanged, match=r"keys: trainer\.beta \(None -> 0\.5\)\. "):
        rundir.check_changes(changes, ["trainer.lr"], "run folder /a")
    rundir.check_changes(changes, ["trainer"], "run folder /a")  # a node allows its keys
    assert rundir.config_hash(saved) != rundir.config_hash(wanted)
    assert rundir.config_hash(saved) == rundir.config_hash(OmegaConf.merge(saved, {"run_dir": "c"}))


@pytest.mark.slow
def test_a_resume_with_a_changed_lr_is_refused_unless_allowed_and_then_recorded(tmp_path):
    folder = tmp_path / "run"
    first = _train(*TINY, f"run_dir={folder}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    lr = OmegaConf.load(folder / "config.yaml").trainer.lr
    before = (folder / "events.jsonl").read_bytes()
    stale = folder / "checkpoints" / f"{checkpoint.TEMPORARY}99999"
    stale.write_bytes(b"\0" * 100)  # what a process killed mid-save leaves
    # a rerun on the same run_dir with another transform: refused
    rerun = _train(*TINY, f"run_dir={folder}", "transform=loo", cwd=tmp_path)
    assert rerun.returncode == 2
    assert "transform.name ('pkpo_sloo_minus_one' -> 'loo')" in _error_lines(rerun)[0]
    hydra_dirs = sorted(tmp_path.glob("runs/*/*"))  # Hydra's folders of the runs on run_dir=

    refused = _train(f"resume={folder}", "trainer.lr=1e-3", "steps=3", cwd=tmp_path)
    assert refused.returncode == 2
    assert _error_lines(refused) == [
        f"pkpo-train: error: run folder {folder} holds a run with another config; differing "
        f"keys: steps (2 -> 3), trainer.lr ({lr!r} -> 0.001). Use a new run_dir, or allow the "
        "change with resume_allow=[steps,trainer.lr]"
    ]
    assert (folder / "events.jsonl").read_bytes() == before  # nothing was written
    assert OmegaConf.load(folder / "config.yaml").trainer.lr == lr

    allowed = _train(
        f"resume={folder}", "trainer.lr=1e-3", "steps=3", "resume_allow=[trainer.lr,steps]",
        cwd=tmp_path,
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert not stale.exists()
    saved = OmegaConf.load(folder / "config.yaml")
    assert (saved.trainer.lr, saved.steps) == (1e-3, 3)
    events = _lines(folder / "events.jsonl")
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    change = events[starts[-1] + 1]
    assert change == {
        "event": "config_change",
        "time": change["time"],
        "step": 2,
        "changes": {"steps": [2, 3], "trainer.lr": [lr, 1e-3]},
    }
    assert [e["step"] for e in events if e["event"] == "train"] == [0, 1, 2]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "finished"
    assert events[starts[0]]["config_sha256"] != events[starts[-1]]["config_sha256"]
    assert sorted(tmp_path.glob("runs/*/*")) == hydra_dirs  # resume= writes none of its own


# ----------------------------------------------------------------------------- whole lines


def test_a_torn_last_line_is_moved_aside_before_anything_is_appended(tmp_path):
    path = tmp_path / "events.jsonl"
    whole = '{"event": "start", "time": 1.0}\n{"event": "train", "time": 2.0, "step": 0}\n'
    torn = '{"event": "train", "time": 3.0, "st'
    path.write_text(whole + torn)
    log = EventLog(tmp_path)
    log.write("start", resumed_from_step=0)
    log.close()
    assert (tmp_path / "events.jsonl.torn").read_text() == torn + "\n"
    lines = path.read_text().splitlines(keepends=True)
    assert "".join(lines[:2]) == whole
    assert json.loads(lines[2])["event"] == "torn_line"
    assert json.loads(lines[2])["bytes"] == len(torn)
    assert json.loads(lines[3])["event"] == "start"
    assert len(read_events(path)) == 4  # every line whole: nothing skipped


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs under ``tmp_path``, or None where one cannot be mounted (not root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)]
    try:
        mounted = subprocess.run(cmd, capture_output=True).returncode == 0
    except FileNotFoundError:
        mounted = False
    yield mount if mounted else None
    if mounted:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


def _no_space(real_write):
    """``os.write`` that writes half of what it is given, then finds the disk full."""

    def write(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


def test_a_full_disk_leaves_the_log_in_whole_lines_and_names_the_file(
    small_disk, tmp_path, monkeypatch
):
    folder = small_disk or tmp_path / "run"
    log = EventLog(folder)
    log.write("start")
    before = (folder / "events.jsonl").read_bytes()
    if small_disk:
        _fill(small_disk)
    else:
        monkeypatch.setattr(os, "write", _no_space(os.write))
    with pytest.raises(rundir.WriteFailed) as failed:
        log.write("train", step=0, text="x" * 20000)
    monkeypatch.undo()
    assert str(failed.value) == (
        f"cannot write {folder / 'events.jsonl'}: No space left on device (errno ENOSPC)"
    )
    assert (folder / "events.jsonl").read_bytes() == before
    log.close()


def test_a_full_disk_during_a_checkpoint_removes_its_temporary(small_disk, tmp_path, monkeypatch):
    folder = small_disk or tmp_path / "run"
    checkpoint.save(folder, {"w": torch.zeros(10)})
    kept = (folder / checkpoint.LAST).read_bytes()
    if not small_disk:
        real_save = torch.save

        def save(obj, f):  # torch wraps the file's OSError in a RuntimeError, as here
            try:
                real_save(obj, f)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as err:
                raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from err

        monkeypatch.setattr(torch, "save", save)
    with pytest.raises(rundir.WriteFailed, match=r"No space left on device \(errno ENOSPC\)$"):
        checkpoint.save(folder, {"w": torch.zeros(1 << 20)})  # 4 MB on a 1 MiB disk
    assert sorted(p.name for p in folder.iterdir()) == [checkpoint.LAST]
    assert (folder / checkpoint.LAST).read_bytes() == kept


@pytest.mark.slow
def test_a_run_on_a_full_disk_ends_with_one_line_and_an_end_event(small_disk, tmp_path):
    if small_disk is None:
        pytest.skip("no tmpfs can be mounted here (needs root); the unit tests above patch")
    folder = small_disk / "run"  # config and log fit in 1 MiB, a 10 MB checkpoint does not
    proc = _train(*TINY, f"run_dir={folder}", cwd=tmp_path)
    assert proc.returncode == 1
    tmp = folder / "checkpoints" / f"{checkpoint.TEMPORARY}"
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"pkpo-train: error: cannot write {tmp}")
    assert lines[-1].endswith(": No space left on device (errno ENOSPC)")
    assert "Traceback" not in proc.stderr
    end = _lines(folder / "events.jsonl")[-1]
    assert end["event"] == "end" and end["status"] == "failed" and end["step"] == 1
    assert end["error"] == lines[-1].removeprefix("pkpo-train: error: ")
    assert not list((folder / "checkpoints").iterdir())


def test_running_seconds_leave_out_the_time_between_attempts():
    from pkpo.summary import running_seconds

    events = [
        {"event": "start", "time": 100.0},
        {"event": "train", "time": 130.0, "step": 0},
        {"event": "start", "time": 1000.0},  # killed at 130, resumed 870 s later
        {"event": "train", "time": 1010.0, "step": 1},
        {"event": "end", "time": 1012.0, "step": 2},
    ]
    assert running_seconds(events) == 30.0 + 12.0
