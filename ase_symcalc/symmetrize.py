"""Back-rotate, average and measure the spread: the symmetrizer's pure core.

Given a model's outputs ``u(g_i) = f(g_i.x)`` on the copies of a rule, the
back-rotated responses ``z(g_i) = rho(g_i)^-1 u(g_i)`` are averaged with the
rule's weights (reference section 2) and their spread gives the equivariance
errors (section 4). Numpy, float64, no ASE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .evaluators import StackedOutputs
from .metrics import equivariance_rmse, per_atom_rmse, weighted_mean
from .transforms import back_rotate_forces, back_rotate_stress

__all__ = ["SymmetrizedOutputs", "back_rotate", "remove_net_force", "symmetrize"]


@dataclass
class SymmetrizedOutputs:
    """Averages (in the input's frame) and equivariance errors of one structure."""

    energy: float
    forces: np.ndarray | None
    stress: np.ndarray | None  # full 3x3
    energies: np.ndarray | None
    energy_error: float
    forces_error: float | None
    forces_error_per_atom: np.ndarray | None
    stress_error: float | None


def back_rotate(outputs: StackedOutputs, matrices: np.ndarray) -> StackedOutputs:
    """``z(g_i) = rho(g_i)^-1 u(g_i)`` for every stacked output."""
    return StackedOutputs(
        energy=outputs.energy,
        forces=None if outputs.forces is None else back_rotate_forces(outputs.forces, matrices),
        stress=None if outputs.stress is None else back_rotate_stress(outputs.stress, matrices),
        energies=outputs.energies,
    )


def remove_net_force(forces: np.ndarray) -> np.ndarray:
    """Subtract the mean force per atom so that the forces sum to zero.

    Works on (N, 3) or stacked (M, N, 3). Direct-force models predict a small
    spurious net force that makes the centre of mass drift in MD.
    """
    return forces - forces.mean(axis=-2, keepdims=True)


def symmetrize(
    outputs: StackedOutputs,
    matrices: np.ndarray,
    weights: np.ndarray,
    *,
    net_force_removal: bool = False,
) -> SymmetrizedOutputs:
    """Average the back-rotated outputs and measure their spread.

    With ``net_force_removal`` the net force is removed from every back-rotated
    copy before averaging, so the forces error measures the spread of the
    forces actually used (a spurious net force would otherwise dominate it).
    """
    z = back_rotate(outputs, matrices)
    forces = z.forces
    if forces is not None and net_force_removal:
        forces = remove_net_force(forces)

    energy = float(weighted_mean(z.energy, weights))
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
    return result
