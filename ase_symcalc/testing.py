"""Test helpers shipped for downstream users: models with a known answer and
an equivariance harness.

``AnisotropicCalculator`` adds to an (equivariant) ASE calculator terms of
exactly known angular degree ``l`` along a fixed unit vector ``e``
(reference section 6). Their Haar average is zero for every ``l >= 1``, so a
rule exact to degree ``>= l`` removes them, and their spread over rotations
is known independently of any O(3) quadrature (``haar_statistics``).

``assert_equivariant`` rotates a structure by random O(3) elements (parity
included) and checks that a calculator's outputs transform as they must; the
random matrix is printed in the failure message so a failure can be
reproduced.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.neighborlist import neighbor_list
from numpy.polynomial import legendre
from scipy.integrate import lebedev_rule
from scipy.spatial.transform import Rotation

from .evaluators.ase_loop import get_properties, rotated_atoms
from .quadrature import lebedev_orders
from .transforms import matrix_to_voigt, rotate_forces, rotate_stress, voigt_to_matrix

__all__ = [
    "AnisotropicCalculator",
    "assert_equivariant",
    "float64_model",
    "random_o3",
    "rotated_atoms",
]


def random_o3(count: int, seed: int | None = None, *, parity: bool = True) -> np.ndarray:
    """``count`` Haar-random O(3) matrices (half improper when ``parity``)."""
    rng = np.random.default_rng(seed)
    matrices = Rotation.random(count, random_state=rng).as_matrix().reshape(count, 3, 3)
    if parity:
        signs = np.where(rng.random(count) < 0.5, -1.0, 1.0)
        matrices = matrices * signs[:, None, None]
    return matrices


def _normalize_term(term) -> tuple[int, float, str]:
    l, amplitude = int(term[0]), float(term[1])
    kind = term[2] if len(term) > 2 else ("pair" if l % 2 == 0 else "site")
    if kind not in ("pair", "site") or l < 1 or (kind == "pair" and l % 2):
        raise ValueError(
            f"bad anisotropic term {term!r}: 'pair' needs an even l >= 2, 'site' any l >= 1"
        )
    return (l, amplitude, kind)


def _cutoff_function(r, cutoff):
    """``(1 - (r/rc)^2)^2`` and its derivative: smooth (C1) at the cutoff."""
    x = 1.0 - (r / cutoff) ** 2
    return x * x, -4.0 * r / cutoff**2 * x


class _SolidHarmonic:
    """``R_l(v) = |v|^l P_l(e . v / |v|)``, a polynomial in v, with its gradient."""

    def __init__(self, l: int):
        self.l = l
        coefficients = np.zeros(l + 1)
        coefficients[l] = 1.0
        self.power = legendre.leg2poly(coefficients)  # P_l(u) = sum_n p_n u^n

    def value_and_gradient(self, v: np.ndarray, e: np.ndarray):
        """For v of shape (K, 3): values (K,) and gradients (K, 3)."""
        l = self.l
        ev = v @ e
        vv = np.einsum("ki,ki->k", v, v)
        value = np.zeros(len(v))
        gradient = np.zeros_like(v)
        for n, p in enumerate(self.power):
            if p == 0.0 or (l - n) % 2:
                continue
            k = (l - n) // 2  # R_l = sum_n p_n (e.v)^n |v|^(2k)
            value += p * ev**n * vv**k
            if n > 0:
                gradient += (p * n * ev ** (n - 1) * vv**k)[:, None] * e
            if k > 0:
                gradient += (p * 2 * k * ev**n * vv ** (k - 1))[:, None] * v
        return value, gradient


class AnisotropicCalculator(Calculator):
    """An equivariant base plus anisotropic terms of exactly known degree.

    Each term ``(l, amplitude[, kind])`` adds, with a smooth cutoff
    ``fc(r) = (1 - (r/rc)^2)^2`` and a fixed unit vector ``e``:

    - ``"pair"`` (even ``l``; the default for even l):
      ``a sum_{i<j} fc(r_ij) P_l(e . r_ij / r_ij)``;
    - ``"site"`` (any ``l >= 1``; the default for odd l):
      ``a sum_i (1 + |v_i|^2) |v_i|^l P_l(e . v_i / |v_i|)`` with
      ``v_i = sum_j fc(r_ij) r_ij / rc`` (a solid harmonic: smooth even where
      ``v_i = 0``; the invariant factor keeps ``l = 1`` from summing to zero).

    Both are translation and permutation invariant, of angular degree exactly
    ``l`` in ``e``. Forces are ``-dE/dr``; the stress is the symmetric part of
    ``(1/V) sum_pairs dE/dr_ij (x) r_ij`` (ASE sign and units). Without a base
    the equivariant part is zero.

    Rotating the input by ``g`` is the same as using ``e' = g^T e`` on the
    unrotated input, so Haar statistics over O(3) are integrals over the
    sphere of ``e'``: ``haar_statistics`` computes them with a Lebedev rule on
    the sphere, exact for these polynomials, independently of any O(3) rule.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters = {
        "terms": ((4, 0.05, "pair"),),
        "direction": (0.0, 0.0, 1.0),
        "cutoff": 3.0,
    }

    def __init__(self, base: Calculator | None = None, **kwargs):
        self.base = base
        if "terms" in kwargs:  # (l, a) -> (l, a, kind): ASE compares parameters as arrays
            kwargs["terms"] = tuple(_normalize_term(term) for term in kwargs["terms"])
        super().__init__(**kwargs)
        if base is not None:
            self.implemented_properties = [
                name
                for name in type(self).implemented_properties
                if name in base.implemented_properties or name == "free_energy"
            ]

    def _terms(self):
        return [_normalize_term(term) for term in self.parameters.terms]

    def _direction(self):
        e = np.asarray(self.parameters.direction, dtype=np.float64)
        return e / np.linalg.norm(e)

    def anisotropic_terms(self, atoms: Atoms, direction=None):
        """Energy (per atom), forces and stress (3x3 or None) of the terms alone."""
        e = self._direction() if direction is None else np.asarray(direction, float)
        cutoff = float(self.parameters.cutoff)
        n = len(atoms)
        i, j, d = neighbor_list("ijD", atoms, cutoff)
        r = np.linalg.norm(d, axis=1)
        fc, dfc = _cutoff_function(r, cutoff)
        energies = np.zeros(n)
        dE_dd = np.zeros_like(d)  # dE/d(d_ij) for every directed pair
        for l, a, kind in self._terms():
            harmonic = _SolidHarmonic(l)
            if kind == "pair":
                unit = d / r[:, None]
                p_l, grad_p = harmonic.value_and_gradient(unit, e)  # R_l(unit) = P_l
                # d/dd of P_l(e.d/r): tangential part of grad R_l(unit) over r
                grad_unit = (
                    grad_p - np.einsum("k,ki->ki", np.einsum("ki,ki->k", grad_p, unit), unit)
                ) / r[:, None]
                # each unordered pair appears twice (i->j, j->i): half each time,
                # which also splits it evenly between its two atoms
                np.add.at(energies, i, 0.5 * a * fc * p_l)
                dE_dd += 0.5 * a * (dfc[:, None] * p_l[:, None] * unit + fc[:, None] * grad_unit)
            else:
                v = np.zeros((n, 3))
                np.add.at(v, i, fc[:, None] * d / cutoff)
                value, grad_v = harmonic.value_and_gradient(v, e)
                # the invariant factor (1 + |v|^2) keeps l = 1 alive: sum_i e.v_i = 0
                vv = np.einsum("ki,ki->k", v, v)
                grad_v = grad_v * (1.0 + vv)[:, None] + 2.0 * value[:, None] * v
                energies += a * value * (1.0 + vv)
                # dv_i/dd = (fc I + fc' d d^T / r) / rc, symmetric
                g = grad_v[i]
                dE_dd += (
                    a
                    * (fc[:, None] * g + (dfc / r * np.einsum("ki,ki->k", d, g))[:, None] * d)
                    / cutoff
                )
        forces = np.zeros((n, 3))
        np.add.at(forces, i, dE_dd)
        np.add.at(forces, j, -dE_dd)
        stress = None
        if atoms.pbc.all() and atoms.cell.rank == 3:
            virial = np.einsum("ki,kj->ij", dE_dd, d)
            stress = 0.5 * (virial + virial.T) / atoms.get_volume()
        return energies, forces, stress

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        energies, forces, stress = self.anisotropic_terms(atoms)
        periodic = atoms.pbc.all() and atoms.cell.rank == 3
        if self.base is not None:
            wanted = ["energy", "forces"]
            if "energies" in self.base.implemented_properties:
                wanted.append("energies")
            if periodic and "stress" in self.base.implemented_properties:
                wanted.append("stress")
            base = get_properties(self.base, wanted, atoms)
            energy = float(base["energy"]) + energies.sum()
            forces = forces + base["forces"]
            if "energies" in base:
                energies = energies + base["energies"]
            if stress is not None and "stress" in base:
                stress = stress + voigt_to_matrix(base["stress"])
        else:
            energy = float(energies.sum())
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
        if "energies" in self.implemented_properties:
            self.results["energies"] = energies
        if stress is not None and "stress" in self.implemented_properties:
            self.results["stress"] = matrix_to_voigt(stress)

    def haar_statistics(self, atoms: Atoms) -> dict:
        """Haar mean and variance over O(3) of the back-rotated terms.

        Returns ``{"energy": (mean, var), "forces": (mean (N,3), var summed),
        "stress": (mean 3x3, var summed) or None}``. The base, being
        equivariant, adds nothing to the variance and its own value to the mean.
        Computed on the sphere of directions ``e' = g^T e`` with a Lebedev rule
        exact for twice the largest degree.
        """
        lmax = max(l for l, _, _ in self._terms())
        order = next(o for o in lebedev_orders() if o >= 2 * lmax + 1)
        nodes, weights = lebedev_rule(order)
        weights = weights / weights.sum()
        samples = [self.anisotropic_terms(atoms, direction=e) for e in nodes.T]
        stats = {}
        energy = np.array([s[0].sum() for s in samples])
        forces = np.array([s[1] for s in samples])
        stats["energy"] = _mean_var(energy, weights)
        stats["forces"] = _mean_var(forces, weights)
        stats["stress"] = None
        if samples[0][2] is not None:
            stats["stress"] = _mean_var(np.array([s[2] for s in samples]), weights)
        return stats


