"""How many runs share one device: sized from its free memory, one run's footprint and cores.

A 135M-parameter run leaves a large GPU mostly idle (about 7 GiB of an H200's 139 GiB, one
of its cores, Python-bound kernel launches), so a sweep places several independent runs on
it at once. Each run is its own process with its own seed and folder; nothing is shared but
the device, so a run's events are those it would give alone (``tests/test_placement.py``).

``footprint_gib`` is the run config's estimate of one run's peak memory (GPU memory on a
GPU, resident memory on the CPU); ``torch_threads`` the cores one run computes on (0: torch's
default, every core).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

RESERVE_FRACTION = 0.1
"""Memory left free for the allocator's fragmentation and the system."""


@dataclass(frozen=True)
class Device:
    """What runs share: free memory (GiB) and usable cores."""

    name: str
    free_gib: float
    cores: int


def this_device() -> Device:
    """The GPU the runs will use (CUDA device 0) when there is one, else this machine's CPU."""
    cores = len(os.sched_getaffinity(0))
    import torch  # here, so that a launcher that only parses its arguments stays light

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(0)
        return Device(torch.cuda.get_device_name(0), free / 2**30, cores)
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return Device("cpu", free / 2**30, cores)


def runs_per_device(device: Device, footprint_gib: float, torch_threads: int) -> int:
    """Runs that fit side by side: as many as the free memory (less ``RESERVE_FRACTION``)
    holds at ``footprint_gib`` each, and no more than one per ``torch_threads`` cores;
    at least 1."""
    if not footprint_gib > 0:
        raise ValueError(f"footprint_gib must be positive, got {footprint_gib!r}")
    by_memory = int(device.free_gib * (1 - RESERVE_FRACTION) // footprint_gib)
    by_cores = device.cores // torch_threads if torch_threads > 0 else 1
    return max(1, min(by_memory, by_cores))


def parse_parallel(value: str) -> int | str:
    """``--parallel``: ``auto`` or a positive number of runs at once (``argparse`` type)."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"--parallel must be 'auto' or a positive integer, got {value!r}")
    return number
