"""Averaging over a structure's own symmetry: projector, peers, analytic models."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.structure_symmetry import (
    SymmetryError,
    find_symmetry,
    point_group_name,
    symmetrize_forces,
    symmetrize_per_atom,
    symmetrize_stress,
)
from ase_symcalc.testing import AnisotropicCalculator


def _fcc():
    return bulk("Cu", "fcc", a=3.61, cubic=True)


def _hcp():
    return bulk("Cu", "hcp", a=2.55, c=4.16)


def _bcc():
    return bulk("Cu", "bcc", a=2.87, cubic=True)


def _fcc_defect():
    """A 2x2x2 fcc cell with one atom pushed along [111]: C3v at that site."""
    atoms = _fcc().repeat(2)
    atoms.positions[0] += 0.05 * np.ones(3) / np.sqrt(3)
    return atoms


def _slab():
    return fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=5.0, periodic=False)


def _cluster():
    atoms = Icosahedron("Cu", 3)  # Cu55
    atoms.center(vacuum=0.0)
    return atoms


STRUCTURES = {
    "fcc": (_fcc, "Fm-3m (225)", 192),
    "hcp": (_hcp, "P6_3/mmc (194)", 24),
    "bcc": (_bcc, "Im-3m (229)", 96),
    "fcc-defect": (_fcc_defect, "R3m (160)", 6),
    "slab": (_slab, "p-3m1 (layer 72)", 48),
    "cluster": (_cluster, "Ih", 120),
}


@pytest.mark.parametrize("name", list(STRUCTURES), ids=list(STRUCTURES))
def test_group_found(name):
    build, group, order = STRUCTURES[name]
    symmetry = find_symmetry(build())
    assert symmetry.group == group
    assert len(symmetry) == order
    # rotations are orthogonal and the maps are permutations
    q = symmetry.rotations
    np.testing.assert_allclose(
        q @ np.swapaxes(q, 1, 2), np.broadcast_to(np.eye(3), q.shape), atol=1e-12
    )
    assert np.all(np.sort(symmetry.permutations, axis=1) == np.arange(len(build())))


@pytest.mark.parametrize("name", list(STRUCTURES), ids=list(STRUCTURES))
def test_projector_is_idempotent(name):
    atoms = STRUCTURES[name][0]()
    symmetry = find_symmetry(atoms)
    rng = np.random.default_rng(0)
    forces = rng.normal(size=(len(atoms), 3))
    stress = rng.normal(size=(3, 3))
    stress = stress + stress.T
    energies = rng.normal(size=len(atoms))
    once = symmetrize_forces(forces, symmetry)
    np.testing.assert_allclose(symmetrize_forces(once, symmetry), once, atol=1e-12)
    s1 = symmetrize_stress(stress, symmetry)
    np.testing.assert_allclose(symmetrize_stress(s1, symmetry), s1, atol=1e-12)
    e1 = symmetrize_per_atom(energies, symmetry)
    np.testing.assert_allclose(symmetrize_per_atom(e1, symmetry), e1, atol=1e-12)
    # projected outputs are invariant under every operation
    for q, perm in zip(symmetry.rotations, symmetry.permutations, strict=True):
        np.testing.assert_allclose(once[perm], once @ q.T, atol=1e-12)
        np.testing.assert_allclose(q @ s1 @ q.T, s1, atol=1e-12)


@pytest.mark.parametrize("name", ["fcc-defect", "slab", "cluster"])
def test_emt_outputs_unchanged(name):
    atoms = STRUCTURES[name][0]()
    plain = atoms.copy()
    plain.calc = EMT()
    calc = SymmetrizedCalculator(EMT(), quadrature="identity", raw=False, structure_symmetry=True)
    atoms.calc = calc
    np.testing.assert_allclose(atoms.get_forces(), plain.get_forces(), atol=1e-10)
    np.testing.assert_allclose(
        atoms.get_potential_energies(), plain.get_potential_energies(), atol=1e-10
    )
    if atoms.pbc.all():
        np.testing.assert_allclose(atoms.get_stress(), plain.get_stress(), atol=1e-10)
    assert calc.results["symmetry_operations"] == STRUCTURES[name][2]


def test_equal_to_ase_fix_symmetry_helpers():
    from ase.spacegroup.symmetrize import prep_symmetry, symmetrize_rank1, symmetrize_rank2

    atoms = _fcc_defect()
    atoms.positions[5] += [0.02, -0.01, 0.03]  # lower the group further: a triclinic site
    atoms.set_cell(atoms.cell.array @ np.diag([1.0, 1.0, 1.02]), scale_atoms=True)
    rng = np.random.default_rng(1)
    forces = rng.normal(size=(len(atoms), 3))
    stress = rng.normal(size=(3, 3))
    stress = stress + stress.T
    for structure in (_fcc_defect(), atoms, _hcp().repeat((2, 1, 1))):
        forces = rng.normal(size=(len(structure), 3))
        rotations, translations, symm_map = prep_symmetry(structure, symprec=1e-5)
        lattice = structure.cell.array
        inverse = np.linalg.inv(lattice)
        expected_f = symmetrize_rank1(lattice, inverse, forces, rotations, translations, symm_map)
        expected_s = symmetrize_rank2(lattice, inverse, stress, rotations)
        symmetry = find_symmetry(structure, 1e-5)
        assert len(symmetry) == len(rotations)
        np.testing.assert_allclose(symmetrize_forces(forces, symmetry), expected_f, atol=1e-10)
        np.testing.assert_allclose(symmetrize_stress(stress, symmetry), expected_s, atol=1e-10)


@pytest.mark.parametrize("name", ["hcp", "rocksalt", "wurtzite"])
def test_equal_to_metatomic_ase_group_average(name):
    from metatomic_ase._symmetry import _average_over_group, _get_group_operations

    atoms = {
        "hcp": _hcp,
        "rocksalt": lambda: bulk("NaCl", "rocksalt", a=5.64),
        "wurtzite": lambda: bulk("ZnO", "wurtzite", a=3.25, c=5.2, u=0.38),
    }[name]()
    rng = np.random.default_rng(2)
    forces = rng.normal(size=(len(atoms), 3))
    stress = rng.normal(size=(3, 3))
    stress = stress + stress.T
    expected = _average_over_group(
        {"energy": 0.0, "forces": forces, "stress": stress}, *_get_group_operations(atoms)
    )
    symmetry = find_symmetry(atoms, 1e-6)
    np.testing.assert_allclose(symmetrize_forces(forces, symmetry), expected["forces"], atol=1e-10)
    np.testing.assert_allclose(symmetrize_stress(stress, symmetry), expected["stress"], atol=1e-10)


def _site_projectors(symmetry, n_atoms):
    """For each atom, the average of Q_g over the operations that fix it."""
    projectors = np.zeros((n_atoms, 3, 3))
    counts = np.zeros(n_atoms)
    for q, perm in zip(symmetry.rotations, symmetry.permutations, strict=True):
        fixed = perm == np.arange(n_atoms)
        projectors[fixed] += q
        counts[fixed] += 1
    return projectors / counts[:, None, None]


@pytest.mark.parametrize("name", ["fcc", "hcp", "bcc", "fcc-defect", "slab", "cluster"], ids=str)
def test_analytic_model_exactly_symmetric(name):
    """An anisotropic degree-4 model under a degree-3 rule: the rule's residual
    breaks the site symmetry; the structure average removes it exactly."""
    atoms = STRUCTURES[name][0]()
    if name in ("fcc", "bcc"):
        atoms = atoms.repeat(2)
    model = AnisotropicCalculator(
        EMT(), terms=((4, 0.3, "pair"),), direction=(0.31, -0.52, 0.79), cutoff=3.0
    )
    options = dict(quadrature="group:O", raw=False)
    o3 = SymmetrizedCalculator(model, **options)
    both = SymmetrizedCalculator(model, structure_symmetry=True, **options)
    first, second = atoms.copy(), atoms.copy()
    first.calc, second.calc = o3, both
    f_o3, f_both = first.get_forces(), second.get_forces()
    symmetry = find_symmetry(atoms)
    site = _site_projectors(symmetry, len(atoms))
    violation = lambda f: np.abs(np.einsum("nab,nb->na", site, f) - f).max()  # noqa: E731
    assert violation(f_both) < 1e-12
    fixed = np.abs(site).max(axis=(1, 2)) < 1e-12  # sites where no force is allowed
    if name in ("fcc", "hcp", "bcc", "cluster"):
        assert fixed.any()
    assert np.abs(f_both[fixed]).max(initial=0.0) < 1e-12
    np.testing.assert_allclose(second.calc.results["o3_forces"], f_o3, atol=1e-14)
    if name in ("fcc", "bcc"):
        # every site is an inversion centre (forces vanish even raw): the stress
        # carries the rule's residual
        stress = second.get_stress(voigt=False)
        np.testing.assert_allclose(stress, np.trace(stress) / 3 * np.eye(3), atol=1e-12)
        o3_stress = first.get_stress(voigt=False)
        assert np.abs(o3_stress - np.trace(o3_stress) / 3 * np.eye(3)).max() > 1e-8
    else:  # the O(3) average alone leaves the rule's residual
        assert violation(f_o3) > 1e-8


@pytest.fixture
def symmetry_searches(monkeypatch):
    """The tolerances of every ``find_symmetry`` call the calculator makes."""
    import ase_symcalc.structure_symmetry as module

    calls = []
    original = module.find_symmetry

    def counting(atoms, tolerance):
        calls.append(tolerance)
        return original(atoms, tolerance)

    monkeypatch.setattr(module, "find_symmetry", counting)
    return calls


def test_operations_found_once_per_structure(symmetry_searches):
    calls = symmetry_searches
    atoms = _fcc_defect()
    atoms.calc = SymmetrizedCalculator(EMT(), quadrature="group:T", structure_symmetry=True)
    atoms.get_forces()
    atoms.get_stress()
    atoms.calc.reset()
    atoms.get_forces()  # same structure: the cached operations
    assert len(calls) == 1
    atoms.positions[3] += [0.011, -0.007, 0.013]
    atoms.get_forces()
    assert len(calls) == 2
    assert atoms.calc.results["symmetry_group"] == "P1 (1)"


@pytest.mark.parametrize("repeat", [3, 5, 7, 10], ids=["108", "500", "1372", "4000"])
def test_snapshot_needs_no_spglib(monkeypatch, repeat):
    """Rattled snapshots of every size are told asymmetric by the fingerprints alone
    (issue 28: 500-atom snapshots had fingerprint coincidences and fell back to spglib)."""
    import spglib

    def refuse(*args, **kwargs):
        raise AssertionError("spglib was called on a structure without symmetry")

    monkeypatch.setattr(spglib, "get_symmetry_dataset", refuse)
    atoms = _fcc().repeat(repeat)
    atoms.rattle(0.05, seed=3)
    symmetry = find_symmetry(atoms)
    assert symmetry.is_trivial and symmetry.group == "P1 (1)"
    forces = np.random.default_rng(0).normal(size=(len(atoms), 3))
    np.testing.assert_array_equal(symmetrize_forces(forces, symmetry), forces)


def test_point_group_names():
    assert find_symmetry(Icosahedron("Cu", 2)).group == "Ih"
    from ase.build import molecule

    assert find_symmetry(molecule("CH4")).group == "Td"
    assert find_symmetry(molecule("H2O")).group == "C2v"
    assert find_symmetry(molecule("C6H6")).group == "D6h"
    assert find_symmetry(molecule("NH3")).group == "C3v"
    assert point_group_name(np.eye(3)[None]) == "C1"


def test_bad_input_one_line():
    with pytest.raises(ValueError, match="symmetry_tolerance must be a positive distance"):
        SymmetrizedCalculator(EMT(), structure_symmetry=True, symmetry_tolerance=0.0)
    with pytest.raises(SymmetryError, match="positive distance"):
        find_symmetry(_fcc(), -1e-3)
    wire = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 0, 0]], cell=[3.6, 10, 10], pbc=[1, 0, 0])
    with pytest.raises(SymmetryError, match="wire"):
        find_symmetry(wire)
    overlapping = _fcc()
    overlapping.positions[1] = overlapping.positions[0]
    atoms = overlapping.copy()
    atoms.calc = SymmetrizedCalculator(EMT(), quadrature="group:T", structure_symmetry=True)
    with pytest.raises(SymmetryError) as error:
        atoms.get_forces()
    assert "\n" not in str(error.value)
    assert atoms.calc.results == {}  # nothing stale left behind


def test_o3_view_is_free_when_interleaved():
    from ase_symcalc.workflows import O3OnlyView, elastic_tensors

    model = AnisotropicCalculator(EMT(), terms=((4, 0.3, "pair"),), direction=(0.31, -0.52, 0.79))
    both = SymmetrizedCalculator(model, quadrature="group:T", raw=False, structure_symmetry=True)
    o3 = SymmetrizedCalculator(model, quadrature="group:T", raw=False)
    atoms = _fcc()
    tensors = elastic_tensors(
        {"symmetrized": both, "symmetrized-o3": O3OnlyView(both)}, atoms, strains=(0.01,)
    )
    assert both.evaluation_count == 12 * 24  # the view asked for nothing new
    from ase_symcalc.workflows import elastic_constants

    np.testing.assert_allclose(
        tensors["symmetrized-o3"], elastic_constants(o3, atoms, strains=(0.01,)), atol=1e-9
    )
    # an xx strain leaves a tetragonal cell: sigma_yy = sigma_zz and no shear,
    # exactly with the structure average (different strains are different cells:
    # C11 = C22 is not a symmetry of any one of them)
    c, c_o3 = tensors["symmetrized"], tensors["symmetrized-o3"]
    assert abs(c[1, 0] - c[2, 0]) < 1e-9 and np.abs(c[3:, 0]).max() < 1e-9
    assert abs(c_o3[1, 0] - c_o3[2, 0]) > 1e-6
    with pytest.raises(ValueError, match="structure_symmetry=True"):
        O3OnlyView(o3)


def test_relax_keeps_the_exact_space_group_with_the_shipped_model():
    from ase_symcalc.models import pretrained
    from ase_symcalc.workflows.relax import refined, relax_report

    atoms = _fcc()
    atoms.set_cell(atoms.cell.array * 1.01, scale_atoms=True)
    atoms.rattle(0.01, seed=4)
    sym = SymmetrizedCalculator(pretrained(), quadrature="group:T", structure_symmetry=True)
    report, relaxed = relax_report(
        {"symmetrized": sym},
        atoms,
        fmax=5e-3,
        steps=60,
        starts={"symmetrized": refined(atoms, 0.05)},
    )
    assert report["initial"]["spacegroup"]["1e-05"] == "P1 (1)"
    assert report["symmetrized"]["spacegroup"]["1e-05"] == "Fm-3m (225)"
    assert report["symmetrized"]["converged"]
    with pytest.raises(ValueError, match="positive distance"):
        refined(atoms, 0.0)


def test_mirror_that_fixes_every_atom_up_to_a_lattice_vector():
    """Random atoms on the planes z = 0 and z = c/2: every environment differs,
    yet the mirror z -> -z maps each atom onto itself modulo c."""
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 6.0, size=(10, 2))
    z = np.repeat([0.0, 2.5], 5)
    atoms = Atoms("Cu10", positions=np.column_stack([xy, z]), cell=[6.0, 6.0, 5.0], pbc=True)
    symmetry = find_symmetry(atoms)
    assert len(symmetry) == 2 and symmetry.group.startswith("Pm")
    mirror = symmetry.rotations[~np.all(np.isclose(symmetry.rotations, np.eye(3)), axis=(1, 2))][0]
    np.testing.assert_allclose(mirror, np.diag([1.0, 1.0, -1.0]), atol=1e-12)


@pytest.mark.parametrize(
    "build", [_fcc, _hcp, _bcc, _fcc_defect], ids=["fcc", "hcp", "bcc", "fcc-defect"]
)
def test_moyopy_and_spglib_give_the_same_group_and_projections(build, monkeypatch):
    """moyopy (used where installed: 16x faster on large defect cells) and spglib find
    the same group, the same operations and the same projected outputs (1e-10)."""
    import sys

    pytest.importorskip("moyopy")
    atoms = build().repeat(2)
    rng = np.random.default_rng(4)
    forces = rng.normal(size=(len(atoms), 3))
    stress = rng.normal(size=(3, 3))
    stress = stress + stress.T
    with_moyopy = find_symmetry(atoms)
    monkeypatch.setitem(sys.modules, "moyopy", None)  # import moyopy -> ImportError
    with_spglib = find_symmetry(atoms)
    assert with_moyopy.group == with_spglib.group
    assert len(with_moyopy) == len(with_spglib)
    np.testing.assert_allclose(
        symmetrize_forces(forces, with_moyopy), symmetrize_forces(forces, with_spglib), atol=1e-10
    )
    np.testing.assert_allclose(
        symmetrize_stress(stress, with_moyopy), symmetrize_stress(stress, with_spglib), atol=1e-10
    )


@pytest.mark.parametrize(
    "build, repeat",
    [(_fcc, 2), (_hcp, (2, 2, 1)), (_bcc, 3), (_fcc_defect, (1, 1, 2))],
    ids=["fcc-2x2x2", "hcp-2x2x1", "bcc-3x3x3", "defect-1x1x2"],
)
def test_supercell_groups_as_translation_cosets_project_as_the_whole_group(
    build, repeat, monkeypatch
):
    """A supercell's group stored as cosets of its translations (linear in the atoms)
    projects forces, stress and per-atom values exactly as every operation does."""
    import ase_symcalc.structure_symmetry as module

    atoms = build().repeat(repeat)
    rng = np.random.default_rng(5)
    forces, energies = rng.normal(size=(len(atoms), 3)), rng.normal(size=len(atoms))
    stress = rng.normal(size=(3, 3))
    stress = stress + stress.T
    cosets = find_symmetry(atoms)
    assert cosets.translations > 1 and cosets.translation_orbits is not None
    assert len(cosets.rotations) * cosets.translations == len(cosets)
    monkeypatch.setattr(module, "FACTORIZE_TRANSLATIONS", False)
    whole = find_symmetry(atoms)
    assert whole.translations == 1 and len(whole.rotations) == len(cosets)
    assert whole.group == cosets.group
    for project, values in (
        (symmetrize_forces, forces),
        (symmetrize_stress, stress),
        (symmetrize_per_atom, energies),
    ):
        np.testing.assert_allclose(project(values, cosets), project(values, whole), atol=1e-12)


def test_a_relaxation_reuses_the_operations_and_matches_a_fresh_search(symmetry_searches):
    """Issue 28: positions projected onto the group keep it, so a relaxation searches
    once; the forces at the end are those of a fresh search there (to 1e-10)."""
    from ase.optimize import BFGS

    from ase_symcalc.structure_symmetry import symmetry_still_holds

    calls = symmetry_searches
    atoms = _fcc_defect()
    options = dict(quadrature="group:T", structure_symmetry=True, raw=False)
    atoms.calc = SymmetrizedCalculator(EMT(), **options)
    BFGS(atoms, logfile=None).run(fmax=1e-3, steps=30)
    assert len(calls) == 1
    symmetry = atoms.calc._symmetry_cache.symmetry
    assert len(symmetry) > 1
    fresh = atoms.copy()
    fresh.calc = SymmetrizedCalculator(EMT(), **options)
    np.testing.assert_allclose(atoms.get_forces(), fresh.get_forces(), atol=1e-10)
    assert fresh.calc.results["symmetry_group"] == atoms.calc.results["symmetry_group"]
    # a move that breaks one operation is caught by the check
    moved = np.zeros((len(atoms), 3))
    moved[0] = [1e-3, 0.0, 0.0]
    assert not symmetry_still_holds(symmetry, moved)
    assert symmetry_still_holds(symmetry, np.full((len(atoms), 3), 0.3))  # a rigid shift


def _vacancy():
    atoms = _fcc().repeat(3)
    del atoms[0]
    return atoms


def _alloy():
    atoms = _fcc().repeat(2)
    atoms.numbers[[0, 5]] = 79  # two Au substituents
    return atoms


def _slab_adatom():
    atoms = _slab()
    atoms.append("Cu")
    atoms.positions[-1] = atoms.positions[atoms.positions[:, 2].argmax()] + [0.0, 0.0, 2.1]
    return atoms


@pytest.mark.parametrize(
    "build",
    [_vacancy, _alloy, _fcc_defect, _slab, _slab_adatom, _hcp],
    ids=["vacancy", "alloy", "fcc-defect", "slab", "slab-adatom", "hcp"],
)
def test_environment_classes_find_the_group_the_elements_find(build, monkeypatch):
    """Issue 28: spglib / moyopy given the environment classes (linear in defect cells)
    find the same group, the same operations and the same projections as given the
    elements; the classes refine the elements and every operation keeps them."""
    import ase_symcalc.structure_symmetry as module

    atoms = build()
    rng = np.random.default_rng(6)
    forces, energies = rng.normal(size=(len(atoms), 3)), rng.normal(size=len(atoms))
    stress = rng.normal(size=(3, 3))
    stress = stress + stress.T
    coloured = find_symmetry(atoms)
    fingerprints = module._environment_fingerprints(
        atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, 1e-5
    )
    classes = module._environment_classes(atoms.numbers, fingerprints)
    for label in np.unique(classes):  # each class holds one element
        assert len(np.unique(atoms.numbers[classes == label])) == 1
    for perm in coloured.permutations:  # and every operation keeps the classes
        np.testing.assert_array_equal(classes[perm], classes)
    if build is _vacancy:  # the vacancy's 12 neighbours are a class of their own
        assert 12 in np.bincount(classes)
    monkeypatch.setattr(module, "COLOUR_BY_ENVIRONMENT", False)
    elements = find_symmetry(atoms)
    assert coloured.group == elements.group and len(coloured) == len(elements)
    for project, values in (
        (symmetrize_forces, forces),
        (symmetrize_stress, stress),
        (symmetrize_per_atom, energies),
    ):
        np.testing.assert_allclose(project(values, coloured), project(values, elements), atol=1e-12)
