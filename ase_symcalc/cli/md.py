"""`ase-symcalc md` (MD with per-step monitoring, restarts, MTS) and `plot`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ._common import (
    CommandError,
    _add_rule_options,
    _check_output,
    _first_evaluation,
    _load_structure,
    _make_calculator,
    _meV,
    _model_path,
    _prepare_output,
    _thermalize,
    add_model_options,
    add_output_options,
)

MD_EXAMPLES = """\
examples:
  ase-symcalc md                                  # 108 Cu atoms, 300 K, shipped model
  ase-symcalc md POSCAR --steps 200 --quadrature lebedev:3 --output run1
  ase-symcalc md start.extxyz --mode raw --ensemble nve --timestep 2
  ase-symcalc md --model my-pet-mad.pt --ensemble langevin --temperature 600
  ase-symcalc md --ensemble npt --pressure 1 --temperature 300 --steps 100
  ase-symcalc md --restart symcalc-md --steps 100    # continue a run
"""


def add_parser(sub) -> None:
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
    add_model_options(md, batch_size=True)
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
    add_output_options(md, "symcalc-md", "output directory", overwrite=True)
    md.add_argument(
        "--restart",
        metavar="DIR",
        default=None,
        help="continue a run from the last frame of DIR/trajectory.extxyz, appending "
        "to DIR/log.csv (--steps more steps)",
    )

    plot = sub.add_parser("plot", help="draw the equivariance figure from a log.csv")
    plot.add_argument("log", help="a log.csv written by ase-symcalc md")
    plot.add_argument("--output", default=None, help="PNG path (default: next to the log)")


def _dynamics(args, atoms):
    from ase import units

    dt = args.timestep * units.fs
    if args.mts:
        from ..calculator import SymmetrizedCalculator
        from ..mts import MultipleTimeStepMD

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

    from ..monitor import EquivarianceMonitor

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


HANDLERS = {"md": run_md, "plot": run_plot}
