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
from typing import Any

import numpy as np
from ase import Atoms

from .evaluators import make_evaluator
from .quadrature import DEFAULT_LADDER, O3Quadrature, get_quadrature, next_rule, so3_character

__all__ = [
    "CharacterFractions",
    "ConvergenceReport",
    "DEFAULT_LADDER",
    "character_fractions",
    "check_convergence",
    "error_split",
    "feature_fractions",
    "next_rule",
    "plot_fractions",
    "project_characters",
]


@dataclass
class CharacterFractions:
    """Fractions ``B[(l, sigma)]`` per property, and what the sum misses."""

    fractions: dict[str, dict[tuple[int, int], float]]
    rule: str
    lmax: int
    residual: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name):
        return self.fractions[name]

    def channels(self) -> list[tuple[int, int]]:
        return [(l, s) for l in range(self.lmax + 1) for s in (1, -1)]

    def table(self) -> str:
        """A plain-text table: one row per property, one column per channel."""
        channels = self.channels()
        head = "property  " + " ".join(
            f"({l},{'+' if s > 0 else '-'})".rjust(8) for l, s in channels
        )
        width = max([9, *(len(name) for name in self.fractions)])
        lines = [head.replace("property  ", "property".ljust(width + 1), 1) + "  residual"]
        for name, values in self.fractions.items():
            cells = " ".join(f"{values[c]:8.4f}" for c in channels)
            lines.append(f"{name:{width}s} {cells}  {self.residual[name]:+.1e}")
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


def _product_rule(quadrature, lmax: int) -> O3Quadrature:
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
    return rule


def character_fractions(
    model, atoms, lmax: int, quadrature: str | O3Quadrature | None = None
) -> CharacterFractions:
    """Character fractions of energy, forces and stress of one structure.

    ``model`` is anything ``SymmetrizedCalculator`` accepts (an ASE calculator,
    a metatomic model) or a ``SymmetrizedCalculator`` (its evaluator is used).
    ``quadrature`` defaults to ``lebedev-products:lmax`` (with inversion); a
    rule that is not exact for products to ``lmax`` is refused.
    """
    rule = _product_rule(quadrature, lmax)
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


def _accumulate(total: dict, norms: dict, name: str, fractions: dict, norm: float):
    """Norm-weighted sums, so that averages over structures are fractions of the total."""
    if name not in total:
        total[name] = dict.fromkeys(fractions, 0.0)
        norms[name] = 0.0
    for channel, value in fractions.items():
        total[name][channel] += value * norm
    norms[name] += norm


def feature_fractions(
    model,
    structures,
    lmax: int,
    quadrature: str | O3Quadrature | None = None,
    features: list[str] | None = None,
    groups: dict[str, dict[str, slice]] | None = None,
    progress: bool = False,
) -> CharacterFractions:
    """Character fractions of internal features and outputs, over structures.

    For every structure the model runs on the copies of a product-exact rule;
    each per-atom feature block (``"feature"``, the last-layer features of each
    head) and each output (energy, forces, stress) is projected as in
    ``character_fractions``. Fractions are averaged weighted by the squared
    norms, i.e. they are the share of the total norm over all structures.
    ``groups`` splits a feature block into named column slices (for PET:
    node and edge features of each GNN layer). Needs a metatomic model (its
    ``feature`` outputs) or a torch-sim model (Orb, MACE, SevenNet: the
    outputs of the modules of ``TorchSimEvaluator.feature_names``, recorded
    by forward hooks; ``features`` names other modules).
    """
    from tqdm.auto import tqdm

    rule = _product_rule(quadrature, lmax)
    evaluator: Any = getattr(model, "evaluator", None) or make_evaluator(model)
    if not hasattr(evaluator, "evaluate_features"):
        raise TypeError(
            "internal features need a metatomic model (a .pt file or AtomisticModel) or a "
            f"torch-sim model (forward hooks); {evaluator.name} only gives its outputs: use "
            "character_fractions for those"
        )
    if isinstance(structures, Atoms):
        structures = [structures]
    names = evaluator.feature_names() if features is None else list(features)
    groups = groups or {}
    total: dict[str, dict[tuple[int, int], float]] = {}
    norms: dict[str, float] = {}
    for atoms in tqdm(structures, desc="features", disable=not progress):
        available = evaluator.available_properties(atoms)
        props = [name for name in ("energy", "forces", "stress") if name in available]
        # one forward pass for features and outputs when the forces are direct (and
        # always for torch-sim models, which take their forces in the same pass)
        together = getattr(evaluator, "forces", "direct") == "direct"
        stacked = evaluator.evaluate_features(
            atoms, rule.matrices, names, properties=props if together else ()
        )
        outputs = stacked if together else vars(evaluator.evaluate(atoms, rule.matrices, props))
        blocks = {}
        for name in names:
            values = stacked[name]
            short = name.replace("mtt::aux::", "").replace("_last_layer_features", " head")
            short = short.removeprefix("model.")
            for label, columns in groups.get(name, {short: slice(None)}).items():
                blocks[label] = values[..., columns]
        for name in props:
            values = outputs[name]
            blocks[name] = values[:, None] if name == "energy" else values
        for label, values in blocks.items():
            fractions, norm = project_characters(values, rule.matrices, rule.weights, lmax)
            _accumulate(total, norms, label, fractions, norm)
    by_output: dict[str, dict[tuple[int, int], float]] = {
        name: {c: value / norms[name] for c, value in sums.items()} for name, sums in total.items()
    }
    residual = {name: 1.0 - sum(values.values()) for name, values in by_output.items()}
    return CharacterFractions(by_output, rule.name, lmax, residual)


