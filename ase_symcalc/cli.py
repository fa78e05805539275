"""The ``ase-symcalc`` command line.

ase-symcalc md [STRUCTURE] [options]     MD with equivariance monitoring
ase-symcalc quadratures                  the rule table
ase-symcalc export-metatomic OUT.pt      the shipped model as a file
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

MD_EXAMPLES = """\
examples:
  ase-symcalc md                                  # 108 Cu atoms, 300 K, shipped model
  ase-symcalc md POSCAR --steps 200 --quadrature lebedev:3 --output run1
  ase-symcalc md start.extxyz --mode raw --ensemble nve --timestep 2
  ase-symcalc md --model my-pet-mad.pt --ensemble langevin --temperature 600
  ase-symcalc md --ensemble npt --pressure 1 --temperature 300 --steps 100
  ase-symcalc md --restart symcalc-md --steps 100    # continue a run
"""


class CommandError(Exception):
    """A user-facing error: printed on one line, exit code 2."""


VARIANT_HELP = "output variant of a multi-head metatomic model (e.g. pbe: energy/pbe)"


def _add_rule_options(parser, default: str) -> None:
    """--quadrature, --tolerance and --recheck, the same on every command."""
    parser.add_argument(
        "--quadrature",
        default=default,
        help=f"rule spec, or 'auto': the cheapest rule whose forces residual is below "
        f"--tolerance (default {default}; 'ase-symcalc quadratures' lists them)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="with --quadrature auto: target forces residual in eV/Å (default 1e-3)",
    )
    parser.add_argument(
        "--recheck",
        type=int,
        default=100,
        help="with --quadrature auto: re-measure the residual every N calls (default 100, "
        "0: never)",
    )


def _rule_kwargs(args) -> dict:
    """SymmetrizedCalculator keyword arguments of the rule options."""
    kwargs = {"quadrature": args.quadrature}
    if args.tolerance is not None:
        kwargs["tolerance"] = args.tolerance
    if args.quadrature.strip() == "auto":
        kwargs["recheck"] = args.recheck
    return kwargs


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ase-symcalc",
        description="Symmetrize unconstrained ML potentials over O(3) and monitor "
        "their equivariance error.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    md = sub.add_parser(
        "md",
        help="molecular dynamics with raw vs symmetrized monitoring",
        description="Run MD with a symmetrized model and log, at every step, the raw "
        "and symmetrized energies and the equivariance errors. Writes DIR/log.csv, "
        "DIR/trajectory.extxyz, DIR/summary.json and DIR/equivariance.png.",
        epilog=MD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    md.add_argument("structure", nargs="?", help="any file ASE reads (default: 3x3x3 fcc Cu)")
    md.add_argument("--model", default=None, help="shipped model name or metatomic .pt file")
    _add_rule_options(md, "lebedev:3")
    md.add_argument(
        "--mode", default="grid", choices=["grid", "random-grid", "random-single", "raw"]
    )
    md.add_argument("--ensemble", default="langevin", choices=["nve", "langevin", "npt"])
    md.add_argument(
        "--pressure", type=float, default=1.0, help="bar, for --ensemble npt (default 1)"
    )
    md.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    md.add_argument("--timestep", type=float, default=2.0, help="fs (default 2)")
    md.add_argument("--steps", type=int, default=30, help="time steps (default 30)")
    md.add_argument(
        "--mts",
        type=int,
        default=None,
        metavar="M",
        help="multiple time stepping: raw forces every step, the symmetrized correction "
        "every M steps (--steps must be a multiple of M; logs every M steps)",
    )
    md.add_argument(
        "--forces",
        "--slow",
        dest="forces",
        default=None,
        choices=["direct", "conservative"],
        help="forces of the symmetrized model (default: the model's own kind; with "
        "--mts: conservative)",
    )
    md.add_argument("--interval", type=int, default=1, help="log every n steps")
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--batch-size", type=int, default=None)
    md.add_argument("--variant", default=None, help=VARIANT_HELP)
    md.add_argument("--output", default="symcalc-md", help="output directory")
    md.add_argument("--overwrite", action="store_true", help="replace an existing output")
    md.add_argument(
        "--restart",
        metavar="DIR",
        default=None,
        help="continue a run from the last frame of DIR/trajectory.extxyz, appending "
        "to DIR/log.csv (--steps more steps)",
    )

    compare = sub.add_parser(
        "compare",
        help="raw vs symmetrized predictions over every frame of a file",
        description="Evaluate raw and symmetrized predictions on every frame; with "
        "reference energies/forces in the file, also their errors and the split "
        "mean RMSE(raw)^2 ~ RMSE(sym)^2 + A^2. Writes OUTPUT.csv and OUTPUT.png.",
    )
    compare.add_argument("dataset", help="any multi-frame file ASE reads")
    compare.add_argument("--model", default=None)
    _add_rule_options(compare, "group:I")
    compare.add_argument("--variant", default=None, help=VARIANT_HELP)
    compare.add_argument("--output", default="compare", help="prefix of the .csv and .png")

    plot = sub.add_parser("plot", help="draw the equivariance figure from a log.csv")
    plot.add_argument("log", help="a log.csv written by ase-symcalc md")
    plot.add_argument("--output", default=None, help="PNG path (default: next to the log)")

    sub.add_parser("quadratures", help="print the table of quadrature rules")

    diagnose = sub.add_parser(
        "diagnose",
        help="the paper's diagnostics: equivariance errors and character fractions",
        description="For a metatomic model and a dataset: the equivariance error of "
        "energy, forces and stress (A), with the test errors raw and symmetrized when "
        "the frames carry reference labels, and the fraction of each output and each "
        "internal feature block in every O(3) channel (l, parity) (B). Writes "
        "PREFIX.json and the heatmap PREFIX.png.",
    )
    diagnose.add_argument("model", help="shipped model name or metatomic .pt file")
    diagnose.add_argument("dataset", help="any multi-frame file ASE reads")
    diagnose.add_argument("--lmax", type=int, default=2, help="highest l resolved (default 2)")
    diagnose.add_argument("--frames", type=int, default=4, help="frames used (default 4)")
    _add_rule_options(diagnose, "group:I")
    diagnose.add_argument("--variant", default=None, help=VARIANT_HELP)
    diagnose.add_argument("--output", default="diagnose", help="prefix of the .json and .png")

    check = sub.add_parser(
        "check",
        help="the public equivariance checks (MLIP Arena, ML-PEG) raw vs symmetrized",
        description="Run MLIP Arena's force-equivariance test and ML-PEG's "
        "rotational-symmetry walk on every frame of DATASET, for the raw and the "
        "symmetrized model, with the symmetrized model's residual estimate beside. "
        "Writes PREFIX.json and PREFIX.png.",
    )
    check.add_argument("model", help="shipped model name or metatomic .pt file")
    check.add_argument("dataset", help="any file ASE reads (every frame is checked)")
    _add_rule_options(check, "group:I")
    check.add_argument("--axes", type=int, default=4, help="random axes of the Arena test (4)")
    check.add_argument("--frames", type=int, default=None, help="check the first N frames")
    check.add_argument("--batch-size", type=int, default=None)
    check.add_argument("--variant", default=None, help=VARIANT_HELP)
    check.add_argument("--output", default="check", help="prefix of the .json and .png")

    from .workflow_commands import add_parsers

    add_parsers(sub)

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
    serve.add_argument("--model", default=None, help="shipped model name or metatomic .pt file")
    _add_rule_options(serve, "group:I")
    serve.add_argument(
        "--mode", default="grid", choices=["grid", "random-grid", "random-single", "raw"]
    )
    serve.add_argument("--forces", default=None, choices=["direct", "conservative"])
    serve.add_argument("--batch-size", type=int, default=None)
    serve.add_argument("--variant", default=None, help=VARIANT_HELP)
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument(
        "--connect-timeout", type=float, default=60.0, help="s to wait for i-PI (default 60)"
    )

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
    return parser


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
        raise CommandError(f"cannot read structure '{path}': {error}") from error
    if len(atoms) == 0:
        raise CommandError(f"structure '{path}' has no atoms")
    return atoms


def _model_path(model):
    from .models import list_pretrained
    from .models import path as shipped_path

    if model is None or model in list_pretrained():
        return str(shipped_path(model))
    if not Path(model).is_file():
        raise CommandError(
            f"unknown model '{model}': neither a shipped model "
            f"({', '.join(list_pretrained())}) nor an existing .pt file"
        )
    return model


def _make_calculator(args, model_path):
    from .calculator import SymmetrizedCalculator

    try:
        if args.mode == "raw":
            return SymmetrizedCalculator(
                model_path,
                quadrature="identity",
                batch_size=args.batch_size,
                forces=args.forces,
                variant=args.variant,
            )
        return SymmetrizedCalculator(
            model_path,
            mode=args.mode,
            seed=args.seed,
            batch_size=args.batch_size,
            forces=args.forces,
            variant=args.variant,
            raw=True,
            **_rule_kwargs(args),
        )
    except ValueError as error:
        raise CommandError(str(error)) from error


def _first_evaluation(atoms, where: str) -> None:
    """Evaluate once; a model that cannot take the structure is a one-line error."""
    try:
        atoms.get_forces()
    except (ValueError, MemoryError, NotImplementedError) as error:
        raise CommandError(f"{where}: {error}") from error


def _check_output(directory: Path, overwrite: bool) -> None:
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise CommandError(
            f"output directory '{directory}' exists and is not empty; "
            "use --overwrite to replace it or --output to choose another"
        )


def _prepare_output(directory: Path, overwrite: bool):
    _check_output(directory, overwrite)
    if directory.exists() and any(directory.iterdir()):
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)


def _thermalize(atoms, temperature, seed):
    from ase.md import velocitydistribution as vd

    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):
        vd.thermalize_momenta(atoms, temperature, rng=rng)
    else:  # ASE < 3.29
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    vd.Stationary(atoms)


def _dynamics(args, atoms):
    from ase import units

    dt = args.timestep * units.fs
    if args.mts:
        from .calculator import SymmetrizedCalculator
        from .mts import MultipleTimeStepMD

        if args.ensemble == "npt":
            raise CommandError("--mts works with --ensemble nve or langevin, not npt")
        # the raw model for the inner steps: the model the slow calculator has
        # already loaded, in its own evaluator (its own force mode: direct)
        fast = SymmetrizedCalculator(
            atoms.calc.evaluator.model, quadrature="identity", raw=False, variant=args.variant
        )
        thermostat = {}
        if args.ensemble == "langevin":
            thermostat = {
                "temperature_K": args.temperature,
                "friction": 0.01 / units.fs,
                "rng": args.seed,
            }
        return MultipleTimeStepMD(atoms, dt * args.mts, fast, args.mts, **thermostat)
    if args.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if args.ensemble == "npt":
        from ase.md.nptberendsen import NPTBerendsen

        if not (atoms.pbc.all() and atoms.cell.rank == 3):
            raise CommandError("--ensemble npt needs a 3D-periodic structure (it uses the stress)")
        # Berendsen barostat: works for any cell shape (ASE's NPT needs an
        # upper-triangular cell); 100 fs thermostat, 1 ps barostat, Cu-like
        # compressibility
        return NPTBerendsen(
            atoms,
            timestep=dt,
            temperature_K=args.temperature,
            pressure_au=args.pressure * units.bar,
            taut=100 * units.fs,
            taup=1000 * units.fs,
            compressibility_au=1.0 / (140 * units.GPa),
            fixcm=False,
        )
    from ase.md.langevin import Langevin

    return Langevin(
        atoms,
        timestep=dt,
        temperature_K=args.temperature,
        friction=0.01 / units.fs,
        fixcm=False,
        # a legacy RandomState: with a numpy Generator, ASE 3.29's Langevin
        # heated 108 Cu atoms from 311 K to 430 K in its first 2 fs step
        rng=np.random.RandomState(args.seed),
    )


def read_log(path) -> dict[str, np.ndarray]:
    """The columns of a monitor CSV as float arrays (units stripped from names)."""
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    names = [name.split(" [")[0] for name in rows[0]]
    data = {name: [] for name in names}
    for row in rows[1:]:
        if len(row) != len(names):  # a line cut by a killed run
            continue
        for name, value in zip(names, row, strict=True):
            data[name].append(value)
    return {name: _column(values) for name, values in data.items()}


def _column(values: list[str]) -> np.ndarray:
    """Floats (NaN for empty cells), or the strings of a text column (the rule)."""
    try:
        return np.array([float(v) if v != "" else np.nan for v in values], dtype=float)
    except ValueError:
        return np.array(values, dtype=str)


def summarize(log: dict, n_atoms: int) -> dict:
    """Means and maxima of the errors, and the drift of the total energy."""
    summary = {"logged_steps": int(len(log["step"]))}
    for name in (
        "energy_equivariance_error",
        "forces_equivariance_error",
        "stress_equivariance_error",
        "forces_raw_vs_sym_rmse",
        "max_atom_forces_error",
        "forces_residual",
    ):
        if name not in log:  # logs written before the column existed
            continue
        values = log[name][np.isfinite(log[name])]
        summary[name] = {
            "mean": float(values.mean()) if len(values) else None,
            "max": float(values.max()) if len(values) else None,
        }
    t_ps = log["time_fs"] / 1000.0
    if len(t_ps) >= 2 and np.ptp(t_ps) > 0:
        slope = np.polyfit(t_ps, log["etot"], 1)[0]  # eV/ps
        summary["etot_drift_meV_per_atom_per_ps"] = float(slope * 1000.0 / n_atoms)
    summary["mean_temperature_K"] = float(np.nanmean(log["temperature_K"]))
    if "rule" in log and log["rule"].dtype.kind == "U":
        summary["rules_used"] = sorted({str(rule) for rule in log["rule"] if str(rule)})
    return summary


def plot_log(log: dict, output: Path, title: str = ""):
    """Three panels: energies raw vs symmetrized, equivariance errors, temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = log["time_fs"] / 1000.0
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    axes[0].plot(t, log["epot_raw"], label="raw", lw=1)
    axes[0].plot(t, log["epot_sym"], label="symmetrized", lw=1)
    axes[0].plot(t, log["etot"], label="total (symmetrized)", lw=1, color="k")
    axes[0].set_ylabel("energy (eV)")
    axes[0].legend(fontsize=8)
    axes[1].plot(t, 1e3 * log["forces_equivariance_error"], label="forces (meV/Å)")
    axes[1].plot(t, 1e3 * log["max_atom_forces_error"], label="worst atom (meV/Å)", lw=0.8)
    axes[1].plot(t, 1e3 * log["energy_equivariance_error"], label="energy (meV)")
    axes[1].set_ylabel("equivariance error")
    axes[1].legend(fontsize=8)
    axes[2].plot(t, log["temperature_K"], color="C3")
    axes[2].set_ylabel("T (K)")
    axes[2].set_xlabel("time (ps)")
    if title:
        axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


