"""Elastic constants from finite strains and the model's stress.

``C_ij = d sigma_i / d epsilon_j`` (Voigt, engineering shear strains), by
central differences of the stress at strains ``+-delta`` for each of the six
strain components and each magnitude in ``strains``; the magnitudes are then
extrapolated to zero strain (Richardson: the central difference's error is
``O(delta^2)``), so the result does not depend on the choice of magnitudes to
first order. ASE's stress sign: ``sigma = (1/V) dE/d epsilon``.

For a cubic crystal with its axes along x, y, z the symmetry-equivalent
constants must agree (C11 = C22 = C33, C12 = C13 = C23, C44 = C55 = C66) and
the others vanish; ``cubic_spread`` measures how far they are from it.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms, units

from ._common import check_calculators, check_number, require_crystal

__all__ = ["cubic_spread", "elastic_constants", "elastic_tensors", "strain_matrix"]

_VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


def strain_matrix(component: int, delta: float) -> np.ndarray:
    """Symmetric strain tensor of Voigt component ``component`` (engineering shear)."""
    eps = np.zeros((3, 3))
    i, j = _VOIGT[component]
    if i == j:
        eps[i, i] = delta
    else:
        eps[i, j] = eps[j, i] = delta / 2.0
    return eps


def _strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    strained = atoms.copy()
    strained.calc = None
    strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return strained


def _stress(calculator, strained: Atoms) -> np.ndarray:
    work = strained.copy()
    work.calc = calculator
    return np.asarray(work.get_stress(voigt=True), dtype=np.float64)


def elastic_constants(
    calculator, atoms: Atoms, *, strains=(0.005, 0.01), progress=None
) -> np.ndarray:
    """The 6x6 elastic tensor in GPa (Voigt order xx, yy, zz, yz, xz, xy)."""
    return elastic_tensors({"model": calculator}, atoms, strains=strains, progress=progress)[
        "model"
    ]


def elastic_tensors(
    calculators: dict, atoms: Atoms, *, strains=(0.005, 0.01), progress=None
) -> dict[str, np.ndarray]:
    """``elastic_constants`` of several calculators, each strained cell run by
    all of them in turn (a view of another calculator's results is then free)."""
    require_crystal(atoms, "elastic constants")
    check_calculators(calculators)
    try:
        strains = sorted(check_number("strain", s, fix="e.g. 0.005, 0.01") for s in strains)
    except TypeError as error:
        raise ValueError(f"strains must be a list of magnitudes, got {strains!r}") from error
    if not strains:
        raise ValueError("strains must hold at least one magnitude, e.g. (0.005, 0.01)")
    if strains[-1] > 0.1:
        raise ValueError(
            f"strain {strains[-1]:g} is beyond the linear response (10%); use e.g. 0.005, 0.01"
        )
    estimates: dict[str, list] = {name: [] for name in calculators}
    for delta in strains:
        c = {name: np.zeros((6, 6)) for name in calculators}
        for j in range(6):
            for sign in (1.0, -1.0):
                cell = _strained(atoms, strain_matrix(j, sign * delta))
                for name, calculator in calculators.items():
                    c[name][:, j] += sign * _stress(calculator, cell) / (2.0 * delta)
            if progress is not None:
                progress(len(calculators))
        for name in calculators:
            estimates[name].append(c[name])
    result = {}
    for name, values in estimates.items():
        if len(strains) == 1:
            c = values[0]
        else:  # Richardson on the two smallest: the O(delta^2) term cancels
            d1, d2 = strains[0], strains[1]
            c = (d2**2 * values[0] - d1**2 * values[1]) / (d2**2 - d1**2)
        result[name] = c / units.GPa
    return result


def cubic_spread(c: np.ndarray) -> dict[str, float]:
    """Spreads (GPa) of the cubic-equivalent constants and the largest forbidden entry."""
    c = np.asarray(c)
    groups = {
        "C11": [c[0, 0], c[1, 1], c[2, 2]],
        "C12": [c[0, 1], c[0, 2], c[1, 2], c[1, 0], c[2, 0], c[2, 1]],
        "C44": [c[3, 3], c[4, 4], c[5, 5]],
    }
    allowed = np.zeros((6, 6), dtype=bool)
    allowed[:3, :3] = True
    allowed[3, 3] = allowed[4, 4] = allowed[5, 5] = True
    spread = {name: float(np.ptp(values)) for name, values in groups.items()}
    spread["forbidden_max"] = float(np.abs(c[~allowed]).max())
    return spread


def cubic_summary(c: np.ndarray) -> dict[str, float]:
    """Mean C11, C12, C44 and the bulk modulus (GPa), Voigt average for B."""
    c = np.asarray(c)
    c11 = float(np.mean([c[0, 0], c[1, 1], c[2, 2]]))
    c12 = float(np.mean([c[0, 1], c[0, 2], c[1, 2], c[1, 0], c[2, 0], c[2, 1]]))
    c44 = float(np.mean([c[3, 3], c[4, 4], c[5, 5]]))
    bulk = float(c[:3, :3].sum() / 9.0)
    return {"C11": c11, "C12": c12, "C44": c44, "bulk_modulus": bulk}
