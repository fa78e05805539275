"""`ase-symcalc compare`: raw vs symmetrized (vs reference) on every frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import (
    CommandError,
    _add_rule_options,
    _first_evaluation,
    _model_path,
    _read_frames,
    _rule_kwargs,
    add_model_options,
    add_output_options,
    save_plot,
)


def add_parser(sub) -> None:
    compare = sub.add_parser(
        "compare",
        help="raw vs symmetrized predictions over every frame of a file",
        description="Evaluate raw and symmetrized predictions on every frame; with "
        "reference energies/forces in the file, also their errors and the split "
        "mean RMSE(raw)^2 ~ RMSE(sym)^2 + A^2. Writes OUTPUT.csv and OUTPUT.png.",
    )
    compare.add_argument("dataset", help="any multi-frame file ASE reads")
    add_model_options(compare)
    _add_rule_options(compare, "group:I")
    add_output_options(compare, "compare", "prefix of the .csv and .png")


COMPARE_COLUMNS = [
    "frame",
    "atoms",
    "energy_raw",
    "energy_sym",
    "energy_ref",
    "forces_raw_vs_sym_rmse",
    "forces_rmse_raw",
    "forces_rmse_sym",
    "energy_equivariance_error",
    "forces_equivariance_error",
    "stress_equivariance_error",
]


def run_compare(args) -> int:
    import csv

    from tqdm.auto import tqdm

    from ..calculator import SymmetrizedCalculator

    frames = _read_frames(args.dataset)
    model_path = _model_path(args.model)
    try:
        calc = SymmetrizedCalculator(model_path, variant=args.variant, **_rule_kwargs(args))
    except ValueError as error:
        raise CommandError(str(error)) from error
    rows = []
    for index, frame in enumerate(tqdm(frames, desc="compare", disable=None)):
        reference = {}
        if frame.calc is not None:
            for key in ("energy", "forces"):
                try:
                    reference[key] = frame.calc.get_property(key, frame, allow_calculation=False)
                except Exception:
                    pass
        atoms = frame.copy()
        atoms.calc = calc
        _first_evaluation(atoms, f"frame {index} of {args.dataset}")
        r = calc.results
        ref_f = reference.get("forces")
        rows.append(
            {
                "frame": index,
                "atoms": len(atoms),
                "energy_raw": r["raw_energy"],
                "energy_sym": r["energy"],
                "energy_ref": reference.get("energy"),
                "forces_raw_vs_sym_rmse": _rmse(r["raw_forces"] - r["forces"]),
                "forces_rmse_raw": None if ref_f is None else _rmse(r["raw_forces"] - ref_f),
                "forces_rmse_sym": None if ref_f is None else _rmse(r["forces"] - ref_f),
                "energy_equivariance_error": r["energy_equivariance_error"],
                "forces_equivariance_error": r["forces_equivariance_error"],
                "stress_equivariance_error": r.get("stress_equivariance_error"),
            }
        )
    output = Path(args.output)
    with open(output.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COMPARE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    _print_compare(rows)
    figure = save_plot(_plot_compare, rows, output.with_suffix(".png"))
    print(f"wrote {output.with_suffix('.csv')}{figure}")
    return 0


def _rmse(values) -> float:
    return float(np.sqrt(np.mean(np.asarray(values) ** 2)))


def _pooled(rows, key) -> float:
    """RMS over frames, weighted by the number of force components."""
    weights = np.array([3 * row["atoms"] for row in rows], dtype=float)
    values = np.array([row[key] for row in rows], dtype=float)
    return float(np.sqrt(np.sum(weights * values**2) / weights.sum()))


def _print_compare(rows):
    print(f"{len(rows)} frames (forces in meV/Å, pooled over frames)")
    print(f"  raw vs symmetrized RMSE   {1e3 * _pooled(rows, 'forces_raw_vs_sym_rmse'):8.2f}")
    print(f"  equivariance error A      {1e3 * _pooled(rows, 'forces_equivariance_error'):8.2f}")
    if all(row["forces_rmse_raw"] is not None for row in rows):
        raw = _pooled(rows, "forces_rmse_raw")
        sym = _pooled(rows, "forces_rmse_sym")
        spread = _pooled(rows, "forces_equivariance_error")
        print(f"  RMSE raw vs reference     {1e3 * raw:8.2f}")
        print(f"  RMSE symmetrized vs ref.  {1e3 * sym:8.2f}")
        print(
            f"  split: sqrt(RMSE_sym^2 + A^2) = {1e3 * np.hypot(sym, spread):.2f} "
            f"(the raw RMSE over random orientations; here one orientation)"
        )


def _plot_compare(rows, output: Path):
    from .._optional import pyplot

    plt = pyplot("the compare plot")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    frames = [row["frame"] for row in rows]
    for key, label in (
        ("forces_equivariance_error", "equivariance error"),
        ("forces_raw_vs_sym_rmse", "raw vs symmetrized"),
        ("forces_rmse_raw", "raw vs reference"),
        ("forces_rmse_sym", "symmetrized vs reference"),
    ):
        values = [row[key] for row in rows]
        if all(v is not None for v in values):
            axes[0].plot(frames, 1e3 * np.array(values), "o-", ms=3, label=label)
    axes[0].set_xlabel("frame")
    axes[0].set_ylabel("forces (meV/Å)")
    axes[0].legend(fontsize=8)
    per_atom_raw = [row["energy_raw"] / row["atoms"] for row in rows]
    per_atom_sym = [row["energy_sym"] / row["atoms"] for row in rows]
    if all(row["energy_ref"] is not None for row in rows):
        ref = [row["energy_ref"] / row["atoms"] for row in rows]
        axes[1].plot(ref, per_atom_raw, "o", ms=3, label="raw")
        axes[1].plot(ref, per_atom_sym, "x", ms=3, label="symmetrized")
        axes[1].set_xlabel("reference energy (eV/atom)")
    else:
        axes[1].plot(per_atom_raw, per_atom_sym, "o", ms=3)
        axes[1].set_xlabel("raw energy (eV/atom)")
    axes[1].set_ylabel("predicted energy (eV/atom)")
    axes[1].legend(fontsize=8) if axes[1].get_legend_handles_labels()[0] else None
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


HANDLERS = {"compare": run_compare}
