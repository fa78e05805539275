"""Symmetrization against known answers: analytic models, equivariant
calculators, the cubic-alignment trap and the section-4 anchor."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from conftest import ConstantForceCalculator, copper

from ase_symcalc import SymmetrizedCalculator, get_quadrature
from ase_symcalc.symmetrize import remove_net_force, remove_net_torque
from ase_symcalc.testing import AnisotropicCalculator, assert_equivariant, random_o3

DIRECTION = (0.31, -0.52, 0.79)


def _evaluate(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all() and "stress" in calc.implemented_properties:
        out["stress"] = atoms.get_stress()
    return out


# (term, covering rule, rule one degree short); odd degrees without inversion,
# since the improper coset removes them whatever the rule
DEGREE_CASES = [
    ((1, 20.0, "site"), dict(quadrature="lebedev:1", inversion=False), dict(quadrature="identity")),
    ((2, 1.0, "pair"), dict(quadrature="lebedev:2"), dict(quadrature="lebedev:1")),
    (
        (3, 10.0, "site"),
        dict(quadrature="group:O", inversion=False),
        dict(quadrature="group:T", inversion=False),
    ),
    ((4, 0.1, "pair"), dict(quadrature="group:I"), dict(quadrature="group:O")),
    ((4, 0.1, "pair"), dict(quadrature="lebedev:4"), dict(quadrature="lebedev:3")),
]


@pytest.mark.parametrize(
    "term, covering, short",
    DEGREE_CASES,
    ids=[f"l{c[0][0]}-{c[0][2]}-{c[1]['quadrature']}" for c in DEGREE_CASES],
)
def test_average_removes_terms_up_to_the_rule_degree(cu4, term, covering, short):
    model = AnisotropicCalculator(EMT(), terms=(term,), direction=DIRECTION, cutoff=3.2)
    exact = _evaluate(EMT(), cu4)  # the Haar average: the anisotropic part averages to 0
    raw = _evaluate(model, cu4)
    assert abs(raw["energy"] - exact["energy"]) > 1e-3, "test term too small to see"

    good = _evaluate(SymmetrizedCalculator(model, **covering), cu4)
    for key in exact:
        np.testing.assert_allclose(good[key], exact[key], rtol=0, atol=1e-10, err_msg=key)

    bad = _evaluate(SymmetrizedCalculator(model, **short), cu4)
    assert abs(bad["energy"] - exact["energy"]) > 1e-5
    assert np.abs(bad["forces"] - exact["forces"]).max() > 1e-5


def test_odd_degrees_are_removed_by_inversion_alone(cu4):
    model = AnisotropicCalculator(EMT(), terms=((3, 10.0, "site"),), direction=DIRECTION)
    exact = _evaluate(EMT(), cu4)
    sym = _evaluate(SymmetrizedCalculator(model, quadrature="lebedev:1", inversion=True), cu4)
    np.testing.assert_allclose(sym["energy"], exact["energy"], atol=1e-10)
    np.testing.assert_allclose(sym["forces"], exact["forces"], atol=1e-10)


@pytest.mark.parametrize(
    "terms, rule",
    [
        (((2, 1.0, "pair"), (1, 20.0, "site")), "lebedev-products:2"),
        (((2, 1.0, "pair"), (1, 20.0, "site")), "group:I"),  # products of degree 2 <= 5
        (((4, 0.1, "pair"),), "lebedev-products:4"),
    ],
    ids=["l2+l1-products2", "l2+l1-groupI", "l4-products4"],
)
def test_equivariance_errors_equal_their_analytic_values(cu4, terms, rule):
    model = AnisotropicCalculator(EMT(), terms=terms, direction=DIRECTION, cutoff=3.2)
    stats = model.haar_statistics(cu4)
    calc = SymmetrizedCalculator(model, quadrature=rule)
    atoms = cu4.copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    r = calc.results
    n = len(atoms)
    np.testing.assert_allclose(
        r["energy_equivariance_error"], np.sqrt(stats["energy"][1]), rtol=1e-10
    )
    np.testing.assert_allclose(
        r["forces_equivariance_error"], np.sqrt(stats["forces"][1] / (3 * n)), rtol=1e-10
    )
    np.testing.assert_allclose(
        r["stress_equivariance_error"], np.sqrt(stats["stress"][1] / 9), rtol=1e-10
    )
    per_atom = r["forces_equivariance_error_per_atom"]
    assert per_atom.shape == (n,)
    np.testing.assert_allclose(
        np.sqrt(np.mean(per_atom**2)), r["forces_equivariance_error"], rtol=1e-12
    )


def test_site_term_energy_variance_has_a_closed_form(cu8):
    # For one degree-l term, Var = a^2/(2l+1) sum_{ik} c_i c_k P_l(cos_ik) with
    # c_i = (1 + |v_i|^2) |v_i|^l
    # (addition theorem) -- an independent check of haar_statistics itself.
    from numpy.polynomial.legendre import legval

    l, a, cutoff = 2, 0.3, 3.2
    model = AnisotropicCalculator(terms=((l, a, "site"),), cutoff=cutoff)
    from ase.neighborlist import neighbor_list

    i, d = neighbor_list("iD", cu8, cutoff)
    r = np.linalg.norm(d, axis=1)
    v = np.zeros((len(cu8), 3))
    np.add.at(v, i, ((1 - (r / cutoff) ** 2) ** 2)[:, None] * d / cutoff)
    norms = np.linalg.norm(v, axis=1)
    cos = (v @ v.T) / np.outer(norms, norms)
    c = (1 + norms**2) * norms**l
    closed = a**2 / (2 * l + 1) * np.sum(np.outer(c, c) * legval(cos, [0, 0, 1]))
    np.testing.assert_allclose(model.haar_statistics(cu8)["energy"][1], closed, rtol=1e-10)


@pytest.mark.parametrize(
    "name, atoms_factory, base_factory",
    [
        ("EMT-bulk", lambda: copper((2, 1, 1), seed=3), EMT),
        ("EMT-triclinic", lambda: copper(rattle=0.08, seed=4, cubic=False).repeat((2, 2, 1)), EMT),
        (
            "LJ-cluster",
            lambda: copper((2, 1, 1), seed=5).copy(),
            lambda: LennardJones(sigma=2.3, epsilon=0.4, rc=5.0, smooth=True),
        ),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_equivariant_calculators_come_back_unchanged(name, atoms_factory, base_factory):
    atoms = atoms_factory()
    if name == "LJ-cluster":
        atoms.pbc = False
        atoms.cell = None
    raw = _evaluate(base_factory(), atoms)
    calc = SymmetrizedCalculator(base_factory())
    sym = _evaluate(calc, atoms)
    for key in raw:
        np.testing.assert_allclose(sym[key], raw[key], rtol=0, atol=1e-10, err_msg=key)
    r = calc.results
    assert r["energy_equivariance_error"] < 1e-10
    assert r["forces_equivariance_error"] < 1e-10
    assert r["forces_equivariance_error_per_atom"].max() < 1e-10
    if "stress" in raw:
        assert r["stress_equivariance_error"] < 1e-10
    else:
        assert "stress_equivariance_error" not in r


@pytest.mark.parametrize("seed", [0, 1])
def test_symmetrized_output_is_equivariant(cu4, seed):
    model = AnisotropicCalculator(
        EMT(), terms=((2, 1.0), (3, 10.0, "site"), (4, 0.1)), direction=DIRECTION, cutoff=3.2
    )
    # group:I is exact to degree 5 >= 4: the average is exactly equivariant
    assert_equivariant(
        SymmetrizedCalculator(model, quadrature="group:I"),
        cu4,
        seed=seed,
        energy_atol=1e-10,
        forces_atol=1e-10,
        stress_atol=1e-11,
    )
    # and the harness has teeth: the raw model and a short rule both fail
    with pytest.raises(AssertionError, match="g = "):
        assert_equivariant(model, cu4, seed=seed)
    with pytest.raises(AssertionError):
        assert_equivariant(SymmetrizedCalculator(model, quadrature="group:O"), cu4, seed=seed)


def test_cubic_crystal_needs_the_generic_orientation():
    # Reference section 3.4: a perfect axis-aligned fcc cell with a degree-4 term.
    atoms = copper((2, 2, 2), rattle=0.0)
    model = AnisotropicCalculator(
        EMT(), terms=((4, 0.05, "pair"),), direction=(0, 0, 1), cutoff=3.0
    )
    haar_std = np.sqrt(model.haar_statistics(atoms)["energy"][1])
    emt = _evaluate(EMT(), atoms)["energy"]
    raw = _evaluate(model, atoms)["energy"]
    assert abs(raw - emt) > 1e-3 and haar_std > 1e-3

    default = SymmetrizedCalculator(model)  # group:I, generic orientation
    sym = _evaluate(default, atoms)["energy"]
    np.testing.assert_allclose(sym, emt, atol=1e-10)
    # group:I is not product-exact at degree 4, so the spread is close, not equal
    np.testing.assert_allclose(default.results["energy_equivariance_error"], haar_std, rtol=0.15)

    aligned = SymmetrizedCalculator(model, quadrature="lebedev:3", orientation=None)
    assert abs(_evaluate(aligned, atoms)["energy"] - raw) < 1e-10  # averages nothing
    assert aligned.results["energy_equivariance_error"] < 1e-10  # and sees nothing

    generic = SymmetrizedCalculator(model, quadrature="lebedev:3")
    _evaluate(generic, atoms)
    assert generic.results["energy_equivariance_error"] > 0.2 * haar_std


class FirstCoordinate(Calculator):
    """E = x_1, the first coordinate of atom 1; F = (-1, 0, 0) on it."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        forces = np.zeros((len(self.atoms), 3))
        forces[0, 0] = -1.0
        e = float(self.atoms.positions[0, 0])
        self.results = {"energy": e, "free_energy": e, "forces": forces}


