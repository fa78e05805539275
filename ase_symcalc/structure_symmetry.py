"""A structure's own symmetry, and the projection of outputs onto it.

Averaging over O(3) leaves the rule's residual, which still breaks the
symmetry a structure has of its own. Averaging once more over the
structure's symmetry operations ``g = (Q_g, t_g)`` with atom maps ``pi_g``
(``Q_g r_i + t_g = r_{pi_g(i)}`` up to a lattice vector) removes it exactly,
at no model call (reference section 2, applied to a finite group):

- forces ``F_{pi_g(i)} <- 1/|G| sum_g Q_g F_i`` (ASE's ``symmetrize_rank1``),
- stress ``S <- 1/|G| sum_g Q_g^T S Q_g`` (ASE's ``symmetrize_rank2``),
- per-atom scalars ``e_{pi_g(i)} <- 1/|G| sum_g e_i``; the energy is unchanged.

``Q_g = L R_g L^-1`` for spglib's integer rotations ``R_g`` in the basis of
the lattice ``L``: on a lattice that is symmetric only within the tolerance
``Q_g`` is not exactly orthogonal, but the ``Q_g`` still multiply exactly as
the group does, so the projection is exactly idempotent either way.

Which group: 3D-periodic cells, the space group (spglib); slabs (two
periodic directions), the layer group (spglib), i.e. the operations that keep
the non-periodic direction; finite systems, the point group, found by
matching pairs of reference atoms (spglib and moyopy only handle lattices).
A structure with no symmetry (an MD snapshot) is recognised without spglib,
from per-atom environment fingerprints that no symmetry can tell apart.
Numpy, float64, no ASE calculator.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "symmetry_still_holds",
    "SymmetryCache",
    "StructureSymmetry",
    "SymmetryError",
    "find_symmetry",
    "symmetrize_forces",
    "symmetrize_per_atom",
    "symmetrize_stress",
]


class SymmetryError(ValueError):
    """The structure's symmetry cannot be found or applied."""


@dataclass(frozen=True)
class StructureSymmetry:
    """Symmetry operations of one structure.

    ``rotations`` (G, 3, 3): ``Q_g`` acting on Cartesian column vectors;
    ``permutations`` (G, N): ``pi_g``, atom ``i`` is sent onto atom
    ``permutations[g, i]``; ``group``: a name ("Fm-3m (225)", "p-3m1 (layer
    72)", "Ih", "P1"); ``kind``: "space group", "layer group" or "point group".

    A supercell's group holds every lattice translation of its primitive
    cell, ``T``, and ``|G| = |P| |T|`` grows with the atoms: then
    ``translation_orbits`` (N,) names each atom's orbit under ``T`` (its site
    in the primitive cell) and ``rotations`` / ``permutations`` hold one
    operation per coset of ``T`` only, so that storage and projections stay
    linear in the atoms; ``translations`` is ``|T|`` (1 otherwise).
    """

    rotations: np.ndarray
    permutations: np.ndarray
    group: str
    kind: str
    tolerance: float
    translation_orbits: np.ndarray | None = None
    translations: int = 1

    def __len__(self) -> int:
        """The order of the group (cosets times translations)."""
        return len(self.rotations) * self.translations

    @property
    def is_trivial(self) -> bool:
        """Only the identity: projecting changes nothing."""
        return len(self) == 1


def _orbit_average(values: np.ndarray, symmetry: StructureSymmetry) -> np.ndarray:
    """Per-atom ``values`` averaged over each atom's orbit under the translations:
    the average over ``T``, which acts on per-atom values by permutation only."""
    orbits = symmetry.translation_orbits
    if orbits is None:
        return values
    count = np.bincount(orbits)
    flat = values.reshape(len(values), -1)
    sums = np.stack([np.bincount(orbits, weights=column) for column in flat.T], axis=1)
    return (sums / count[:, None])[orbits].reshape(values.shape)


