"""
Quickstart with the shipped unconstrained PET: raw vs symmetrized, then MD.
===========================================================================

Run: python examples/quickstart_pet.py   (about 30 s on 2 cores)
"""

from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.models import path
from ase_symcalc.monitor import EquivarianceMonitor

atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
atoms.rattle(0.05, seed=0)
atoms.calc = SymmetrizedCalculator(path(), quadrature="lebedev:3")  # 48 rotations + raw

energy = atoms.get_potential_energy()  # one pass fills every result
r = atoms.calc.results
print(f"energy: raw {r['raw_energy']:.4f} eV, symmetrized {energy:.4f} eV")
print(
    f"equivariance errors: forces {1e3 * r['forces_equivariance_error']:.1f} meV/Å, "
    f"energy {1e3 * r['energy_equivariance_error']:.2f} meV"
)

dyn = VelocityVerlet(atoms, timestep=2 * units.fs)
with EquivarianceMonitor(atoms, "quickstart_pet_log.csv", dynamics=dyn) as monitor:
    dyn.attach(monitor, interval=1)
    dyn.run(10)
print("per-step log: quickstart_pet_log.csv")
