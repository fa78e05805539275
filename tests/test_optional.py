"""Optional dependencies: a missing one is a one-line error naming the extra."""

import sys

import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_symcalc._optional import MissingExtraError, require
from ase_symcalc.workflows import phonon_report


def test_missing_phonopy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "phonopy", None)  # import phonopy -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'ase-symcalc\[phonons\]'") as info:
        phonon_report({"emt": EMT()}, bulk("Cu", "fcc", a=3.61), supercell=(2, 2, 2))
    assert len(str(info.value).splitlines()) == 1
    assert isinstance(info.value, ImportError)  # what code that guards imports catches


def test_missing_matplotlib_keeps_the_numbers_and_says_how_to_get_the_figure(
    monkeypatch, tmp_path, capsys
):
    from ase_symcalc.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(MissingExtraError, match=r"ase-symcalc\[plot\]"):
        require("matplotlib.pyplot", "a figure")
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    structure = tmp_path / "cu.extxyz"
    atoms.write(structure)
    out = tmp_path / "run"
    argv = ["md", str(structure), "--mode", "grid", "--quadrature", "lebedev:1", "--steps", "2"]
    code = main([*argv, "--ensemble", "nve", "--output", str(out)])
    _, err = capsys.readouterr()
    assert code == 0  # a long run is not lost for a figure
    assert (out / "log.csv").exists() and (out / "summary.json").exists()
    assert not (out / "equivariance.png").exists()
    assert "no figure" in err and "ase-symcalc[plot]" in err
