"""
Relax a strained copper cell with FrechetCellFilter, raw vs symmetrized PET.
============================================================================

With the raw direct forces and stress of the unconstrained model (which are
neither equivariant nor derivatives of one energy) BFGS wanders off and shears
the cell; the symmetrized model keeps it cubic (its stress is isotropic for a
cubic crystal, to the rule's degree) and converges.

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
    optimizer = BFGS(FrechetCellFilter(atoms), logfile=None)
    converged = optimizer.run(fmax=1e-3, steps=60)
    cell = atoms.cell.cellpar()
    off_diagonal = np.abs(atoms.cell.array - np.diag(np.diag(atoms.cell.array))).max()
    status = f"converged in {optimizer.nsteps} steps" if converged else "not converged"
    print(
        f"{name:12s} {status}: a, b, c = {cell[0]:.4f} {cell[1]:.4f} {cell[2]:.4f} Å, "
        f"angles {cell[3]:.3f} {cell[4]:.3f} {cell[5]:.3f}, max off-diagonal {off_diagonal:.1e} Å"
    )
