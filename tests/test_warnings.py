"""Every warning the package issues points at the user's line, not into
ase_symcalc or ASE (``_warnings.warn_user``), whatever the call path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.optimize import BFGS

from ase_symcalc import SymmetrizedCalculator


class _NoisyCalculator(Calculator):
    """Forces that change from call to call: no rule converges on them."""

    implemented_properties = ["energy", "forces"]

    def __init__(self):
        super().__init__()
        self._random = np.random.default_rng(5)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "forces": self._random.normal(size=(len(atoms), 3))}


def _caught(action, category):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    found = [w for w in caught if issubclass(w.category, category)]
    assert found, f"no {category.__name__} was issued"
    return found


def _anisotropic_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=3)
    return atoms


def test_a_deprecated_option_points_at_the_constructor():
    for w in _caught(
        lambda: SymmetrizedCalculator(EMT(), convergence_tolerance=1e-3), FutureWarning
    ):
        assert w.filename == __file__


@pytest.mark.parametrize("through", ["get_forces", "ase-optimizer"])
def test_a_calculation_warning_points_at_the_user_call(through):
    atoms = _anisotropic_cell()
    base = _NoisyCalculator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        atoms.calc = SymmetrizedCalculator(base, quadrature="group:T", convergence_tolerance=1e-9)

    def action():
        if through == "get_forces":
            atoms.get_forces()
        else:
            BFGS(atoms, logfile=None).run(steps=1)  # the call passes through ASE's frames

    found = [w for w in _caught(action, UserWarning) if "change by" in str(w.message)]
    assert found and all(w.filename == __file__ for w in found)


def test_set_says_what_it_reset_at_the_user_line():
    atoms = _anisotropic_cell()
    atoms.calc = SymmetrizedCalculator(EMT(), quadrature="group:T", mode="random-grid", seed=1)
    atoms.get_potential_energy()
    found = _caught(lambda: atoms.calc.set(quadrature="group:O"), UserWarning)
    assert "starts afresh" in str(found[0].message)
    assert all(w.filename == __file__ for w in found)
    np.testing.assert_equal(atoms.calc.quadrature.name.startswith("group:O"), True)
