"""Character projections of a model's outputs (the paper's B metric).

For a structure ``x`` the response in the *direct* frame, ``u(g) = f(g.x)``
(not back-rotated), is split into O(3) irreducible channels ``(l, sigma)``
(reference section 5)::

    ||P_{l,s} u||^2 = (2l + 1) sum_{g,h} w_g w_h <u(g), u(h)> chi_{l,s}(h^-1 g)
    B_{l,s} = ||P_{l,s} u||^2 / sum_g w_g ||u(g)||^2

with ``chi_{l,s}(R) = chi_l(R)`` and ``chi_{l,s}(-R) = s (-1)^l chi_l(R)``.
The fractions sum to 1 when the response is band-limited to ``lmax`` and the
rule is exact for products to ``lmax`` (``lebedev-products:L``, ``L >= lmax``).
An exactly equivariant polar vector (forces of EMT) lives entirely in
``(1, +)``; an invariant energy in ``(0, +)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .evaluators import make_evaluator
from .quadrature import O3Quadrature, get_quadrature, so3_character

__all__ = ["CharacterFractions", "character_fractions", "project_characters"]


@dataclass
class CharacterFractions:
    """Fractions ``B[(l, sigma)]`` per property, and what the sum misses."""

    fractions: dict[str, dict[tuple[int, int], float]]
    rule: str
    lmax: int
    residual: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name):
        return self.fractions[name]

    def table(self) -> str:
        """A plain-text table: one row per property, one column per channel."""
        channels = [(l, s) for l in range(self.lmax + 1) for s in (1, -1)]
        head = "property  " + " ".join(
            f"({l},{'+' if s > 0 else '-'})".rjust(8) for l, s in channels
        )
        lines = [head + "  residual"]
        for name, values in self.fractions.items():
            cells = " ".join(f"{values[c]:8.4f}" for c in channels)
            lines.append(f"{name:9s} {cells}  {self.residual[name]:+.1e}")
        return "\n".join(lines)


def project_characters(
    values: np.ndarray, matrices: np.ndarray, weights: np.ndarray, lmax: int
) -> tuple[dict[tuple[int, int], float], float]:
    """Fractions of stacked direct-frame responses ``values`` (M, ...) per channel.

    Returns the fractions and the squared norm ``sum_g w_g ||u(g)||^2``.
    """
    u = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    weights = np.asarray(weights, dtype=np.float64)
    gram = u @ u.T  # <u(g), u(h)>
    norm = float(weights @ np.einsum("md,md->m", u, u))
    # relative elements h^-1 g = h^T g for every pair (rows g, columns h)
    relative = np.einsum("hki,gkj->ghij", matrices, matrices)
    dets = np.sign(np.linalg.det(relative))
    proper = relative * dets[..., None, None]
    cos = np.clip((np.trace(proper, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    angles = np.arccos(cos)
    ww = np.outer(weights, weights) * gram
    fractions = {}
    for l in range(lmax + 1):
        chi = so3_character(l, angles)
        for sigma in (1, -1):
            parity = np.where(dets > 0, 1.0, sigma * (-1.0) ** l)
            value = (2 * l + 1) * np.sum(ww * chi * parity)
            fractions[(l, sigma)] = float(value / norm) if norm > 0 else float("nan")
    return fractions, norm


def character_fractions(
    model, atoms, lmax: int, quadrature: str | O3Quadrature | None = None
) -> CharacterFractions:
    """Character fractions of energy, forces and stress of one structure.

    ``model`` is anything ``SymmetrizedCalculator`` accepts (an ASE calculator,
    a metatomic model) or a ``SymmetrizedCalculator`` (its evaluator is used).
    ``quadrature`` defaults to ``lebedev-products:lmax`` (with inversion); a
    rule that is not exact for products to ``lmax`` is refused.
    """
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    rule = get_quadrature(quadrature or f"lebedev-products:{max(lmax, 1)}")
    if rule.degree is None or rule.degree < 2 * lmax:
        raise ValueError(
            f"rule {rule.name} (exact to degree {rule.degree}) cannot resolve characters up "
            f"to l = {lmax}: it must be exact for products, to degree {2 * lmax}; use "
            f"quadrature='lebedev-products:{lmax}'"
        )
    if not rule.has_inversion:
        raise ValueError("character projections on O(3) need a rule with inversion")
    evaluator = getattr(model, "evaluator", None) or make_evaluator(model)
    available = evaluator.available_properties(atoms)
    names = [name for name in ("energy", "forces", "stress") if name in available]
    outputs = evaluator.evaluate(atoms, rule.matrices, names)
    fractions, residual = {}, {}
    for name in names:
        values = getattr(outputs, name)
        if name == "energy":
            values = values[:, None]
        fractions[name], _ = project_characters(values, rule.matrices, rule.weights, lmax)
        residual[name] = 1.0 - sum(fractions[name].values())
    return CharacterFractions(fractions, rule.name, lmax, residual)
