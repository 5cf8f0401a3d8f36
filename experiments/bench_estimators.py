"""Benchmark ``pkpo.estimators`` against a sort + cumsum floor and a per-group O(n k) loop.

For each (B, n, k) size, backend and public estimator this prints (Markdown) the median time
per call, its ratio to the floor (``sort`` then ``cumsum`` of the same [B, n] tensor on the
same backend: no implementation that sorts each group can beat it by much) and how many times
faster it is than ``experiments.reference_estimators``, a direct per-group O(n k)
implementation of the paper's equations. Each estimator's output on the benchmark inputs is
checked against the reference's (first few groups), so both compute the same numbers.

A second table times every registered transform (``pkpo.transforms``) against the same
floor at ``TRANSFORM_SIZE``, and MaxPO against a direct O(n^2) implementation of its
leave-two-out definition (``reference_estimators.maxpo``) at ``MAXPO_SIZE``.

    python -m experiments.bench_estimators [--quick] [--device cpu|cuda|all] [--out FILE.md]
        [--part estimators|transforms|all] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import reference_estimators  # noqa: E402
from pkpo import estimators, transforms  # noqa: E402

SIZES = ((1, 16, 4), (1024, 16, 4), (1, 1024, 256), (64, 4096, 1024))
FUNCTIONS = ("rho", "s", "sloo", "sloo_minus_one", "sloo_centred", "binary_weights", "pass_at_k")
FLOOR = "sort + cumsum (floor)"
# The project's performance targets for the estimators.
MAX_FLOOR_RATIO = 3.0
MIN_SPEEDUP = 500.0
SPEEDUP_SIZE = (1024, 16, 4)
# The reference runs on at most this much n*k work per call (a subset of the groups,
# timed and scaled linearly), so the whole benchmark takes minutes on 2 cores.
REFERENCE_WORK = 2_000_000
CHECK_GROUPS = 4
TRANSFORM_SIZE = (1024, 16, 4)
MAXPO_SIZE = (64, 4096, 1024)
BINARY_TRANSFORMS = ("maxrl", "passk_training")  # get the 0/1 rewards
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5}


# ----------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Inputs:
    """One benchmark input set: B groups of n samples, as float64 numpy arrays."""

    rewards: np.ndarray  # [B, n] uniform on [0, 1)
    binary: np.ndarray  # [B, n] 0/1 rewards for binary_weights
    counts: np.ndarray  # [B] numbers of correct samples for pass_at_k

    @classmethod
    def random(cls, batch: int, n: int, seed: int = 0) -> Inputs:
        rng = np.random.default_rng(seed)
        return cls(
            rewards=rng.random((batch, n)),
            binary=(rng.random((batch, n)) < 0.3).astype(np.float64),
            counts=rng.integers(0, n + 1, size=batch),
        )

    def head(self, groups: int) -> Inputs:
        return Inputs(self.rewards[:groups], self.binary[:groups], self.counts[:groups])


def call_args(function: str, rewards: Any, binary: Any, counts: Any, n: int, k: int) -> tuple:
    """Arguments of ``function`` (same signature in both implementations)."""
    if function == "pass_at_k":
        return (n, counts, k)
    if function == "binary_weights":
        return (binary, k)
    return (rewards, k)


# --------------------------------------------------------------------- backends


@dataclass(frozen=True)
class Backend:
    """Where and in which precision the estimators run; ``device=None`` means numpy."""

    name: str
    device: str | None
    dtype: torch.dtype = torch.float64

    def put(self, array: np.ndarray) -> np.ndarray | torch.Tensor:
        if self.device is None:
            return array
        dtype = self.dtype if array.dtype.kind == "f" else None
        return torch.as_tensor(array, dtype=dtype, device=self.device)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def floor(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if isinstance(x, np.ndarray):
            return np.cumsum(np.sort(x, axis=-1), axis=-1)
        return torch.sort(x, dim=-1).values.cumsum(-1)


def select_backends(device: str) -> list[Backend]:
    cpu = [Backend("numpy", None), Backend("torch-cpu", "cpu")]
    cuda = [Backend("cuda-f32", "cuda", torch.float32), Backend("cuda-f64", "cuda")]
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine")
    if device == "cpu":
        return cpu
    if device == "cuda":
        return cuda
    return cpu + (cuda if torch.cuda.is_available() else [])


# ----------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timer:
    """Median of ``repeats`` samples, each ``number`` calls lasting at least ``min_sample_s``."""

    repeats: int
    min_sample_s: float

    def __call__(self, fn: Callable[[], Any], sync: Callable[[], None]) -> tuple[float, Any]:
        """Returns (median seconds per call, the output of the warm-up call)."""
        out = fn()
        sync()
        number = max(1, math.ceil(self.min_sample_s / max(self._sample(fn, sync, 1), 1e-9)))
        per_call = [self._sample(fn, sync, number) / number for _ in range(self.repeats)]
        return statistics.median(per_call), out

    def paired(
        self, fn: Callable[[], Any], floor: Callable[[], Any], sync: Callable[[], None]
    ) -> tuple[float, float, Any]:
        """(median seconds per call of ``fn``, of ``floor``, ``fn``'s output), their samples
        taken alternately so that a change of machine load hits both alike."""
        out, _ = fn(), floor()
        sync()
        numbers = [
            max(1, math.ceil(self.min_sample_s / max(self._sample(f, sync, 1), 1e-9)))
            for f in (fn, floor)
        ]
        samples: list[list[float]] = [[], []]
        for _ in range(self.repeats):
            for f, number, into in zip((fn, floor), numbers, samples, strict=True):
                into.append(self._sample(f, sync, number) / number)
        return statistics.median(samples[0]), statistics.median(samples[1]), out

    @staticmethod
    def _sample(fn: Callable[[], Any], sync: Callable[[], None], number: int) -> float:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        return time.perf_counter() - start


def _no_sync() -> None:
    pass


# ------------------------------------------------------------------- benchmark


@dataclass(frozen=True)
class Row:
    backend: str
    size: tuple[int, int, int]
    function: str
    seconds: float
    floor_s: float
    reference_s: float | None  # None for the floor row
    reference_scaled: bool = False


@dataclass(frozen=True)
class ReferenceTiming:
    seconds: float  # for all B groups (scaled if timed on fewer)
    scaled: bool
    groups: int  # groups actually run
    output: np.ndarray  # for those groups


def reference_groups(batch: int, n: int, k: int) -> int:
    return max(1, min(batch, REFERENCE_WORK // (n * k)))


def time_reference(function: str, data: Inputs, n: int, k: int, timer: Timer) -> ReferenceTiming:
    batch = data.rewards.shape[0]
    groups = reference_groups(batch, n, k)
    part = data.head(groups)
    fn = getattr(reference_estimators, function)
    args = call_args(function, part.rewards, part.binary, part.counts, n, k)
    seconds, out = timer(lambda: fn(*args), _no_sync)
    return ReferenceTiming(seconds * batch / groups, groups < batch, groups, out)


def to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check_agreement(
    function: str, backend: Backend, size: tuple, ours: Any, ref: ReferenceTiming
) -> None:
    """Raise AssertionError unless the estimator matches the reference on its first groups."""
    groups = min(ref.groups, CHECK_GROUPS)
    tol = TOLERANCE[backend.dtype]
    np.testing.assert_allclose(
        to_numpy(ours)[:groups],
        ref.output[:groups],
        rtol=tol,
        atol=tol,
        err_msg=f"{function} on {backend.name} at (B, n, k) = {size} disagrees with the "
        "O(n k) reference",
    )


def bench_size(
    size: tuple[int, int, int], backends: Sequence[Backend], timer: Timer, ref_timer: Timer
) -> list[Row]:
    batch, n, k = size
    data = Inputs.random(batch, n)
    refs = {f: time_reference(f, data, n, k, ref_timer) for f in FUNCTIONS}
    rows = []
    for backend in backends:
        rewards, binary, counts = (backend.put(a) for a in (data.rewards, data.binary, data.counts))
        floor_s, _ = timer(lambda b=backend, x=rewards: b.floor(x), backend.sync)
        rows.append(Row(backend.name, size, FLOOR, floor_s, floor_s, None))
        for function in FUNCTIONS:
            fn = getattr(estimators, function)
            args = call_args(function, rewards, binary, counts, n, k)
            seconds, out = timer(lambda fn=fn, args=args: fn(*args), backend.sync)
            ref = refs[function]
            check_agreement(function, backend, size, out, ref)
            rows.append(
                Row(backend.name, size, function, seconds, floor_s, ref.seconds, ref.scaled)
            )
        print(f"  done {backend.name} (B, n, k) = {size}", file=sys.stderr, flush=True)
    return rows


def bench_transforms(backends: Sequence[Backend], timer: Timer, ref_timer: Timer) -> list[Row]:
    """Every registered transform at TRANSFORM_SIZE, and MaxPO against its O(n^2) definition
    at MAXPO_SIZE, each against the floor of its own size and backend (timed alongside it;
    the floor row shows the first floor timing)."""
    rows = []
    for size, names in ((TRANSFORM_SIZE, transforms.names()), (MAXPO_SIZE, ["maxpo"])):
        batch, n, k = size
        data = Inputs.random(batch, n)
        ref = time_reference("maxpo", data, n, k, ref_timer) if size == MAXPO_SIZE else None
        for backend in backends:
            rewards, binary = backend.put(data.rewards), backend.put(data.binary)
            floor = functools.partial(backend.floor, rewards)
            floor_s, _ = timer(floor, backend.sync)
            rows.append(Row(backend.name, size, FLOOR, floor_s, floor_s, None))
            for name in names:
                x = binary if name in BINARY_TRANSFORMS else rewards
                transform = functools.partial(transforms.transform, name, x, k)
                # the floor is re-timed beside each transform: on a loaded machine the
                # ratio of two interleaved medians drifts far less than two separate ones
                seconds, floor_s, out = timer.paired(transform, floor, backend.sync)
                if ref is not None:
                    check_agreement(name, backend, size, out, ref)
                reference_s, scaled = (ref.seconds, ref.scaled) if ref else (None, False)
                rows.append(Row(backend.name, size, name, seconds, floor_s, reference_s, scaled))
            print(f"  done transforms {backend.name} (B, n, k) = {size}", file=sys.stderr)
    return rows


def transform_verdict(rows: Sequence[Row]) -> str:
    """One line: the slowest transform per backend at TRANSFORM_SIZE, MaxPO at MAXPO_SIZE."""
    parts = []
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = [r for r in rows if r.backend == backend and r.function != FLOOR]
        worst = max((r for r in mine if r.size == TRANSFORM_SIZE), key=lambda r: r.seconds)
        big = next(r for r in mine if r.size == MAXPO_SIZE)
        parts.append(
            f"{backend}: slowest {worst.function} {worst.seconds / worst.floor_s:.1f}x "
            f"{'ok' if worst.seconds <= MAX_FLOOR_RATIO * worst.floor_s else 'MISSED'}; "
            f"maxpo at {MAXPO_SIZE} {big.seconds / big.floor_s:.1f}x floor, "
            f"{big.reference_s / big.seconds:,.0f}x faster than O(n²)"
        )
    return (
        f"Target: every transform at (B, n, k) = {TRANSFORM_SIZE} within {MAX_FLOOR_RATIO:g}x "
        "of the floor — " + "; ".join(parts)
    )


# ---------------------------------------------------------------------- report


def format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def format_ratio(ratio: float) -> str:
    return f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.2g}" if ratio < 1 else f"{ratio:.1f}"


def markdown_table(
    rows: Sequence[Row], reference: str = "O(n·k) loop", what: str = "function"
) -> str:
    lines = [
        f"| backend | B | n | k | {what} | median time / call | x floor "
        f"| x faster than {reference} |",
        "|---|--:|--:|--:|---|--:|--:|--:|",
    ]
    for r in rows:
        faster = "–"
        if r.reference_s is not None:
            faster = format_ratio(r.reference_s / r.seconds) + (" †" if r.reference_scaled else "")
        batch, n, k = r.size
        lines.append(
            f"| {r.backend} | {batch} | {n} | {k} | {r.function} | {format_seconds(r.seconds)} "
            f"| {format_ratio(r.seconds / r.floor_s)} | {faster} |"
        )
    return "\n".join(lines)


def footnotes(backends: Sequence[Backend], timer: Timer, ref_timer: Timer) -> str:
    scaled = [
        f"B = {b}, n = {n}, k = {k}: {reference_groups(b, n, k)} of {b} groups"
        for b, n, k in SIZES
        if reference_groups(b, n, k) < b
    ]
    cuda = ", CUDA in float32 and float64" if any(b.device == "cuda" for b in backends) else ""
    return "\n".join(
        [
            f"Machine: {machine_description()}. Each entry is the median of {timer.repeats} "
            f"samples of at least {timer.min_sample_s * 1e3:g} ms (O(n·k) loop: "
            f"{ref_timer.repeats} samples) after a warm-up call; numpy and torch CPU in float64"
            f"{cuda}. Continuous rewards are uniform on [0, 1); binary_weights gets 0/1 rewards; "
            "pass_at_k gets B counts c (and is compared with the same floor as the rest).",
            "",
            "floor: `sort` then `cumsum` of the [B, n] reward tensor on the same backend. "
            "O(n·k) loop: `experiments/reference_estimators.py`, the paper's Eq. 14, 19-21 and "
            "29-34 in plain Python, one group at a time, weights rebuilt per group as products "
            "of k ratios (float64, CPU; the same timing is used for every backend's ratio).",
            "",
            "† the O(n·k) loop was timed on a subset of the groups and scaled linearly to B: "
            + "; ".join(scaled)
            + ".",
        ]
    )


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{os.cpu_count()}-core CPU ({cpu}){gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}; "
        f"load average {os.getloadavg()[0]:.1f} at the end of the run"
    )


def floor_verdict(rows: Sequence[Row]) -> str:
    """One line: per backend, the worst ratio to the floor at each size."""
    parts = []
    for backend in dict.fromkeys(r.backend for r in rows):
        worst = {}
        for r in rows:
            if r.backend == backend and r.reference_s is not None:
                worst[r.size] = max(worst.get(r.size, 0.0), r.seconds / r.floor_s)
        sizes = ", ".join(
            f"{size} {ratio:.1f}x {'ok' if ratio <= MAX_FLOOR_RATIO else 'MISSED'}"
            for size, ratio in worst.items()
        )
        parts.append(f"{backend}: {sizes}")
    met = all(r.seconds <= MAX_FLOOR_RATIO * r.floor_s for r in rows)
    return (
        f"Target within {MAX_FLOOR_RATIO:g}x of the floor: {'MET' if met else 'MISSED'} "
        f"(worst x floor per (B, n, k)) — " + "; ".join(parts)
    )


def speedup_verdict(rows: Sequence[Row]) -> str:
    """One line: the smallest speed-up over the O(n k) loop at SPEEDUP_SIZE on CPU."""
    chosen = [
        r
        for r in rows
        if r.size == SPEEDUP_SIZE and r.reference_s is not None and "cuda" not in r.backend
    ]
    label = f"Target >= {MIN_SPEEDUP:g}x faster than the O(n·k) loop at (B, n, k) = {SPEEDUP_SIZE}"
    if not chosen:
        return f"{label} on CPU: not measured (no CPU backend in this run)"
    slowest = min(chosen, key=lambda r: r.reference_s / r.seconds)
    ratio = slowest.reference_s / slowest.seconds
    return (
        f"{label} on CPU: {'MET' if ratio >= MIN_SPEEDUP else 'MISSED'} "
        f"(smallest: {ratio:,.0f}x, {slowest.function} on {slowest.backend})"
    )


# ------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter samples")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--part",
        choices=("estimators", "transforms", "all"),
        default="all",
        help="the estimator table, the transform table, or both",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    backends = select_backends(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    timer = Timer(repeats=5, min_sample_s=0.005) if args.quick else Timer(15, 0.05)
    ref_timer = Timer(repeats=5, min_sample_s=0.0 if args.quick else 0.05)
    sections = []
    if args.part in ("estimators", "all"):
        rows = [row for size in SIZES for row in bench_size(size, backends, timer, ref_timer)]
        sections += [
            markdown_table(rows),
            footnotes(backends, timer, ref_timer),
            floor_verdict(rows),
            speedup_verdict(rows),
        ]
    if args.part in ("transforms", "all"):
        rows = bench_transforms(backends, timer, ref_timer)
        sections += [
            markdown_table(rows, "O(n²) MaxPO loop", what="transform"),
            f"Machine: {machine_description()}. Same timing as above, except that each x floor "
            "is against the floor re-timed alternately with that transform. maxrl and "
            "passk_training get 0/1 rewards, the others uniform rewards on [0, 1). O(n²) "
            "MaxPO loop: `reference_estimators.maxpo`, PKPO recomputed without each sample "
            "(numpy per sample, float64, CPU; one group timed and scaled to B).",
            transform_verdict(rows),
        ]
    report = "\n\n".join(sections)
    print(report)
    if args.out is not None:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
