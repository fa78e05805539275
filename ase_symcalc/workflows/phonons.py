"""Phonons by finite displacements (phonopy), without imposing crystal symmetry.

phonopy makes a crystal's phonons symmetric three ways by default: it
displaces only symmetry-inequivalent atoms, symmetrizes the force constants
and reduces q-meshes by symmetry. All three would hide a model's own symmetry
breaking, so here every atom is displaced along +-x, +-y, +-z
(``is_symmetry=False``, central differences), the force constants are used
as computed, and frequencies are evaluated at explicit q-points: the special
points of the cell's Bravais lattice and points along the lines from Gamma to
each of them.

A branch group is *degenerate* where the reference calculator's frequencies
coincide (within ``degenerate_tolerance``); the splitting a calculator shows
there is the spread of its frequencies over those branches. The reference's
own splitting is the finite-difference floor.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ._common import check_calculators, check_count, check_number, check_supercell, require_crystal

__all__ = ["phonon_frequencies", "phonon_report", "special_qpoints"]

LINE_FRACTIONS = (0.25, 0.5, 0.75)


def _phonopy(atoms: Atoms, supercell, displacement: float):
    from .._optional import require

    Phonopy = require("phonopy", "phonons (phonon_report, ase-symcalc phonons)").Phonopy
    PhonopyAtoms = require("phonopy.structure.atoms", "phonons").PhonopyAtoms

    unit = PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell.array,
        scaled_positions=atoms.get_scaled_positions(),
        masses=atoms.get_masses(),
    )
    phonon = Phonopy(
        unit,
        supercell_matrix=np.diag(supercell),
        primitive_matrix=None,  # q-points in the given cell's reciprocal basis
        is_symmetry=False,
    )
    phonon.generate_displacements(distance=displacement, is_plusminus=True)
    return phonon


def _forces(calculator, supercell) -> np.ndarray:
    atoms = Atoms(
        symbols=supercell.symbols,
        cell=supercell.cell,
        scaled_positions=supercell.scaled_positions,
        pbc=True,
    )
    atoms.calc = calculator
    return np.array(atoms.get_forces(), dtype=np.float64)


def special_qpoints(atoms: Atoms) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Special points of the Bravais lattice, and points on the lines from Gamma."""
    points = {
        ("Gamma" if name == "G" else name): np.asarray(q, dtype=float)
        for name, q in atoms.cell.bandpath(npoints=0).special_points.items()
    }
    lines = {
        f"Gamma-{name}": np.array([f * q for f in LINE_FRACTIONS])
        for name, q in points.items()
        if name != "Gamma"
    }
    return points, lines


def phonon_frequencies(
    calculator, atoms: Atoms, qpoints, *, supercell=(3, 3, 3), displacement=0.005, progress=None
):
    """Frequencies (THz, ascending per q) at ``qpoints`` (in the cell's reciprocal basis)."""
    return _frequencies(
        {"model": calculator},
        atoms,
        qpoints,
        supercell=supercell,
        displacement=displacement,
        progress=progress,
    )["model"]


def _frequencies(calculators: dict, atoms, qpoints, *, supercell, displacement, progress):
    """Every calculator on each displaced cell in turn: views that read another
    calculator's results (``O3OnlyView``) then cost nothing."""
    require_crystal(atoms, "phonons")
    check_calculators(calculators)
    supercell = check_supercell(supercell)
    displacement = check_number(
        "displacement", displacement, fix="a finite-difference step in Å, e.g. 0.005"
    )
    try:
        qpoints = np.asarray(qpoints, dtype=np.float64).reshape(-1, 3)
    except (TypeError, ValueError) as error:
        raise ValueError(
            "qpoints must be q-points in the cell's reciprocal basis, shape (K, 3), e.g. "
            "[[0, 0, 0], [0.5, 0.5, 0.5]]"
        ) from error
    if not np.isfinite(qpoints).all():
        raise ValueError("qpoints must be finite")
    displaced = _phonopy(atoms, supercell, displacement).supercells_with_displacements
    forces: dict[str, list] = {name: [] for name in calculators}
    for cell in displaced:
        for name, calculator in calculators.items():
            forces[name].append(_forces(calculator, cell))
            if progress is not None:
                progress()
    frequencies = {}
    for name in calculators:
        phonon = _phonopy(atoms, supercell, displacement)
        phonon.forces = np.array(forces[name])
        phonon.produce_force_constants()
        frequencies[name] = np.sort(_run_qpoints(phonon, qpoints), axis=1)
    return frequencies


def _run_qpoints(phonon, qpoints) -> np.ndarray:
    result = phonon.run_qpoints(np.asarray(qpoints, dtype=float).reshape(-1, 3))
    if result is not None:  # phonopy >= 4.10: the result object
        return np.asarray(result.frequencies)
    return np.asarray(phonon.get_qpoints_dict()["frequencies"])