def _mean_var(values, weights):
    mean = np.tensordot(weights, values, axes=(0, 0))
    dev = values - mean
    return mean, float(np.tensordot(weights, dev * dev, axes=(0, 0)).sum())


def float64_model(model):
    """A float64 copy of a metatomic model (a path or an ``AtomisticModel``).

    Rounding in float32 hides differences below ~1e-6; comparing evaluators
    (batched vs looped, symmetrized vs finite differences) to 1e-10 needs the
    same weights in float64.
    """
    import torch
    from metatomic.torch import AtomisticModel, ModelCapabilities, load_atomistic_model

    from .models import loading

    if not isinstance(model, AtomisticModel):
        with loading(model):
            model = load_atomistic_model(str(model))
    caps = model.capabilities()
    capabilities = ModelCapabilities(
        outputs=caps.outputs,
        atomic_types=caps.atomic_types,
        interaction_range=caps.interaction_range,
        length_unit=caps.length_unit,
        supported_devices=caps.supported_devices,
        dtype="float64",
    )
    module = model.module.to(torch.float64).eval()
    with warnings.catch_warnings():
        # the copy carries the original's output names; any deprecation of
        # them was reported (or silenced) when the original was loaded
        warnings.filterwarnings("ignore", message=r"the '\w+' output name is deprecated")
        return AtomisticModel(module, model.metadata(), capabilities)


