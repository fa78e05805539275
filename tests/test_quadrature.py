"""Quadrature rules: weights, orthogonality, and the exactness each claims."""

import numpy as np
import pytest

from ase_symcalc import O3Quadrature, get_quadrature
from ase_symcalc.quadrature import (
    GENERIC_ORIENTATION,
    design_degrees,
    quadrature_table,
    rule_moment,
    so3_character,
)
from ase_symcalc.transforms import proper_part

EXACT_SPECS = [
    "lebedev:1",
    "lebedev:2",
    "lebedev:3",
    "lebedev:4",
    "lebedev:5",
    "lebedev:6",
    "lebedev-products:1",
    "lebedev-products:2",
    "lebedev-products:3",
    "group:T",
    "group:O",
    "group:I",
]

# Reference section 3.1 (proper rotations) and 3.2.
EXPECTED_COUNTS = {
    "lebedev:1": 12,
    "lebedev:2": 18,
    "lebedev:3": 24,
    "lebedev:4": 70,
    "lebedev:5": 84,
    "lebedev:6": 182,
    "lebedev-products:1": 18,
    "lebedev-products:2": 70,
    "lebedev-products:3": 182,
    "lebedev-products:4": 342,
    "lebedev-products:5": 550,
    # the reference lists 962 (order 13 x 13), but order 13 has negative weights
    # and is skipped: order 15 (86 nodes) x 13
    "lebedev-products:6": 1118,
    "group:T": 12,
    "group:O": 24,
    "group:I": 60,
}


