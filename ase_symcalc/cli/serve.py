"""`ase-symcalc serve`: the symmetrized model as an i-PI socket client."""

from __future__ import annotations

import sys

from ..rule_policy import PROBE_INTERVAL
from ._common import (
    CommandError,
    _add_rule_options,
    _first_evaluation,
    _load_structure,
    _make_calculator,
    _model_path,
    add_model_options,
)


def add_parser(sub) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the symmetrized model to i-PI (a socket client)",
        description="Connect to i-PI at ADDRESS (unix:NAME or HOST:PORT) and answer every "
        "structure it sends with the symmetrized energy, forces and virial, plus the "
        "equivariance diagnostics as i-PI extras (JSON, eV and Å), until i-PI ends the "
        "run. Start as many clients as you like: i-PI spreads beads over them.",
    )
    serve.add_argument("address", help="unix:NAME (socket /tmp/ipi_NAME) or HOST:PORT")
    serve.add_argument(
        "--structure",
        required=True,
        help="the template i-PI runs (species, pbc): any file ASE reads",
    )
    add_model_options(serve, forces=True, batch_size=True)
    _add_rule_options(serve, "group:I")
    serve.add_argument(
        "--mode",
        default="grid",
        choices=["grid", "random", "random-grid", "random-single", "raw"],
        help="grid (default): --quadrature for every structure; random: one random rotation "
        "per structure, the equivariance errors estimated (as extras) every --probe-interval "
        "structures, and with --tolerance an escalation to --quadrature above it",
    )
    serve.add_argument(
        "--probe-interval",
        type=int,
        default=PROBE_INTERVAL,
        help=f"--mode random: structures between two estimates of the errors (default "
        f"{PROBE_INTERVAL})",
    )
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument(
        "--connect-timeout", type=float, default=60.0, help="s to wait for i-PI (default 60)"
    )


def run_serve(args) -> int:
    from ..serve import ServeError, serve

    model_path = _model_path(args.model)
    atoms = _load_structure(args.structure)
    atoms.calc = _make_calculator(args, model_path)
    # a structure the model cannot take fails here, before i-PI waits on us
    _first_evaluation(atoms, args.structure)
    try:
        count = serve(atoms, args.address, connect_timeout=args.connect_timeout)
    except (ServeError, ValueError) as error:
        raise CommandError(str(error)) from error
    print(f"served {count} structures; i-PI ended the run", file=sys.stderr)
    return 0


HANDLERS = {"serve": run_serve}
