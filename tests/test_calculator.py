"""The ASE contract: caching, results keys, untouched Atoms, MD, relaxation,
file round trips and clear errors on bad input."""

import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.filters import FrechetCellFilter
from ase.io import read, write
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from conftest import copper, thermalize

from ase_symcalc import O3Quadrature, StressNotAvailableError, SymmetrizedCalculator
from ase_symcalc.testing import AnisotropicCalculator

RESULT_KEYS = {
    "energy",
    "free_energy",
    "forces",
    "stress",
    "energies",
    "raw_energy",
    "raw_forces",
    "raw_stress",
    "raw_energies",
    "energy_equivariance_error",
    "forces_equivariance_error",
    "forces_equivariance_error_per_atom",
    "stress_equivariance_error",
    "quadrature",
    "evaluations",
}


def anisotropic_emt(l=2, a=1.0):
    return AnisotropicCalculator(EMT(), terms=((l, a),), direction=(0.3, 0.5, 0.8))


def test_results_keys_units_and_shapes(cu4):
    calc = SymmetrizedCalculator(anisotropic_emt(), quadrature="lebedev:2")
    cu4.calc = calc
    cu4.get_potential_energy()
    r = calc.results
    assert set(r) == RESULT_KEYS
    n = len(cu4)
    assert r["forces"].shape == r["raw_forces"].shape == (n, 3)
    assert r["stress"].shape == r["raw_stress"].shape == (6,)
    assert r["energies"].shape == (n,)
    assert r["free_energy"] == r["energy"]
    np.testing.assert_allclose(r["energies"].sum(), r["energy"], atol=1e-10)
    assert isinstance(r["energy_equivariance_error"], float) and r["energy_equivariance_error"] > 0
    assert r["quadrature"] == calc.quadrature.name
    assert r["evaluations"] == len(calc.quadrature) + 1  # the rule and the raw copy
    numeric = {k: v for k, v in r.items() if k != "quadrature"}
    assert all(np.isfinite(np.asarray(v, dtype=float)).all() for v in numeric.values())


def test_one_pass_fills_every_property_and_is_cached(cu4):
    calc = SymmetrizedCalculator(EMT(), quadrature="lebedev:2")
    cu4.calc = calc
    cu4.get_forces()
    first = calc.evaluation_count
    assert (
        first == len(calc.quadrature) + 1
    )  # the rule, plus the unrotated input (generic orientation)
    cu4.get_potential_energy()
    cu4.get_stress()
    cu4.get_potential_energies()
    assert calc.evaluation_count == first
    cu4.positions[0, 0] += 0.01
    cu4.get_potential_energy()
    assert calc.evaluation_count == 2 * first


def test_raw_is_free_when_the_rule_holds_the_identity(cu4):
    calc = SymmetrizedCalculator(EMT(), quadrature="lebedev:2", orientation=None)
    cu4.calc = calc
    cu4.get_potential_energy()
    assert calc.evaluation_count == len(calc.quadrature)
    emt = cu4.copy()
    emt.calc = EMT()
    np.testing.assert_allclose(calc.results["raw_energy"], emt.get_potential_energy(), atol=1e-12)


def test_changed_info_triggers_a_new_calculation(cu4):
    calc = SymmetrizedCalculator(EMT(), quadrature="lebedev:1")
    cu4.calc = calc
    cu4.get_potential_energy()
    count = calc.evaluation_count
    cu4.get_potential_energy()
    assert calc.evaluation_count == count
    cu4.info["charge"] = 1
    cu4.get_potential_energy()
    assert calc.evaluation_count == 2 * count


def test_user_atoms_are_never_changed():
    atoms = copper((2, 1, 1), seed=4)
    atoms.set_constraint(FixAtoms(indices=[0]))
    thermalize(atoms, 300, seed=0)
    atoms.info["tag"] = "keep"
    before = atoms.copy()
    calc = SymmetrizedCalculator(anisotropic_emt(), quadrature="group:O")
    atoms.calc = calc
    atoms.get_forces()
    atoms.get_stress()
    np.testing.assert_array_equal(atoms.positions, before.positions)
    np.testing.assert_array_equal(atoms.cell.array, before.cell.array)
    np.testing.assert_array_equal(atoms.get_momenta(), before.get_momenta())
    assert atoms.info == before.info
    assert len(atoms.constraints) == 1 and list(atoms.constraints[0].index) == [0]
    # the calculator's own copy is not rotated either
    np.testing.assert_array_equal(calc.atoms.cell.array, before.cell.array)