def _restart_state(directory: Path):
    """Last trajectory frame, and the log cut back to that frame's step."""
    from ase.io import read, write

    trajectory = directory / "trajectory.extxyz"
    log_file = directory / "log.csv"
    if not trajectory.is_file() or not log_file.is_file():
        raise CommandError(f"cannot restart: '{directory}' has no trajectory.extxyz and log.csv")
    try:
        frames = read(trajectory, ":")
    except Exception:  # a frame cut by a killed run: keep the complete ones
        frames = _read_complete_frames(trajectory)
    if not frames:
        raise CommandError(f"cannot restart: '{trajectory}' holds no complete frame")
    write(trajectory, frames, format="extxyz")  # drop a half-written last frame
    last = frames[-1]
    step = int(last.info["step"])
    # rows logged after the last saved frame (or cut in half) would be duplicated
    lines = log_file.read_text().splitlines(keepends=True)
    kept = [lines[0]]
    for line in lines[1:]:
        fields = line.rstrip("\n").split(",")
        if not line.endswith("\n") or len(fields) != len(lines[0].split(",")):
            break
        if int(float(fields[0])) > step:
            break
        kept.append(line)
    log_file.write_text("".join(kept))
    atoms = last.copy()
    atoms.calc = None
    return atoms, step


def _read_complete_frames(path: Path):
    from ase.io import iread

    frames = []
    try:
        for frame in iread(path, ":"):
            frames.append(frame)
    except Exception:
        pass
    return frames