def symmetrize_forces(forces: np.ndarray, symmetry: StructureSymmetry) -> np.ndarray:
    """``F_{pi_g(i)} <- 1/|G| sum_g Q_g F_i`` for (N, 3) row vectors."""
    forces = np.asarray(forces, dtype=np.float64)
    if symmetry.is_trivial:
        return forces.copy()
    forces = _orbit_average(forces, symmetry)
    result = np.zeros_like(forces)
    for q, perm in zip(symmetry.rotations, symmetry.permutations, strict=True):
        result[perm] += forces @ q.T
    return result / len(symmetry.rotations)


def symmetrize_stress(stress: np.ndarray, symmetry: StructureSymmetry) -> np.ndarray:
    """``S <- 1/|G| sum_g Q_g^T S Q_g`` for a 3x3 stress."""
    stress = np.asarray(stress, dtype=np.float64)
    if symmetry.is_trivial:
        return stress.copy()
    q = symmetry.rotations
    return np.mean(np.swapaxes(q, -1, -2) @ stress @ q, axis=0)


def symmetrize_per_atom(values: np.ndarray, symmetry: StructureSymmetry) -> np.ndarray:
    """``e_{pi_g(i)} <- 1/|G| sum_g e_i`` for per-atom scalars (N,)."""
    values = np.asarray(values, dtype=np.float64)
    if symmetry.is_trivial:
        return values.copy()
    values = _orbit_average(values, symmetry)
    result = np.zeros_like(values)
    for perm in symmetry.permutations:
        result[perm] += values
    return result / len(symmetry.permutations)


def symmetry_still_holds(symmetry: StructureSymmetry, displacements: np.ndarray) -> bool:
    """Whether ``symmetry``, found for positions ``x``, still holds at ``x + u``.

    ``displacements`` (N, 3) is ``u`` (minimum image along periodic
    directions; same cell). An operation ``x_pi(i) = Q x_i + t`` survives the
    move, with its translation shifted, exactly when ``u_pi(i) - Q u_i`` is the
    same vector for every atom; a lattice translation of a supercell, when
    ``u`` is the same on every atom of a translation orbit. Checked to the
    symmetry's own tolerance in O(cosets x N): a relaxation whose steps are
    projected onto the group keeps it to rounding, so its operations and
    atom maps are reused instead of searched again.
    """
    u = np.asarray(displacements, dtype=np.float64)
    tolerance = symmetry.tolerance
    if symmetry.translation_orbits is not None:
        if np.abs(u - _orbit_average(u, symmetry)).max() > tolerance:
            return False
    for q, perm in zip(symmetry.rotations, symmetry.permutations, strict=True):
        shift = u[perm] - u @ q.T
        if np.abs(shift - shift.mean(axis=0)).max() > tolerance:
            return False
    return True


# -- finding the operations ------------------------------------------------


def find_symmetry(atoms, tolerance: float = 1e-5) -> StructureSymmetry:
    """The symmetry operations of ``atoms`` at ``tolerance`` (Å).

    3D-periodic: space group; two periodic directions: layer group; none:
    point group. Raises ``SymmetryError`` for one periodic direction (rod
    groups: not supported) and for operations whose atom map cannot be built.
    """
    if not isinstance(tolerance, (int, float)) or not tolerance > 0:
        raise SymmetryError(
            f"the symmetry tolerance must be a positive distance in Å, got {tolerance!r}"
        )
    tolerance = float(tolerance)
    numbers = np.asarray(atoms.numbers)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    n_periodic = int(pbc.sum())
    if n_periodic == 1:
        raise SymmetryError(
            "structure symmetry handles 3D crystals, slabs (two periodic directions) and "
            f"finite systems; this structure has pbc={pbc.tolist()} (a wire): turn "
            "structure_symmetry off for it"
        )
    if n_periodic > 0 and np.linalg.matrix_rank(cell[pbc]) < n_periodic:
        raise SymmetryError(
            f"the periodic cell vectors are degenerate (pbc={pbc.tolist()}, cell "
            f"{cell.tolist()}): give a cell with independent periodic vectors"
        )
    fingerprints = _environment_fingerprints(numbers, positions, cell, pbc, tolerance)
    if _provably_asymmetric(numbers, positions, cell, pbc, tolerance, fingerprints):
        name = {3: "P1 (1)", 2: "p1 (layer 1)", 0: "C1"}[n_periodic]
        return _trivial(len(numbers), name, n_periodic, tolerance)
    if n_periodic == 0:
        return _point_group(numbers, positions, tolerance)
    classes = _environment_classes(numbers, fingerprints) if COLOUR_BY_ENVIRONMENT else numbers
    return _lattice_group(numbers, positions, cell, pbc, tolerance, classes)


