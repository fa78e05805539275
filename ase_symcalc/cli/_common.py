"""What every command shares: errors, the model, rule and output options,
reading structures and models, and output folders."""

from __future__ import annotations

import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..models.architectures import ARCHITECTURES as ARCHITECTURE_NAMES


class CommandError(Exception):
    """A user-facing error: printed on one line, exit code 2."""


@contextmanager
def one_line_warnings(command: str):
    """Equivariance warnings (escalations in --mode random) as one stderr line each."""
    from .._warnings import EquivarianceWarning

    with warnings.catch_warnings():
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, EquivarianceWarning):
                print(f"ase-symcalc {command}: {message}", file=sys.stderr, flush=True)
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        warnings.simplefilter("always", EquivarianceWarning)
        yield


VARIANT_HELP = "output variant of a multi-head metatomic model (e.g. pbe: energy/pbe)"


MODEL_HELP = (
    "shipped model name, pretrained name (ase-symcalc models), metatomic .pt file, or "
    "ARCH:FILE for any architecture (orb:FILE, mace:FILE, sevennet:FILE, chgnet:FILE, ...)"
)


def add_model_options(parser, *, positional=False, forces=False, batch_size=False) -> None:
    """The model (a shipped name, a .pt file or ARCH:FILE), its variant, and
    optionally its force mode and batch size."""
    if positional:
        parser.add_argument("model", help=MODEL_HELP)
    else:
        parser.add_argument("--model", default=None, help=MODEL_HELP)
        parser.add_argument(
            "--arch",
            default=None,
            choices=sorted(ARCHITECTURE_NAMES),
            help="the model's architecture, with --model-path (same as --model ARCH:FILE)",
        )
        parser.add_argument("--model-path", default=None, help="the model file, with --arch")
    if forces:
        parser.add_argument("--forces", default=None, choices=["direct", "conservative"])
    if batch_size:
        parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--variant", default=None, help=VARIANT_HELP)


def add_output_options(parser, default: str, what: str, *, overwrite=False) -> None:
    """--output (and --overwrite for output folders)."""
    parser.add_argument("--output", default=default, help=what)
    if overwrite:
        parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _add_rule_options(parser, default: str | None, *, default_text=None, tolerance_text=None):
    """--quadrature, --tolerance and --recheck, the same on every command."""
    parser.add_argument(
        "--quadrature",
        default=default,
        help=f"rule spec, or 'auto': the cheapest rule whose forces residual is below "
        f"--tolerance (default {default_text or default}; 'ase-symcalc quadratures' lists them)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help=tolerance_text
        or "with --quadrature auto: bound on the forces' rotation error in eV/Å, RMS over "
        "atoms (default 1e-3)",
    )
    parser.add_argument(
        "--tolerance-per-atom",
        action="store_true",
        help="with --quadrature auto: the tolerance bounds every atom's force change, not "
        "the RMS (stricter; what per-atom tests such as MLIP Arena's cosine need)",
    )
    parser.add_argument(
        "--recheck",
        type=int,
        default=100,
        help="with --quadrature auto: re-measure the residual every N calls (default 100, "
        "0: never)",
    )
    parser.add_argument(
        "--max-evaluations",
        type=int,
        default=None,
        help="refuse a rule of more rotations than this per call (default 10,000)",
    )


def _rule_kwargs(args) -> dict:
    """SymmetrizedCalculator keyword arguments of the rule options."""
    kwargs = {"quadrature": args.quadrature}
    if args.tolerance is not None:
        kwargs["tolerance"] = args.tolerance
    if args.quadrature.strip() == "auto":
        kwargs["recheck"] = args.recheck
        if args.tolerance_per_atom:
            kwargs["tolerance_per_atom"] = True
    elif args.tolerance_per_atom:
        raise ValueError(
            "--tolerance-per-atom sets what --quadrature auto bounds; add --quadrature auto"
        )
    return kwargs


def _load_structure(path):
    from ase.build import bulk
    from ase.io import read

    if path is None:
        return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    try:
        atoms = read(path)
    except FileNotFoundError as error:
        raise CommandError(f"structure file '{path}' does not exist") from error
    except Exception as error:
        from ase.io.formats import UnknownFileTypeError

        if isinstance(error, UnknownFileTypeError):
            reason = (
                f"ASE cannot tell its format from its name or content ({error}); "
                "give a structure file ASE reads (.extxyz, .cif, POSCAR, .xyz, ...)"
            )
        else:
            reason = " ".join(str(error).split()) or type(error).__name__
        raise CommandError(f"cannot read structure '{path}': {reason}") from error
    from ._checks import check_structure

    check_structure(atoms, f"structure '{path}'")
    return atoms


