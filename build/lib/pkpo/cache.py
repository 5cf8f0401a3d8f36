"""The local cache of built and converted checkpoints (``$PKPO_CACHE``, default
``~/.cache/pkpo``): each lives in its own folder, built once, atomically, under a file lock,
and records what it was built from (``pkpo_source.json``); a different record rebuilds it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
SOURCE_FILE = "pkpo_source.json"  # written last into a built checkpoint


def cache_root() -> Path:
    """Where converted checkpoints live: ``$PKPO_CACHE`` or ``~/.cache/pkpo``."""
    return Path(os.environ.get("PKPO_CACHE", "~/.cache/pkpo")).expanduser()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_once(
    target: Path, source: dict[str, Any], verb: str, build: Callable[[Path], Any]
) -> Path:
    """``target``, after ``build(folder)`` has written it unless it holds ``source`` already.

    Concurrent callers (ranks, multirun jobs) serialise on a file lock and all but the first
    find the finished folder. The folder appears atomically (written to a temporary sibling,
    then renamed), with ``source`` recorded last.
    """
    models_dir = target.parent
    if _is_built(target, source):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(models_dir / f".{target.name}.lock"):
        if _is_built(target, source):  # another process built it while we waited
            return target
        log.info("%s %s (%s) into %s", verb, target.name, source, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=models_dir))
        try:
            build(tmp)
            (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=1))
            tmp.chmod(0o755)  # mkdtemp made it private
            if target.exists():  # stale: from another package version or builder
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_built(target: Path, source: dict[str, Any]) -> bool:
    record = target / SOURCE_FILE
    return record.is_file() and json.loads(record.read_text()) == source


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