def _kind(n_periodic: int) -> str:
    return {3: "space group", 2: "layer group", 0: "point group"}[n_periodic]


def _trivial(n_atoms: int, name: str, n_periodic: int, tolerance: float) -> StructureSymmetry:
    return StructureSymmetry(
        rotations=np.eye(3)[None],
        permutations=np.arange(n_atoms)[None],
        group=name,
        kind=_kind(n_periodic),
        tolerance=tolerance,
    )


#: centres and width (Å) of the Gaussian radial shells of the fingerprints, and
#: their cutoff: narrow shells between 1.5 and 5 Å are close to independent, so
#: two atoms of a rattled 10^4-atom cell practically never agree on all of them
#: (wide Gaussians centred at 0 were nearly collinear: 500-atom snapshots had
#: coincidences and fell back to spglib)
_FINGERPRINT_CENTRES = np.linspace(1.5, 5.0, 8)
_FINGERPRINT_WIDTH = 0.5
_FINGERPRINT_CUTOFF = 5.0


def _environment_fingerprints(numbers, positions, cell, pbc, tolerance) -> np.ndarray:
    """Per-atom radial fingerprints (N, 8), in units of the most they can differ
    between two atoms that a symmetry operation at ``tolerance`` maps onto each
    other: such atoms agree to within 1 in every component.

    Smooth radial sums over the neighbours (a vesin neighbour list, linear in
    the atoms); every distance moves by at most 2 tolerance under an
    operation that spglib or moyopy accept.
    """
    import vesin

    n_atoms = len(numbers)
    i, d = vesin.NeighborList(cutoff=_FINGERPRINT_CUTOFF, full_list=True).compute(
        points=positions, box=cell, periodic=pbc, quantities="id"
    )
    fc = 0.5 * (1.0 + np.cos(np.pi * d / _FINGERPRINT_CUTOFF))
    # Gaussians on equally spaced centres c_k = c_0 + k h, as a geometric series
    # (two exponentials per pair instead of eight): the fast path's main cost
    #   exp(-(x - k s)^2) = exp(-x^2) * exp(2 s x)^k * exp(-s^2 k^2)
    x = (d - _FINGERPRINT_CENTRES[0]) / _FINGERPRINT_WIDTH
    s = (_FINGERPRINT_CENTRES[1] - _FINGERPRINT_CENTRES[0]) / _FINGERPRINT_WIDTH
    term = np.exp(-(x**2)) * fc
    ratio = np.exp(2.0 * s * x)
    fingerprints = np.empty((n_atoms, len(_FINGERPRINT_CENTRES)))
    for k in range(len(_FINGERPRINT_CENTRES)):
        fingerprints[:, k] = np.bincount(i, weights=term, minlength=n_atoms)
        term = term * ratio * np.exp(-(s**2) * (2 * k + 1))
    # |d/dr (exp(-(r-c)^2/w^2) fc)| <= sqrt(2/e)/w + pi/(2 rc); each distance moves <= 2 tol
    slope = np.sqrt(2.0 / np.e) / _FINGERPRINT_WIDTH + np.pi / (2.0 * _FINGERPRINT_CUTOFF)
    neighbours = max(int(np.bincount(i, minlength=n_atoms).max(initial=0)), 1)
    return fingerprints / (2.0 * tolerance * neighbours * slope)


