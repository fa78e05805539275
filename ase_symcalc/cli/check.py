"""`ase-symcalc check`: MLIP Arena and ML-PEG protocols, raw vs symmetrized."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    check = sub.add_parser(
        "check",
        help="the public equivariance checks (MLIP Arena, ML-PEG) raw vs symmetrized",
        description="Run MLIP Arena's force-equivariance test and ML-PEG's "
        "rotational-symmetry walk on every frame of DATASET, for the raw and the "
        "symmetrized model, with the symmetrized model's residual estimate beside. "
        "Writes PREFIX.json and PREFIX.png.",
    )
    add_model_options(check, positional=True, batch_size=True)
    check.add_argument("dataset", help="any file ASE reads (every frame is checked)")
    _add_rule_options(check, "group:I")
    check.add_argument("--axes", type=int, default=4, help="random axes of the Arena test (4)")
    check.add_argument("--frames", type=int, default=None, help="check the first N frames")
    add_output_options(check, "check", "prefix of the .json and .png")


def run_check(args) -> int:
    from tqdm.auto import tqdm

    from ..calculator import SymmetrizedCalculator
    from ..checks import arena_force_equivariance, plot_checks, rotational_symmetry_walk

    if args.axes < 1 or (args.frames is not None and args.frames < 1):
        raise CommandError("--axes and --frames must be >= 1")
    model_path = _model_path(args.model)
    frames = _read_frames(args.dataset)[: args.frames]
    try:
        raw = SymmetrizedCalculator(
            model_path, quadrature="identity", raw=False, variant=args.variant
        )
        auto = args.quadrature.strip() == "auto"

        def symmetrized(**extra):
            # the model loaded once, shared by every calculator
            return SymmetrizedCalculator(
                raw.evaluator, batch_size=args.batch_size, **_rule_kwargs(args), **extra
            )

        symmetrized()  # bad rule options fail here, before any work
    except ValueError as error:
        raise CommandError(str(error)) from error
    report = {"model": model_path, "dataset": args.dataset, "frames": []}
    per_protocol = 12 * args.axes + 1 + 115
    bar = tqdm(total=len(frames) * 2 * per_protocol, desc="check", disable=None)
    for index, frame in enumerate(frames):
        # a fresh calculator per structure: 'auto' chooses its rule on each
        sym = symmetrized()
        # the residual of the rule (auto measures it on its first call)
        probe = sym if auto else symmetrized(residual=True)
        atoms = frame.copy()
        atoms.calc = probe
        _first_evaluation(atoms, f"frame {index} of {args.dataset}")
        entry: dict[str, Any] = {
            "frame": index,
            "atoms": len(atoms),
            "residual": {
                k: probe.results.get(k)
                for k in ("energy_residual", "forces_residual", "stress_residual")
            },
        }
        start = sym.evaluation_count
        for name, calc in (("raw", raw), ("symmetrized", sym)):
            arena = arena_force_equivariance(calc, frame, axes=args.axes, progress=bar.update)
            walk = rotational_symmetry_walk(calc, frame, progress=bar.update)
            entry[name] = {"arena": arena.summary(), "walk": walk.summary()}
            entry[name]["curves"] = {
                "arena_angles": arena.angles.tolist(),
                "arena_mae_by_angle": arena.mae.mean(axis=1).tolist(),
                "walk_angles": walk.relative_angles.tolist(),
                "walk_forces_change": walk.forces_change.tolist(),
            }
        entry["evaluations_per_call"] = (sym.evaluation_count - start) / per_protocol
        entry["rule_after"] = sym.quadrature.name
        report["frames"].append(entry)
    bar.close()
    _print_checks(report)
    prefix = Path(args.output)
    prefix.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    figure = save_plot(plot_checks, report, prefix.with_suffix(".png"))
    print(f"wrote {prefix.with_suffix('.json')}{figure}")
    return 0


def _print_checks(report) -> None:
    print(
        "frame atoms  model        arena MAE mean/max (meV/Å)  pass  "
        "walk |dF| mean/max (meV/Å)  walk |dE| max (meV/atom)  residual (meV/Å)  rule"
    )
    for entry in report["frames"]:
        for name in ("raw", "symmetrized"):
            arena, walk = entry[name]["arena"], entry[name]["walk"]
            residual = entry["residual"].get("forces_residual") if name != "raw" else None
            print(
                f"{entry['frame']:5d} {entry['atoms']:5d}  {name:11s} "
                f"{1e3 * arena['force_mae_mean']:12.3f} {1e3 * arena['force_mae_max']:9.3f}    "
                f"{'yes' if arena['passed'] else 'no':4s} "
                f"{1e3 * walk['forces_change_mean']:12.3f} {1e3 * walk['forces_change_max']:9.3f}"
                f"{1e3 * walk['energy_change_max']:20.4f}     "
                + (f"{1e3 * residual:12.3f}" if residual is not None else " " * 12)
                + ("  " + entry["rule_after"] if name != "raw" else "")
            )


HANDLERS = {"check": run_check}