def combine_model_options(args) -> None:
    """``--arch A --model-path F`` -> ``args.model = "A:F"`` (janus-core's spelling)."""
    arch, path = getattr(args, "arch", None), getattr(args, "model_path", None)
    if arch is None and path is None:
        return
    if arch is None or path is None:
        raise CommandError("--arch and --model-path go together (or give --model ARCH:FILE)")
    if args.model is not None:
        raise CommandError("give either --model or --arch/--model-path, not both")
    args.model = f"{arch}:{path}"


def _model_path(model):
    """The model as the calculator takes it: a file path, ``ARCH:FILE`` or a
    pretrained name whose file is on this machine (or downloaded now)."""
    from ..models import list_pretrained, named
    from ..models import path as shipped_path
    from ..models.architectures import ARCHITECTURES, split_spec

    spec = split_spec(model)
    if spec is not None:
        if not Path(spec[1]).is_file():
            raise CommandError(f"{spec[0]} model file '{spec[1]}' does not exist")
        return model
    if model is None or model in list_pretrained():
        return str(shipped_path(model))
    if Path(model).is_file():
        return model
    if named.is_named(model):
        try:
            named.resolve(model)
        except named.MissingModelError as error:
            raise CommandError(str(error)) from error
        return model
    raise CommandError(
        f"unknown model '{model}': neither a shipped model "
        f"({', '.join(list_pretrained())}), a pretrained name (ase-symcalc models lists "
        f"them), an existing .pt file, nor ARCH:FILE ({', '.join(ARCHITECTURES)})"
    )


def _make_calculator(args, model_path):
    from ..calculator import SymmetrizedCalculator

    try:
        if args.mode == "raw":
            return SymmetrizedCalculator(
                model_path,
                quadrature="identity",
                batch_size=args.batch_size,
                forces=args.forces,
                variant=args.variant,
            )
        extra = {}
        if args.mode == "random":
            extra["probe_interval"] = args.probe_interval
        return SymmetrizedCalculator(
            model_path,
            mode=args.mode,
            seed=args.seed,
            **extra,
            batch_size=args.batch_size,
            forces=args.forces,
            variant=args.variant,
            raw=True,
            **_rule_kwargs(args),
        )
    except (ValueError, ImportError) as error:
        raise CommandError(str(error)) from error


def _first_evaluation(atoms, where: str) -> None:
    """Evaluate once; a model that cannot take the structure is a one-line error."""
    try:
        atoms.get_forces()
    except (ValueError, MemoryError, NotImplementedError) as error:
        raise CommandError(f"{where}: {error}") from error


def _check_output(directory: Path, overwrite: bool) -> None:
    from ._checks import check_output_path

    check_output_path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise CommandError(
            f"output directory '{directory}' exists and is not empty; "
            "use --overwrite to replace it or --output to choose another"
        )


def _prepare_output(directory: Path, overwrite: bool):
    _check_output(directory, overwrite)
    try:
        if directory.exists() and any(directory.iterdir()):
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or error
        raise CommandError(f"cannot write the output '{directory}': {reason}") from error


def _thermalize(atoms, temperature, seed):
    from ase.md import velocitydistribution as vd

    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):
        vd.thermalize_momenta(atoms, temperature, rng=rng)
    else:  # ASE < 3.29
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    vd.Stationary(atoms)


def _read_frames(dataset):
    from ase.io import read

    try:
        return read(dataset, ":")
    except FileNotFoundError as error:
        raise CommandError(f"dataset '{dataset}' does not exist") from error
    except Exception as error:
        raise CommandError(f"cannot read dataset '{dataset}': {error}") from error


def _meV(value):
    return "n/a" if value is None else f"{1e3 * value:.2f}"


def save_plot(plot, *args, **kwargs) -> str:
    """Run ``plot(*args, **kwargs)``; without matplotlib the command still succeeds
    (its numbers are written) and says, in one line, how to get the figure.
    Returns " and FIGURE" for the command's "wrote ..." line, or ""."""
    from .._optional import MissingExtraError

    figure = next((a for a in args if isinstance(a, (str, Path))), None)
    try:
        plot(*args, **kwargs)
    except MissingExtraError as error:
        print(f"ase-symcalc: no figure: {error}", file=sys.stderr)
        return ""
    return f" and {figure}"