def plot_fractions(result: CharacterFractions, output, title: str = "") -> None:
    """Heatmap of the fractions: one row per block (layer or output), one column per channel."""
    from ._optional import pyplot

    plt = pyplot("the character-fraction heatmap")

    channels = result.channels()
    rows = list(result.fractions)
    values = np.array([[result.fractions[row][c] for c in channels] for row in rows])
    # log scale: the interesting leakage is orders of magnitude below the main channel
    shown = np.log10(np.clip(values, 1e-8, 1.0))
    fig, ax = plt.subplots(figsize=(3.5 + 0.9 * len(channels), 1.3 + 0.5 * len(rows)))
    image = ax.imshow(shown, cmap="viridis", vmin=-8, vmax=0, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(channels)):
            value = values[i, j]
            text = f"{value:.3f}" if value >= 0.01 else f"{value:.0e}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if shown[i, j] < -3 else "black",
            )
    labels = [f"({l},{'+' if s > 0 else '-'})" for l, s in channels]
    ax.set_xticks(range(len(channels)), labels)
    ax.set_yticks(range(len(rows)), [row.replace("mtt::aux::", "") for row in rows])
    ax.set_xlabel("O(3) channel (l, parity)")
    fig.colorbar(image, ax=ax, label="log10 fraction of the norm")
    ax.set_title(title or f"character fractions ({result.rule})", fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=130)
    plt.close(fig)


@dataclass
class ConvergenceReport:
    """How the symmetrized outputs change along a ladder of rules."""

    rows: list[dict]

    def table(self) -> str:
        lines = [
            "rule              copies  degree   dE (meV/atom)   dF rms (meV/Å)   dS (meV/Å^3)",
        ]
        for row in self.rows:
            cells = [
                "-".rjust(15) if row.get(key) is None else f"{row[key] * 1e3:15.4f}"
                for key in ("energy_change", "forces_change", "stress_change")
            ]
            lines.append(
                f"{row['rule']:16s} {row['copies']:7d} {row['degree']:7d} " + " ".join(cells)
            )
        return "\n".join(lines)


def check_convergence(model, atoms, rules=DEFAULT_LADDER) -> ConvergenceReport:
    """Symmetrize with each rule of ``rules`` and report the change between rungs.

    Changes are against the previous rung: energy per atom, RMS of the force
    difference, max abs stress difference. A model whose symmetrized outputs
    stop changing is converged at that rule; a large change at the rule you
    use means its residual anisotropy lies above the rule's degree.
    """
    from .calculator import SymmetrizedCalculator

    evaluator = getattr(model, "evaluator", None) or make_evaluator(model)
    available = evaluator.available_properties(atoms)
    props = [p for p in ("energy", "forces", "stress") if p in available]
    rows, previous = [], None
    for spec in rules:
        calc = SymmetrizedCalculator(evaluator, quadrature=spec, raw=False)
        calc.calculate(atoms.copy(), props)
        results = calc.results
        row = {
            "rule": calc.quadrature.name,
            "copies": len(calc.quadrature),
            "degree": calc.quadrature.degree,
        }
        if previous is not None:
            row["energy_change"] = abs(results["energy"] - previous["energy"]) / len(atoms)
            if "forces" in results:
                row["forces_change"] = float(
                    np.sqrt(np.mean((results["forces"] - previous["forces"]) ** 2))
                )
            if "stress" in results:
                row["stress_change"] = float(np.abs(results["stress"] - previous["stress"]).max())
        rows.append(row)
        previous = results
    return ConvergenceReport(rows)


