"""Quadrature rules on O(3): weighted sets of orthogonal matrices.

A rule ``{(g_i, w_i)}`` approximates the Haar average of a function of the
rotation, ``int z(g) dmu(g) ~= sum_i w_i z(g_i)``. It is *exact to degree L*
when ``sum_i w_i D^l(g_i) = 0`` for every ``1 <= l <= L`` (both parities when
the rule contains improper elements), so it averages exactly any response
whose angular content stops at ``l = L``.

Everything here is pure numpy/scipy in float64. Conventions follow
``shared/reference/symmetrization.md``: matrices act on row vectors as
``P g^T``, Euler angles are active ZYZ.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
from scipy.integrate import lebedev_rule
from scipy.spatial.transform import Rotation

__all__ = [
    "DEFAULT_LADDER",
    "GENERIC_ORIENTATION",
    "O3Quadrature",
    "auto_ladder",
    "QUADRATURE_SPECS",
    "design_degrees",
    "get_quadrature",
    "lebedev_orders",
    "next_rule",
    "quadrature_table",
    "rule_size",
    "so3_character",
    "rule_moment",
]

# A fixed rotation far from every crystal axis: 1 rad about (1, sqrt 2, sqrt 3).
# Its misorientation to the nearest element of the cubic group O is 57 degrees,
# to the icosahedral group I 30 degrees, to the hexagonal group D6 43 degrees,
# so a rule right-multiplied by it never lines up with an axis-aligned crystal
# (reference section 3.4).
_GENERIC_AXIS = np.array([1.0, np.sqrt(2.0), np.sqrt(3.0)])
GENERIC_ORIENTATION = Rotation.from_rotvec(
    _GENERIC_AXIS / np.linalg.norm(_GENERIC_AXIS)
).as_matrix()

# Lebedev orders whose weights are all positive (scipy offers 3..31, 35, 41,
# 47, ..., 131; 13, 25 and 27 have negative weights and are skipped because
# they can make a variance negative).
_LEBEDEV_NEGATIVE = {13, 25, 27}
_LEBEDEV_ALL = list(range(3, 32, 2)) + list(range(35, 132, 6))

QUADRATURE_SPECS = (
    "lebedev:L",
    "lebedev-products:L",
    "group:T",
    "group:O",
    "group:I",
    "design:t",
    "random:M",
    "identity",
)

# Degree to which averaging over each finite rotation group is exact: the
# largest L below the first degree where the group has an invariant vector.
_GROUP_DEGREE = {"T": 2, "O": 3, "I": 5}


def lebedev_orders() -> list[int]:
    """Lebedev orders available with positive weights, ascending."""
    return [n for n in _LEBEDEV_ALL if n not in _LEBEDEV_NEGATIVE]


@cache
def _designs() -> dict:
    """The shipped weighted SO(3) designs (``scripts/optimize_designs.py``)."""
    text = resources.files("ase_symcalc").joinpath("data", "designs.json").read_text()
    return {int(key): value for key, value in json.loads(text)["designs"].items()}


def design_degrees() -> list[int]:
    """Degrees of the shipped ``design:t`` rules, ascending."""
    return sorted(_designs())


def _design(degree: int):
    designs = _designs()
    if degree not in designs:
        raise ValueError(
            f"no design of degree {degree} is shipped (available: design:"
            + ", design:".join(str(t) for t in sorted(designs))
            + "); regenerate more with scripts/optimize_designs.py --degrees ..."
        )
    entry = designs[degree]
    quaternions = np.asarray(entry["quaternions_xyzw"], dtype=np.float64)
    weights = np.asarray(entry["weights"], dtype=np.float64)
    matrices = Rotation.from_quat(quaternions).as_matrix().reshape(len(weights), 3, 3)
    return matrices, weights / weights.sum()


def _smallest_lebedev_order(degree: int) -> int:
    for order in lebedev_orders():
        if order >= degree:
            return order
    raise ValueError(
        f"no Lebedev rule of order >= {degree} is available "
        f"(largest positive-weight order: {lebedev_orders()[-1]})"
    )


@dataclass(frozen=True, eq=False, repr=False)
class O3Quadrature:
    """A weighted set of orthogonal 3x3 matrices approximating the Haar average.

    Attributes
    ----------
    matrices : (M, 3, 3) float64 array, orthogonal, det +-1.
    weights : (M,) float64 array, non-negative, summing to 1.
    degree : degree to which the rule averages exactly (both parities when it
        holds improper elements); ``None`` for random rules and for
        user-supplied rules of unknown degree.
    name : readable description, e.g. ``"group:I+inversion@generic"``.
    """

    matrices: np.ndarray
    weights: np.ndarray
    degree: int | None = None
    name: str = "custom"

    def __post_init__(self):
        matrices = np.array(self.matrices, dtype=np.float64)
        weights = np.array(self.weights, dtype=np.float64)
        _validate_rule(matrices, weights)
        matrices.setflags(write=False)
        weights.setflags(write=False)
        object.__setattr__(self, "matrices", matrices)
        object.__setattr__(self, "weights", weights)

    def __len__(self) -> int:
        return len(self.weights)

    def __repr__(self) -> str:
        return f"O3Quadrature(name={self.name!r}, evaluations={len(self)}, degree={self.degree})"

    @classmethod
    def from_matrices(cls, matrices, weights=None, *, degree=None, name="custom"):
        """A user-supplied rule, used exactly as given (no orientation applied).

        ``weights`` defaults to equal weights. They must be non-negative and sum
        to 1; the matrices must be orthogonal.
        """
        matrices = np.asarray(matrices, dtype=np.float64)
        if matrices.ndim == 2:
            matrices = matrices[None]
        if weights is None:
            weights = np.full(len(matrices), 1.0 / max(len(matrices), 1))
        return cls(matrices, weights, degree=degree, name=name)

    @property
    def has_inversion(self) -> bool:
        """True if the rule contains improper elements (det = -1)."""
        return bool(np.any(np.linalg.det(self.matrices) < 0))

    def identity_index(self, atol: float = 1e-12) -> int | None:
        """Index of the identity matrix in the rule, or None."""
        return find_identity(self.matrices, atol)

    def rotated(self, rotation, *, name=None) -> O3Quadrature:
        """The rule right-multiplied by ``rotation``: ``g_i R``. Exactness is kept."""
        rotation = np.asarray(rotation, dtype=np.float64)
        return O3Quadrature(
            self.matrices @ rotation,
            self.weights,
            degree=self.degree,
            name=name or self.name,
        )

    def todict(self) -> dict:
        """JSON-friendly description (used by ASE's ``Calculator.todict``)."""
        return {
            "name": self.name,
            "degree": self.degree,
            "matrices": self.matrices.tolist(),
            "weights": self.weights.tolist(),
        }


def find_identity(matrices: np.ndarray, atol: float = 1e-12) -> int | None:
    """Index of the first identity matrix in a stack (M, 3, 3), or None."""
    diff = np.abs(np.asarray(matrices) - np.eye(3)).reshape(len(matrices), -1).max(axis=1)
    hits = np.flatnonzero(diff < atol)
    return int(hits[0]) if len(hits) else None


def _validate_rule(matrices: np.ndarray, weights: np.ndarray) -> None:
    if matrices.ndim != 3 or matrices.shape[1:] != (3, 3):
        raise ValueError(f"quadrature matrices must have shape (M, 3, 3), got {matrices.shape}")
    if weights.shape != (len(matrices),):
        raise ValueError(
            f"quadrature needs one weight per matrix: got {weights.size} weights "
            f"for {len(matrices)} matrices"
        )
    if len(weights) == 0:
        raise ValueError("a quadrature needs at least one matrix")
    if not (np.all(np.isfinite(matrices)) and np.all(np.isfinite(weights))):
        raise ValueError("quadrature matrices and weights must be finite")
    if np.any(weights < 0):
        raise ValueError(
            "quadrature weights must be non-negative (negative weights can make "
            "the variance over the rule, the equivariance error, negative); "
            f"smallest weight: {weights.min():.3g}"
        )
    total = weights.sum()
    if abs(total - 1.0) > 1e-10:
        raise ValueError(
            f"quadrature weights must sum to 1, they sum to {total:.12g}; divide them by their sum"
        )
    gram = np.einsum("mij,mkj->mik", matrices, matrices)
    error = np.abs(gram - np.eye(3)).reshape(len(matrices), -1).max(axis=1)
    if error.max() > 1e-8:
        bad = int(np.argmax(error))
        raise ValueError(
            f"quadrature matrix {bad} is not orthogonal (max |g g^T - I| = "
            f"{error[bad]:.3g}); orthonormalise it, e.g. with "
            "scipy.spatial.transform.Rotation.from_matrix(m).as_matrix()"
        )


def _with_inversion(matrices: np.ndarray, weights: np.ndarray):
    """Add the improper coset ``-R`` with half of every weight."""
    return (
        np.concatenate([matrices, -matrices]),
        np.concatenate([weights, weights]) / 2.0,
    )


def _lebedev_product(order: int, n_gamma: int):
    """Lebedev nodes (alpha, beta) x equispaced gamma, active ZYZ."""
    nodes, node_weights = lebedev_rule(order)
    x, y, z = nodes
    alpha = np.arctan2(y, x)
    beta = np.arccos(np.clip(z, -1.0, 1.0))
    gamma = 2.0 * np.pi * np.arange(n_gamma) / n_gamma
    a = np.repeat(alpha, n_gamma)
    b = np.repeat(beta, n_gamma)
    c = np.tile(gamma, len(alpha))
    matrices = Rotation.from_euler("ZYZ", np.stack([a, b, c], axis=1)).as_matrix()
    weights = np.repeat(node_weights / node_weights.sum(), n_gamma) / n_gamma
    return matrices, weights


def _orientation_matrix(orientation) -> tuple[np.ndarray | None, str]:
    if orientation is None:
        return None, ""
    if isinstance(orientation, str):
        if orientation == "generic":
            return GENERIC_ORIENTATION, "@generic"
        raise ValueError(
            f"unknown orientation {orientation!r}: use 'generic', None "
            "(keep the rule as built) or a 3x3 rotation matrix"
        )
    matrix = np.asarray(orientation, dtype=np.float64)
    if matrix.shape != (3, 3):
        raise ValueError(f"orientation must be a 3x3 matrix, got shape {matrix.shape}")
    if np.abs(matrix @ matrix.T - np.eye(3)).max() > 1e-8 or np.linalg.det(matrix) < 0:
        raise ValueError("orientation must be a proper rotation matrix (R R^T = I, det R = +1)")
    return matrix, "@custom"


def _parse_int(value: str, spec: str) -> int:
    if not re.fullmatch(r"\d+", value):
        raise ValueError(_unknown_spec_message(spec))
    return int(value)


def _unknown_spec_message(spec) -> str:
    return (
        f"unknown quadrature spec {spec!r}; valid forms: "
        + ", ".join(repr(s) for s in QUADRATURE_SPECS)
        + " (L a degree >= 1, M a number of rotations >= 1), "
        "or an O3Quadrature (O3Quadrature.from_matrices for your own rule)"
    )


def rule_size(spec: str | O3Quadrature, *, inversion: bool = True) -> int:
    """How many rotations ``get_quadrature(spec, inversion=...)`` holds, without building it.

    What a cost guard needs before a ``lebedev:99`` (694,000 rotations) is
    built and evaluated. Raises ``get_quadrature``'s ``ValueError`` for a bad spec.
    """
    if isinstance(spec, O3Quadrature):
        return len(spec)
    if not isinstance(spec, str):
        raise TypeError(_unknown_spec_message(spec))
    text = spec.strip()
    if text == "identity":
        return 1
    kind, _, arg = text.partition(":")
    if kind in ("lebedev", "lebedev-products"):
        degree = _parse_int(arg, spec)
        if degree < 1:
            raise ValueError(_unknown_spec_message(spec))
        products = kind == "lebedev-products"
        order = _smallest_lebedev_order(max(2 * degree if products else degree, 3))
        count = lebedev_rule(order)[0].shape[1] * (2 * degree + 1 if products else degree + 1)
    elif kind in ("group", "design", "random"):
        if kind == "random" and _parse_int(arg, spec) >= 1:
            count = int(arg)
        else:
            count = len(get_quadrature(text, inversion=False, orientation=None))
    else:
        raise ValueError(_unknown_spec_message(spec))
    return count * (2 if inversion else 1)


def get_quadrature(
    spec: str | O3Quadrature,
    *,
    inversion: bool = True,
    seed: int | None = None,
    orientation="generic",
) -> O3Quadrature:
    """Build a quadrature rule on O(3) from a short spec.

    Parameters
    ----------
    spec :
        ``"lebedev:L"``: mean-exact to degree L (Lebedev order >= L, L+1
        in-plane angles). ``"lebedev-products:L"``: exact for products of two
        degree-L functions (order >= 2L, 2L+1 angles; mean-exact to 2L).
        ``"group:T"|"group:O"|"group:I"``: the rotation groups of the
        tetrahedron (12, exact to 2), cube (24, exact to 3), icosahedron (60,
        exact to 5). ``"random:M"``: M Haar-random rotations (seeded).
        ``"identity"``: no averaging (always the single identity matrix;
        ``inversion`` and ``orientation`` are ignored). An ``O3Quadrature`` is
        returned unchanged.
    inversion :
        Add the improper coset ``-g`` with half weights (doubles the count and
        removes parity-odd channels).
    seed :
        Seed for ``random:M``.
    orientation :
        ``"generic"`` (default): right-multiply the rule by
        ``GENERIC_ORIENTATION`` so it never coincides with the symmetry axes of
        an axis-aligned crystal; ``None``: keep the rule as built; or a 3x3
        rotation matrix.
    """
    if isinstance(spec, O3Quadrature):
        return spec
    if not isinstance(spec, str):
        raise TypeError(_unknown_spec_message(spec))
    text = spec.strip()
    if text == "identity":
        return O3Quadrature(np.eye(3)[None], np.ones(1), degree=0, name="identity")

    kind, _, arg = text.partition(":")
    if kind == "lebedev" or kind == "lebedev-products":
        degree_arg = _parse_int(arg, spec)
        if degree_arg < 1:
            raise ValueError(_unknown_spec_message(spec))
        if kind == "lebedev":
            order = _smallest_lebedev_order(max(degree_arg, 3))
            n_gamma = degree_arg + 1
        else:
            order = _smallest_lebedev_order(max(2 * degree_arg, 3))
            n_gamma = 2 * degree_arg + 1
        matrices, weights = _lebedev_product(order, n_gamma)
        degree = min(order, n_gamma - 1)
    elif kind == "group":
        group = arg.upper()
        if group not in _GROUP_DEGREE:
            raise ValueError(_unknown_spec_message(spec))
        matrices = Rotation.create_group(group).as_matrix()
        weights = np.full(len(matrices), 1.0 / len(matrices))
        degree = _GROUP_DEGREE[group]
        text = f"group:{group}"
    elif kind == "design":
        degree = _parse_int(arg, spec)
        matrices, weights = _design(degree)
    elif kind == "random":
        count = _parse_int(arg, spec)
        if count < 1:
            raise ValueError(_unknown_spec_message(spec))
        matrices = Rotation.random(count, random_state=np.random.default_rng(seed)).as_matrix()
        matrices = matrices.reshape(count, 3, 3)
        weights = np.full(count, 1.0 / count)
        degree = None
    else:
        raise ValueError(_unknown_spec_message(spec))

    name = text
    if inversion:
        matrices, weights = _with_inversion(matrices, weights)
        name += "+inversion"
    rotation, suffix = _orientation_matrix(orientation)
    if rotation is not None:
        matrices = matrices @ rotation
        name += suffix
    return O3Quadrature(matrices, weights, degree=degree, name=name)


def so3_character(l: int, angle) -> np.ndarray:
    """Character of the SO(3) irrep of degree ``l`` at rotation angle ``angle``.

    ``chi_l(w) = sin((l + 1/2) w) / sin(w / 2)``, equal to ``2l + 1`` at ``w = 0``.
    """
    angle = np.asarray(angle, dtype=np.float64)
    half = np.sin(angle / 2.0)
    small = np.abs(half) < 1e-12
    safe = np.where(small, 1.0, half)
    return np.where(small, 2.0 * l + 1.0, np.sin((l + 0.5) * angle) / safe)


def rule_moment(quadrature: O3Quadrature, l: int, *, n_probes: int = 8, seed: int = 0) -> float:
    """Largest ``|sum_i w_i s_i P_l(a . R_i b)|`` over random unit ``a, b``.

    ``R_i`` is the proper part of ``g_i`` and ``s_i`` is 1 or ``det g_i``
    (both parity channels are probed). Zero (to rounding) for every ``l`` up to
    the rule's degree: this tests exactness for any weighted rule, not only
    for groups.
    """
    from numpy.polynomial.legendre import legval

    rng = np.random.default_rng(seed)
    dets = np.linalg.det(quadrature.matrices)
    proper = quadrature.matrices * dets[:, None, None]
    coefficients = np.zeros(l + 1)
    coefficients[l] = 1.0
    worst = 0.0
    for _ in range(n_probes):
        a, b = rng.normal(size=(2, 3))
        a /= np.linalg.norm(a)
        b /= np.linalg.norm(b)
        values = legval(np.einsum("i,mij,j->m", a, proper, b), coefficients)
        for sign in (np.ones_like(dets), dets):
            worst = max(worst, abs(float(np.sum(quadrature.weights * sign * values))))
    return worst


def quadrature_table(degrees=range(1, 7)) -> list[dict]:
    """The catalogue of rules: spec, evaluations with/without inversion, degree."""
    specs = [f"lebedev:{L}" for L in degrees] + [f"lebedev-products:{L}" for L in degrees]
    specs += ["group:T", "group:O", "group:I"]
    specs += [f"design:{t}" for t in design_degrees()]
    rows = []
    for spec in specs:
        proper = get_quadrature(spec, inversion=False, orientation=None)
        rows.append(
            {
                "spec": spec,
                "evaluations": len(proper),
                "evaluations_with_inversion": 2 * len(proper),
                "degree": proper.degree,
            }
        )
    return rows


#: rules of increasing degree, for convergence checks (``check_convergence``)
DEFAULT_LADDER = ("lebedev:1", "lebedev:2", "lebedev:3", "group:I", "lebedev:6")


def next_rule(rule: O3Quadrature, ladder=DEFAULT_LADDER) -> str | None:
    """The first rule of ``ladder`` exact to a higher degree than ``rule``."""
    degree = -1 if rule.degree is None else rule.degree
    for spec in ladder:
        candidate = get_quadrature(spec)
        if candidate.degree is not None and candidate.degree > degree:
            return spec
    return None


@cache
def auto_ladder() -> tuple[tuple[str, bool], ...]:
    """The rules ``quadrature="auto"`` climbs, cheapest first.

    ``(spec, inversion)`` pairs from the rotation groups (12 to 120
    evaluations) to the designs with inversion (to degree 10); at equal cost
    the higher degree first.
    """
    rungs = [("group:T", False), ("group:O", False), ("group:I", False), ("group:I", True)]
    for t in design_degrees():
        rungs += [(f"design:{t}", False), (f"design:{t}", True)]
    cost = {
        rung: len(get_quadrature(rung[0], inversion=rung[1], orientation=None)) for rung in rungs
    }
    degree = {rung: get_quadrature(rung[0], orientation=None).degree or 0 for rung in rungs}
    return tuple(sorted(rungs, key=lambda rung: (cost[rung], -degree[rung])))
