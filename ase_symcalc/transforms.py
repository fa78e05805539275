"""How structures and outputs transform under O(3): pure numpy, float64.

A group element ``g`` acts on a structure ``x = (P, H)`` (rows are atoms and
lattice vectors) as ``g.x = (P g^T, H g^T)``. For an improper ``g = -R`` the
cell is taken as ``H R^T`` instead of ``-H R^T``: both generate the same
lattice, and the cell stays right-handed.

Back-transforms ``rho(g)^-1 y`` bring an output computed on ``g.x`` back to the
frame of ``x``:

==========  ================  ===============
output      ``rho(g) y``      ``rho(g)^-1 y``
==========  ================  ===============
energy      ``y``             ``y``
forces      ``F g^T``         ``y g``
stress      ``g S g^T``       ``g^T y g``
axial vec.  ``det g V g^T``   ``det g y g``
==========  ================  ===============
"""

from __future__ import annotations

import numpy as np

from ._arrays import Array, as_float64

__all__ = [
    "apply_to_positions",
    "apply_to_cell",
    "back_rotate_forces",
    "back_rotate_stress",
    "rotate_forces",
    "rotate_stress",
    "proper_part",
    "voigt_to_matrix",
    "matrix_to_voigt",
]


def proper_part(g: np.ndarray) -> np.ndarray:
    """The rotation ``R`` with ``g = det(g) R``; works on (3, 3) or (M, 3, 3)."""
    g = np.asarray(g, dtype=np.float64)
    det = np.linalg.det(g)
    return g * np.sign(det)[..., None, None]


def apply_to_positions(positions: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Positions (or any polar per-atom vectors) of ``g.x``: ``P g^T``."""
    return np.asarray(positions, dtype=np.float64) @ np.asarray(g, dtype=np.float64).T


def apply_to_cell(cell: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Cell of ``g.x``: ``H R^T`` with ``R`` the proper part of ``g``.

    The lattice of ``H (-R)^T`` is the same point set as that of ``H R^T``; the
    latter keeps the cell's handedness (ASE's NPT needs that).
    """
    return np.asarray(cell, dtype=np.float64) @ proper_part(g).T


# The four output transforms take numpy arrays or torch tensors (float64):
# the calculator and the torch-sim model share them.


def rotate_forces(forces: Array, g: Array) -> Array:
    """``rho(g) F = F g^T``; ``g`` may be (3, 3) or stacked (M, 3, 3)."""
    forces = as_float64(forces)
    g = as_float64(g, like=forces)
    return forces @ g.swapaxes(-1, -2)


def back_rotate_forces(forces: Array, g: Array) -> Array:
    """``rho(g)^-1 F = F g``; (N, 3) with (3, 3), or (M, N, 3) with (M, 3, 3)."""
    forces = as_float64(forces)
    return forces @ as_float64(g, like=forces)


def rotate_stress(stress: Array, g: Array) -> Array:
    """``rho(g) S = g S g^T`` for 3x3 stress (stacked or not)."""
    stress = as_float64(stress)
    g = as_float64(g, like=stress)
    return g @ stress @ g.swapaxes(-1, -2)


def back_rotate_stress(stress: Array, g: Array) -> Array:
    """``rho(g)^-1 S = g^T S g`` for 3x3 stress (stacked or not)."""
    stress = as_float64(stress)
    g = as_float64(g, like=stress)
    return g.swapaxes(-1, -2) @ stress @ g


_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def voigt_to_matrix(voigt: Array) -> Array:
    """ASE Voigt ``(xx, yy, zz, yz, xz, xy)`` to a symmetric 3x3 matrix."""
    v = np.asarray(voigt, dtype=np.float64)
    xx, yy, zz, yz, xz, xy = (v[..., k] for k in range(6))
    return np.stack(
        [
            np.stack([xx, xy, xz], axis=-1),
            np.stack([xy, yy, yz], axis=-1),
            np.stack([xz, yz, zz], axis=-1),
        ],
        axis=-2,
    )


def matrix_to_voigt(matrix: Array) -> Array:
    """3x3 to ASE Voigt order, symmetrising first (the mean of ij and ji)."""
    m = np.asarray(matrix, dtype=np.float64)
    sym = 0.5 * (m + np.swapaxes(m, -1, -2))
    return np.stack([sym[..., i, j] for i, j in _VOIGT], axis=-1)