def test_velocity_verlet_follows_the_emt_trajectory():
    """Symmetrized EMT is EMT (to rounding): the same Velocity Verlet trajectory as
    plain EMT, step by step, and the same energy conservation."""
    runs = {}
    for name, calc in (
        ("symmetrized", SymmetrizedCalculator(EMT(), quadrature="lebedev:2")),
        ("emt", EMT()),
    ):
        atoms = copper((2, 1, 1), rattle=0.0)
        thermalize(atoms, 600, seed=1)
        atoms.calc = calc
        dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
        frames = []
        dyn.attach(lambda a=atoms, f=frames: f.append((a.get_total_energy(), a.positions.copy())))
        dyn.run(10)
        runs[name] = frames
    assert len(runs["symmetrized"]) == 11
    for (e_sym, x_sym), (e_emt, x_emt) in zip(runs["symmetrized"], runs["emt"], strict=True):
        np.testing.assert_allclose(x_sym, x_emt, atol=1e-9)
        assert abs(e_sym - e_emt) < 1e-9
    energies = [energy for energy, _ in runs["symmetrized"]]
    assert np.ptp(energies) < 2e-3  # EMT's own drift at 2 fs


def test_bfgs_cell_relaxation_lowers_the_energy_and_keeps_the_cell_frame():
    atoms = copper(rattle=0.05, seed=2)
    atoms.set_cell(atoms.cell.array * 1.03, scale_atoms=True)
    atoms.calc = SymmetrizedCalculator(anisotropic_emt(a=0.5), quadrature="lebedev:2")
    e0 = atoms.get_potential_energy()
    optimizer = BFGS(FrechetCellFilter(atoms), logfile=None)
    optimizer.run(fmax=0.05, steps=30)
    assert atoms.get_potential_energy() < e0 - 1e-3
    cell = atoms.cell.array
    # the cubic cell only strained: no rotated cell leaked back
    assert np.abs(cell - np.diag(np.diag(cell))).max() < 0.05


def test_extxyz_round_trip_keeps_energy_forces_stress(tmp_path, cu4):
    calc = SymmetrizedCalculator(anisotropic_emt(), quadrature="lebedev:2")
    cu4.calc = calc
    energy, forces, stress = cu4.get_potential_energy(), cu4.get_forces(), cu4.get_stress()
    path = tmp_path / "frames.extxyz"
    write(path, cu4)
    back = read(path)
    np.testing.assert_allclose(back.get_potential_energy(), energy, rtol=1e-12)
    np.testing.assert_allclose(back.get_forces(), forces, atol=1e-8)
    np.testing.assert_allclose(back.get_stress(), stress, atol=1e-10)


def test_parameters_and_todict():
    calc = SymmetrizedCalculator(
        EMT(), quadrature="group:O", mode="random-grid", seed=3, batch_size=8
    )
    d = calc.todict()
    assert d["quadrature"] == "group:O" and d["mode"] == "random-grid" and d["seed"] == 3
    json.dumps(d)
    calc.set(quadrature="lebedev:1")
    assert len(calc.quadrature) == 24
    custom = SymmetrizedCalculator(EMT(), quadrature=O3Quadrature.from_matrices(np.eye(3)[None]))
    json.dumps(custom.todict())
    oriented = SymmetrizedCalculator(EMT(), orientation=np.eye(3))
    json.dumps(oriented.todict())


def test_set_resets_results(cu4):
    calc = SymmetrizedCalculator(EMT(), quadrature="lebedev:1")
    cu4.calc = calc
    cu4.get_potential_energy()
    calc.set(quadrature="lebedev:2")
    assert calc.results == {}
    cu4.get_potential_energy()
    assert calc.evaluation_count == 25 + 37


