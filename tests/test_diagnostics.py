"""Character projections (B metric) on responses with a known spectrum."""

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from conftest import copper

from ase_symcalc import SymmetrizedCalculator, get_quadrature
from ase_symcalc.diagnostics import (
    DEFAULT_LADDER,
    character_fractions,
    check_convergence,
    feature_fractions,
    plot_fractions,
)
from ase_symcalc.testing import AnisotropicCalculator


class TripleProduct(Calculator):
    """E = (r1 x r2) . r3 of a 4-atom molecule: invariant under rotations,
    odd under inversion -- a pure pseudo-scalar, channel (0, -)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        p = self.atoms.positions
        r1, r2, r3 = p[1] - p[0], p[2] - p[0], p[3] - p[0]
        forces = np.zeros_like(p)
        forces[1], forces[2], forces[3] = -np.cross(r2, r3), -np.cross(r3, r1), -np.cross(r1, r2)
        forces[0] = -forces[1:].sum(axis=0)
        self.results = {"energy": float(np.cross(r1, r2) @ r3), "forces": forces}


def _only(fractions, channel, atol=1e-10):
    for key, value in fractions.items():
        expected = 1.0 if key == channel else 0.0
        assert abs(value - expected) < atol, (key, value)


def test_equivariant_model_lives_in_the_trivial_and_vector_channels(cu4):
    result = character_fractions(EMT(), cu4, lmax=2)
    _only(result["energy"], (0, 1))
    _only(result["forces"], (1, 1))  # a polar vector in the direct frame
    stress = result["stress"]  # a symmetric rank-2 tensor: 0 + 2
    assert abs(stress[(0, 1)] + stress[(2, 1)] - 1.0) < 1e-10 and stress[(2, 1)] > 0.5
    calc = SymmetrizedCalculator(EMT(), quadrature="lebedev-products:2")
    cu4.calc = calc
    cu4.get_forces()
    assert calc.results["forces_equivariance_error"] < 1e-10  # zero error, yet all in (1, +)


def test_pure_degree_two_term_lands_in_2_plus(cu4):
    model = AnisotropicCalculator(terms=((2, 1.0),), direction=(0.3, 0.5, 0.8))
    result = character_fractions(model, cu4, lmax=3)
    _only(result["energy"], (2, 1))
    assert abs(result.residual["energy"]) < 1e-10


def test_pseudo_scalar_lands_in_0_minus():
    molecule = Atoms("H4", positions=[(0, 0, 0), (1, 0.2, 0), (0.1, 1, 0.3), (0.2, 0.1, 1.2)])
    result = character_fractions(TripleProduct(), molecule, lmax=2)
    _only(result["energy"], (0, -1))
    _only(result["forces"], (1, -1))  # its gradient is an axial vector


def test_energy_identity_spread_equals_one_minus_invariant_fraction(cu4):
    # V / sum_g w_g E(g)^2 = 1 - B(0, +) for an invariant target
    model = AnisotropicCalculator(
        EMT(), terms=((2, 1.0), (1, 20.0, "site")), direction=(0.2, 0.4, 0.9)
    )
    rule = "lebedev-products:2"
    result = character_fractions(model, cu4, lmax=2, quadrature=rule)
    calc = SymmetrizedCalculator(model, quadrature=rule, raw=False)
    cu4.calc = calc
    cu4.get_potential_energy()
    quadrature = get_quadrature(rule)
    from ase_symcalc.testing import rotated_atoms

    energies = []
    for g in quadrature.matrices:
        copy = rotated_atoms(cu4, g)
        copy.calc = model
        energies.append(copy.get_potential_energy())
    norm = float(quadrature.weights @ np.square(energies))
    variance = calc.results["energy_equivariance_error"] ** 2
    np.testing.assert_allclose(variance / norm, 1.0 - result["energy"][(0, 1)], rtol=1e-8)
    np.testing.assert_allclose(sum(result["energy"].values()), 1.0, atol=1e-10)  # sum rule


def test_under_resolved_rule_is_refused(cu4):
    with pytest.raises(ValueError, match="cannot resolve characters up to l = 3"):
        character_fractions(EMT(), cu4, lmax=3, quadrature="group:I")
    with pytest.raises(ValueError, match="inversion"):
        character_fractions(
            EMT(), cu4, lmax=1, quadrature=get_quadrature("lebedev-products:1", inversion=False)
        )


def test_table_lists_every_channel(cu4):
    text = character_fractions(EMT(), copper(), lmax=1).table()
    assert "(0,+)" in text and "(1,-)" in text and "forces" in text


DIRECTION = (0.31, -0.52, 0.79)


def test_convergence_ladder_stops_changing_once_the_rule_is_exact(cu4):
    # a degree-4 anisotropy: rules exact to 1..3 leave some of it, group:I
    # (degree 5) and lebedev:6 remove all of it
    model = AnisotropicCalculator(EMT(), terms=((4, 0.2),), direction=DIRECTION)
    report = check_convergence(model, cu4)
    rows = dict(zip(DEFAULT_LADDER, report.rows, strict=True))
    assert [row["degree"] for row in report.rows] == [1, 2, 3, 5, 6]
    assert rows["group:I"]["forces_change"] > 1e-4
    assert report.rows[-1]["forces_change"] < 1e-10
    assert report.rows[-1]["energy_change"] < 1e-12
    assert "lebedev:6" in report.table()


def test_calculator_warns_once_when_its_rule_is_not_converged(cu4):
    model = AnisotropicCalculator(EMT(), terms=((4, 0.2),), direction=DIRECTION)
    # deprecated (the residual answers the same question), still working
    with pytest.warns(FutureWarning, match="use residual=True"):
        calc = SymmetrizedCalculator(model, quadrature="lebedev:3", convergence_tolerance=1e-6)
        converged = SymmetrizedCalculator(model, quadrature="group:I", convergence_tolerance=1e-6)
    with pytest.warns(UserWarning, match="use quadrature='group:I'"):
        calc.calculate(cu4, ["forces"])
    moved = cu4.copy()
    moved.positions[0] += 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        calc.calculate(moved, ["forces"])  # once only
        converged.calculate(cu4, ["forces"])
    assert converged.evaluation_count == 120 + 364 + 1  # rule, finer rule once, raw


def test_feature_fractions_of_the_shipped_model(cu4, tmp_path):
    from ase_symcalc.models import path

    result = feature_fractions(path(), [cu4], lmax=1)
    assert "feature" in result.fractions and "energy" in result.fractions
    for name, values in result.fractions.items():
        assert all(value > -1e-6 for value in values.values()), name
    # an augmented model is nearly symmetric: energy invariant, forces a polar vector
    assert result["energy"][(0, 1)] > 0.99
    assert result["forces"][(1, 1)] > 0.9
    # features of scalar channels are mostly invariant, with some leakage
    assert result["feature"][(0, 1)] > 0.5
    plot_fractions(result, tmp_path / "heatmap.png")
    assert (tmp_path / "heatmap.png").stat().st_size > 1000
    with pytest.raises(TypeError, match="need a metatomic model"):
        feature_fractions(EMT(), [cu4], lmax=1)
    with pytest.raises(ValueError, match="cannot resolve characters"):
        feature_fractions(path(), [cu4], lmax=2, quadrature="lebedev-products:1")


def test_error_split_identity_on_a_synthetic_model():
    # reference EMT (equivariant), model EMT + anisotropy: the raw error over
    # orientations splits exactly into symmetrized error and equivariance error
    from ase.calculators.singlepoint import SinglePointCalculator

    from ase_symcalc.diagnostics import error_split
    from ase_symcalc.testing import rotated_atoms

    frames = []
    for seed in range(2):
        atoms = copper((1, 1, 1), rattle=0.1, seed=seed)
        atoms.calc = EMT()
        labels = {k: atoms.calc.get_property(k, atoms) for k in ("energy", "forces", "stress")}
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    model = AnisotropicCalculator(EMT(), terms=((1, 0.1), (2, 0.2)), direction=DIRECTION)
    rule = get_quadrature("lebedev:3")
    result = error_split(model, frames, quadrature=rule)
    # brute force: the raw model on every rotated copy, back-rotated, against the labels
    squared = []
    for atoms in frames:
        ref = atoms.calc.results["forces"]
        for matrix, weight in zip(rule.matrices, rule.weights, strict=True):
            copy = rotated_atoms(atoms, matrix)
            copy.calc = model
            back = copy.get_forces() @ matrix
            squared.append(weight * np.mean((back - ref) ** 2))
    brute = np.sqrt(np.sum(squared) / len(frames))
    forces = result["forces"]
    assert forces["rmse_orientations"] == pytest.approx(brute, rel=1e-10)
    assert forces["equivariance_error"] > 1e-3
    assert forces["rmse_symmetrized"] < forces["rmse_orientations"]
    assert set(result) >= {"energy", "forces", "stress", "frames", "rule"}
    with pytest.raises(ValueError, match="needs reference labels"):
        error_split(model, [copper()], quadrature=rule)
    with pytest.raises(ValueError, match="raw=True"):
        error_split(SymmetrizedCalculator(model, quadrature=rule, raw=False), frames)
