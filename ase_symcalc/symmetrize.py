"""Back-rotate, average and measure the spread: the symmetrizer's pure core.

Given a model's outputs ``u(g_i) = f(g_i.x)`` on the copies of a rule, the
back-rotated responses ``z(g_i) = rho(g_i)^-1 u(g_i)`` are averaged with the
rule's weights (reference section 2) and their spread gives the equivariance
errors (section 4). float64, no ASE; numpy arrays or torch tensors alike (the
ASE calculator and the torch-sim model share this one implementation).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._arrays import (
    Array,
    Scalar,
    as_float64,
    clip_positive,
    cross,
    is_torch,
    pinv,
    segment_sum,
    sqrt,
)
from .evaluators import StackedOutputs
from .metrics import per_atom_rmse, weighted_mean, weighted_variance
from .structure_symmetry import (
    StructureSymmetry,
    symmetrize_forces,
    symmetrize_per_atom,
    symmetrize_stress,
)
from .transforms import back_rotate_forces, back_rotate_stress

__all__ = [
    "SymmetrizedOutputs",
    "Systems",
    "symmetrize_systems",
    "back_rotate",
    "estimate_equivariance_errors",
    "with_errors_of",
    "remove_net_force",
    "remove_net_torque",
    "project_onto_structure",
    "symmetrize",
]


@dataclass
class SymmetrizedOutputs:
    """Averages (in the input's frame) and equivariance errors.

    Of one structure (``symmetrize``): numpy arrays and floats from numpy
    outputs, torch tensors (0-d for the scalars) from torch outputs. Of a
    batch (``symmetrize_systems``): the per-structure values (energy, the
    scalar errors) are (S,) arrays, the stresses (S, 3, 3), the per-atom ones
    (N, ...) over the batch's atoms.
    """

    energy: Scalar | Array
    forces: Array | None
    stress: Array | None  # full 3x3
    energies: Array | None
    energy_error: Scalar | Array
    forces_error: Scalar | Array | None
    forces_error_per_atom: Array | None
    stress_error: Scalar | Array | None
    direct_forces: Array | None = None
    direct_forces_error: Scalar | Array | None = None
    direct_stress: Array | None = None
    #: the average of a base's own free energy; None: the same as ``energy``
    free_energy: Scalar | Array | None = None


def back_rotate(outputs: StackedOutputs, matrices: Array) -> StackedOutputs:
    """``z(g_i) = rho(g_i)^-1 u(g_i)`` for every stacked output."""

    def forces(values):
        return None if values is None else back_rotate_forces(values, matrices)

    def stress(values):
        if values is None:
            return None
        # a batch's (M, S, 3, 3): every structure of copy m rotated by g_m
        g = matrices if values.ndim == 3 else matrices[:, None]
        return back_rotate_stress(values, g)

    return StackedOutputs(
        energy=outputs.energy,
        forces=forces(outputs.forces),
        stress=stress(outputs.stress),
        energies=outputs.energies,
        direct_forces=forces(outputs.direct_forces),
        direct_stress=stress(outputs.direct_stress),
        free_energy=outputs.free_energy,
    )


def remove_net_force(forces: np.ndarray) -> np.ndarray:
    """Subtract the mean force per atom so that the forces sum to zero.

    Works on (N, 3) or stacked (M, N, 3). Direct-force models predict a small
    spurious net force that makes the centre of mass drift in MD.
    """
    return forces - forces.mean(axis=-2, keepdims=True)


def remove_net_torque(forces: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Remove the net torque of forces whose net force is zero.

    Adds the rigid-rotation field ``omega x (r_i - c)`` (``c`` the centroid)
    with ``I omega = -tau``, ``I = sum_i |d_i|^2 1 - d_i d_i^T`` and ``tau`` the
    torque: the correction has no net force and cancels the torque exactly
    (least squares, via the pseudo-inverse, for linear molecules). Only
    meaningful for non-periodic systems. Works on (N, 3) or stacked (M, N, 3).
    """
    d = as_float64(positions, like=forces)
    d = d - d.mean(axis=0)
    inertia = (d * d).sum() * as_float64(np.eye(3), like=d) - d.T @ d
    torque = cross(d, forces).sum(axis=-2)  # (..., 3)
    omega = -torque @ pinv(inertia).T
    return forces + cross(omega[..., None, :], d)


@dataclass(frozen=True)
class Systems:
    """Which atoms belong to which structure of a batch.

    ``index`` (N,) gives every atom's structure, ``counts`` (S,) the atoms of
    each (float64), ``size`` is S. The ASE calculator's one structure is
    ``Systems.single``; the torch-sim model's batch ``Systems.of_batch``.
    Stacked outputs of a batch hold energy (M, S), forces (M, N, 3), stress
    (M, S, 3, 3) and per-atom energies (M, N): every copy ``m`` rotates every
    structure of the batch by the same ``g_m``.
    """

    index: Array
    counts: Array
    size: int

    @classmethod
    def single(cls, n_atoms: int, like: Array | None = None) -> Systems:
        index = np.zeros(n_atoms, dtype=np.int64)
        counts = np.array([float(n_atoms)])
        if like is not None and is_torch(like):
            import torch

            return cls(
                torch.as_tensor(index, device=like.device),
                torch.as_tensor(counts, device=like.device),
                1,
            )
        return cls(index, counts, 1)

    @classmethod
    def of_batch(cls, system_idx, n_systems: int) -> Systems:
        """From torch-sim's ``system_idx`` (a tensor; no host sync)."""
        import torch

        # index_add, not bincount: bincount reads the index's range back to the host
        ones = torch.ones_like(system_idx, dtype=torch.float64)
        counts = ones.new_zeros(n_systems).index_add_(0, system_idx, ones)
        return cls(system_idx, counts, n_systems)

    def sum(self, values: Array, axis: int = 0) -> Array:
        """Per-structure sums of per-atom ``values`` along ``axis``."""
        return segment_sum(values, self.index, self.size, axis)


def _clean_forces(forces, net_force, positions, systems: Systems):
    # torque is origin-independent only once the net force is zero
    if forces is not None and (net_force or positions is not None):
        mean = systems.sum(forces, axis=-2) / as_float64(systems.counts, like=forces)[:, None]
        forces = forces - mean[..., systems.index, :]
    if forces is not None and positions is not None:
        if systems.size != 1:
            raise ValueError("net torque removal takes one structure at a time")
        forces = remove_net_torque(forces, positions)
    return forces


def _spread(values, weights, mean):
    """Per-element variance over the copies (axis 0); None for one copy."""
    return None if len(values) < 2 else weighted_variance(values, weights, mean)


def _rms(variance, components: int, like):
    if variance is None:
        return like * float("nan")
    return sqrt(clip_positive(variance) / components)


def _per_system_rms(per_atom, systems: Systems, counts):
    """Each structure's RMS over its atoms of per-atom RMS values (NaN stays NaN)."""
    return sqrt(systems.sum(per_atom * per_atom) / counts)


def symmetrize_systems(
    outputs: StackedOutputs,
    matrices: Array,
    weights: Array,
    systems: Systems,
    *,
    net_force_removal: bool = False,
    net_torque_positions: Array | None = None,
) -> SymmetrizedOutputs:
    """``symmetrize`` for every structure of a batch at once (see ``Systems`` for
    the shapes): averages, and errors per structure (S,) and per atom (N,).

    Vectorised over structures and copies: segment sums, no loop, no host
    sync for torch tensors.
    """
    z = back_rotate(outputs, matrices)
    forces = _clean_forces(z.forces, net_force_removal, net_torque_positions, systems)
    energy = weighted_mean(z.energy, weights)  # (S,)
    variance = _spread(as_float64(z.energy), weights, energy)
    result = SymmetrizedOutputs(
        energy=energy,
        forces=None,
        stress=None,
        energies=None,
        energy_error=_rms(variance, 1, energy),
        forces_error=None,
        forces_error_per_atom=None,
        stress_error=None,
    )
    counts = as_float64(systems.counts, like=energy)
    if forces is not None:
        forces = as_float64(forces)
        result.forces = weighted_mean(forces, weights)
        result.forces_error_per_atom = per_atom_rmse(forces, weights, result.forces)
        result.forces_error = _per_system_rms(result.forces_error_per_atom, systems, counts)
    if z.stress is not None:
        result.stress = weighted_mean(z.stress, weights)  # (S, 3, 3)
        variance = _spread(as_float64(z.stress), weights, result.stress)
        total = None if variance is None else variance.sum(axis=(-2, -1))
        result.stress_error = _rms(total, 9, energy)
    if z.energies is not None:
        result.energies = weighted_mean(z.energies, weights)
    direct = _clean_forces(z.direct_forces, True, net_torque_positions, systems)
    if direct is not None:
        direct = as_float64(direct)
        result.direct_forces = weighted_mean(direct, weights)
        per_atom = per_atom_rmse(direct, weights, result.direct_forces)
        result.direct_forces_error = _per_system_rms(per_atom, systems, counts)
    if z.direct_stress is not None:
        result.direct_stress = weighted_mean(z.direct_stress, weights)
    if z.free_energy is not None:
        result.free_energy = weighted_mean(z.free_energy, weights)
    return result


def _per_structure(outputs: StackedOutputs, change) -> StackedOutputs:
    """``outputs`` with ``change`` applied to the fields that hold one value per
    structure (energy, stress, direct stress, free energy)."""
    fields = ("energy", "stress", "direct_stress", "free_energy")
    changed: dict[str, Any] = {}
    for name in fields:
        value = getattr(outputs, name)
        changed[name] = None if value is None else change(value)
    return replace(outputs, **changed)


def as_batch(outputs: StackedOutputs) -> StackedOutputs:
    """One structure's stacked outputs as a batch of one (energy (M, 1), stress (M, 1, 3, 3))."""
    return _per_structure(outputs, lambda values: values[:, None])


def first_structure(outputs: StackedOutputs) -> StackedOutputs:
    """One copy's outputs of a batch of one (``select``-ed: energy (1,), stress (1, 3, 3))
    as one structure's: energy a scalar, stress 3x3."""
    return _per_structure(outputs, lambda values: values[0])


def system(result: SymmetrizedOutputs, index: int = 0) -> SymmetrizedOutputs:
    """Structure ``index`` of a batch of one's results: per-structure values as
    scalars (floats for numpy, 0-d tensors for torch) and 3x3 stresses."""

    def scalar(value):
        if value is None:
            return None
        value = value[index]
        return value if is_torch(value) else float(value)

    def pick(value):
        return None if value is None else value[index]

    return replace(
        result,
        energy=scalar(result.energy),
        energy_error=scalar(result.energy_error),
        forces_error=scalar(result.forces_error),
        stress_error=scalar(result.stress_error),
        direct_forces_error=scalar(result.direct_forces_error),
        free_energy=scalar(result.free_energy),
        stress=pick(result.stress),
        direct_stress=pick(result.direct_stress),
    )


def symmetrize(
    outputs: StackedOutputs,
    matrices: Array,
    weights: Array,
    *,
    net_force_removal: bool = False,
    net_torque_positions: Array | None = None,
) -> SymmetrizedOutputs:
    """Average the back-rotated outputs of one structure and measure their spread.

    With ``net_force_removal`` the net force is removed from every back-rotated
    copy before averaging, so the forces error measures the spread of the
    forces actually used (a spurious net force would otherwise dominate it).
    With ``net_torque_positions`` (the input's positions, non-periodic systems)
    the net torque is removed as well. Direct forces reported beside
    conservative ones always lose their net force (as direct forces do by
    default in the calculator). ``symmetrize_systems`` for a batch of one.
    """
    n_atoms = 0 if outputs.forces is None else outputs.forces.shape[1]
    if outputs.energies is not None:
        n_atoms = outputs.energies.shape[1]
    if outputs.direct_forces is not None:
        n_atoms = outputs.direct_forces.shape[1]
    batch = symmetrize_systems(
        as_batch(outputs),
        matrices,
        weights,
        Systems.single(n_atoms, like=outputs.energy),
        net_force_removal=net_force_removal,
        net_torque_positions=net_torque_positions,
    )
    return system(batch)


def estimate_equivariance_errors(
    outputs: StackedOutputs,
    matrices: Array,
    *,
    net_force_removal: bool = False,
    net_torque_positions: Array | None = None,
    systems: Systems | None = None,
) -> SymmetrizedOutputs:
    """Unbiased estimate of the equivariance errors from ``n >= 2`` random orientations.

    ``matrices`` are independent Haar-random elements of O(3) (or SO(3)).
    Their back-rotated outputs ``z_k`` are independent draws from the
    distribution of ``z(g)`` over the group, so the sample variance with
    Bessel's correction, ``sum_k |z_k - zbar|^2 / (n - 1)``, is an unbiased
    estimate of the squared A metric (the variance over O(3), which a fine
    rule's spread converges to); for two orientations it is
    ``|z_1 - z_2|^2 / 2``. Returns ``symmetrize``'s outputs for the equal-
    weight average of the ``n`` copies with every error so corrected (the
    errors are square roots: unbiased are their squares, and run means
    should be taken as root mean squares). With ``systems``, for every
    structure of a batch (``symmetrize_systems``).
    """
    n = len(matrices)
    if n < 2:
        raise ValueError(f"an equivariance error needs at least 2 orientations, got {n}")
    average = (
        symmetrize if systems is None else functools.partial(symmetrize_systems, systems=systems)
    )
    estimate = average(
        outputs,
        matrices,
        np.full(n, 1.0 / n),
        net_force_removal=net_force_removal,
        net_torque_positions=net_torque_positions,
    )
    return with_errors_of(estimate, estimate, scale=float(np.sqrt(n / (n - 1))))


#: the fields of ``SymmetrizedOutputs`` that hold equivariance errors
ERROR_FIELDS = (
    "energy_error",
    "forces_error",
    "forces_error_per_atom",
    "stress_error",
    "direct_forces_error",
)


def with_errors_of(
    outputs: SymmetrizedOutputs, source: SymmetrizedOutputs, scale: float = 1.0
) -> SymmetrizedOutputs:
    """``outputs`` with every equivariance error taken from ``source`` (times ``scale``)."""

    def error(name):
        value = getattr(source, name)
        return None if value is None else value * scale

    return replace(outputs, **{name: error(name) for name in ERROR_FIELDS})


def project_onto_structure(
    outputs: SymmetrizedOutputs, symmetry: StructureSymmetry
) -> SymmetrizedOutputs:
    """Average the (O(3)-averaged) outputs over the structure's own operations.

    Forces, stress, per-atom energies and per-atom forces errors are
    projected (``structure_symmetry``); the energy and the scalar errors are
    invariant and stay as they are.
    """
    if symmetry.is_trivial:
        return outputs

    def forces(values):
        return None if values is None else symmetrize_forces(values, symmetry)

    def stress(values):
        return None if values is None else symmetrize_stress(values, symmetry)

    def per_atom(values):
        return None if values is None else symmetrize_per_atom(values, symmetry)

    return replace(
        outputs,
        forces=forces(outputs.forces),
        stress=stress(outputs.stress),
        energies=per_atom(outputs.energies),
        forces_error_per_atom=per_atom(outputs.forces_error_per_atom),
        direct_forces=forces(outputs.direct_forces),
        direct_stress=stress(outputs.direct_stress),
    )
