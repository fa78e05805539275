import os

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, all_changes

# no test waits for a network: named models are looked for locally only (the tests
# of the download path unset this and disable sockets themselves)
os.environ["ASE_SYMCALC_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _isolated_model_caches(tmp_path_factory, monkeypatch):
    """Every cache a named model is looked for in is an empty folder, so no test
    depends on what this machine has downloaded (the wheels' files still count)."""
    root = tmp_path_factory.getbasetemp() / "model-caches"
    monkeypatch.setenv("ASE_SYMCALC_MODEL_DIR", str(root / "ase-symcalc"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf"))
    monkeypatch.setenv("CACHED_PATH_CACHE_ROOT", str(root / "cached_path"))
    monkeypatch.setattr(
        "ase_symcalc.models.named._hugging_face_cache", lambda: root / "hf", raising=True
    )
    try:  # orb-models' downloads (cached_path reads its directory at import time)
        import cached_path.util

        monkeypatch.setattr(cached_path.util, "get_cache_dir", lambda: root / "cached_path")
    except ImportError:
        pass
    import ase_symcalc.models.named as named

    original = named._upstream_file

    def upstream(model):
        if model.architecture == "mace":
            return named._glob_newest(root / "mace", model.file)
        return original(model)

    monkeypatch.setattr(named, "_upstream_file", upstream)


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
