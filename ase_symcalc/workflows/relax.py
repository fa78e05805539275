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

from ._common import require_crystal, spacegroups

__all__ = ["relax", "relax_report"]


def relax(calculator, atoms: Atoms, *, fmax: float = 1e-3, steps: int = 300, optimizer="BFGS"):
    """Relax a copy of ``atoms``; returns (relaxed copy, steps taken, converged)."""
    import ase.optimize
    from ase.filters import FrechetCellFilter

    require_crystal(atoms, "relax")
    work = atoms.copy()
    work.calc = calculator
    opt = getattr(ase.optimize, optimizer)(FrechetCellFilter(work), logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    relaxed = work.copy()
    relaxed.calc = None
    return relaxed, int(opt.nsteps), converged


def relax_report(calculators: dict, atoms: Atoms, *, fmax=1e-3, steps=300, optimizer="BFGS"):
    """Relax with every calculator; space groups, lattice parameters, steps.

    Returns ``(report, relaxed)``: ``report["initial"]`` and
    ``report[name]`` hold ``spacegroup`` (tolerance -> "symbol (number)"),
    ``cellpar`` (a, b, c, alpha, beta, gamma); each calculator's entry also
    ``steps``, ``converged`` and ``max_force``; ``relaxed`` maps a name to
    its relaxed ``Atoms``.
    """
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
        relaxed, taken, converged = relax(
            calculator, atoms, fmax=fmax, steps=steps, optimizer=optimizer
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
        relaxed_structures[name] = relaxed
    return report, relaxed_structures
