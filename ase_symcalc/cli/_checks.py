"""Every command's input, checked before any model call (issue 29).

One place for the numbers (``check_arguments``: every option of every
command, by its name), the structures (``check_structure``), the output
paths (``check_output_path``) and the cost (``check_cost``). A bad value
raises ``CommandError``: one line naming the value, the reason and the fix,
exit status 2. Legal but suspicious settings print one warning line.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from ._common import CommandError

#: atoms closer than this (Å) are two atoms on one site, not a structure
MIN_DISTANCE = 0.5
#: model evaluations per call above which a command stops before starting
#: (``--max-evaluations`` raises it): ``group:I`` with inversion is 120,
#: ``design:10`` 1,000-odd, ``lebedev:99`` 694,000
MAX_EVALUATIONS = 10_000
#: model evaluations of a whole ``md`` run above which it stops before starting
#: (``--max-run-evaluations`` raises it): 1,000 steps over ``group:I`` are 121,000
MAX_RUN_EVALUATIONS = 5_000_000
#: the shipped model's cost per atom and copy on 2 CPU cores (32 to 108 Cu
#: atoms: 0.28-0.37 ms), for the time a refused run would have taken
SECONDS_PER_ATOM_COPY = 3e-4
#: time step (fs) per sqrt(mass / amu) above which ``md`` warns (but never at
#: 2 fs or below): 8 fs for copper (a tenth of the fastest vibrations, roughly)
TIMESTEP_PER_SQRT_MASS = 1.0
#: ``md`` warns above this temperature (K): above the boiling point of
#: every element at ambient pressure
HOT = 6000.0
#: ``md`` warns when a force at step 0 exceeds this (eV/Å)
LARGE_FORCE = 20.0


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _positive(value) -> bool:
    return _finite(value) and value > 0


# option (argparse dest) -> (accepted, what it must be, fix)
RULES = {
    "temperature": (lambda v: _finite(v) and v >= 0, "a finite temperature >= 0 K", ""),
    "pressure": (_finite, "a finite pressure in bar", ""),
    "timestep": (_positive, "a finite time step > 0 fs", "copper takes 1 to 5 fs"),
    "steps": (lambda v: v >= 0, "a number of steps >= 0", ""),
    "interval": (lambda v: v >= 1, "a logging interval >= 1 step", ""),
    "tolerance": (_positive, "a finite tolerance > 0 eV/Å", "e.g. 1e-3"),
    "recheck": (lambda v: v >= 0, "a number of calls >= 0 (0: never)", ""),
    "batch_size": (lambda v: v >= 1, "a batch size >= 1", ""),
    "probe_interval": (lambda v: v >= 0, "a number of structures >= 0", ""),
    "seed": (lambda v: 0 <= v < 2**32, "a seed from 0 to 2**32 - 1", ""),
    "mts": (lambda v: v >= 1, "a number of inner steps >= 1", ""),
    "supercell": (lambda v: 1 <= v <= 20, "1 to 20 repetitions per direction", "e.g. 3 3 3"),
    "displacement": (
        lambda v: _positive(v) and v <= 0.2,
        "a finite displacement in (0, 0.2] Å",
        "phonopy's default is 0.01",
    ),
    "strains": (
        lambda v: _finite(v) and 0 < abs(v) <= 0.1,
        "strains with 0 < |strain| <= 0.1",
        "e.g. 0.005 0.01",
    ),
    "fmax": (_positive, "a finite force > 0 eV/Å", "e.g. 1e-3"),
    "rattle": (lambda v: _finite(v) and 0 <= v <= 0.5, "a rattle in [0, 0.5] Å", ""),
    "strain": (lambda v: _finite(v) and abs(v) <= 0.2, "a strain with |strain| <= 0.2", ""),
    "symmetry_tolerance": (
        lambda v: _positive(v) and v < 1,
        "a distance in (0, 1) Å",
        "e.g. 1e-5",
    ),
    "refine_tolerance": (lambda v: _positive(v) and v < 1, "a distance in (0, 1) Å", ""),
    "frames": (lambda v: v >= 1, "a number of frames >= 1", ""),
    "axes": (lambda v: v >= 1, "a number of axes >= 1", ""),
    "lmax": (lambda v: 0 <= v <= 12, "an angular degree from 0 to 12", ""),
    "connect_timeout": (lambda v: _finite(v) and v >= 0, "a finite number of seconds >= 0", ""),
    "max_evaluations": (lambda v: v >= 1, "a number of evaluations >= 1", ""),
    "max_run_evaluations": (lambda v: v >= 1, "a number of evaluations >= 1", ""),
}


def check_arguments(args) -> None:
    """Every numeric option the command has, against ``RULES``."""
    for name, (accepted, requirement, hint) in RULES.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not accepted(item):
                option = "--" + name.replace("_", "-")
                shown = " ".join(str(v) for v in value) if isinstance(value, list) else value
                raise CommandError(
                    f"{option} {shown}: must be {requirement}" + (f" ({hint})" if hint else "")
                )


def check_structure(atoms, where: str) -> None:
    """No atoms, non-finite positions, a degenerate periodic cell, atoms on one site."""
    if len(atoms) == 0:
        raise CommandError(f"{where} has no atoms")
    from ..evaluators import check_structure as check_model_input

    try:
        check_model_input(atoms)  # the same checks as every calculator call
    except ValueError as error:
        raise CommandError(f"{where}: {error}") from error
    from ase.neighborlist import neighbor_list

    first, second, distance = neighbor_list("ijd", atoms, MIN_DISTANCE)
    if len(first):
        k = int(np.argmin(distance))
        raise CommandError(
            f"{where}: atoms {first[k]} and {second[k]} are {distance[k]:.3f} Å apart, closer "
            f"than {MIN_DISTANCE} Å (two atoms on one site); remove one of them"
        )


def check_output_path(path: Path, what: str = "output") -> None:
    """An output that is an existing file, or that cannot be created, fails now."""
    try:
        if path.exists() and not path.is_dir():
            raise CommandError(f"{what} '{path}' is an existing file; give a directory (--output)")
        parent = path.absolute()
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    except OSError as error:
        raise CommandError(f"{what} '{path}' cannot be reached: {error}") from error
    writable = parent.is_dir()
    if writable:
        # permissions say too little (root may "write" to /proc): try, leaving nothing
        try:
            with tempfile.TemporaryDirectory(dir=parent):
                pass
        except OSError:
            writable = False
    if not writable:
        raise CommandError(
            f"{what} '{path}' cannot be written ('{parent}' is not a writable directory); "
            "choose another --output"
        )


def check_cost(args) -> None:
    """Stop before starting when a call, or an ``md`` run, needs too many evaluations."""
    from ..quadrature import rule_size

    quadrature = getattr(args, "quadrature", None)
    mts = getattr(args, "mts", None)
    mode = getattr(args, "mode", None)
    if mode is None:  # md's default, resolved later the same way
        mode = "grid" if mts or args.command != "md" else "random"
    if not getattr(args, "symmetrize", True):  # export-metatomic without --symmetrize
        return
    if mode == "raw":
        return
    rotations = 0  # "auto": its ladder is bounded by design
    if quadrature is not None and quadrature.strip() != "auto":
        try:
            rotations = rule_size(quadrature)
        except (ValueError, TypeError) as error:
            raise CommandError(str(error)) from error
    # the rule runs in the grid modes, and in random mode once it escalates
    used = mode in ("grid", "random-grid") or (
        mode == "random" and getattr(args, "tolerance", None) is not None
    )
    limit = getattr(args, "max_evaluations", None) or MAX_EVALUATIONS
    if used and rotations > limit:
        hint = "raise --max-evaluations" if hasattr(args, "max_evaluations") else "see above"
        raise CommandError(
            f"--quadrature {quadrature} has {rotations:,} rotations: {rotations:,} model "
            f"evaluations per call ({_per_100_atoms(rotations)}), above the limit of "
            f"{limit:,}; choose a smaller rule ('ase-symcalc quadratures') or {hint}"
        )
    steps = getattr(args, "steps", None)
    run_limit = getattr(args, "max_run_evaluations", None)
    if steps is None or run_limit is None:
        return
    if mode == "random":
        per_step = 1 + 2 / (getattr(args, "interval", None) or 10)  # a probe per logged row
    elif mode == "random-single":
        per_step = 1.0
    elif mts:  # raw inner steps, the rule and the raw copy every M steps
        per_step = 1 + (rotations + 1) / mts
    else:
        per_step = rotations + 1
    total = int(steps * per_step)
    if total > run_limit:
        raise CommandError(
            f"{steps} steps of --mode {mode} need about {total:,} model evaluations "
            f"({_per_100_atoms(total)}), above the limit of {run_limit:,}; use --mode random, "
            "--mts, fewer --steps, or raise --max-run-evaluations"
        )


def _per_100_atoms(evaluations: int) -> str:
    seconds = evaluations * 100 * SECONDS_PER_ATOM_COPY
    return f"about {_duration(seconds)} per 100 atoms at the shipped model's speed on 2 cores"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def warn(command: str, message: str) -> None:
    print(f"ase-symcalc {command}: warning: {message}", file=sys.stderr)


def md_warnings(args, atoms) -> None:
    """Legal but suspicious ``md`` settings: one line each."""
    lightest = float(atoms.get_masses().min())
    limit = max(2.0, TIMESTEP_PER_SQRT_MASS * math.sqrt(lightest))  # 2 fs: the default
    if args.timestep > limit:
        symbol = atoms.get_chemical_symbols()[int(np.argmin(atoms.get_masses()))]
        warn(
            "md",
            f"--timestep {args.timestep:g} fs is long for {symbol} ({lightest:.1f} amu): above "
            f"{limit:.1f} fs the integration error grows fast; 1-2 fs is usual",
        )
    if args.temperature > HOT:
        warn("md", f"--temperature {args.temperature:g} K is above {HOT:g} K: a gas, not a solid")


def large_force_warning(command: str, atoms) -> None:
    """Forces at step 0 above ``LARGE_FORCE``: name the worst atom."""
    forces = atoms.calc.results.get("forces")
    if forces is None:
        return
    norms = np.linalg.norm(forces, axis=1)
    worst = int(np.argmax(norms))
    if norms[worst] > LARGE_FORCE:
        warn(
            command,
            f"the force on atom {worst} ({atoms.get_chemical_symbols()[worst]}) is "
            f"{norms[worst]:.1f} eV/Å at step 0 (above {LARGE_FORCE:g}): the structure is far "
            "from what the model knows, or atoms overlap; relax it first",
        )