@pytest.mark.parametrize("rule", ["group:I", "lebedev-products:1", "lebedev:2"])
def test_section4_anchor(rule):
    atoms = Atoms("H", positions=[(1.0, 2.0, 3.0)])
    calc = SymmetrizedCalculator(FirstCoordinate(), quadrature=rule)
    atoms.calc = calc
    assert abs(atoms.get_potential_energy()) < 1e-12
    # V = |r|^2 / 3 = 14 / 3; the error is its square root (d = 1)
    np.testing.assert_allclose(
        calc.results["energy_equivariance_error"] ** 2, 14.0 / 3.0, rtol=1e-12
    )
    # z(g) = (-1, 0, 0) g: mean 0, V = 1 over 3 components
    np.testing.assert_allclose(atoms.get_forces(), 0.0, atol=1e-12)
    np.testing.assert_allclose(
        calc.results["forces_equivariance_error"] ** 2, 1.0 / 3.0, rtol=1e-12
    )
    assert calc.results["raw_energy"] == 1.0


def test_net_force_removal_cleans_the_diagnostics(cu4):
    spurious = ConstantForceCalculator(EMT(), force=(0.3, -0.1, 0.2))
    exact = _evaluate(EMT(), cu4)["forces"]
    plain = SymmetrizedCalculator(spurious, quadrature="lebedev:2")
    cleaned = SymmetrizedCalculator(spurious, quadrature="lebedev:2", remove_net_force=True)
    f_plain = _evaluate(plain, cu4)["forces"]
    f_clean = _evaluate(cleaned, cu4)["forces"]
    # the constant force averages out over rotations either way...
    np.testing.assert_allclose(f_plain, exact, atol=1e-10)
    np.testing.assert_allclose(f_clean, exact - exact.mean(axis=0), atol=1e-10)
    np.testing.assert_allclose(f_clean.sum(axis=0), 0.0, atol=1e-12)
    # ...but only after removal does the spread stop reporting it: |c|^2 / 3 per component
    np.testing.assert_allclose(
        plain.results["forces_equivariance_error"], np.sqrt(0.14 / 3), rtol=1e-10
    )
    assert cleaned.results["forces_equivariance_error"] < 1e-10
    # raw forces stay raw
    np.testing.assert_allclose(
        cleaned.results["raw_forces"], _evaluate(spurious, cu4)["forces"], atol=1e-12
    )