class EnergyOnly(Calculator):
    implemented_properties = ["energy"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": float(np.sum(self.atoms.positions**2))}


def test_implemented_properties_follow_the_base():
    calc = SymmetrizedCalculator(EnergyOnly(), quadrature="lebedev:1")
    assert calc.implemented_properties == ["energy", "free_energy"]
    atoms = Atoms("H2", positions=[(0, 0, 0), (0, 0, 1.0)])
    atoms.calc = calc
    with pytest.raises(PropertyNotImplementedError, match="forces"):
        atoms.get_forces()
    assert atoms.get_potential_energy() == pytest.approx(1.0)


def test_missing_property_names_the_base_and_the_property():
    calc = SymmetrizedCalculator(EnergyOnly(), quadrature="lebedev:1")
    atoms = Atoms("H2", positions=[(0, 0, 0), (0, 0, 1.0)])
    with pytest.raises(PropertyNotImplementedError, match="EnergyOnly does not provide 'forces'"):
        calc.calculate(atoms, ["forces"])


def test_stress_needs_a_3d_periodic_cell(cluster):
    calc = SymmetrizedCalculator(EMT(), quadrature="lebedev:1")
    atoms = Atoms(
        "Cu2", positions=[(0, 0, 0), (0, 0, 2.5)], cell=[5, 5, 5], pbc=[True, True, False]
    )
    atoms.calc = calc
    with pytest.raises(StressNotAvailableError, match="3D-periodic"):
        atoms.get_stress()
    assert calc.results == {}
    atoms.get_forces()  # everything else still works, without stress keys
    assert "stress" not in calc.results and "raw_stress" not in calc.results


class Faulty(Calculator):
    """EMT, but broken on one rotated copy: NaN forces or a wrong shape."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, fault, bad_call=5):
        super().__init__()
        self.fault, self.bad_call, self.calls = fault, bad_call, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        emt = EMT()
        e, f = emt.get_potential_energy(self.atoms), emt.get_forces(self.atoms)
        if self.calls == self.bad_call:
            if self.fault == "nan":
                f[1, 2] = np.nan
            elif self.fault == "shape":
                f = f[:-1]
        self.calls += 1
        self.results = {"energy": e, "free_energy": e, "forces": f}


@pytest.mark.parametrize(
    "fault, message",
    [
        ("nan", r"non-finite 'forces' for rotated copy 5"),
        ("shape", r"'forces' with shape \(3, 3\) for rotated copy 5"),
    ],
)
def test_bad_base_output_names_the_copy_and_the_property(cu4, fault, message):
    calc = SymmetrizedCalculator(Faulty(fault), quadrature="lebedev:1")
    cu4.calc = calc
    with pytest.raises(ValueError, match=message):
        cu4.get_forces()
    assert calc.results == {} and calc.atoms is None  # nothing stale left behind
    calc.base.bad_call = -1
    cu4.get_forces()  # recovers on the next call
    assert "forces" in calc.results


def test_empty_atoms_and_bad_options_are_refused():
    calc = SymmetrizedCalculator(EMT(), quadrature="lebedev:1")
    with pytest.raises(ValueError, match="empty Atoms"):
        calc.get_potential_energy(Atoms())
    with pytest.raises(ValueError, match="unknown mode 'sometimes'.*random-single"):
        SymmetrizedCalculator(EMT(), mode="sometimes")
    with pytest.raises(ValueError, match="valid forms"):
        SymmetrizedCalculator(EMT(), quadrature="lebedev")
    with pytest.raises(ValueError, match="batch_size"):
        SymmetrizedCalculator(EMT(), batch_size=0)
    with pytest.raises(FileNotFoundError, match="'EMT' does not exist; give an ASE calculator"):
        SymmetrizedCalculator("EMT")
    with pytest.raises(TypeError, match="expected an ASE calculator"):
        SymmetrizedCalculator(42)
    with pytest.raises(ValueError, match="sum to 1"):
        SymmetrizedCalculator(EMT(), quadrature=O3Quadrature(np.eye(3)[None], np.array([0.5])))


class _CountingCalculator(Calculator):
    """EMT that computes only what it is asked for and counts its runs."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self):
        super().__init__()
        self.runs = 0
        self.emt = EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.runs += 1
        self.emt.calculate(self.atoms, ["energy", "forces", "stress"], all_changes)
        for name in properties:  # only what was asked
            key = "energy" if name == "free_energy" else name
            self.results[name] = self.emt.results[key]


def test_the_base_runs_once_per_copy_and_never_returns_a_stale_result(cu4):
    base = _CountingCalculator()
    calc = SymmetrizedCalculator(base, quadrature="group:T", inversion=False)
    cu4.calc = calc
    cu4.get_forces()
    cu4.get_stress()
    assert base.runs == calc.evaluation_count == 13  # 12 rotations and the raw copy
    # with the identity rule the copy equals the base's last structure: a change the
    # base cannot see (atoms.info) must still give a fresh run
    single = SymmetrizedCalculator(base, quadrature="identity", raw=False)
    cu4.calc = single
    cu4.get_potential_energy()
    runs = base.runs
    cu4.info["charge"] = 1
    cu4.get_potential_energy()
    assert base.runs == runs + 1


class _SmearedEMT(EMT):
    """EMT with a free energy of its own: E - 0.1 eV - 0.05 x_0 (not the energy, and
    not invariant, so that its average differs from a copy of the energy's)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results["free_energy"] = self.results["energy"] - 0.1 - 0.05 * atoms.positions[0, 0]


def test_free_energy_is_averaged_on_its_own():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=2)
    atoms.calc = SymmetrizedCalculator(_SmearedEMT(), quadrature="lebedev:3")
    energy = atoms.get_potential_energy()
    free_energy = atoms.get_potential_energy(force_consistent=True)
    # the x-coordinate's average over the rule's copies is that of the rotated positions
    rule = atoms.calc.quadrature
    x0 = np.einsum("m,mj,j->", rule.weights, rule.matrices[:, 0, :], atoms.positions[0])
    np.testing.assert_allclose(free_energy, energy - 0.1 - 0.05 * x0, atol=1e-10)
    # a base without a free energy of its own: the free energy is the energy
    atoms.calc = SymmetrizedCalculator(EMT(), quadrature="lebedev:3")
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
