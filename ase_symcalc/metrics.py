"""Weighted means and equivariance errors over a quadrature (pure numpy).

The equivariance error of one structure (the paper's A metric, reference
section 4) is the spread of the back-rotated predictions ``z(g_i)`` around
their average ``fbar``::

    V = sum_i w_i || z(g_i) - fbar ||^2      (summed over components)
    A = sqrt(V / d)                         (an RMSE in the output's units)

It is computed in float64 and centred (two passes), never as
``E[z^2] - E[z]^2``, which loses every digit when the spread is small.
Every function takes numpy arrays or torch tensors (one implementation for
the ASE calculator and the torch-sim model): ``*_rmse`` return a float for
numpy input and a 0-d float64 tensor for torch input (no device sync).
"""

from __future__ import annotations

import numpy as np

from ._arrays import Array, Scalar, as_float64, clip_positive, is_torch, sqrt

__all__ = [
    "block_standard_error",
    "equivariance_rmse",
    "per_atom_rmse",
    "pooled_residual",
    "pooled_residual_per_atom",
    "residual_rmse",
    "weighted_mean",
    "weighted_variance",
]


def weighted_mean(values: Array, weights: Array) -> Array:
    """``sum_i w_i values[i]`` over the first axis, in float64."""
    values = as_float64(values)
    weights = as_float64(weights, like=values)
    weighted = weights.reshape((-1,) + (1,) * (values.ndim - 1)) * values
    return weighted.sum(axis=0)  # type: ignore[call-overload]  # torch takes axis= too


def weighted_variance(values: Array, weights: Array, mean: Array | None = None) -> Array:
    """Per-component ``sum_i w_i (values[i] - mean)^2`` (centred, float64).

    Returns an array of the shape of one ``values[i]``.
    """
    values = as_float64(values)
    if mean is None:
        mean = weighted_mean(values, weights)
    deviation = values - mean
    return weighted_mean(deviation * deviation, weights)


def equivariance_rmse(values: Array, weights: Array, mean=None) -> Scalar:
    """``sqrt(V / d)``: the spread over the rule as an RMSE per component.

    ``values`` has shape (M, ...) with ``d = prod(...)`` components. Returns NaN
    for a one-point rule, where no spread can be measured.
    """
    values = as_float64(values)
    if len(values) < 2:
        return _scalar(float("nan"), values)
    variance = weighted_variance(values, weights, mean)
    size = max(int(np.prod(variance.shape)), 1)
    return _scalar(sqrt(clip_positive(variance.sum()) / size), values)


def per_atom_rmse(values: Array, weights: Array, mean=None) -> Array:
    """Per-atom ``sqrt(V_a / 3)`` for stacked (M, N, 3) vectors; NaN for M = 1."""
    values = as_float64(values)
    if len(values) < 2:
        return values[0, :, 0] * float("nan")
    variance = weighted_variance(values, weights, mean)
    total = variance.sum(axis=-1)  # type: ignore[call-overload]  # torch takes axis= too
    return sqrt(clip_positive(total) / values.shape[-1])


def residual_rmse(first: Array, second: Array) -> Scalar:
    """Residual of a symmetrized output from two independently oriented averages.

    ``first`` and ``second`` are the same rule's averages with the rule in two
    orientations, the second a Haar-random rotation of the first. Both are
    unbiased for the exact Haar average ``H`` and the cross term vanishes, so
    ``E|first - second|^2 = |first - H|^2 + E|second - H|^2``: half of it
    estimates the squared residual of a typically oriented average.
    Returned as an RMSE per component, like ``equivariance_rmse``.
    """
    first = as_float64(first)
    difference = first - as_float64(second, like=first)
    return _scalar(sqrt((difference * difference).mean() / 2.0), first)


def _pooled_squares(averages: list[Array], improper: list[bool], reduce):
    """``reduce(difference) / 2`` over every pair of ``averages``, the pairs of
    proper and of improper relative orientation averaged separately and the two
    means averaged (see ``pooled_residual``)."""
    if len(averages) < 2 or len(averages) != len(improper):
        raise ValueError("pooled residuals need >= 2 averages and one parity flag per average")
    classes: dict[bool, list] = {False: [], True: []}
    for i in range(len(averages)):
        first = as_float64(averages[i])
        for j in range(i + 1, len(averages)):
            difference = first - as_float64(averages[j], like=first)
            classes[bool(improper[i]) != bool(improper[j])].append(reduce(difference) / 2.0)
    means = [sum(squares) / len(squares) for squares in classes.values() if squares]
    return sum(means) / len(means)


def pooled_residual(averages: list[Array], improper: list[bool]) -> Scalar:
    """Residual of a symmetrized output from one rule's averages in several orientations.

    ``averages[k]`` is the rule's average with the rule in orientation ``Q_k``
    (``averages[0]`` the one returned to the user); ``improper[k]`` says
    whether ``Q_k`` is a rotoinversion. Every pair gives an estimate like
    ``residual_rmse``; the pairs whose relative orientation ``Q_i^T Q_j`` is
    proper and those where it is improper are averaged separately and the two
    means averaged, so that a rule without inversion is judged on O(3) (half
    proper, half improper) whatever the mix of orientations. A square is
    averaged before the root (each pair's square is unbiased). Returns an RMSE
    per component, a float for numpy and a 0-d tensor for torch input.
    """
    squares = _pooled_squares(averages, improper, lambda d: (d * d).mean())
    return _scalar(sqrt(squares), as_float64(averages[0]))


def pooled_residual_per_atom(forces: list[Array], improper: list[bool]) -> Array:
    """Per-atom residual of symmetrized forces ``(N, 3)`` from one rule's averages in
    several orientations, pooled as ``pooled_residual``: the estimated length of
    each atom's force error vector (eV/Å), shape ``(N,)``, same array type."""
    squares = _pooled_squares(forces, improper, lambda d: (d * d).sum(axis=-1))
    return sqrt(squares)


def block_standard_error(values: np.ndarray, blocks: int = 10) -> float:
    """Standard error of the mean of a correlated series, from block averages.

    The series is cut into ``blocks`` contiguous blocks (fewer when short);
    the spread of the block means covers the correlation between nearby
    MD steps that ``std / sqrt(n)`` would ignore. NaN below 2 values.
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return float("nan")
    blocks = min(blocks, n)
    size = n // blocks
    means = values[: blocks * size].reshape(blocks, size).mean(axis=1)
    return float(means.std(ddof=1) / np.sqrt(blocks))


def _scalar(value, like):
    """A Python float for numpy input, a 0-d float64 tensor for torch input."""
    if is_torch(like):
        import torch

        return torch.as_tensor(value, dtype=torch.float64, device=like.device)
    return float(value)
