"""Character projections (B metric) on responses with a known spectrum."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from conftest import copper

from ase_symcalc import SymmetrizedCalculator, get_quadrature
from ase_symcalc.diagnostics import character_fractions
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
