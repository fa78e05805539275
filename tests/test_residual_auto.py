"""The residual estimate and quadrature="auto", against analytic models whose
Haar average is known exactly (the anisotropic terms average to zero)."""

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from conftest import copper

import ase_symcalc.rule_policy as rule_policy_module
from ase_symcalc import SymmetrizedCalculator, get_quadrature
from ase_symcalc.quadrature import auto_ladder
from ase_symcalc.testing import AnisotropicCalculator

DIRECTION = (0.31, -0.52, 0.79)


def _model(*terms):
    return AnisotropicCalculator(EMT(), terms=terms, direction=DIRECTION, cutoff=3.2)


def _forces(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_forces(), calc.results


def test_residual_vanishes_when_the_rule_covers_the_degree(cu4):
    exact = _forces(EMT(), cu4)[0]
    for term, rule in (((4, 0.1, "pair"), "group:I"), ((6, 0.05, "pair"), "design:6")):
        forces, results = _forces(
            SymmetrizedCalculator(_model(term), quadrature=rule, residual=True, seed=0), cu4
        )
        np.testing.assert_allclose(forces, exact, atol=1e-10)
        assert results["forces_residual"] < 1e-10, rule
        assert results["energy_residual"] < 1e-10, rule
        assert results["stress_residual"] < 1e-10, rule


def test_residual_estimates_the_distance_to_the_haar_average(cu4):
    """E[estimate^2] = (|avg_1 - H|^2 + E_R |avg_R - H|^2) / 2, with H known exactly."""
    model = _model((6, 0.05, "pair"))
    haar = _forces(EMT(), cu4)[0]  # the degree-6 term averages to zero
    rule = get_quadrature("group:I", inversion=False)  # degree 5: leaves degree 6
    estimates, true = [], []
    for seed in range(12):
        forces, results = _forces(
            SymmetrizedCalculator(model, quadrature=rule, residual=True, raw=False, seed=seed),
            cu4,
        )
        estimates.append(results["forces_residual"])
        rotation = get_quadrature("random:1", seed=1000 + seed, inversion=False).matrices[0]
        other, _ = _forces(SymmetrizedCalculator(model, quadrature=rule.rotated(rotation)), cu4)
        true.append(np.sqrt(np.mean((other - haar) ** 2)))
    generic = np.sqrt(np.mean((forces - haar) ** 2))
    expected = np.sqrt((generic**2 + np.mean(np.square(true))) / 2)
    measured = np.sqrt(np.mean(np.square(estimates)))
    assert expected > 1e-4, "test term too small to see"
    assert 0.7 < measured / expected < 1.4, (measured, expected)


def test_residual_of_an_equivariant_model_is_zero(cu4):
    _, results = _forces(SymmetrizedCalculator(EMT(), quadrature="group:O", residual=True), cu4)
    assert results["forces_residual"] < 1e-12
    assert results["evaluations"] == 3 * 48 + 1  # rule, two more orientations, raw
    assert results["forces_residual_bound"] == 3 * results["forces_residual"]


@pytest.mark.parametrize(
    "term, chosen",
    [
        # even degree 6: the 116-point design without inversion is the first exact rung
        ((6, 0.05, "pair"), "design:6@generic"),
        # odd degree 15 (parity-odd; every group has invariants there): only the
        # inversion coset removes it, and I + inversion (120) is the first rung
        # with it, after design:6 (116) fails; a cluster, as the site vectors of
        # a bulk cell nearly vanish
        ((15, 2e5, "site"), "group:I+inversion@generic"),
    ],
    ids=["l6-pair", "l15-site"],
)
def test_auto_picks_the_cheapest_rule_below_the_tolerance(cu4, term, chosen):
    if term[2] == "site":
        cu4 = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0.3, 0.4, 2.4]])
    calc = SymmetrizedCalculator(_model(term), quadrature="auto", tolerance=1e-6)
    forces, results = _forces(calc, cu4)
    assert results["quadrature"] == chosen
    assert results["forces_residual"] < 1e-6
    np.testing.assert_allclose(forces, _forces(EMT(), cu4)[0], atol=1e-9)
    # later calls cost the chosen rule (and the raw copy), no residual pass
    moved = cu4.copy()
    moved.rattle(0.01, seed=5)
    _, results = _forces(calc, moved)
    assert results["evaluations"] == len(calc.quadrature) + 1
    assert results["quadrature"] == chosen


def test_auto_rechecks_and_climbs_with_a_warning():
    model = _model((4, 1e-5, "pair"))
    calc = SymmetrizedCalculator(model, quadrature="auto", tolerance=1e-4, recheck=2)
    atoms = copper(seed=3)
    _, results = _forces(calc, atoms)
    first = results["quadrature"]
    assert first.startswith("group:T"), first  # the tiny l = 4 term passes at 12 rotations
    model.parameters["terms"] = ((4, 0.5, "pair"),)  # the model changes under the run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(3):
            atoms.rattle(0.01, seed=seed)
            _, results = _forces(calc, atoms)
    messages = [str(w.message) for w in caught]
    assert any(first in m and "now using" in m for m in messages), messages
    assert results["quadrature"].startswith("group:I")  # first rung exact to degree 4
    assert results["forces_residual"] < 1e-4


def test_auto_refuses_a_tolerance_no_rule_reaches(cu4, monkeypatch):
    monkeypatch.setattr(
        rule_policy_module, "auto_ladder", lambda: (("group:T", False), ("group:O", False))
    )
    calc = SymmetrizedCalculator(_model((4, 0.5, "pair")), quadrature="auto", tolerance=1e-8)
    with pytest.raises(ValueError, match=r"no rule on the auto ladder .* best is .* group:"):
        _forces(calc, cu4)
    assert calc.results == {}


def test_auto_options_are_checked():
    with pytest.raises(ValueError, match="mode='grid'"):
        SymmetrizedCalculator(EMT(), quadrature="auto", mode="random-grid")
    with pytest.raises(ValueError, match="tolerance= sets the target"):
        SymmetrizedCalculator(EMT(), quadrature="group:I", tolerance=1e-3)
    with pytest.raises(ValueError, match="tolerance must be a positive"):
        SymmetrizedCalculator(EMT(), quadrature="auto", tolerance=-1.0)


def test_auto_ladder_is_sorted_by_cost():
    costs = [len(get_quadrature(s, inversion=i, orientation=None)) for s, i in auto_ladder()]
    assert costs == sorted(costs)
    assert auto_ladder()[0] == ("group:T", False)
    assert ("design:10", True) in auto_ladder()