def _degenerate_groups(frequencies: np.ndarray, tolerance: float) -> list[list[int]]:
    """Runs of (sorted) branches whose reference frequencies agree within tolerance."""
    groups, current = [], [0]
    for index in range(1, len(frequencies)):
        if frequencies[index] - frequencies[current[-1]] <= tolerance:
            current.append(index)
        else:
            groups.append(current)
            current = [index]
    groups.append(current)
    return [group for group in groups if len(group) > 1]


def phonon_report(
    calculators: dict,
    atoms: Atoms,
    *,
    supercell=(3, 3, 3),
    displacement: float = 0.005,
    reference: str = "reference",
    degenerate_tolerance: float = 0.01,
    band_points: int = 120,
    progress=None,
) -> dict:
    """Frequencies, splittings of degenerate branches and Gamma acoustic modes.

    ``calculators`` maps a name to an ASE calculator; ``reference`` names the
    one that defines which branches are degenerate (if absent, the last one).
    Returns, per calculator: ``frequencies_THz`` (special point -> list),
    ``splittings_THz`` (point or line -> largest splitting over the
    reference's degenerate groups), ``gamma_acoustic_THz`` (largest ``|f|`` of the
    three lowest branches at Gamma) and the band structure along the cell's
    standard path (``band``), plus the path (``path``).
    """
    require_crystal(atoms, "phonons")
    check_calculators(calculators)
    degenerate_tolerance = check_number("degenerate_tolerance", degenerate_tolerance, fix="THz")
    check_count("band_points", band_points, low=2)
    points, lines = special_qpoints(atoms)
    names = list(points)
    q_all = [points[name] for name in names] + [q for line in lines.values() for q in line]
    path = atoms.cell.bandpath(npoints=band_points)
    q_all += list(path.kpts)
    if reference not in calculators:
        reference = list(calculators)[-1]
    frequencies = _frequencies(
        calculators,
        atoms,
        q_all,
        supercell=supercell,
        displacement=displacement,
        progress=progress,
    )

    def at(name, key):  # frequencies at a special point, or along a line
        f = frequencies[name]
        if key in points:
            return f[names.index(key)][None]
        start = len(names) + list(lines).index(key) * len(LINE_FRACTIONS)
        return f[start : start + len(LINE_FRACTIONS)]

    keys = names + list(lines)
    report = {"path": path.path, "special_points": {k: v.tolist() for k, v in points.items()}}
    x, special_x, labels = path.get_linear_kpoint_axis()
    report["band_axis"] = {"x": x.tolist(), "special_x": special_x.tolist(), "labels": labels}
    for name in calculators:
        splittings = {}
        for key in keys:
            worst = None
            for ref_q, q in zip(at(reference, key), at(name, key), strict=True):
                for group in _degenerate_groups(ref_q, degenerate_tolerance):
                    spread = float(q[group].max() - q[group].min())
                    worst = spread if worst is None else max(worst, spread)
            if worst is not None:
                splittings[key] = worst
        gamma = at(name, "Gamma")[0] if "Gamma" in points else None
        report[name] = {
            "frequencies_THz": {key: at(name, key)[0].tolist() for key in names},
            "splittings_THz": splittings,
            "gamma_acoustic_THz": None if gamma is None else float(np.abs(gamma[:3]).max()),
            "band": frequencies[name][len(q_all) - len(path.kpts) :].tolist(),
        }
    return report


def plot_bands(report: dict, names, output) -> None:
    """The band structures of several calculators overlaid."""
    from .._optional import pyplot

    plt = pyplot("the phonon band plot")

    axis = report["band_axis"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {
        "reference": ("k", "-", 1.6),
        "raw": ("C3", "--", 1.0),
        "symmetrized": ("C0", ":", 1.4),
        "symmetrized-o3": ("C2", "-.", 1.0),
    }
    for index, name in enumerate(names):
        color, style, width = styles.get(name, (f"C{index}", "-", 1.0))
        bands = np.asarray(report[name]["band"])
        for branch in range(bands.shape[1]):
            ax.plot(
                axis["x"],
                bands[:, branch],
                color=color,
                ls=style,
                lw=width,
                label=name if branch == 0 else None,
            )
    for x in axis["special_x"]:
        ax.axvline(x, color="0.7", lw=0.6)
    ax.set_xticks(axis["special_x"])
    ax.set_xticklabels(["Γ" if label == "G" else label for label in axis["labels"]])
    ax.set_xlim(axis["x"][0], axis["x"][-1])
    ax.set_ylabel("frequency (THz)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output, dpi=130)
    plt.close(fig)