def _rotation_angles(matrices):
    proper = proper_part(matrices)
    cos = np.clip((np.trace(proper, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return np.arccos(cos)


@pytest.mark.parametrize("inversion", [False, True], ids=["SO3", "O3"])
@pytest.mark.parametrize("orientation", [None, "generic"], ids=["aligned", "generic"])
@pytest.mark.parametrize("spec", EXACT_SPECS)
def test_rule_is_exact_to_its_degree_and_not_beyond(spec, orientation, inversion):
    rule = get_quadrature(spec, inversion=inversion, orientation=orientation)
    for l in range(1, rule.degree + 1):
        assert rule_moment(rule, l) < 1e-12, f"{rule.name} not exact at l={l}"
    # the claimed degree is the truth: every rule here fails at degree + 1
    assert rule_moment(rule, rule.degree + 1) > 1e-6, f"{rule.name} exact beyond its degree"


@pytest.mark.parametrize("spec", EXACT_SPECS)
def test_rule_basics(spec):
    rule = get_quadrature(spec)
    m = rule.matrices
    assert m.shape == (len(rule), 3, 3) and m.dtype == np.float64
    assert len(rule) == 2 * EXPECTED_COUNTS[spec]
    np.testing.assert_allclose(rule.weights.sum(), 1.0, atol=1e-14)
    assert (rule.weights > 0).all()
    np.testing.assert_allclose(
        np.einsum("mij,mkj->mik", m, m), np.broadcast_to(np.eye(3), m.shape), atol=1e-13
    )
    dets = np.linalg.det(m)
    np.testing.assert_allclose(np.abs(dets), 1.0, atol=1e-13)
    # inversion adds the improper coset with half of the weight
    np.testing.assert_allclose(rule.weights[dets < 0].sum(), 0.5, atol=1e-14)
    assert rule.has_inversion


@pytest.mark.parametrize("spec", ["group:T", "group:O", "group:I", "lebedev:3"])
def test_group_rules_pass_the_character_test(spec):
    # For groups (lebedev:3 is the group O), exactness at l <=> sum_i w_i chi_l(R_i) = 0.
    rule = get_quadrature(spec, inversion=False, orientation=None)
    angles = _rotation_angles(rule.matrices)
    for l in range(1, rule.degree + 1):
        assert abs(np.sum(rule.weights * so3_character(l, angles))) < 1e-12
    assert abs(np.sum(rule.weights * so3_character(rule.degree + 1, angles))) > 0.1


def test_lebedev3_is_the_cube_group():
    leb = get_quadrature("lebedev:3", inversion=False, orientation=None).matrices
    cube = get_quadrature("group:O", inversion=False, orientation=None).matrices
    distance = np.abs(leb[:, None] - cube[None]).max(axis=(2, 3))
    assert (distance.min(axis=1) < 1e-12).all() and len(leb) == len(cube) == 24


def test_counts_match_the_reference_table():
    rows = {row["spec"]: row for row in quadrature_table()}
    for spec, count in EXPECTED_COUNTS.items():
        assert rows[spec]["evaluations"] == count, spec
        assert rows[spec]["evaluations_with_inversion"] == 2 * count
    assert rows["lebedev-products:3"]["degree"] == 6
    assert rows["group:I"]["degree"] == 5


def test_character_formula():
    assert so3_character(3, 0.0) == 7.0
    w = 0.7
    # chi_l = sum_{m=-l}^{l} exp(i m w)
    expected = sum(np.cos(m * w) for m in range(-2, 3))
    np.testing.assert_allclose(so3_character(2, w), expected, atol=1e-14)


def test_generic_orientation_is_right_multiplication():
    aligned = get_quadrature("group:O", orientation=None)
    generic = get_quadrature("group:O")
    np.testing.assert_allclose(generic.matrices, aligned.matrices @ GENERIC_ORIENTATION, atol=1e-15)
    assert generic.identity_index() is None
    assert aligned.identity_index() is not None
    custom = get_quadrature("group:O", orientation=GENERIC_ORIENTATION.T)
    np.testing.assert_allclose(
        custom.matrices, aligned.matrices @ GENERIC_ORIENTATION.T, atol=1e-15
    )


def test_generic_orientation_is_far_from_crystal_axes():
    from scipy.spatial.transform import Rotation

    r0 = Rotation.from_matrix(GENERIC_ORIENTATION)
    for group in ("O", "I", "D6"):
        misorientation = (Rotation.create_group(group).inv() * r0).magnitude().min()
        assert np.degrees(misorientation) > 25.0, group


def test_random_rules_are_seeded_and_unbiased():
    a = get_quadrature("random:50", seed=3)
    b = get_quadrature("random:50", seed=3)
    c = get_quadrature("random:50", seed=4)
    np.testing.assert_array_equal(a.matrices, b.matrices)
    assert not np.allclose(a.matrices, c.matrices)
    assert a.degree is None and len(a) == 100
    # error ~ 1/sqrt(M): a 50-point random rule is visibly not exact
    assert 1e-4 < rule_moment(a, 2) < 0.5


def test_identity_rule():
    rule = get_quadrature("identity")
    assert len(rule) == 1 and rule.degree == 0
    np.testing.assert_array_equal(rule.matrices[0], np.eye(3))


def test_from_matrices_is_used_as_given():
    rule = get_quadrature("group:T", orientation=None)
    custom = O3Quadrature.from_matrices(rule.matrices)
    np.testing.assert_array_equal(custom.matrices, rule.matrices)
    np.testing.assert_allclose(custom.weights, 1.0 / len(rule))
    assert get_quadrature(custom) is custom
    assert "custom" in repr(custom)
    roundtrip = O3Quadrature.from_matrices(
        **{k: v for k, v in custom.todict().items() if k in ("matrices", "weights")}
    )
    np.testing.assert_array_equal(roundtrip.matrices, custom.matrices)


@pytest.mark.parametrize(
    "spec",
    [
        "lebedev",
        "lebedev:0",
        "lebedev:x",
        "group:X",
        "random:0",
        "icosahedron",
        "lebedev-products:-1",
        3,
    ],
    ids=str,
)
def test_unknown_spec_lists_the_valid_forms(spec):
    with pytest.raises((ValueError, TypeError), match="lebedev-products:L.*group:I.*random:M"):
        get_quadrature(spec)


def test_bad_rules_are_refused_with_a_reason():
    eye = np.eye(3)[None].repeat(2, axis=0)
    with pytest.raises(ValueError, match="sum to 1"):
        O3Quadrature.from_matrices(eye, [0.5, 0.6])
    with pytest.raises(ValueError, match="non-negative"):
        O3Quadrature.from_matrices(eye, [1.5, -0.5])
    with pytest.raises(ValueError, match="not orthogonal"):
        O3Quadrature.from_matrices(np.stack([np.eye(3), 1.1 * np.eye(3)]))
    with pytest.raises(ValueError, match=r"shape \(M, 3, 3\)"):
        O3Quadrature.from_matrices(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="one weight per matrix"):
        O3Quadrature.from_matrices(eye, [1.0])
    with pytest.raises(ValueError, match="orientation"):
        get_quadrature("group:O", orientation="aligned")
    with pytest.raises(ValueError, match="proper rotation"):
        get_quadrature("group:O", orientation=-np.eye(3))


@pytest.mark.parametrize("t", design_degrees(), ids=lambda t: f"design:{t}")
def test_design_is_exact_to_its_degree_and_not_beyond(t):
    rule = get_quadrature(f"design:{t}", inversion=False, orientation=None)
    assert rule.degree == t
    for l in range(1, t + 1):
        assert rule_moment(rule, l, n_probes=12) < 1e-12, l
    assert rule_moment(rule, t + 1, n_probes=12) > 1e-3
    assert np.all(rule.weights > 0)
    # fewer rotations than the Lebedev product rule of the same degree, more
    # than the lower bound sum_{l <= t/2} (2l+1)^2
    assert len(rule) < len(get_quadrature(f"lebedev:{t}", inversion=False))
    assert len(rule) >= sum((2 * l + 1) ** 2 for l in range(t // 2 + 1))
    doubled = get_quadrature(f"design:{t}")  # with inversion, generic orientation
    assert len(doubled) == 2 * len(rule) and doubled.has_inversion
    for l in (1, t):
        assert rule_moment(doubled, l) < 1e-12


def test_unknown_design_degree_names_the_shipped_ones():
    with pytest.raises(ValueError, match=r"no design of degree 3 .*design:6"):
        get_quadrature("design:3")
