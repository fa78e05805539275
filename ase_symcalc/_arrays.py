"""numpy or torch: the few operations where the two spell things differently.

The averaging maths (``metrics``, ``transforms``, ``symmetrize``) is written
once and runs on numpy arrays (the ASE calculator) and on torch tensors (the
torch-sim model, on the model's device, without leaving it). Both support
``@``, ``swapaxes``, ``reshape``, ``sum/mean(axis=, keepdims=)`` and
arithmetic; what differs is gathered here.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TypeAlias, Union

import numpy as np

if TYPE_CHECKING:
    import torch

#: what the shared maths takes and returns: a numpy array (the ASE calculator)
#: or a torch tensor (the torch-sim model), float64
Array: TypeAlias = Union[np.ndarray, "torch.Tensor"]
#: a scalar result: a float (numpy input) or a 0-d float64 tensor (torch input)
Scalar: TypeAlias = Union[float, "torch.Tensor"]

__all__ = [
    "Array",
    "Scalar",
    "as_float64",
    "clip_positive",
    "concatenate",
    "cross",
    "is_torch",
    "pinv",
    "segment_max",
    "segment_sum",
    "sqrt",
]


def is_torch(value) -> bool:
    """Whether ``value`` is a torch tensor (torch is never imported to answer)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def as_float64(value, like=None):
    """``value`` in float64, a torch tensor if ``value`` or ``like`` is one."""
    if is_torch(value):
        import torch

        return value.to(torch.float64)
    if like is not None and is_torch(like):
        import torch

        # a copy: rule matrices are read-only arrays, which torch will not wrap
        return torch.tensor(np.array(value, dtype=np.float64), device=like.device)
    return np.asarray(value, dtype=np.float64)


def sqrt(value):
    if is_torch(value):
        return value.sqrt()
    return np.sqrt(value)


def clip_positive(value):
    if is_torch(value):
        return value.clamp(min=0.0)
    return np.clip(value, 0.0, None)


def cross(first, second):
    if is_torch(first) or is_torch(second):
        import torch

        first, second = torch.broadcast_tensors(first, second)
        return torch.linalg.cross(first, second, dim=-1)
    return np.cross(first, second)


def pinv(matrix):
    if is_torch(matrix):
        import torch

        return torch.linalg.pinv(matrix)
    return np.linalg.pinv(matrix)


def segment_sum(values, index, size: int, axis: int = 0):
    """Sum ``values`` along ``axis`` into ``size`` segments: ``out[s] = sum of
    values[k]`` over the ``k`` with ``index[k] == s`` (the atoms of each system
    of a batch). No host sync for torch (``index_add``)."""
    if is_torch(values):
        shape = list(values.shape)
        shape[axis] = size
        return values.new_zeros(shape).index_add_(axis, index, values)
    values = np.moveaxis(np.asarray(values), axis, 0)
    out = np.zeros((size, *values.shape[1:]), dtype=values.dtype)
    np.add.at(out, np.asarray(index), values)
    return np.moveaxis(out, 0, axis)


def segment_max(values, index, size: int):
    """``out[s]`` = the largest ``values[k]`` with ``index[k] == s`` (1-D values)."""
    if is_torch(values):
        out = values.new_full((size,), float("-inf"))
        return out.scatter_reduce(0, index, values, reduce="amax")
    out = np.full(size, -np.inf)
    np.maximum.at(out, np.asarray(index), np.asarray(values))
    return out


def concatenate(values: list):
    """Join along the first axis (numpy arrays or torch tensors)."""
    if any(is_torch(value) for value in values):
        import torch

        return torch.cat([torch.as_tensor(value) for value in values])
    return np.concatenate(values)
