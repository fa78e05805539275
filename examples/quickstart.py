"""
Quickstart: symmetrize an anisotropic model and watch its equivariance error.
=============================================================================

The model is EMT copper plus a deliberately anisotropic degree-4 term (a
stand-in for an unconstrained ML potential that learned rotations only
approximately). ``SymmetrizedCalculator`` averages it over the icosahedral
group with inversion (120 rotations, exact to degree 5), which removes the
term exactly, and reports how far the raw model is from equivariance.

Run: python examples/quickstart.py   (about 20 s on 2 cores)
"""

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.verlet import VelocityVerlet

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.testing import AnisotropicCalculator, random_o3, rotated_atoms

atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
atoms.rattle(0.05, seed=0)

raw_model = AnisotropicCalculator(EMT(), terms=((4, 0.05, "pair"),), direction=(0.2, 0.3, 0.93))
calc = SymmetrizedCalculator(raw_model)  # default rule: group:I + inversion, generic orientation
atoms.calc = calc

energy = atoms.get_potential_energy()
r = calc.results
print(f"rule: {calc.quadrature.name}, {len(calc.quadrature)} evaluations (+1 for the raw)")
print(f"raw energy          {r['raw_energy']:12.6f} eV")
print(f"symmetrized energy  {energy:12.6f} eV")
emt = atoms.copy()
emt.calc = EMT()
print(f"EMT (the exact Haar average) {emt.get_potential_energy():12.6f} eV")
print(f"energy equivariance error   {r['energy_equivariance_error'] * 1e3:8.3f} meV")
print(f"forces equivariance error   {r['forces_equivariance_error'] * 1e3:8.3f} meV/Å")
print(f"stress equivariance error   {r['stress_equivariance_error'] / units.GPa:8.4f} GPa")
worst = int(np.argmax(r["forces_equivariance_error_per_atom"]))
print(f"worst atom {worst}: {r['forces_equivariance_error_per_atom'][worst] * 1e3:.3f} meV/Å")

# Rotate the input: the raw energy changes, the symmetrized one does not.
g = random_o3(1, seed=42)[0]
rotated = rotated_atoms(atoms, g)
rotated.calc = raw_model
raw_change = rotated.get_potential_energy() - r["raw_energy"]
rotated.calc = calc
sym_change = rotated.get_potential_energy() - energy
print(
    f"energy change under a random O(3) element: raw {raw_change:+.2e} eV, "
    f"symmetrized {sym_change:+.2e} eV"
)

# A few MD steps with the symmetrized forces, logging the per-step errors.
print("\nstep  E_pot raw   E_pot sym   energy err (meV)  forces err (meV/Å)")
dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)


steps, raw_errors, sym_energies, raw_energies = [], [], [], []


def log():
    res = atoms.calc.results
    steps.append(dyn.nsteps)
    raw_errors.append(res["forces_equivariance_error"] * 1e3)
    sym_energies.append(res["energy"])
    raw_energies.append(res["raw_energy"])
    print(
        f"{dyn.nsteps:4d} {res['raw_energy']:10.5f} {res['energy']:10.5f} "
        f"{res['energy_equivariance_error'] * 1e3:14.3f} "
        f"{res['forces_equivariance_error'] * 1e3:18.3f}"
    )


dyn.attach(log, interval=1)
dyn.run(5)

# The same numbers as a figure: what the monitor would plot over a long run.
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402

fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 4.5), sharex=True)
top.plot(steps, raw_energies, "o-", label="raw")
top.plot(steps, sym_energies, "s-", label="symmetrized")
top.set_ylabel("potential energy (eV)")
top.legend()
bottom.plot(steps, raw_errors, "o-", color="C3")
bottom.set_ylabel("forces equivariance\nerror (meV/Å)")
bottom.set_xlabel("MD step (2 fs)")
fig.tight_layout()
figure = Path(tempfile.gettempdir()) / "ase_symcalc_quickstart.png"
fig.savefig(figure, dpi=110)
print(f"figure: {figure}")
