"""
Symmetrize a metatomic model file (the shipped PET here; PET-MAD works the same).
=================================================================================

Run: python examples/metatomic_model.py [MODEL.pt]
"""

import sys

import numpy as np
from ase.build import bulk

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.models import path

model_file = sys.argv[1] if len(sys.argv) > 1 else str(path())
atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
atoms.rattle(0.05, seed=0)

calc = SymmetrizedCalculator(model_file, quadrature="group:I")  # batched evaluator
atoms.calc = calc
atoms.get_forces()
r = calc.results
print(f"model {model_file}, rule {calc.quadrature.name} ({calc.evaluation_count} evaluations)")
print(f"energy raw {r['raw_energy']:.5f} eV, symmetrized {r['energy']:.5f} eV")
rmse = np.sqrt(np.mean((r["raw_forces"] - r["forces"]) ** 2))
print(f"forces raw vs symmetrized RMSE {rmse * 1e3:.2f} meV/Å")
print(
    f"equivariance errors: energy {r['energy_equivariance_error'] * 1e3:.3f} meV, "
    f"forces {r['forces_equivariance_error'] * 1e3:.2f} meV/Å, "
    f"stress {r['stress_equivariance_error'] * 1e3:.4f} meV/Å^3"
)
