"""`ase-symcalc export-metatomic`: the shipped or the symmetrized model as a file."""

from __future__ import annotations

import shutil
from pathlib import Path

from ._common import (
    CommandError,
    _model_path,
)


def add_parser(sub) -> None:
    export = sub.add_parser(
        "export-metatomic",
        help="write the shipped model, or with --symmetrize the symmetrized model, to a file",
        description="Write a metatomic model file. With --symmetrize: the model averaged "
        "over the rule exactly as SymmetrizedCalculator does (metatomic's SymmetrizedModel "
        "with this package's rotations), for any metatomic engine (MetatomicCalculator, "
        "i-PI's metatomic driver, LAMMPS pair_style metatomic).",
    )
    export.add_argument("output", help="destination .pt file")
    export.add_argument("--model", default=None, help="shipped model name or metatomic .pt file")
    export.add_argument("--symmetrize", action="store_true", help="export the symmetrized model")
    export.add_argument("--quadrature", default="group:I", help="rule spec (with inversion)")
    export.add_argument(
        "--batch-size", type=int, default=1, help="copies per model call (1: fastest on CPU)"
    )


def run_export(args) -> int:
    from ..models.architectures import split_spec

    spec = split_spec(args.model)
    if spec is not None and spec[0] != "metatomic":
        raise CommandError(
            f"export-metatomic writes metatomic models; a {spec[0]} model runs through "
            "torch-sim instead (SymmetrizedCalculator, or ase_symcalc.torchsim.SymmetrizedModel)"
        )
    source = Path(_model_path(spec[1] if spec else args.model))
    destination = Path(args.output)
    if destination.suffix != ".pt":
        raise CommandError(f"'{destination}' should end in .pt (a metatomic model file)")
    if destination.exists():
        raise CommandError(f"'{destination}' exists; remove it first")
    if args.symmetrize:
        from ..export import symmetrized_model

        try:
            model = symmetrized_model(
                source, quadrature=args.quadrature, batch_size=args.batch_size
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        model.save(str(destination))
        what = f"{source.name} symmetrized over {args.quadrature}+inversion"
    else:
        shutil.copyfile(source, destination)
        what = source.name
    print(f"wrote {destination} ({destination.stat().st_size / 1e6:.1f} MB): {what}")
    return 0


HANDLERS = {"export-metatomic": run_export}
