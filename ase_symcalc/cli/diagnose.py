"""`ase-symcalc diagnose`: the paper's A and B diagnostics of a model."""

from __future__ import annotations

import json
from pathlib import Path

from ._common import (
    CommandError,
    _add_rule_options,
    _model_path,
    _read_frames,
    _rule_kwargs,
    add_model_options,
    add_output_options,
    save_plot,
)


def add_parser(sub) -> None:
    diagnose = sub.add_parser(
        "diagnose",
        help="the paper's diagnostics: equivariance errors and character fractions",
        description="For a model (metatomic, or torch-sim: Orb, MACE, SevenNet, ...) and a "
        "dataset: the equivariance error of "
        "energy, forces and stress (A), with the test errors raw and symmetrized when "
        "the frames carry reference labels, and the fraction of each output and each "
        "internal feature block (metatomic feature outputs; the layers of torch-sim models, "
        "through forward hooks) in every O(3) channel (l, parity) (B). Writes "
        "PREFIX.json and the heatmap PREFIX.png.",
    )
    add_model_options(diagnose, positional=True)
    diagnose.add_argument("dataset", help="any multi-frame file ASE reads")
    diagnose.add_argument("--lmax", type=int, default=2, help="highest l resolved (default 2)")
    diagnose.add_argument("--frames", type=int, default=4, help="frames used (default 4)")
    _add_rule_options(diagnose, "group:I")
    add_output_options(diagnose, "diagnose", "prefix of the .json and .png")


def run_diagnose(args) -> int:
    from ..calculator import SymmetrizedCalculator
    from ..diagnostics import error_split, feature_fractions, plot_fractions
    from ..evaluators import make_evaluator
    from ..models import feature_groups

    if args.lmax < 0 or args.frames < 1:
        raise CommandError("--lmax must be >= 0 and --frames >= 1")
    model_path = _model_path(args.model)
    frames = _read_frames(args.dataset)
    step = max(len(frames) // args.frames, 1)
    frames = frames[::step][: args.frames]
    labelled = all(frame.calc is not None for frame in frames)
    report = {"model": model_path, "dataset": args.dataset, "frames": len(frames)}
    try:
        # one evaluator (the model loaded once) for both the A and B analyses
        model = make_evaluator(model_path, variant=args.variant)
        if labelled:
            calc = SymmetrizedCalculator(model, **_rule_kwargs(args))
            split = error_split(calc, frames, progress=True)
            report["errors"] = split
            print(f"A: errors over {len(frames)} frames, rule {split['rule']}")
            print("property           RMS ref   RMSE raw   RMSE sym   equivariance error")
            units_of = {"energy": "meV/atom", "forces": "meV/Å", "stress": "meV/Å^3"}
            for name, unit in units_of.items():
                if name in split:
                    e = split[name]
                    print(
                        f"{name:7s} {unit:9s} {e['rms'] * 1e3:9.2f} {e['rmse_raw'] * 1e3:10.2f} "
                        f"{e['rmse_symmetrized'] * 1e3:10.2f} {e['equivariance_error'] * 1e3:12.2f}"
                    )
        result = feature_fractions(
            model,
            frames,
            args.lmax,
            groups=feature_groups(args.model or model_path),
            progress=True,
        )
    except (ValueError, TypeError) as error:
        raise CommandError(str(error)) from error
    print(f"\nB: fraction of the norm per O(3) channel (rule {result.rule})")
    print(result.table())
    report["fractions"] = {
        name: {f"{l},{'+' if s > 0 else '-'}": v for (l, s), v in values.items()}
        for name, values in result.fractions.items()
    }
    report["residual"] = result.residual
    prefix = Path(args.output)
    prefix.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    figure = save_plot(
        plot_fractions, result, prefix.with_suffix(".png"), title=f"{Path(model_path).name}"
    )
    print(f"wrote {prefix.with_suffix('.json')}{figure}")
    return 0


HANDLERS = {"diagnose": run_diagnose}