def run_md(args) -> int:
    from tqdm.auto import tqdm

    from .monitor import EquivarianceMonitor

    if args.steps < 0 or args.interval < 1 or args.timestep <= 0:
        raise CommandError("--steps must be >= 0, --interval >= 1 and --timestep > 0")
    outer_steps = args.steps
    if args.mts is not None:
        if args.mts < 1 or args.steps % args.mts:
            raise CommandError(
                f"--mts must be a positive divisor of --steps (got --mts {args.mts}, "
                f"--steps {args.steps})"
            )
        if args.mode == "raw":
            raise CommandError("--mts needs a symmetrized model: drop --mode raw")
        outer_steps = args.steps // args.mts
        if args.forces is None:
            args.forces = "conservative"
    model_path = _model_path(args.model)
    step_offset = 0
    if args.restart:
        output = Path(args.restart)
        atoms, step_offset = _restart_state(output)
    else:
        atoms = _load_structure(args.structure)
        output = Path(args.output)
        _check_output(output, args.overwrite)
    atoms.calc = _make_calculator(args, model_path)
    # the model must take this structure before an old output is replaced; the
    # result is cached, so the first MD step does not evaluate again
    _first_evaluation(atoms, args.structure or "the default structure")
    if not args.restart:
        _prepare_output(output, args.overwrite)
    if not atoms.has("momenta") or not atoms.get_momenta().any():
        _thermalize(atoms, args.temperature, args.seed)
    dyn = _dynamics(args, atoms)
    monitor = EquivarianceMonitor(
        atoms,
        output / "log.csv",
        dynamics=dyn,
        trajectory=output / "trajectory.extxyz",
        step_offset=step_offset,
    )
    bar = tqdm(total=outer_steps, desc="MD", unit="step", disable=None)
    if step_offset:
        # the restart frame is already logged: skip the observer call at step 0
        dyn.attach(lambda: monitor() if dyn.nsteps > 0 else None, interval=args.interval)
    else:
        dyn.attach(monitor, interval=args.interval)
    dyn.attach(lambda: bar.update(1) if dyn.nsteps > 0 else None, interval=1)
    start = time.perf_counter()
    try:
        dyn.run(outer_steps)
    finally:
        bar.close()
        monitor.close()
    elapsed = time.perf_counter() - start
    log = read_log(output / "log.csv")
    summary = summarize(log, len(atoms))
    calc = atoms.calc
    summary.update(
        {
            "structure": args.structure or "fcc Cu 3x3x3 (108 atoms)",
            "atoms": len(atoms),
            "model": model_path,
            "quadrature": calc.quadrature.name if args.mode != "random-single" else None,
            "mode": args.mode,
            "ensemble": args.ensemble,
            "timestep_fs": args.timestep,
            "steps": args.steps,
            "mts": args.mts,
            "forces": getattr(calc.evaluator, "forces", None),
            "wall_time_s": elapsed,
            "seconds_per_step": elapsed / max(args.steps, 1),
            "model_evaluations": calc.evaluation_count + getattr(dyn, "fast_evaluations", 0),
        }
    )
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_log(log, output / "equivariance.png", title=f"{summary['structure']}, {args.mode}")
    forces = summary["forces_equivariance_error"]
    print(
        f"{args.steps} steps in {elapsed:.1f} s ({summary['seconds_per_step']:.2f} s/step); "
        f"forces equivariance error mean {_meV(forces['mean'])} meV/Å, "
        f"max {_meV(forces['max'])} meV/Å; outputs in {output}/"
    )
    return 0


