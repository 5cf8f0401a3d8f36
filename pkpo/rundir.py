"""A run folder belongs to one process and holds one config.

* :func:`hold` takes an OS lock (``fcntl.flock`` on ``<folder>/.lock``) for as long as the
  process lives; a second process that reaches the folder is refused at once with the
  holder's pid and host (:class:`FolderBusy`). The kernel drops the lock when the holder
  dies, however it dies, so a killed run never leaves a stale lock behind. A file system
  without ``flock`` gets a warning and no lock.
* :func:`config_changes` compares the config a run folder was started with against the one
  a resume (or a rerun on the same folder) asks for, on the keys that change training
  (everything but :data:`NOT_TRAINING`); :func:`check_changes` refuses a change the user did
  not allow by name (``resume_allow=[trainer.lr]``).
* :class:`WriteFailed` is how a write into a run folder that failed (a full disk, a lost
  mount) ends a run: one line naming the path and the cause.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

LOCK = ".lock"

NOT_TRAINING = (
    "run_dir",
    "resume",
    "resume_allow",
    "dry_run",
    "logger",
    "score_workers",
    "torch_threads",
    "protocol_commit",
    "task.data_dir",
)
"""Config keys (and the keys under them) that do not change what a run trains: where it
writes, how it is resumed, how it logs, how many processes score, which commit launched it,
where this machine keeps the data sets (``$PKPO_DATA``)."""


class RunFolderError(Exception):
    """A run folder that cannot be used as asked; the message is one line for the user."""


class FolderBusy(RunFolderError):
    """Another live process holds the folder's lock."""


class ConfigChanged(RunFolderError):
    """A resume or rerun asks for a config other than the one the folder holds."""


class WriteFailed(RunFolderError):
    """A write into a run folder failed (disk full, lost mount, permissions)."""

    def __init__(self, path: str | Path, cause: BaseException):
        self.path, self.cause = Path(path), cause
        super().__init__(f"cannot write {path}: {describe(cause)}")


def describe(err: BaseException) -> str:
    """The cause of a failed write in words: the first ``OSError`` in the exception's chain
    (torch's checkpoint writer wraps a full disk's ``ENOSPC`` in a ``RuntimeError``)."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            code = errno.errorcode.get(seen.errno, seen.errno)
            return f"{os.strerror(seen.errno)} (errno {code})"
        seen = seen.__cause__ or seen.__context__
    return " ".join(f"{type(err).__name__}: {err}".split())


# ----------------------------------------------------------------------------- the lock


class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.lock``, held until :meth:`release` or exit.

    The file's content names the holder (``pid host``) for the next process that tries.
    The descriptor is not inherited by spawned or executed children, so a worker that
    outlives the run does not keep the folder.
    """

    def __init__(self, folder: Path, fd: int):
        self.folder, self._fd = folder, fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = -1


def holder(folder: str | Path) -> str | None:
    """``"pid P on host H"`` if a live process holds ``folder``'s lock, else None."""
    path = Path(folder) / LOCK
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe_holder(path)
    finally:
        os.close(fd)
    return None


def _describe_holder(path: Path) -> str:
    try:
        pid, host = path.read_text(encoding="utf-8").split()[:2]
    except (OSError, ValueError):
        return "another process"
    return f"pid {pid} on host {host}"


def hold(folder: str | Path, what: str = "run folder") -> FolderLock:
    """Lock ``folder`` (created if needed) for this process; :class:`FolderBusy` if held."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusy(
            f"{what} {folder} is held by {_describe_holder(path)}: another process is "
            "writing to it; wait for it to end or stop it"
        ) from None
    except OSError as err:  # a network file system mounted without flock support
        os.close(fd)
        print(
            f"[pkpo] warning: cannot lock {path} ({describe(err)}); nothing stops a second "
            "process from writing to it",
            file=sys.stderr,
            flush=True,
        )
        return FolderLock(folder, -1)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    except OSError as err:
        os.close(fd)
        raise WriteFailed(path, err) from err
    return FolderLock(folder, fd)


# ----------------------------------------------------------------------------- the config


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def training_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config's leaves (dotted key -> value) that change training."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in _leaves(tree).items() if not _under(k, NOT_TRAINING)}


def config_hash(cfg: DictConfig) -> str:
    """sha256 of :func:`training_config`: two runs with one hash trained the same way."""
    canonical = json.dumps(training_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def config_changes(saved: DictConfig, wanted: DictConfig) -> dict[str, list[Any]]:
    """``{key: [saved value, wanted value]}`` for every training key that differs (a key
    present in one config only counts, with None for the other)."""
    old, new = training_config(saved), training_config(wanted)
    return {
        key: [old.get(key), new.get(key)]
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    }


def check_changes(changes: Mapping[str, list[Any]], allowed: Iterable[str], where: str) -> None:
    """Refuse (:class:`ConfigChanged`) the changes not under a key of ``allowed``."""
    allowed = list(allowed)
    refused = [key for key in changes if not _under(key, allowed)]
    if refused:
        listed = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in refused)
        raise ConfigChanged(
            f"{where} holds a run with another config; differing keys: {listed}. "
            f"Use a new run_dir, or allow the change with resume_allow=[{','.join(refused)}]"
        )
