"""Accuracy of a model against reference labels, raw and symmetrized.

    python -m ase_symcalc.models.evaluate TEST.extxyz [--model PATH] [--rule group:I]
                                          [--every 4]

For every frame with reference energy, forces and stress (an extxyz written
with a calculator, as ``ase_symcalc.models.train`` does): RMSE of the raw model
(energy per atom, force components, stress components), RMSE of the
symmetrized model, and the equivariance errors (RMS over frames, weighted by
the number of components; stress over the full 3x3 matrix). Prints a table and returns a dict.
"""

from __future__ import annotations

import argparse
import json


def evaluate_accuracy(frames, model_path=None, *, rule="group:I", every=1, progress=True):
    """RMSE of raw and symmetrized predictions, and equivariance errors.

    A flat view of ``ase_symcalc.diagnostics.error_split`` on every
    ``every``-th frame (stress errors over the full 3x3 matrix).
    """
    from ..diagnostics import error_split
    from . import path as model_file

    model_path = str(model_path or model_file())
    split = error_split(model_path, frames[::every], quadrature=rule, progress=progress)
    result = {"frames": split["frames"], "rule": split["rule"], "rms_force": split["forces"]["rms"]}
    for name, key in (
        ("energy", "energy_rmse_per_atom"),
        ("forces", "forces_rmse"),
        ("stress", "stress_rmse"),
    ):
        errors = split[name]
        result[key] = errors["rmse_raw"]
        result[key + "_symmetrized"] = errors["rmse_symmetrized"]
        result[key + "_orientations"] = errors["rmse_orientations"]
    result["energy_equivariance_error_per_atom"] = split["energy"]["equivariance_error"]
    result["forces_equivariance_error"] = split["forces"]["equivariance_error"]
    result["stress_equivariance_error"] = split["stress"]["equivariance_error"]
    result["forces_rmse_relative"] = result["forces_rmse"] / result["rms_force"]
    result["forces_rmse_over_equivariance_error"] = (
        result["forces_rmse"] / result["forces_equivariance_error"]
    )
    return result


def format_table(result: dict) -> str:
    """The accuracy table in Markdown (meV, meV/Å, meV/Å^3)."""
    rows = [
        ("energy (meV/atom)", "energy_rmse_per_atom", "energy_equivariance_error_per_atom"),
        ("forces (meV/Å)", "forces_rmse", "forces_equivariance_error"),
        ("stress (meV/Å^3)", "stress_rmse", "stress_equivariance_error"),
    ]
    lines = [
        "| property | RMSE raw | RMSE symmetrized | equivariance error |",
        "|---|---|---|---|",
    ]
    for label, key, spread in rows:
        lines.append(
            f"| {label} | {result[key] * 1e3:.2f} | {result[key + '_symmetrized'] * 1e3:.2f} "
            f"| {result[spread] * 1e3:.2f} |"
        )
    lines.append(
        f"\nRMS force of the test set {result['rms_force'] * 1e3:.0f} meV/Å: force RMSE "
        f"{100 * result['forces_rmse_relative']:.1f}% of it; force RMSE / equivariance "
        f"error = {result['forces_rmse_over_equivariance_error']:.1f} "
        f"({result['frames']} frames, rule {result['rule']})"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    from ase.io import read

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test", help="extxyz file with reference energy, forces, stress")
    parser.add_argument("--model", default=None, help="metatomic .pt (default: shipped)")
    parser.add_argument("--rule", default="group:I")
    parser.add_argument("--every", type=int, default=1, help="use every n-th frame")
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args(argv)
    result = evaluate_accuracy(read(args.test, ":"), args.model, rule=args.rule, every=args.every)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