def _provably_asymmetric(numbers, positions, cell, pbc, tolerance, fingerprints) -> bool:
    """True when no operation but the identity can map the structure onto itself.

    An operation maps each atom onto one of the same species whose
    fingerprint agrees to within 1 in every component. If no two atoms of a
    species are that close (one nearest-neighbour query of a KD-tree in the
    Chebyshev metric, O(N log N)), every operation fixes every atom, which
    for atoms spanning 3D (checked) leaves only the identity (in a crystal,
    up to lattice vectors: checked against the lattice's own symmetries).
    """
    from scipy.spatial import cKDTree

    n_atoms = len(numbers)
    if n_atoms < 4:
        return False
    centred = positions - positions.mean(axis=0)
    if np.linalg.svd(centred, compute_uv=False)[-1] < 10 * tolerance * np.sqrt(n_atoms):
        return False  # (nearly) planar: a mirror may fix every atom
    for species in np.unique(numbers):
        f = fingerprints[numbers == species]
        if len(f) < 2:
            continue
        nearest, _ = cKDTree(f).query(f, k=2, p=np.inf)
        if np.any(nearest[:, 1] <= 1.0):
            return False
    return not pbc.any() or _only_identity_fixes_every_atom(positions, cell, pbc, tolerance)


def _environment_classes(numbers, fingerprints) -> np.ndarray:
    """Labels (N,) >= 1 that every symmetry operation preserves: atoms of one species
    whose fingerprints can be chained in steps within 1 share a label.

    Built coarsely and safely: atoms are binned on the unit grid of the
    fingerprints, and bins that touch (indices within 1) are merged, which
    may join classes but never splits an orbit. spglib and moyopy search
    translations from the rarest species: given these labels instead of the
    elements, a vacancy cell of 4,000 atoms offers them its 12 neighbours of
    the vacancy instead of every atom (0.08 s instead of 16 s), and finds
    the same group.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    labels = np.zeros(len(numbers), dtype=np.int64)
    offset = 1
    for species in np.unique(numbers):
        members = np.flatnonzero(numbers == species)
        bins, which = np.unique(
            np.floor(fingerprints[members]).astype(np.int64), axis=0, return_inverse=True
        )
        pairs = cKDTree(bins).query_pairs(1.0, p=np.inf, output_type="ndarray")
        graph = coo_matrix(
            (np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(bins), len(bins))
        )
        count, component = connected_components(graph, directed=False)
        labels[members] = offset + component[which.ravel()]
        offset += count
    return labels


#: give spglib / moyopy the environment classes instead of the elements (linear
#: search in defect cells); False gives them the elements (the tests compare)
COLOUR_BY_ENVIRONMENT = True


def _lattice_group(numbers, positions, cell, pbc, tolerance, classes) -> StructureSymmetry:
    """Space or layer group from spglib / moyopy, which see ``classes`` (labels every
    operation preserves, refining the elements) as the species."""
    import spglib

    n_periodic = int(pbc.sum())
    lattice, scaled = _padded_lattice(positions, cell, pbc, tolerance)
    if n_periodic == 2:
        aperiodic = int(np.flatnonzero(~pbc)[0])
        dataset = _spglib_call(
            spglib.get_symmetry_layerdataset,
            (lattice, scaled, np.asarray(classes, dtype=np.intc)),
            aperiodic_dir=aperiodic,
            symprec=tolerance,
        )
        if dataset is None:
            raise SymmetryError(
                f"spglib found no layer group for this slab at {tolerance:g} Å: check "
                "the cell and positions, or use another tolerance"
            )
        name = f"{dataset.international} (layer {dataset.number})"
    else:
        dataset = _space_group(lattice, scaled, classes, tolerance)
        if dataset is None:
            raise SymmetryError(
                f"no space group found for this structure at {tolerance:g} Å: "
                "check the cell and positions, or use another tolerance"
            )
        name = f"{dataset.international} ({dataset.number})"
    rotations = np.asarray(dataset.rotations, dtype=np.float64)
    translations = np.asarray(dataset.translations, dtype=np.float64)
    orbits, n_translations = None, 1
    if n_periodic == 3 and FACTORIZE_TRANSLATIONS:
        orbits, keep = _translation_cosets(rotations, dataset.primitive_sites, numbers)
        if orbits is not None:
            n_translations = len(rotations) // len(keep)
            rotations, translations = rotations[keep], translations[keep]
    images = _images(scaled, rotations, translations, pbc)
    permutations = _lattice_atom_maps(scaled, images)
    _check_maps(
        permutations, numbers, tolerance, _map_distances(permutations, scaled, images, lattice, pbc)
    )
    # Q = L R L^-1 with L the lattice vectors as columns
    cartesian = lattice.T @ rotations @ np.linalg.inv(lattice.T)
    return StructureSymmetry(
        rotations=cartesian,
        permutations=permutations,
        group=name,
        kind=_kind(n_periodic),
        tolerance=tolerance,
        translation_orbits=orbits,
        translations=n_translations,
    )


#: store a supercell's group as cosets of its translations (linear in the atoms);
#: False keeps every operation (the tests compare the two)
FACTORIZE_TRANSLATIONS = True


def _translation_cosets(rotations, sites, numbers):
    """The orbits of the atoms under the group's pure translations (``sites``: the
    library's map of each atom onto the primitive cell), and one operation per
    distinct rotation, a representative of each coset of the translations;
    ``(None, None)`` when the group has no translation but the identity or the
    map is not consistent (then every operation is kept).
    """
    identity = np.all(np.isclose(rotations, np.eye(3)), axis=(1, 2))
    n_translations = int(identity.sum())
    if n_translations < 2 or sites is None:
        return None, None
    _, orbits, counts = np.unique(np.asarray(sites), return_inverse=True, return_counts=True)
    if not np.all(counts == n_translations):
        return None, None
    species = np.zeros(len(counts), dtype=np.asarray(numbers).dtype)
    species[orbits] = numbers
    if not np.all(species[orbits] == numbers):
        return None, None
    keep, seen = [], set()
    for index, rotation in enumerate(np.rint(rotations).astype(np.int64)):
        key = rotation.tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(index)
    if len(keep) * n_translations != len(rotations):
        return None, None
    return orbits, np.array(keep)


@dataclass(frozen=True)
class _SpaceGroup:
    international: str
    number: int
    rotations: np.ndarray
    translations: np.ndarray
    #: each atom's site in the primitive cell: its orbit under the pure translations
    primitive_sites: np.ndarray | None = None


def _space_group(lattice, scaled, numbers, tolerance) -> _SpaceGroup | None:
    """The space group's operations in the input cell: moyopy where it is installed
    (spglib's successor, by the same author: 16x faster on a 1,371-atom vacancy
    cell, 1.8 s against 29 s), else spglib. Same operations, same symbols."""
    try:
        import moyopy
    except ImportError:
        moyopy = None  # type: ignore[assignment]  # optional: spglib then
    if moyopy is not None:
        try:
            dataset = moyopy.MoyoDataset(
                moyopy.Cell(lattice.tolist(), scaled.tolist(), [int(z) for z in numbers]),
                symprec=tolerance,
            )
        except Exception:  # moyopy's error: no consistent group at this tolerance
            return None
        symbol = moyopy.HallSymbolEntry(dataset.hall_number).hm_short.replace(" ", "")
        operations = dataset.operations
        return _SpaceGroup(
            symbol,
            int(dataset.number),
            np.asarray(operations.rotations, dtype=np.float64),
            np.asarray(operations.translations, dtype=np.float64),
            np.asarray(dataset.mapping_std_prim),
        )
    import spglib

    cell = (lattice, scaled, numbers)
    dataset = _spglib_call(spglib.get_symmetry_dataset, cell, symprec=tolerance)
    if dataset is None:
        return None
    return _SpaceGroup(
        dataset.international,
        int(dataset.number),
        dataset.rotations,
        dataset.translations,
        np.asarray(dataset.mapping_to_primitive),
    )


def _padded_lattice(positions, cell, pbc, tolerance):
    """The lattice and fractional positions spglib is given.

    For a slab the aperiodic vector becomes one normal to the periodic plane,
    longer than the slab plus 10 Å (spglib's layer groups want one), with the
    atoms inside it.
    """
    lattice = cell.copy()
    origin = np.zeros(3)
    if int(pbc.sum()) == 2:
        aperiodic = int(np.flatnonzero(~pbc)[0])
        a, b = cell[pbc]
        normal = np.cross(a, b)
        normal /= np.linalg.norm(normal)
        heights = positions @ normal
        lattice[aperiodic] = normal * (np.ptp(heights) + 10.0 + 100.0 * tolerance)
        if np.linalg.det(lattice) < 0:
            lattice[aperiodic] *= -1.0
        origin = normal * (heights.min() - 5.0)
    return lattice, np.linalg.solve(lattice.T, (positions - origin).T).T


def _only_identity_fixes_every_atom(positions, cell, pbc, tolerance) -> bool:
    """No lattice symmetry but the identity maps every atom onto itself.

    For atoms that span 3D only the identity fixes them all in space, but in
    a crystal an operation may fix each atom up to a lattice vector (a
    mirror through layers at z = 0 and c/2): try every point symmetry of the
    lattice alone (spglib on one atom, 2 ms, cached per lattice).
    """

    lattice, scaled = _padded_lattice(positions, cell, pbc, tolerance)
    rotations = _lattice_rotations(lattice.tobytes(), tolerance)
    if rotations is None:
        return False
    candidates = rotations[~np.all(rotations == np.eye(3, dtype=rotations.dtype), axis=(1, 2))]
    # the first 16 atoms rule out almost every rotation; the rest only for survivors
    for atoms in (scaled[:16], scaled):
        delta = np.einsum("gab,nb->gna", candidates, atoms) - atoms
        delta -= delta[:, :1]  # the translation that fixes atom 0
        delta[..., pbc] -= np.round(delta[..., pbc])
        worst = np.linalg.norm(delta @ lattice, axis=-1).max(axis=1)
        candidates = candidates[worst <= 3.0 * tolerance]
        if len(candidates) == 0:
            return True
    return False


@functools.lru_cache(maxsize=16)
def _lattice_rotations(lattice_bytes: bytes, tolerance: float):
    """Point symmetries of a lattice alone (cached: an NVT run keeps its cell)."""
    import spglib

    lattice = np.frombuffer(lattice_bytes, dtype=np.float64).reshape(3, 3)
    with warnings.catch_warnings():  # spglib's notice about its error handling
        warnings.simplefilter("ignore", DeprecationWarning)
        operations = spglib.get_symmetry(
            (lattice, np.zeros((1, 3)), np.ones(1, dtype=np.intc)),  # type: ignore[arg-type]
            symprec=tolerance,
        )
    return None if operations is None else operations["rotations"]


def _spglib_call(function, cell, **kwargs):
    """spglib's dataset, or None where it finds none (its errors as None)."""
    try:
        return function(cell, _throw=True, **kwargs)
    except Exception:  # spglib.SpglibError: no symmetry at this tolerance
        return None


def _images(scaled, rotations, translations, pbc):
    """Fractional images of every atom under every operation, (G, N, 3)."""
    images = np.einsum("gab,nb->gna", rotations, scaled) + translations[:, None, :]
    if not pbc.all():
        # along the aperiodic direction spglib's translation is fixed only up to
        # an integer: choose the one that keeps the slab where it is
        axis = ~pbc
        shift = np.round(images[..., axis].mean(axis=1) - scaled[:, axis].mean(axis=0))
        images[..., axis] -= shift[:, None, :]
    return images


def _lattice_atom_maps(scaled, images):
    """``pi_g``: atom i goes onto atom pi_g[i], for all operations in one tree query."""
    from scipy.spatial import cKDTree

    # the fractional metric finds the match; its Cartesian distance is checked after
    tree = cKDTree(_wrap(scaled), boxsize=1.0)
    _, perm = tree.query(_wrap(images).reshape(-1, 3))
    return perm.reshape(images.shape[:2])


def _wrap(fractional):
    """Into [0, 1): np.mod gives 1.0 for tiny negative numbers, which cKDTree refuses."""
    wrapped = np.mod(fractional, 1.0)
    wrapped[wrapped >= 1.0] = 0.0
    return wrapped


def _map_distances(permutations, scaled, images, lattice, pbc):
    delta = images - scaled[permutations]
    delta[..., pbc] -= np.round(delta[..., pbc])
    return np.linalg.norm(delta @ lattice, axis=-1)


def _check_maps(permutations, numbers, tolerance, distances):
    # spglib accepts an atom within symprec; the atoms it compares may both move
    worst = float(distances.max())
    bijective = bool(np.all(np.sort(permutations, axis=1) == np.arange(permutations.shape[1])))
    same_species = bool(np.all(numbers[permutations] == numbers[None, :]))
    if worst > 3.0 * tolerance or not bijective or not same_species:
        raise SymmetryError(
            f"cannot build the atom map of a symmetry operation (an atom lands "
            f"{worst:.2e} Å from the nearest atom, tolerance {tolerance:g} Å); the "
            "structure is only approximately symmetric at this tolerance: lower it"
        )


def _point_group(numbers, positions, tolerance) -> StructureSymmetry:
    """Point group of a finite system: all maps of two reference atoms, verified."""
    from scipy.spatial import cKDTree

    n_atoms = len(numbers)
    d = positions - positions.mean(axis=0)
    radius = np.linalg.norm(d, axis=1)

    def shell_of(index):  # same species, same distance from the centroid
        return [
            other
            for other in range(n_atoms)
            if numbers[other] == numbers[index]
            and abs(radius[other] - radius[index]) < 4 * tolerance
        ]

    off_centre = [index for index in range(n_atoms) if radius[index] > 10 * tolerance]
    if not off_centre:
        return _trivial(n_atoms, "C1", 0, tolerance)
    off_centre.sort(key=lambda index: (len(shell_of(index)), index))
    a = off_centre[0]
    b = next(
        (
            index
            for index in off_centre
            if np.linalg.norm(np.cross(d[a], d[index])) > 10 * tolerance * radius[index]
        ),
        None,
    )
    if b is None:
        # a linear molecule: its point group is infinite; keep the identity
        return _trivial(n_atoms, "linear (C∞v/D∞h, not averaged)", 0, tolerance)

    tree = cKDTree(d)
    frame = _frame(d[a], d[b])
    pair_distance = np.linalg.norm(d[a] - d[b])
    found: dict[tuple, tuple[np.ndarray, float]] = {}
    for a2 in shell_of(a):
        for b2 in shell_of(b):
            if a2 == b2 or abs(np.linalg.norm(d[a2] - d[b2]) - pair_distance) > 4 * tolerance:
                continue
            for parity in (1.0, -1.0):
                target = _frame(d[a2], d[b2])
                target[:, 2] *= parity
                q = target @ frame.T
                image = d @ q.T
                distance, perm = tree.query(image)
                if distance.max() > 3 * tolerance or np.any(numbers[perm] != numbers):
                    continue
                if len(np.unique(perm)) != n_atoms:
                    continue
                # a planar molecule's mirror fixes every atom: the map alone
                # does not name the operation, its handedness does
                found.setdefault((tuple(perm), parity * np.linalg.det(frame)), (perm, parity))
    permutations = np.stack([perm for perm, _ in found.values()])
    # the best orthogonal matrix of each map and handedness (Procrustes over all atoms)
    rotations = np.stack(
        [_procrustes(d, d[perm], np.linalg.det(frame) * parity) for perm, parity in found.values()]
    )
    order = np.lexsort((np.abs(rotations - np.eye(3)).reshape(len(rotations), -1).sum(axis=1),))
    rotations, permutations = rotations[order], permutations[order]
    return StructureSymmetry(
        rotations=rotations,
        permutations=permutations,
        group=point_group_name(rotations),
        kind="point group",
        tolerance=tolerance,
    )


def _frame(u, v) -> np.ndarray:
    """Orthonormal frame (columns) built from u, then v made orthogonal to u."""
    e1 = u / np.linalg.norm(u)
    e2 = v - (v @ e1) * e1
    e2 /= np.linalg.norm(e2)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


def _procrustes(source, target, det: float) -> np.ndarray:
    """Orthogonal Q with determinant ``sign(det)`` minimising sum |Q s_i - t_i|^2."""
    u, _, vt = np.linalg.svd(target.T @ source)
    fix = np.sign(det) * np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, fix]) @ vt


