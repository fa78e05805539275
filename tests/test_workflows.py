"""Phonons, elastic constants and relaxations: with EMT they add no symmetry
breaking of their own; with an analytic anisotropic model the raw splitting
shows and the symmetrized one vanishes when the rule covers the term."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.io import write

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.cli import main
from ase_symcalc.testing import AnisotropicCalculator
from ase_symcalc.workflows import (
    NotACrystalError,
    cubic_spread,
    cubic_summary,
    elastic_constants,
    phonon_report,
    relax_report,
)

DIRECTION = (0.31, -0.52, 0.79)


def test_phonons_of_emt_match_phonopy_with_its_symmetry():
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    atoms = bulk("Cu", "fcc", a=3.6)
    report = phonon_report({"reference": EMT()}, atoms, supercell=(3, 3, 3), band_points=10)
    unit = PhonopyAtoms(
        symbols=["Cu"], cell=atoms.cell.array, scaled_positions=atoms.get_scaled_positions()
    )
    phonon = Phonopy(unit, supercell_matrix=np.diag([3, 3, 3]), primitive_matrix=None)
    phonon.generate_displacements(distance=0.005, is_plusminus=True)  # as ours: central
    forces = []
    for cell in phonon.supercells_with_displacements:
        copy = Atoms(
            symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True
        )
        copy.calc = EMT()
        forces.append(copy.get_forces())
    phonon.forces = forces
    phonon.produce_force_constants()
    from ase_symcalc.workflows.phonons import _run_qpoints

    for name, q in report["special_points"].items():
        expected = np.sort(_run_qpoints(phonon, [q])[0])
        ours = np.asarray(report["reference"]["frequencies_THz"][name])
        np.testing.assert_allclose(ours, expected, atol=1e-3, err_msg=name)
    # the finite-difference floor: EMT own X doublet splitting, ~3e-4 THz at 0.005 Å
    assert report["reference"]["splittings_THz"]["X"] < 1e-3
    assert report["reference"]["splittings_THz"]["L"] < 1e-9
    assert report["reference"]["gamma_acoustic_THz"] < 1e-5


def test_phonon_splitting_of_an_anisotropic_model_vanishes_when_symmetrized():
    atoms = bulk("Cu", "fcc", a=3.6)
    model = AnisotropicCalculator(EMT(), terms=((2, 0.05, "pair"),), direction=DIRECTION)
    calculators = {
        "raw": model,
        "symmetrized": SymmetrizedCalculator(model, quadrature="lebedev:2", raw=False),
        "reference": EMT(),
    }
    report = phonon_report(calculators, atoms, supercell=(2, 2, 2), band_points=5)
    raw, sym, ref = (report[n]["splittings_THz"] for n in ("raw", "symmetrized", "reference"))
    assert raw["L"] > 1e-2  # a degree-2 term splits the L doublet
    assert sym["L"] < 1e-6 and abs(sym["L"] - ref["L"]) < 1e-6
    assert sym["X"] <= ref["X"] + 1e-6


def test_elastic_constants_of_emt_are_cubic_and_match_an_energy_reference():
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True)
    c = elastic_constants(EMT(), atoms)
    spread = cubic_spread(c)
    assert max(spread.values()) < 1e-3
    # independent reference: C11 and C12 from the curvature of the energy
    volume = atoms.get_volume()

    def energy(eps):
        strained = atoms.copy()
        strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        strained.calc = EMT()
        return strained.get_potential_energy()

    h = 1e-3
    e0 = energy(np.zeros((3, 3)))
    uniaxial = np.diag([h, 0, 0])
    c11 = (energy(uniaxial) - 2 * e0 + energy(-uniaxial)) / h**2 / volume
    both = np.diag([h, h, 0])
    c11_c12 = (energy(both) - 2 * e0 + energy(-both)) / h**2 / volume  # 2 C11 + 2 C12
    from ase.units import GPa

    summary = cubic_summary(c)
    assert abs(summary["C11"] - c11 / GPa) < 0.5
    assert abs(summary["C12"] - (c11_c12 / 2 - c11) / GPa) < 0.5


def test_elastic_spread_of_an_anisotropic_model_vanishes_when_symmetrized():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    model = AnisotropicCalculator(EMT(), terms=((2, 0.05, "pair"),), direction=DIRECTION)
    raw = cubic_spread(elastic_constants(model, atoms, strains=(0.01,)))
    sym_calc = SymmetrizedCalculator(model, quadrature="lebedev:2", raw=False)
    sym = cubic_spread(elastic_constants(sym_calc, atoms, strains=(0.01,)))
    assert max(raw.values()) > 0.1
    assert max(sym.values()) < 1e-3


def test_relaxation_with_emt_keeps_fm3m():
    atoms = bulk("Cu", "fcc", a=3.63, cubic=True)
    atoms.rattle(0.01, seed=1)
    report, relaxed = relax_report({"reference": EMT()}, atoms, fmax=1e-4)
    assert report["initial"]["spacegroup"]["0.001"].startswith("P")  # rattled
    assert report["reference"]["spacegroup"]["0.001"] == "Fm-3m (225)"
    assert report["reference"]["converged"]
    assert relaxed["reference"].cell.cellpar()[0] < 3.63


def test_workflows_refuse_a_molecule():
    with pytest.raises(NotACrystalError, match="needs a crystal"):
        elastic_constants(EMT(), molecule("H2O"))
    with pytest.raises(NotACrystalError, match="needs a crystal"):
        phonon_report({"reference": EMT()}, molecule("H2O"))


def test_cli_elastic_and_relax_write_their_outputs(tmp_path, capsys):
    out = tmp_path / "el"
    args = ["--quadrature", "group:T", "--reference", "emt", "--output", str(out)]
    assert main(["elastic", "--strains", "0.01", *args]) == 0
    report = json.loads((out / "elastic.json").read_text())
    for name in ("raw", "symmetrized", "reference"):
        assert np.shape(report[name]["C_GPa"]) == (6, 6)
        assert set(report[name]["cubic_spread_GPa"]) == {"C11", "C12", "C44", "forbidden_max"}
    assert (out / "elastic.png").stat().st_size > 0
    assert "C11" in capsys.readouterr().out
    # no overwrite without --overwrite
    assert main(["elastic", "--strains", "0.01", *args]) == 2
    assert "--overwrite" in capsys.readouterr().err

    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    write(tmp_path / "cu.extxyz", cell)
    out = tmp_path / "rx"
    argv = ["relax", str(tmp_path / "cu.extxyz"), "--rattle", "0.01", "--fmax", "0.05"]
    assert main([*argv, "--quadrature", "group:T", "--output", str(out)]) == 0
    report = json.loads((out / "relax.json").read_text())
    assert set(report["raw"]["spacegroup"]) == {"1e-05", "0.0001", "0.001", "0.01", "0.1"}
    assert (out / "relaxed-symmetrized.extxyz").is_file()


def test_cli_phonons_json_and_a_molecule_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "ph"
    argv = ["phonons", "--supercell", "2", "2", "2", "--quadrature", "group:T"]
    assert main([*argv, "--output", str(out)]) == 0
    report = json.loads((out / "phonons.json").read_text())
    for name in ("raw", "symmetrized"):
        assert "Gamma" in report[name]["splittings_THz"]  # degenerate as the last model sees it
        assert np.isfinite(report[name]["gamma_acoustic_THz"])
    # translations cost no energy: the acoustic branches vanish at Gamma once the
    # net force of every displaced copy is removed (Cu's highest branch: ~7 THz)
    assert report["symmetrized"]["gamma_acoustic_THz"] < 0.1
    assert (out / "bands.png").stat().st_size > 0

    write(tmp_path / "h2o.xyz", molecule("H2O"))
    assert main(["phonons", str(tmp_path / "h2o.xyz"), "--output", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a crystal" in err[0]
    assert not (tmp_path / "m").exists()
