"""Accuracy of a model against reference labels, raw and symmetrized.

    python -m ase_symcalc.models.evaluate TEST.extxyz [--model PATH] [--rule group:I]
                                          [--every 4]

For every frame with reference energy, forces and stress (an extxyz written
with a calculator, as ``ase_symcalc.models.train`` does): RMSE of the raw model
(energy per atom, force components, stress components), RMSE of the
symmetrized model, and the equivariance errors (RMS over frames, weighted by
the number of components). Prints a table and returns a dict.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def _rms(values) -> float:
    values = np.concatenate([np.ravel(v) for v in values])
    return float(np.sqrt(np.mean(values**2)))


def evaluate_accuracy(frames, model_path=None, *, rule="group:I", every=1, progress=True):
    """RMSE of raw and symmetrized predictions, and equivariance errors."""
    from .. import SymmetrizedCalculator
    from . import path as model_file

    model_path = str(model_path or model_file())
    sym_calc = SymmetrizedCalculator(model_path, quadrature=rule)
    selected = frames[::every]
    errors = {key: [] for key in ("e_raw", "f_raw", "s_raw", "e_sym", "f_sym", "s_sym")}
    spread = {"energy": [], "forces": [], "stress": []}
    reference_forces = []
    iterator = selected
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(selected, desc=f"evaluating ({rule})", leave=False)
    for frame in iterator:
        ref_e = frame.get_potential_energy()
        ref_f = frame.get_forces()
        ref_s = frame.get_stress()
        n = len(frame)
        atoms = frame.copy()
        atoms.calc = sym_calc
        errors["e_sym"].append((atoms.get_potential_energy() - ref_e) / n)
        errors["f_sym"].append(atoms.get_forces() - ref_f)
        errors["s_sym"].append(atoms.get_stress() - ref_s)
        r = sym_calc.results
        # the raw prediction came with the same pass (the unrotated copy); its
        # net force is removed as metatomic-ase's MetatomicCalculator does
        raw_forces = r["raw_forces"] - r["raw_forces"].mean(axis=0)
        errors["e_raw"].append((r["raw_energy"] - ref_e) / n)
        errors["f_raw"].append(raw_forces - ref_f)
        errors["s_raw"].append(r["raw_stress"] - ref_s)
        spread["energy"].append(r["energy_equivariance_error"] / n)
        spread["forces"].append(r["forces_equivariance_error"] * np.ones(3 * n))
        spread["stress"].append(r["stress_equivariance_error"])
        reference_forces.append(ref_f)
    result = {
        "frames": len(selected),
        "rule": sym_calc.quadrature.name,
        "rms_force": _rms(reference_forces),
        "energy_rmse_per_atom": _rms(errors["e_raw"]),
        "forces_rmse": _rms(errors["f_raw"]),
        "stress_rmse": _rms(errors["s_raw"]),
        "energy_rmse_per_atom_symmetrized": _rms(errors["e_sym"]),
        "forces_rmse_symmetrized": _rms(errors["f_sym"]),
        "stress_rmse_symmetrized": _rms(errors["s_sym"]),
        "energy_equivariance_error_per_atom": _rms(spread["energy"]),
        "forces_equivariance_error": _rms(spread["forces"]),
        "stress_equivariance_error": _rms(spread["stress"]),
    }
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