def _pooled_rms(values) -> float:
    flat = np.concatenate([np.ravel(v) for v in values]) if values else np.array([np.nan])
    return float(np.sqrt(np.mean(flat**2)))


def error_split(model, frames, quadrature="group:I", *, progress: bool = False) -> dict:
    """Test errors of the raw and symmetrized model, and the equivariance error.

    For frames with reference energy/forces/stress (extxyz written with a
    calculator), per property (energy per atom, force components, stress
    components, pooled over frames): ``rmse_raw`` (input orientation),
    ``rmse_symmetrized``, ``equivariance_error`` and ``rmse_orientations``, the
    RMSE of the raw model over the orientations of the rule, which for an
    equivariant reference is exactly ``sqrt(rmse_symmetrized^2 + A^2)``
    (reference section 4): symmetrizing removes the equivariance error from
    the error budget. ``rms`` is the RMS of the reference values.
    """
    from ase.stress import voigt_6_to_full_3x3_stress
    from tqdm.auto import tqdm

    from .calculator import SymmetrizedCalculator

    calc = model if isinstance(model, SymmetrizedCalculator) else None
    if calc is None:
        calc = SymmetrizedCalculator(model, quadrature=quadrature)
    elif not calc.parameters.raw:
        raise ValueError(
            "error_split compares raw and symmetrized predictions: give a "
            "SymmetrizedCalculator with raw=True (the default), or the model itself"
        )
    names = ("energy", "forces", "stress")
    raw: dict[str, list] = {n: [] for n in names}
    sym: dict[str, list] = {n: [] for n in names}
    spread: dict[str, list] = {n: [] for n in names}
    reference: dict[str, list] = {n: [] for n in names}
    for frame in tqdm(frames, desc="error split", disable=not progress, leave=False):
        if frame.calc is None:
            raise ValueError(
                "error_split needs reference labels: frames read from an extxyz file "
                "written with energies and forces (a SinglePointCalculator)"
            )
        n = len(frame)
        atoms = frame.copy()
        available = calc.evaluator.available_properties(atoms)
        wanted = [p for p in names if p in available and p in frame.calc.results]
        calc.calculate(atoms, wanted)
        r = calc.results
        for name in wanted:
            ref, raw_value, value = frame.calc.results[name], r["raw_" + name], r[name]
            if name == "stress":  # full 3x3, as the equivariance error counts components
                ref, raw_value, value = map(voigt_6_to_full_3x3_stress, (ref, raw_value, value))
            ref = np.asarray(ref, dtype=np.float64)
            scale = 1.0 / n if name == "energy" else 1.0
            if name == "forces" and calc._remove_net_force():
                raw_value = raw_value - raw_value.mean(axis=0)
            raw[name].append(scale * (raw_value - ref))
            sym[name].append(scale * (value - ref))
            spread[name].append(scale * r[f"{name}_equivariance_error"] * np.ones(np.size(ref)))
            reference[name].append(scale * ref)
    result: dict[str, Any] = {}
    for name in names:
        if not raw[name]:
            continue
        entry = {
            "rmse_raw": _pooled_rms(raw[name]),
            "rmse_symmetrized": _pooled_rms(sym[name]),
            "equivariance_error": _pooled_rms(spread[name]),
            "rms": _pooled_rms(reference[name]),
        }
        entry["rmse_orientations"] = float(
            np.hypot(entry["rmse_symmetrized"], entry["equivariance_error"])
        )
        result[name] = entry
    result["frames"] = len(frames)
    result["rule"] = calc.quadrature.name
    return result