def _meV(value):
    return "n/a" if value is None else f"{1e3 * value:.2f}"


def run_quadratures(args) -> int:
    from .quadrature import quadrature_table

    print(f"{'spec':22s} {'evaluations':>11s} {'with inversion':>15s} {'exact degree':>13s}")
    for row in quadrature_table():
        print(
            f"{row['spec']:22s} {row['evaluations']:11d} "
            f"{row['evaluations_with_inversion']:15d} {row['degree']:13d}"
        )
    print(f"{'random:M':22s} {'M':>11s} {'2M':>15s} {'none':>13s}")
    print(f"{'identity':22s} {1:11d} {1:15d} {'-':>13s}")
    return 0


def run_plot(args) -> int:
    log_file = Path(args.log)
    if not log_file.is_file():
        raise CommandError(f"log file '{log_file}' does not exist")
    try:
        log = read_log(log_file)
    except Exception as error:
        raise CommandError(f"cannot read '{log_file}' as an ase-symcalc log: {error}") from error
    output = Path(args.output) if args.output else log_file.with_name("equivariance.png")
    plot_log(log, output, title=str(log_file))
    print(f"wrote {output}")
    return 0


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

    from .calculator import SymmetrizedCalculator

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
    _plot_compare(rows, output.with_suffix(".png"))
    print(f"wrote {output.with_suffix('.csv')} and {output.with_suffix('.png')}")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def _read_frames(dataset):
    from ase.io import read

    try:
        return read(dataset, ":")
    except FileNotFoundError as error:
        raise CommandError(f"dataset '{dataset}' does not exist") from error
    except Exception as error:
        raise CommandError(f"cannot read dataset '{dataset}': {error}") from error


