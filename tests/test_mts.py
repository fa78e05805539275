"""Multiple time stepping: exactness limits, energy conservation, thermostat."""

import numpy as np
import pytest
from ase import units
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.md.verlet import VelocityVerlet
from conftest import copper, thermalize

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.mts import MultipleTimeStepMD


class ScaledForcesCalculator(Calculator):
    """EMT energy, forces scaled and skewed: a wrong, non-conservative fast model."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, scale=0.8, skew=0.1, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.skew, self.emt = scale, skew, EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        forces = self.emt.get_forces(self.atoms)
        skewed = self.scale * forces + self.skew * forces[:, [1, 2, 0]]
        skewed -= skewed.mean(axis=0)
        energy = self.emt.get_potential_energy(self.atoms)
        self.results = {"energy": energy, "free_energy": energy, "forces": skewed}


def _start(seed=3, temperature=600):
    atoms = copper((2, 2, 2), rattle=0.02, seed=seed)
    thermalize(atoms, temperature, seed)
    return atoms


def _etot(atoms):
    return atoms.get_potential_energy() + atoms.get_kinetic_energy()


def test_one_inner_step_with_the_full_model_as_fast_model_is_velocity_verlet():
    atoms, reference = _start(), _start()
    atoms.calc, reference.calc = EMT(), EMT()
    MultipleTimeStepMD(atoms, 2 * units.fs, EMT(), inner_steps=1).run(20)
    VelocityVerlet(reference, 2 * units.fs).run(20)
    np.testing.assert_allclose(atoms.positions, reference.positions, atol=1e-12)
    np.testing.assert_allclose(atoms.get_momenta(), reference.get_momenta(), atol=1e-12)


@pytest.mark.parametrize("inner_steps", [2, 4, 8])
def test_a_wrong_fast_model_still_conserves_the_full_energy(inner_steps):
    # the slow kick carries F - F_fast: the trajectory follows the full
    # (conservative) EMT forces on average, whatever the fast model does
    atoms = _start()
    atoms.calc = EMT()
    e0 = _etot(atoms)
    energies = []
    dyn = MultipleTimeStepMD(atoms, 8 * units.fs, ScaledForcesCalculator(), inner_steps)
    dyn.attach(lambda: energies.append(_etot(atoms)), interval=1)
    dyn.run(40)  # 320 fs
    deviation = np.abs(np.array(energies) - e0).max() / len(atoms)
    fast_only = _start()
    fast_only.calc = ScaledForcesCalculator()
    VelocityVerlet(fast_only, 2 * units.fs).run(160)
    fast_deviation = abs(_etot(fast_only) - e0) / len(atoms)
    assert deviation < 1e-3, f"MTS energy deviation {deviation:.2e} eV/atom"
    assert deviation < 0.05 * fast_deviation
    assert dyn.fast_evaluations == 40 * inner_steps + 1


def test_full_model_runs_once_per_outer_step():
    atoms = _start()
    atoms.calc = SymmetrizedCalculator(EMT(), quadrature="lebedev:1", raw=False)
    dyn = MultipleTimeStepMD(atoms, 4 * units.fs, EMT(), inner_steps=4)
    dyn.run(5)
    copies = len(atoms.calc.quadrature)
    assert atoms.calc.evaluation_count == 6 * copies
    assert dyn.fast_evaluations == 21
    assert dyn.get_time() == pytest.approx(20 * units.fs)


def test_langevin_thermostat_reaches_the_target_temperature():
    atoms = _start(temperature=50)
    atoms.calc = EMT()
    dyn = MultipleTimeStepMD(
        atoms,
        8 * units.fs,
        ScaledForcesCalculator(),
        4,
        temperature_K=500,
        friction=0.05 / units.fs,
        rng=7,
    )
    temperatures = []
    dyn.attach(lambda: temperatures.append(atoms.get_temperature()), interval=1)
    dyn.run(150)
    mean = np.mean(temperatures[50:])
    assert 400 < mean < 600, f"mean temperature {mean:.0f} K"
    np.testing.assert_allclose(atoms.get_momenta().sum(axis=0), 0.0, atol=1e-10)


def test_bad_settings_are_refused():
    atoms = _start()
    atoms.calc = EMT()
    with pytest.raises(ValueError, match="inner_steps must be a positive integer"):
        MultipleTimeStepMD(atoms, units.fs, EMT(), inner_steps=0)
    with pytest.raises(ValueError, match="both temperature_K and friction"):
        MultipleTimeStepMD(atoms, units.fs, EMT(), temperature_K=300)
    atoms.set_constraint(FixAtoms([0]))
    with pytest.raises(NotImplementedError, match="constraints"):
        MultipleTimeStepMD(atoms, units.fs, EMT())
    atoms.set_constraint()
    atoms.calc = None
    with pytest.raises(ValueError, match="no calculator"):
        MultipleTimeStepMD(atoms, units.fs, EMT())