def point_group_name(rotations: np.ndarray) -> str:
    """Schoenflies symbol of a finite group of orthogonal 3x3 matrices."""
    rotations = np.asarray(rotations)
    det = np.linalg.det(rotations)
    proper = rotations[det > 0]
    n_proper = len(proper)
    has_inversion = bool(np.any(np.all(np.abs(rotations + np.eye(3)) < 1e-6, axis=(1, 2))))
    # order of each proper rotation from its angle
    angles = np.arccos(np.clip((np.trace(proper, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0))
    orders = [1 if a < 1e-6 else int(round(2 * np.pi / a)) for a in angles]
    n = max(orders)
    if n_proper == 60:
        core = "I"
    elif n_proper == 24 and n == 4 and orders.count(3) == 8:
        core = "O"
    elif n_proper == 12 and n == 3 and orders.count(3) == 8:
        core = "T"
    elif n_proper == n:
        core = f"C{n}"
    else:
        core = f"D{n_proper // 2}"
    if len(rotations) == n_proper:
        return core
    if core in ("I", "O"):
        return core + "h"
    if core == "T":
        return "Th" if has_inversion else "Td"
    improper = rotations[det < 0]
    # mirrors: improper elements -R with R a 2-fold rotation, normal = R's axis
    mirrors = [
        m
        for m in improper
        if np.allclose(m @ m, np.eye(3), atol=1e-6) and not np.allclose(m, -np.eye(3), atol=1e-6)
    ]
    axis = _main_axis(proper, n)
    horizontal = any(abs(_mirror_normal(m) @ axis) > 1 - 1e-6 for m in mirrors)
    if core.startswith("C"):
        k = int(core[1:])
        if k == 1:
            return "Ci" if has_inversion else "Cs"
        if horizontal:
            return f"C{k}h"
        if mirrors:
            return f"C{k}v"
        return f"S{2 * k}"
    k = int(core[1:])
    return f"D{k}h" if horizontal or (has_inversion and k % 2 == 0) else f"D{k}d"


def _main_axis(proper, n) -> np.ndarray:
    for r in proper:
        angle = np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))
        if angle > 1e-6 and int(round(2 * np.pi / angle)) == n:
            w, v = np.linalg.eig(r)
            return np.real(v[:, np.argmin(np.abs(w - 1.0))])
    return np.array([0.0, 0.0, 1.0])