def run_diagnose(args) -> int:
    from .calculator import SymmetrizedCalculator
    from .diagnostics import error_split, feature_fractions, plot_fractions
    from .evaluators import make_evaluator
    from .models import feature_groups

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
    plot_fractions(result, prefix.with_suffix(".png"), title=f"{Path(model_path).name}")
    print(f"wrote {prefix.with_suffix('.json')} and {prefix.with_suffix('.png')}")
    return 0


def run_check(args) -> int:
    from tqdm.auto import tqdm

    from .calculator import SymmetrizedCalculator
    from .checks import arena_force_equivariance, plot_checks, rotational_symmetry_walk

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
        entry = {
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
    plot_checks(report, prefix.with_suffix(".png"))
    print(f"wrote {prefix.with_suffix('.json')} and {prefix.with_suffix('.png')}")
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


def run_serve(args) -> int:
    from .serve import ServeError, serve

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


def run_export(args) -> int:
    source = Path(_model_path(args.model))
    destination = Path(args.output)
    if destination.suffix != ".pt":
        raise CommandError(f"'{destination}' should end in .pt (a metatomic model file)")
    if destination.exists():
        raise CommandError(f"'{destination}' exists; remove it first")
    if args.symmetrize:
        from .export import symmetrized_model

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


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "md": run_md,
        "compare": run_compare,
        "plot": run_plot,
        "quadratures": run_quadratures,
        "export-metatomic": run_export,
        "diagnose": run_diagnose,
        "check": run_check,
        "serve": run_serve,
    }
    from .workflow_commands import HANDLERS

    handlers.update(HANDLERS)
    try:
        return handlers[args.command](args)
    except CommandError as error:
        print(f"ase-symcalc {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
