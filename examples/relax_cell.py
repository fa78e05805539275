"""Relax a strained copper cell with FrechetCellFilter, raw vs symmetrized PET.

A raw unconstrained model tilts and distorts a cubic cell slightly; the
symmetrized one keeps it cubic (its stress is exactly isotropic for a cubic
crystal up to the rule's degree).

Run: python examples/relax_cell.py
"""

import numpy as np
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.models import path, pretrained

start = bulk("Cu", "fcc", a=3.61, cubic=True)
start.set_cell(start.cell.array * 1.02, scale_atoms=True)

for name, calc in [
    ("raw", pretrained()),
    ("symmetrized", SymmetrizedCalculator(path(), quadrature="group:I")),
]:
    atoms = start.copy()
    atoms.calc = calc
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=100)
    cell = atoms.cell.cellpar()
    off_diagonal = np.abs(atoms.cell.array - np.diag(np.diag(atoms.cell.array))).max()
    print(
        f"{name:12s} a, b, c = {cell[0]:.4f} {cell[1]:.4f} {cell[2]:.4f} Å, "
        f"angles {cell[3]:.3f} {cell[4]:.3f} {cell[5]:.3f}, max off-diagonal {off_diagonal:.1e} Å"
    )