def test_random_grid_keeps_exactness_and_is_seeded(cu4):
    model = AnisotropicCalculator(EMT(), terms=((4, 0.1),), direction=DIRECTION)
    calc = SymmetrizedCalculator(model, quadrature="group:I", mode="random-grid", seed=7)
    twin = SymmetrizedCalculator(model, quadrature="group:I", mode="random-grid", seed=7)
    errors = []
    for step in range(3):
        atoms = cu4.copy()
        atoms.positions[0, 0] += 1e-3 * step  # a new structure, a fresh rotation
        atoms.calc = calc
        e = atoms.get_potential_energy()
        np.testing.assert_allclose(e, _evaluate(EMT(), atoms)["energy"], atol=1e-10)
        errors.append(calc.results["energy_equivariance_error"])
        atoms.calc = twin
        assert atoms.get_potential_energy() == e
        assert twin.results["energy_equivariance_error"] == errors[-1]
    assert len(set(np.round(errors, 14))) == 3  # the rotation changed every call


def test_random_single_is_one_evaluation(cu4):
    model = AnisotropicCalculator(EMT(), terms=((2, 1.0),), direction=DIRECTION)
    calc = SymmetrizedCalculator(model, mode="random-single", seed=1, raw=False)
    atoms = cu4.copy()
    atoms.calc = calc
    e1 = atoms.get_potential_energy()
    assert calc.evaluation_count == 1
    assert np.isnan(calc.results["energy_equivariance_error"])
    assert "raw_energy" not in calc.results
    # a single random rotation is an unbiased but noisy estimate
    energies = []
    for k in range(40):
        atoms.positions[0, 0] += 1e-9 * (k + 1)
        energies.append(atoms.get_potential_energy())
    exact = _evaluate(EMT(), cu4)["energy"]
    assert np.std(energies) > 1e-3
    assert abs(np.mean(energies) - exact) < 4 * np.std(energies) / np.sqrt(len(energies))
    assert e1 != exact


