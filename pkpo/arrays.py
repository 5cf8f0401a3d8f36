"""numpy or torch: the few array operations the estimators and transforms need, done by the
library the caller's rewards come from.

The estimators are written once, with operators and methods that numpy arrays and torch
tensors share (``@``, slicing, ``cumsum``, ``sum(-1, keepdims=True)``, ...); what the two
spell differently lives here. torch is never imported: a tensor exists only if the caller
imported torch, so ``sys.modules`` tells whether one can be at hand, and ``pip install
pkpo`` needs NumPy alone.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

Array = Any
"""A numpy array or a torch tensor (torch is optional, so it cannot appear in a hint)."""


def is_tensor(x: object) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(x: Array):
    """The module whose functions take ``x``: torch for a tensor, else numpy. Used for the
    functions both spell alike (``where``, ``isfinite``, ``zeros_like``, ``sqrt``, ...)."""
    return sys.modules["torch"] if is_tensor(x) else np


def float_dtype_of(x: Array) -> Any | None:
    """``x``'s dtype if it is a real floating dtype, else None (bool, integer, complex)."""
    if is_tensor(x):
        return x.dtype if x.is_floating_point() else None
    return x.dtype if x.dtype.kind == "f" else None


def cast(x: Array, dtype: Any) -> Array:
    """``x`` as ``dtype`` (a no-op when it already is)."""
    if x.dtype == dtype:
        return x
    return x.to(dtype) if is_tensor(x) else x.astype(dtype)


def copy(x: Array) -> Array:
    return x.clone() if is_tensor(x) else x.copy()


@functools.lru_cache(maxsize=64)
def _row_starts(shape: tuple[int, ...]) -> np.ndarray:
    """``[..., 1]``: where each row of an array of ``shape`` starts once flattened."""
    return np.arange(0, int(np.prod(shape)), shape[-1]).reshape(*shape[:-1], 1)


def _flat(index: np.ndarray) -> np.ndarray:
    """Positions of ``index`` (``[..., n]``, along the last axis) in the flattened array of
    its shape: numpy indexes one flat axis 2-5x faster than ``take/put_along_axis``."""
    return (index + _row_starts(index.shape)).ravel()


def sort(x: Array) -> tuple[Array, Array]:
    """Ascending sort along the last axis: (values, the indices that sort)."""
    if is_tensor(x):
        return sys.modules["torch"].sort(x, dim=-1)
    order = np.argsort(x, axis=-1)
    return gather(x, order), order


def gather(x: Array, index: Array) -> Array:
    """``x[..., index[..., j]]`` along the last axis (``x`` and ``index`` of one shape)."""
    if is_tensor(x):
        return sys.modules["torch"].gather(x, -1, index)
    return np.ascontiguousarray(x).reshape(-1)[_flat(index)].reshape(index.shape)


def scatter(index: Array, values: Array) -> Array:
    """The array ``out`` with ``out[..., index[..., j]] = values[..., j]`` (``index`` a
    permutation of the last axis)."""
    if is_tensor(values):
        return values.new_empty(values.shape).scatter_(-1, index, values)
    out = np.empty(values.shape, values.dtype)
    out.reshape(-1)[_flat(index)] = values.reshape(-1)
    return out


def flip(x: Array) -> Array:
    """``x`` reversed along the last axis."""
    return x.flip(-1) if is_tensor(x) else x[..., ::-1]


def suffix_sum(x: Array) -> Array:
    """``out[..., i] = sum_{j >= i} x[..., j]``."""
    return flip(flip(x).cumsum(-1))


def suffix_min(x: Array) -> Array:
    """``out[..., i] = min_{j >= i} x[..., j]``."""
    if is_tensor(x):
        return sys.modules["torch"].cummin(x.flip(-1), dim=-1).values.flip(-1)
    return np.minimum.accumulate(x[..., ::-1], axis=-1)[..., ::-1]


def positions(like: Array) -> Array:
    """``0, 1, ..., n-1`` along the last axis, broadcast to ``like``'s shape."""
    n = like.shape[-1]
    if is_tensor(like):
        return sys.modules["torch"].arange(n, device=like.device).expand_as(like)
    return np.broadcast_to(np.arange(n), like.shape)


def last_of_run(values: Array, x: Array) -> Array | None:
    """For each ``x[..., i]``, the last position of its value in the ascending ``values`` (one
    batched binary search), or None where the backend has no batched search (numpy)."""
    if is_tensor(x):
        return sys.modules["torch"].searchsorted(values, x, right=True) - 1
    return None


def first_true(mask: Array) -> int:
    """The flat index of the first True of ``mask`` (which has one)."""
    if is_tensor(mask):
        return int(sys.modules["torch"].nonzero(mask.reshape(-1))[0])
    return int(np.flatnonzero(mask)[0])


def power_of_two_scale(x: Array) -> Array:
    """Per group (``[..., 1]``), the power of two ``2**e >= 1`` that brings the group's
    largest ``|x|`` below 2.

    Dividing by it is exact, so ``f(x / scale) * scale`` equals ``f(x)`` bit for bit for a
    transform ``f`` that is linear in the rewards, wherever ``f(x)`` does not overflow; and
    it never does in between (a group sum of two rewards near 1e308 would).
    """
    xp = namespace(x)
    _, exponent = xp.frexp(xp.amax(xp.abs(x), axis=-1, keepdims=True))
    return xp.ldexp(xp.ones_like(x[..., :1]), xp.where(exponent > 1, exponent - 1, 0))


def to_numpy(x: Array) -> np.ndarray:
    """``x`` as a numpy array on the CPU."""
    return x.detach().cpu().numpy() if is_tensor(x) else np.asarray(x)


@functools.lru_cache(maxsize=512)
def _constant(build: Callable[..., np.ndarray], args: tuple, kind: str, dtype, device):
    table = build(*args)
    if kind == "torch":
        return sys.modules["torch"].as_tensor(table, dtype=dtype, device=device)
    return table.astype(dtype)


def constant(build: Callable[..., np.ndarray], args: tuple, ref: Array) -> Array:
    """``build(*args)`` (a numpy table that depends on ``args`` only) as an array of
    ``ref``'s library, dtype and device, built once per such combination."""
    if is_tensor(ref):
        return _constant(build, args, "torch", ref.dtype, ref.device)
    return _constant(build, args, "numpy", ref.dtype, None)


def counts(x: Array) -> Array:
    """``x.sum(-1)`` of 0/1 rewards as integer indices (the number correct per group)."""
    total = x.sum(-1)
    return total.round().long() if is_tensor(x) else total.round().astype(np.int64)
