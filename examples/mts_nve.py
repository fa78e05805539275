"""
Energy-conserving symmetrized NVE at a fraction of the price: multiple time stepping.
=====================================================================================

The shipped PET on 32 copper atoms at 300 K: raw direct forces every 2 fs
step, and every 8 steps the correction towards the conservative forces of the
``lebedev:3``-symmetrized energy (RESPA). The monitor logs raw vs symmetrized
energies and the equivariance errors at every outer step; the script prints
the drift of the conserved energy and the cost relative to raw MD.

Run: python examples/mts_nve.py [--steps 400] [--output DIR]   (400 steps: ~1 min)

Not run when the documentation is built (a minute of MD); its measured drift
and cost against raw MD, and the figures of longer runs, are in
:doc:`/concepts/modes` and :doc:`/how-to/run-md`.
"""

import argparse
import time
from pathlib import Path

from ase import units
from ase.build import bulk

from ase_symcalc import MultipleTimeStepMD, SymmetrizedCalculator
from ase_symcalc.cli import _thermalize, read_log, summarize
from ase_symcalc.models import path
from ase_symcalc.monitor import EquivarianceMonitor

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=400, help="2 fs steps, a multiple of 8")
parser.add_argument("--output", default="mts_nve")
args = parser.parse_args()
output = Path(args.output)
output.mkdir(exist_ok=True)

atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
atoms.rattle(0.05, seed=0)
_thermalize(atoms, 600, seed=0)

# the full model: symmetrized, conservative forces (minus the gradient of the
# averaged energy); the fast model: the raw direct forces, one evaluation
atoms.calc = SymmetrizedCalculator(path(), quadrature="lebedev:3", forces="conservative")
fast = SymmetrizedCalculator(path(), quadrature="identity", raw=False)
dyn = MultipleTimeStepMD(atoms, 8 * 2.0 * units.fs, fast, inner_steps=8)
with EquivarianceMonitor(atoms, output / "log.csv", dynamics=dyn) as monitor:
    dyn.attach(monitor, interval=1)
    begin = time.perf_counter()
    dyn.run(args.steps // 8)
    elapsed = time.perf_counter() - begin

raw_begin = time.perf_counter()
for _ in range(5):
    atoms.positions[0, 0] += 1e-4
    fast.get_forces(atoms)
raw_step = (time.perf_counter() - raw_begin) / 5

summary = summarize(read_log(output / "log.csv"), len(atoms))
print(
    f"{args.steps} steps of 2 fs in {elapsed:.0f} s: "
    f"{elapsed / args.steps / raw_step:.1f}x the cost of raw MD; "
    f"drift {summary['etot_drift_meV_per_atom_per_ps']:+.2f} meV/atom/ps; "
    f"mean T {summary['mean_temperature_K']:.0f} K; "
    f"forces equivariance error {summary['forces_equivariance_error']['mean'] * 1e3:.1f} meV/Å"
)