def test_improper_copies_are_the_same_periodic_system(cu8):
    # EMT sees g.x for improper g with a right-handed cell and gives the same energy
    from ase_symcalc.testing import rotated_atoms

    emt = EMT()
    reference = _evaluate(emt, cu8)["energy"]
    for g in random_o3(4, seed=11):
        copy = rotated_atoms(cu8, g)
        assert np.linalg.det(copy.cell.array) > 0
        np.testing.assert_allclose(_evaluate(EMT(), copy)["energy"], reference, atol=1e-10)


def test_rule_coverage_matters_for_forces_of_anisotropic_stress(cu4):
    # the full 3x3 stress is averaged before conversion to Voigt
    model = AnisotropicCalculator(EMT(), terms=((2, 0.2),), direction=DIRECTION)
    calc = SymmetrizedCalculator(model, quadrature="lebedev:2")
    s = _evaluate(calc, cu4)["stress"]
    np.testing.assert_allclose(s, _evaluate(EMT(), cu4)["stress"], atol=1e-12)
    assert get_quadrature("lebedev:2").degree == 2


class SpinningCalculator(Calculator):
    """Adds a rigid-rotation force field ``omega x (r - centroid)``: pure torque."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, base, omega, **kwargs):
        super().__init__(**kwargs)
        self.base, self.omega = base, np.asarray(omega, dtype=float)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions - self.atoms.positions.mean(axis=0)
        energy = self.base.get_potential_energy(self.atoms)
        forces = self.base.get_forces(self.atoms) + np.cross(self.omega, d)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


def _torque(forces, positions):
    return np.cross(positions - positions.mean(axis=0), forces).sum(axis=-2)


@pytest.mark.parametrize("shape", ["molecule", "linear"])
def test_net_torque_removal_is_exact_and_leaves_torque_free_forces_alone(shape):
    rng = np.random.default_rng(11)
    positions = rng.normal(size=(7, 3))
    if shape == "linear":
        positions = np.outer(rng.normal(size=7), [0.3, -1.0, 0.5])
    forces = remove_net_force(rng.normal(size=(3, 7, 3)))
    cleaned = remove_net_torque(forces, positions)
    np.testing.assert_allclose(cleaned.sum(axis=-2), 0.0, atol=1e-12)
    np.testing.assert_allclose(_torque(cleaned, positions), 0.0, atol=1e-12)
    # stacked copies are cleaned one by one, and cleaning twice changes nothing
    for copy in range(3):
        np.testing.assert_allclose(
            remove_net_torque(forces[copy], positions), cleaned[copy], atol=1e-14
        )
    np.testing.assert_allclose(remove_net_torque(cleaned, positions), cleaned, atol=1e-12)


def test_net_torque_removal_in_the_calculator(cluster):
    omega = (0.2, -0.4, 0.1)
    exact = _evaluate(LennardJones(), cluster)["forces"]
    spun = SpinningCalculator(LennardJones(), omega)
    calc = SymmetrizedCalculator(spun, quadrature="lebedev:2", remove_net_torque=True)
    plain = SymmetrizedCalculator(spun, quadrature="lebedev:2")
    forces = _evaluate(calc, cluster)["forces"]
    np.testing.assert_allclose(forces, exact, atol=1e-10)
    np.testing.assert_allclose(_torque(forces, cluster.positions), 0.0, atol=1e-12)
    # the spurious torque only shows in the diagnostics without removal
    assert calc.results["forces_equivariance_error"] < 1e-10
    assert _evaluate(plain, cluster) and plain.results["forces_equivariance_error"] > 1e-2
    periodic = copper((1, 1, 1))
    with pytest.raises(ValueError, match="only meaningful for non-periodic"):
        SymmetrizedCalculator(EMT(), remove_net_torque=True).calculate(periodic, ["forces"])
