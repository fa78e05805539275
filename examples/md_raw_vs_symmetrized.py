"""
NVE with raw direct forces vs symmetrized forces, from the same start.
======================================================================

Runs the shipped PET on 108 copper atoms at 600 K: once with the raw direct
forces, once symmetrized (``lebedev:3``, 48 rotations), both logged by
``EquivarianceMonitor``. Prints the total-energy drift of each (meV/atom/ps)
and writes ``md_raw_vs_symmetrized.png``.

Run: python examples/md_raw_vs_symmetrized.py [--steps 30] [--output DIR]   (30 steps: ~55 s)

Not run when the documentation is built (minutes of MD); the figure is the
stored output of ``python examples/md_raw_vs_symmetrized.py --steps 100
--output build/drift`` (see :doc:`/how-to/run-md` for its numbers):

.. image:: /figures/md_raw_vs_symmetrized.png
   :alt: total energy and equivariance error, raw vs symmetrized NVE
"""

import argparse
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.cli import _thermalize, read_log, summarize
from ase_symcalc.models import path
from ase_symcalc.monitor import EquivarianceMonitor

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--timestep", type=float, default=2.0, help="fs")
parser.add_argument("--quadrature", default="lebedev:3")
parser.add_argument("--output", default="md_raw_vs_symmetrized")
args = parser.parse_args()
output = Path(args.output)
output.mkdir(exist_ok=True)

start = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
start.rattle(0.02, seed=0)
_thermalize(start, 600, seed=0)
Stationary(start)

runs = {
    "raw": SymmetrizedCalculator(path(), quadrature="identity"),
    "symmetrized": SymmetrizedCalculator(path(), quadrature=args.quadrature),
}
logs = {}
for name, calc in runs.items():
    atoms = start.copy()
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=args.timestep * units.fs)
    log = output / f"{name}.csv"
    log.unlink(missing_ok=True)
    with EquivarianceMonitor(atoms, log, dynamics=dyn) as monitor:
        dyn.attach(monitor, interval=1)
        dyn.run(args.steps)
    logs[name] = read_log(log)
    summary = summarize(logs[name], len(atoms))
    print(
        f"{name:12s} drift {summary['etot_drift_meV_per_atom_per_ps']:+8.3f} meV/atom/ps, "
        f"mean T {summary['mean_temperature_K']:6.1f} K"
    )

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
for name, log in logs.items():
    t = log["time_fs"] / 1000
    axes[0].plot(t, 1e3 * (log["etot"] - log["etot"][0]) / 108, label=name)
axes[0].set_ylabel("E_tot - E_tot(0) (meV/atom)")
axes[0].legend()
sym = logs["symmetrized"]
axes[1].plot(sym["time_fs"] / 1000, 1e3 * sym["forces_equivariance_error"], label="forces")
axes[1].plot(sym["time_fs"] / 1000, 1e3 * sym["forces_raw_vs_sym_rmse"], label="raw vs sym RMSE")
axes[1].set_ylabel("meV/Å")
axes[1].set_xlabel("time (ps)")
axes[1].legend()
fig.tight_layout()
fig.savefig(output / "md_raw_vs_symmetrized.png", dpi=120)
print(f"figure: {output / 'md_raw_vs_symmetrized.png'}")
print(
    f"final |E_tot change| raw {np.abs(logs['raw']['etot'][-1] - logs['raw']['etot'][0]):.4f} eV, "
    f"symmetrized {np.abs(sym['etot'][-1] - sym['etot'][0]):.4f} eV"
)
