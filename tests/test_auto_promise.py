"""Issue 27: with the shipped model, quadrature="auto" at 1e-3 passes the public
rotation checks on the structures people run, not only on the README's.

Slow (about 2 to 8 minutes per structure on 2 CPU cores): ``pytest -m slow
tests/test_auto_promise.py``. The numbers per structure and tolerance are in
BENCHMARKS.md (``benchmarks/bench_residual.py``).
"""

import numpy as np
import pytest
from ase import units
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.checks import arena_force_equivariance, rotational_symmetry_walk


def _structure(name):
    if name == "bulk":
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.rattle(0.05, seed=11)
    elif name == "hot":
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.calc = EMT()
        MaxwellBoltzmannDistribution(atoms, temperature_K=900, rng=np.random.default_rng(12))
        Langevin(
            atoms, 2 * units.fs, temperature_K=900, friction=0.02, rng=np.random.RandomState(12)
        ).run(50)
        atoms = atoms.copy()
    elif name in ("slab111", "slab100"):
        build = fcc111 if name == "slab111" else fcc100
        atoms = build("Cu", size=(2, 2, 4), a=3.61, vacuum=8.0)
        atoms.pbc = (True, True, False)
        atoms.rattle(0.05, seed=13)
    else:
        atoms = Icosahedron("Cu", noshells=3, latticeconstant=3.61)
        atoms.rattle(0.05, seed=14)
    return atoms


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bulk", "hot", "slab111", "slab100", "cluster"])
def test_auto_keeps_its_tolerance_in_the_public_checks(name):
    """Not the benchmark's structures (other seeds and sizes): the promise must
    hold on structures auto was not tuned on."""
    from ase_symcalc.evaluators import make_evaluator
    from ase_symcalc.models import path

    atoms = _structure(name)
    calc = SymmetrizedCalculator(
        make_evaluator(str(path())), quadrature="auto", tolerance=1e-3, raw=False
    )
    # MLIP Arena's MAE criterion on every rotation; its cosine criterion is
    # relative to each atom's force and no force tolerance bounds it (see
    # BENCHMARKS.md, issue 27), so it is not asserted
    arena = arena_force_equivariance(calc, atoms, axes=4)
    assert arena.mae.max() < 1e-3, (calc.quadrature.name, arena.summary())
    # the default target is O(3): mirror images too
    mirrors = arena_force_equivariance(calc, atoms, axes=4, improper=True)
    assert mirrors.mae.max() < 1e-3, (calc.quadrature.name, mirrors.summary())
    walk = rotational_symmetry_walk(calc, atoms)
    assert walk.forces_change.max() < 1e-3, (calc.quadrature.name, walk.summary())
    # the rule was chosen once, on the first call, and kept
    assert calc.results["quadrature"] == calc.quadrature.name
