"""The exported symmetrized model gives SymmetrizedCalculator's numbers in any
metatomic engine (here metatomic-ase's MetatomicCalculator)."""

import warnings

import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.cluster import Icosahedron

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.cli import main
from ase_symcalc.export import symmetrized_model
from ase_symcalc.models import path
from ase_symcalc.testing import float64_model


def _structures():
    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    cell.rattle(0.05, seed=1)
    slab = fcc111("Cu", size=(2, 2, 2), a=3.61, vacuum=6.0)
    slab.pbc = (True, True, False)
    slab.rattle(0.05, seed=2)
    cluster = Icosahedron("Cu", noshells=2, latticeconstant=3.61)
    cluster.rattle(0.05, seed=3)
    return {"bulk": cell, "slab": slab, "cluster": cluster}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = float64_model(str(path()))
    target = tmp_path_factory.mktemp("export") / "sym64.pt"
    symmetrized_model(model, quadrature="group:T", batch_size=5).save(str(target))
    return model, str(target)


def _evaluate(calc, atoms, stress):
    atoms = atoms.copy()
    atoms.calc = calc
    out = [atoms.get_potential_energy(), atoms.get_forces()]
    if stress:
        out.append(atoms.get_stress())
    return out


@pytest.mark.parametrize("name", ["bulk", "slab", "cluster"])
def test_exported_model_matches_the_calculator_in_float64(exported, name):
    from metatomic_ase import MetatomicCalculator

    model, target = exported
    atoms = _structures()[name]
    stress = name == "bulk"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        engine = MetatomicCalculator(target, non_conservative=True)
    ours = SymmetrizedCalculator(model, quadrature="group:T", forces="direct")
    for a, b in zip(_evaluate(engine, atoms, stress), _evaluate(ours, atoms, stress), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_exported_energy_is_differentiable(exported):
    """Engines taking forces as -dE/dx get the gradient of the averaged energy."""
    from metatomic_ase import MetatomicCalculator

    model, target = exported
    atoms = _structures()["bulk"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        engine = MetatomicCalculator(target, non_conservative=False)
    ours = SymmetrizedCalculator(model, quadrature="group:T", forces="conservative")
    for a, b in zip(_evaluate(engine, atoms, True), _evaluate(ours, atoms, True), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_export_refuses_a_rule_without_inversion():
    with pytest.raises(ValueError, match="inversion=True"):
        symmetrized_model(quadrature="group:T", inversion=False)


def test_cli_export_symmetrized(tmp_path, capsys):
    target = tmp_path / "sym.pt"
    argv = ["export-metatomic", str(target), "--symmetrize", "--quadrature", "group:T"]
    assert main(argv) == 0
    assert target.stat().st_size > 0
    assert "symmetrized over group:T+inversion" in capsys.readouterr().out
    assert main(argv) == 2  # never overwrites


@pytest.fixture(scope="module")
def exported_float32(tmp_path_factory):
    target = tmp_path_factory.mktemp("export32") / "sym.pt"
    symmetrized_model(quadrature="group:T").save(str(target))
    return str(target)


@pytest.mark.parametrize("name", ["bulk", "slab", "cluster"])
def test_exported_shipped_model_matches_to_float32_precision(exported_float32, name):
    from metatomic_ase import MetatomicCalculator

    atoms = _structures()[name]
    stress = name == "bulk"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = MetatomicCalculator(exported_float32, non_conservative=True)
        got = _evaluate(engine, atoms, stress)
    ours = _evaluate(SymmetrizedCalculator(str(path()), quadrature="group:T"), atoms, stress)
    assert got[0] == pytest.approx(ours[0], rel=1e-5, abs=1e-4)  # float32 sums of per-atom energies
    np.testing.assert_allclose(got[1], ours[1], atol=1e-4)
    if stress:
        np.testing.assert_allclose(got[2], ours[2], atol=1e-5)