def assert_equivariant(
    calculator: Calculator,
    atoms: Atoms,
    *,
    matrices: np.ndarray | None = None,
    n_rotations: int = 4,
    seed: int = 0,
    energy_atol: float = 1e-8,
    forces_atol: float = 1e-8,
    stress_atol: float = 1e-9,
) -> None:
    """Check ``f(g.x) = rho(g) f(x)`` for random O(3) elements ``g``.

    Energy must be invariant, forces rotate as ``F g^T``, stress as
    ``g S g^T``. Differences are taken in float64; on failure the message
    carries the matrix ``g`` so that the case can be rerun.
    """
    if matrices is None:
        matrices = random_o3(n_rotations, seed)
    periodic = atoms.pbc.all() and atoms.cell.rank == 3
    reference = atoms.copy()
    reference.calc = calculator
    e0 = reference.get_potential_energy()
    f0 = reference.get_forces()
    s0 = voigt_to_matrix(reference.get_stress()) if periodic else None
    for g in matrices:
        copy = rotated_atoms(atoms, g)
        copy.calc = calculator
        where = f"for g = {np.array2string(np.asarray(g), precision=17, separator=', ')}"
        de = abs(copy.get_potential_energy() - e0)
        assert de <= energy_atol, f"energy changed by {de:.3e} eV {where}"
        df = np.abs(copy.get_forces() - rotate_forces(f0, g)).max()
        assert df <= forces_atol, f"forces not equivariant, max diff {df:.3e} eV/Å {where}"
        if periodic:
            assert s0 is not None
            ds = np.abs(voigt_to_matrix(copy.get_stress()) - rotate_stress(s0, g)).max()
            assert ds <= stress_atol, f"stress not equivariant, max diff {ds:.3e} eV/Å^3 {where}"