def _mirror_normal(m) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (m + m.T))
    return v[:, np.argmin(w)]


class SymmetryCache:
    """A structure's operations: searched once, then reused while they still hold.

    Same species, cell and periodicity, moved positions (a relaxation of the
    positions, MD with symmetric forces): the cached operations are checked
    against the displacements in O(cosets x N) (``symmetry_still_holds``) and
    searched again only when one fails. One per structure followed (the ASE
    calculator's one, each system of a torch-sim batch).
    """

    def __init__(self, tolerance: float = 1e-5):
        self.tolerance = tolerance
        #: (numbers, positions, cell, pbc, symmetry) of the last search
        self.entry: tuple | None = None

    @property
    def symmetry(self) -> StructureSymmetry | None:
        return None if self.entry is None else self.entry[-1]

    def find(self, atoms) -> StructureSymmetry:
        if self.entry is not None:
            numbers, positions, cell, pbc, symmetry = self.entry
            same_frame = (
                len(numbers) == len(atoms)
                and np.array_equal(numbers, atoms.numbers)
                and np.array_equal(cell, atoms.cell.array)
                and np.array_equal(pbc, atoms.pbc)
            )
            if same_frame:
                displacements = atoms.positions - positions
                if pbc.any() and abs(np.linalg.det(cell)) > 1e-9:  # minimum image
                    fractional = displacements @ np.linalg.inv(cell)
                    fractional[:, pbc] -= np.round(fractional[:, pbc])
                    displacements = fractional @ cell
                if symmetry_still_holds(symmetry, displacements):
                    return symmetry
        symmetry = find_symmetry(atoms, self.tolerance)
        self.entry = (
            atoms.numbers.copy(),
            atoms.positions.copy(),
            atoms.cell.array.copy(),
            atoms.pbc.copy(),
            symmetry,
        )
        return symmetry
