"""Back-rotate, average and measure the spread: the symmetrizer's pure core.

Given a model's outputs ``u(g_i) = f(g_i.x)`` on the copies of a rule, the
back-rotated responses ``z(g_i) = rho(g_i)^-1 u(g_i)`` are averaged with the
rule's weights (reference section 2) and their spread gives the equivariance
errors (section 4). float64, no ASE; numpy arrays or torch tensors alike (the
ASE calculator and the torch-sim model share this one implementation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ._arrays import Array, Scalar, as_float64, cross, is_torch, pinv
from .evaluators import StackedOutputs
from .metrics import equivariance_rmse, per_atom_rmse, weighted_mean
from .structure_symmetry import (
    StructureSymmetry,
    symmetrize_forces,
    symmetrize_per_atom,
    symmetrize_stress,
)
from .transforms import back_rotate_forces, back_rotate_stress

__all__ = [
    "SymmetrizedOutputs",
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
    """Averages (in the input's frame) and equivariance errors of one structure.

    numpy arrays and floats from numpy outputs (the ASE calculator), torch
    tensors (0-d for the scalars) from torch outputs (the torch-sim model).
    """

    energy: Scalar
    forces: Array | None
    stress: Array | None  # full 3x3
    energies: Array | None
    energy_error: Scalar
    forces_error: Scalar | None
    forces_error_per_atom: Array | None
    stress_error: Scalar | None
    direct_forces: Array | None = None
    direct_forces_error: Scalar | None = None
    direct_stress: Array | None = None
    #: the average of a base's own free energy; None: the same as ``energy``
    free_energy: Scalar | None = None


def back_rotate(outputs: StackedOutputs, matrices: Array) -> StackedOutputs:
    """``z(g_i) = rho(g_i)^-1 u(g_i)`` for every stacked output."""

    def forces(values):
        return None if values is None else back_rotate_forces(values, matrices)

    def stress(values):
        return None if values is None else back_rotate_stress(values, matrices)

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


def _clean_forces(forces, net_force, positions):
    # torque is origin-independent only once the net force is zero
    if forces is not None and (net_force or positions is not None):
        forces = remove_net_force(forces)
    if forces is not None and positions is not None:
        forces = remove_net_torque(forces, positions)
    return forces


def symmetrize(
    outputs: StackedOutputs,
    matrices: Array,
    weights: Array,
    *,
    net_force_removal: bool = False,
    net_torque_positions: Array | None = None,
) -> SymmetrizedOutputs:
    """Average the back-rotated outputs and measure their spread.

    With ``net_force_removal`` the net force is removed from every back-rotated
    copy before averaging, so the forces error measures the spread of the
    forces actually used (a spurious net force would otherwise dominate it).
    With ``net_torque_positions`` (the input's positions, non-periodic systems)
    the net torque is removed as well. Direct forces reported beside
    conservative ones always lose their net force (as direct forces do by
    default in the calculator).
    """
    z = back_rotate(outputs, matrices)
    forces = _clean_forces(z.forces, net_force_removal, net_torque_positions)

    mean_energy = weighted_mean(z.energy, weights)
    # numpy: a float; torch: a 0-d tensor on the model's device
    energy: Scalar = mean_energy if is_torch(mean_energy) else float(mean_energy)  # type: ignore[assignment]
    result = SymmetrizedOutputs(
        energy=energy,
        forces=None,
        stress=None,
        energies=None,
        energy_error=equivariance_rmse(z.energy, weights, energy),
        forces_error=None,
        forces_error_per_atom=None,
        stress_error=None,
    )
    if forces is not None:
        mean = weighted_mean(forces, weights)
        result.forces = mean
        result.forces_error = equivariance_rmse(forces, weights, mean)
        result.forces_error_per_atom = per_atom_rmse(forces, weights, mean)
    if z.stress is not None:
        mean = weighted_mean(z.stress, weights)
        result.stress = mean
        result.stress_error = equivariance_rmse(z.stress, weights, mean)
    if z.energies is not None:
        result.energies = weighted_mean(z.energies, weights)
    direct = _clean_forces(z.direct_forces, True, net_torque_positions)
    if direct is not None:
        result.direct_forces = weighted_mean(direct, weights)
        result.direct_forces_error = equivariance_rmse(direct, weights, result.direct_forces)
    if z.direct_stress is not None:
        result.direct_stress = weighted_mean(z.direct_stress, weights)
    if z.free_energy is not None:
        free_energy = weighted_mean(z.free_energy, weights)
        result.free_energy = free_energy if is_torch(free_energy) else float(free_energy)  # type: ignore[assignment]
    return result


def estimate_equivariance_errors(
    outputs: StackedOutputs,
    matrices: Array,
    *,
    net_force_removal: bool = False,
    net_torque_positions: Array | None = None,
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
    should be taken as root mean squares).
    """
    n = len(matrices)
    if n < 2:
        raise ValueError(f"an equivariance error needs at least 2 orientations, got {n}")
    estimate = symmetrize(
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
