"""The public equivariance protocols reproduce known answers."""

import numpy as np
from ase.calculators.emt import EMT
from conftest import copper
from scipy.spatial.transform import Rotation

from ase_symcalc.checks import (
    WALK_STEP_ANGLES,
    arena_force_equivariance,
    rotational_symmetry_walk,
    walk_rotations,
)
from ase_symcalc.testing import AnisotropicCalculator

DIRECTION = np.array([0.31, -0.52, 0.79]) / np.linalg.norm([0.31, -0.52, 0.79])


def test_emt_passes_both_protocols():
    atoms = copper((2, 1, 1), rattle=0.1, seed=4)
    arena = arena_force_equivariance(EMT(), atoms, axes=2)
    assert arena.passed
    assert arena.summary()["force_mae_max"] < 1e-11
    walk = rotational_symmetry_walk(EMT(), atoms).summary()
    assert walk["forces_change_max"] < 1e-11
    assert walk["energy_change_max"] < 1e-11


def test_arena_score_of_an_analytic_model_is_its_analytic_value():
    """Rotating the input by R is the same as using the direction R^T e."""
    atoms = copper((2, 1, 1), rattle=0.1, seed=4)
    model = AnisotropicCalculator(terms=((2, 0.3, "pair"),), direction=DIRECTION, cutoff=3.2)
    arena = arena_force_equivariance(model, atoms, axes=2, angles=(30, 90, 360), seed=7)
    rng = np.random.default_rng(7)
    axes = rng.normal(size=(2, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    _, f0, _ = model.anisotropic_terms(atoms)
    for a, angle in enumerate((30, 90, 360)):
        for x, axis in enumerate(axes):
            r = Rotation.from_rotvec(np.radians(angle) * axis).as_matrix()
            _, fr, _ = model.anisotropic_terms(atoms, direction=r.T @ DIRECTION)
            expected = np.mean(np.abs(f0 @ r.T - fr @ r.T))
            np.testing.assert_allclose(arena.mae[a, x], expected, rtol=1e-9, atol=1e-14)
    assert not arena.passed
    assert arena.mae[2].max() < 1e-12  # 360 degrees is the identity


def test_walk_is_mlpeg_walk_and_scores_an_analytic_model():
    matrices = walk_rotations()
    assert matrices.shape == (114, 3, 3)
    steps = np.einsum("kij,klj->kil", matrices[1:14], matrices[:13])
    step_angles = np.degrees(Rotation.from_matrix(steps).magnitude())
    np.testing.assert_allclose(step_angles, WALK_STEP_ANGLES[1:], atol=1e-9)
    assert np.isclose(np.degrees(Rotation.from_matrix(matrices[0]).magnitude()), 1.0)

    atoms = copper((2, 1, 1), rattle=0.1, seed=4)
    model = AnisotropicCalculator(terms=((2, 0.3, "pair"),), direction=DIRECTION, cutoff=3.2)
    walk = rotational_symmetry_walk(model, atoms)
    assert len(walk.energy_change) == 114
    all_matrices = np.concatenate([np.eye(3)[None], matrices])
    energies = [
        model.anisotropic_terms(atoms, direction=m.T @ DIRECTION)[0].sum() for m in all_matrices
    ]
    np.testing.assert_allclose(
        walk.energy_change, np.abs(np.diff(energies)) / len(atoms), rtol=1e-9, atol=1e-14
    )
    assert walk.summary()["forces_change_max"] > 1e-3
