"""The ``ase-symcalc`` command line: one module per command, shared options in
``_common`` (model, rule and output options defined once).

ase-symcalc md [STRUCTURE]              MD with equivariance monitoring (md.py)
ase-symcalc compare DATASET             raw vs symmetrized per frame (compare.py)
ase-symcalc diagnose MODEL DATASET      the paper's A and B diagnostics (diagnose.py)
ase-symcalc check MODEL DATASET         MLIP Arena and ML-PEG protocols (check.py)
ase-symcalc phonons|elastic|relax       what symmetrizing fixes (workflows.py)
ase-symcalc serve ADDRESS               i-PI client (serve.py)
ase-symcalc export-metatomic OUT.pt     model files (export.py)
ase-symcalc quadratures | plot LOG      the rule table; the MD figure again
ase-symcalc models                      models by name and where their files are (models.py)
"""

from __future__ import annotations

import argparse
import sys

from . import check, compare, diagnose, export, md, models, quadratures, serve, workflows
from ._checks import check_arguments, check_cost
from ._common import CommandError, combine_model_options, one_line_warnings
from ._common import _thermalize as _thermalize  # examples and benchmarks use it
from .md import plot_log, read_log, summarize

__all__ = ["CommandError", "build_parser", "main", "plot_log", "read_log", "summarize"]

# in the order of ``ase-symcalc --help``
COMMANDS = (md, compare, quadratures, models, diagnose, check, workflows, serve, export)


def build_parser() -> argparse.ArgumentParser:
    """The `ase-symcalc` parser with every command (the CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(
        prog="ase-symcalc",
        description="Symmetrize unconstrained ML potentials over O(3) and monitor "
        "their equivariance error.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an unexpected error (default: one line)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {name: run for command in COMMANDS for name, run in command.HANDLERS.items()}
    try:
        combine_model_options(args)
        check_arguments(args)
        check_cost(args)
        with one_line_warnings(args.command):
            return handlers[args.command](args)
    except CommandError as error:
        print(f"ase-symcalc {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a dependency's or our own: one line unless --debug
        if args.debug:
            raise
        text = " ".join(str(error).split()) or "no message"
        print(
            f"ase-symcalc {args.command}: error: {type(error).__name__} from "
            f"{_origin(error)}: {text} (ase-symcalc --debug {args.command} ... shows the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


def _origin(error: BaseException) -> str:
    """The package whose code raised ``error`` (numpy, phonopy, spglib, torch, ...)."""
    traceback = error.__traceback__
    module = "ase_symcalc"
    while traceback is not None:
        name = traceback.tb_frame.f_globals.get("__name__", "")
        if name:
            module = name.split(".")[0]
        traceback = traceback.tb_next
    return module


if __name__ == "__main__":
    raise SystemExit(main())
