import os

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, all_changes

# no test waits for a network: named models are looked for locally only (the tests
# of the download path unset this and disable sockets themselves)
os.environ.setdefault("ASE_SYMCALC_OFFLINE", "1")


def thermalize(atoms, temperature_K, seed=0):
    """Seeded Maxwell-Boltzmann momenta (the CLI's helper)."""
    from ase_symcalc.cli import _thermalize

    _thermalize(atoms, temperature_K, seed)


def copper(repeat=(1, 1, 1), rattle=0.05, seed=0, cubic=True):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=cubic).repeat(repeat)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture
def cu4():
    """4 rattled copper atoms in a cubic cell (fast with EMT)."""
    return copper()


@pytest.fixture
def cu8():
    return copper((2, 1, 1), seed=1)


@pytest.fixture
def cluster():
    """A non-periodic rattled water dimer-sized molecule."""
    atoms = molecule("CH4")
    atoms.rattle(0.05, seed=2)
    return atoms


class ConstantForceCalculator(Calculator):
    """Wraps a calculator and adds the same spurious force to every atom."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, base, force, **kwargs):
        super().__init__(**kwargs)
        self.base = base
        self.force = np.asarray(force, dtype=float)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy = self.base.get_potential_energy(self.atoms)
        forces = self.base.get_forces(self.atoms) + self.force
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
