"""Relaxation of positions and cell, with the space group before and after.

A model that is not rotationally equivariant pushes a high-symmetry crystal
off its space group: its forces and stress carry components that the
symmetry forbids. Positions and cell are relaxed together
(``FrechetCellFilter`` with an ASE optimizer), and spglib reads the space
group at tolerances from 1e-5 to 1e-1 Å before and after.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ._common import (
    check_calculators,
    check_count,
    check_number,
    require_crystal,
    spacegroups,
)

__all__ = ["refined", "relax", "relax_report"]


def relax(calculator, atoms: Atoms, *, fmax: float = 1e-3, steps: int = 300, optimizer="BFGS"):
    """Relax a copy of ``atoms``; returns (relaxed copy, steps taken, converged)."""
    import ase.optimize
    from ase.filters import FrechetCellFilter

    require_crystal(atoms, "relax")
    fmax = check_number("fmax", fmax, fix="eV/Å, e.g. 1e-3")
    steps = check_count("steps", steps)
    from ase.optimize.optimize import Optimizer

    chosen = getattr(ase.optimize, optimizer, None) if isinstance(optimizer, str) else None
    if not (isinstance(chosen, type) and issubclass(chosen, Optimizer)):
        raise ValueError(
            f"optimizer must name an optimizer of ase.optimize (BFGS, FIRE, LBFGS, ...), "
            f"got {optimizer!r}"
        )
    work = atoms.copy()
    work.calc = calculator
    opt = getattr(ase.optimize, optimizer)(FrechetCellFilter(work), logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    relaxed = work.copy()
    relaxed.calc = None
    return relaxed, int(opt.nsteps), converged


def refined(atoms: Atoms, tolerance: float) -> Atoms:
    """A copy whose space group at ``tolerance`` (Å) is exact (ASE's ``refine_symmetry``).

    What ASE's ``FixSymmetry`` does before a relaxation: forces and stress
    averaged over the structure's group keep that group, but only a structure
    that has it exactly can keep it at every tolerance.
    """
    from ase.spacegroup.symmetrize import refine_symmetry

    if not tolerance > 0:
        raise ValueError(f"the refine tolerance must be a positive distance in Å, got {tolerance}")
    copy = atoms.copy()
    copy.calc = None
    refine_symmetry(copy, symprec=tolerance, verbose=False)
    return copy


def relax_report(
    calculators: dict,
    atoms: Atoms,
    *,
    fmax=1e-3,
    steps=300,
    optimizer="BFGS",
    starts: dict | None = None,
):
    """Relax with every calculator; space groups, lattice parameters, steps.

    ``starts`` maps a calculator's name to its own starting structure (e.g.
    ``refined(atoms, 0.05)`` for a calculator with ``structure_symmetry``);
    the others start from ``atoms``. Returns ``(report, relaxed)``:
    ``report["initial"]`` and ``report[name]`` hold ``spacegroup`` (tolerance
    -> "symbol (number)"), ``cellpar`` (a, b, c, alpha, beta, gamma); each
    calculator's entry also ``steps``, ``converged``, ``max_force`` and, if
    it had its own start, ``start_spacegroup``; ``relaxed`` maps a name to its
    relaxed ``Atoms``.
    """
    starts = starts or {}
    check_calculators(calculators)
    require_crystal(atoms, "relax")
    report = {
        "initial": {
            "spacegroup": spacegroups(atoms),
            "cellpar": atoms.cell.cellpar().tolist(),
        },
        "fmax": fmax,
    }
    relaxed_structures = {}
    for name, calculator in calculators.items():
        start = starts.get(name, atoms)
        relaxed, taken, converged = relax(
            calculator, start, fmax=fmax, steps=steps, optimizer=optimizer
        )
        probe = relaxed.copy()
        probe.calc = calculator
        report[name] = {
            "spacegroup": spacegroups(relaxed),
            "cellpar": relaxed.cell.cellpar().tolist(),
            "steps": taken,
            "converged": converged,
            "max_force": float(np.linalg.norm(probe.get_forces(), axis=1).max()),
        }
        if name in starts:
            report[name]["start_spacegroup"] = spacegroups(start)
        relaxed_structures[name] = relaxed
    return report, relaxed_structures
