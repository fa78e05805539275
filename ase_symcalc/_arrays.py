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

__all__ = ["Array", "Scalar", "is_torch", "as_float64", "sqrt", "clip_positive", "cross", "pinv"]


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

        return torch.as_tensor(np.asarray(value), dtype=torch.float64, device=like.device)
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
