"""`ase-symcalc md` (MD with per-step monitoring, restarts, MTS) and `plot`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluators import NonFiniteOutputError
from ..metrics import block_standard_error
from ._checks import large_force_warning, md_warnings
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
    save_plot,
)

MD_EXAMPLES = """\
examples:
  ase-symcalc md                                  # 108 Cu atoms, 300 K, shipped model
  ase-symcalc md POSCAR --steps 2000 --tolerance 0.02   # escalate above 20 meV/Å
  ase-symcalc md POSCAR --steps 200 --mode grid --quadrature lebedev:3 --output run1
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
    _add_rule_options(
        md,
        None,
        default_text="lebedev:3 with --mode grid or random-grid; auto, the rule --mode random "
        "escalates to",
        tolerance_text="eV/Å. --mode random: the logged forces equivariance error above which "
        "the run symmetrizes every step over --quadrature (without it: one warning above "
        "50 meV/Å, no switching). --quadrature auto: the target forces residual "
        "(default 1e-3)",
    )
    md.add_argument(
        "--mode",
        default=None,
        choices=["random", "grid", "random-grid", "random-single", "raw"],
        help="random (default): one random rotation per step, the equivariance errors "
        "estimated from one more at every logged step (about 1.2 evaluations per step); "
        "with --tolerance X, a logged forces error above X switches to --quadrature (default "
        "auto, to X) every step until 5 logged errors in a row are below it. grid: "
        "--quadrature (default lebedev:3) every step. random-single: one random rotation, "
        "no estimate. raw: the model alone. Default: random, grid with --mts",
    )
    md.add_argument("--ensemble", default="langevin", choices=["nve", "langevin", "npt"])
    md.add_argument(
        "--pressure", type=float, default=1.0, help="bar, for --ensemble npt (default 1)"
    )
    md.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    md.add_argument("--timestep", type=float, default=2.0, help="fs (default 2)")
    md.add_argument("--steps", type=int, default=500, help="time steps (default 500: 1 ps)")
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
    md.add_argument(
        "--interval",
        type=int,
        default=None,
        help="log every n steps (default 10 with --mode random, 1 otherwise)",
    )
    md.add_argument("--seed", type=int, default=0)
    md.add_argument(
        "--max-run-evaluations",
        type=int,
        default=5_000_000,
        help="refuse a run of more model evaluations than this (default 5,000,000)",
    )
    add_output_options(md, "symcalc-md", "output directory", overwrite=True)
    md.add_argument(
        "--restart",
        metavar="DIR",
        default=None,
        help="continue a run from DIR/checkpoint.npz (positions, momenta, random streams "
        "and thermostat state of the last logged step; older runs: the last frame of "
        "DIR/trajectory.extxyz), appending to DIR/log.csv (--steps more steps); give the "
        "same options as the first run",
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
    data: dict[str, list[str]] = {name: [] for name in names}
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
    """Run statistics of the errors (mean, RMS, block standard error, max), and the drift.

    For the equivariance errors the RMS over the logged steps is the
    quantity to quote: each per-step estimate is unbiased as a square
    (``symmetrize.estimate_equivariance_errors``), so the mean of squares
    is unbiased for the run's mean squared error; ``rms_stderr`` is its
    block standard error carried through the square root.
    """
    summary: dict[str, Any] = {"logged_steps": int(len(log["step"]))}
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
        stats: dict[str, Any] = {"count": int(len(values))}
        if len(values):
            rms = float(np.sqrt(np.mean(values**2)))
            square_stderr = block_standard_error(values**2)
            stats.update(
                mean=float(values.mean()),
                stderr=block_standard_error(values),
                rms=rms,
                rms_stderr=square_stderr / (2 * rms) if rms > 0 else 0.0,
                max=float(values.max()),
            )
        else:
            stats.update(mean=None, stderr=None, rms=None, rms_stderr=None, max=None)
        summary[name] = stats
    t_ps = log["time_fs"] / 1000.0
    if len(t_ps) >= 2 and np.ptp(t_ps) > 0:
        slope = np.polyfit(t_ps, log["etot"], 1)[0]  # eV/ps
        summary["etot_drift_meV_per_atom_per_ps"] = float(slope * 1000.0 / n_atoms)
    summary["mean_temperature_K"] = float(np.nanmean(log["temperature_K"]))
    if "rule" in log and log["rule"].dtype.kind == "U":
        summary["rules_used"] = sorted({str(rule) for rule in log["rule"] if str(rule)})
    if "evaluations" in log and len(log["step"]) >= 2:
        steps = log["step"][-1] - log["step"][0]
        if steps > 0:
            # the first row counts what came before it: left out
            summary["evaluations_per_step"] = float(np.nansum(log["evaluations"][1:]) / steps)
    return summary


def plot_log(log: dict, output: Path, title: str = ""):
    """Three panels: energies raw vs symmetrized, equivariance errors, temperature."""
    from .._optional import pyplot

    plt = pyplot("the MD log plot")

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


CHECKPOINT = "checkpoint.npz"


def _restart_state(directory: Path):
    """The state to continue from, and the log and trajectory cut back to its step.

    ``DIR/checkpoint.npz`` (written at every logged step) holds the exact
    positions, momenta, cached model results and random streams; a run from
    before checkpoints restarts from the last complete trajectory frame.
    Returns ``(atoms, step, checkpoint or None)``.
    """
    from ase.io import read, write

    trajectory = directory / "trajectory.extxyz"
    log_file = directory / "log.csv"
    if not trajectory.is_file() or not log_file.is_file():
        raise CommandError(f"cannot restart: '{directory}' has no trajectory.extxyz and log.csv")
    checkpoint = load_checkpoint(directory / CHECKPOINT)
    frames: list
    try:
        frames = list(read(trajectory, ":"))
    except Exception:  # a frame cut by a killed run: keep the complete ones
        frames = _read_complete_frames(trajectory)
    if checkpoint is not None:
        step = checkpoint["step"]
        frames = [frame for frame in frames if int(frame.info["step"]) <= step]
        atoms = checkpoint["atoms"]
    else:
        if not frames:
            raise CommandError(f"cannot restart: '{trajectory}' holds no complete frame")
        atoms = frames[-1].copy()
        atoms.calc = None
        step = int(frames[-1].info["step"])
    write(trajectory, frames, format="extxyz")  # drop half-written or later frames
    # rows logged after the restart step (or cut in half) would be duplicated
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
    return atoms, step, checkpoint


def _read_complete_frames(path: Path):
    from ase.io import iread

    frames = []
    try:
        for frame in iread(path, ":"):
            frames.append(frame)
    except Exception:
        pass
    return frames


def save_checkpoint(path: Path, atoms, step: int, dyn, options: dict | None = None) -> None:
    """Everything a restart needs to continue bit for bit, written atomically.

    The atoms (positions, momenta, cell at full precision), the calculator's
    cached results of this step (a restart evaluates nothing before its first
    step), its random streams and escalation state, and the thermostat's
    random state.
    """
    from ase.io.jsonio import encode

    calc = atoms.calc
    arrays = {}
    bare = atoms.copy()  # info, masses, tags, constraints: everything the run reads
    bare.calc = None
    results = {}
    for key, value in calc.results.items():
        if isinstance(value, str):
            results[key] = value
        else:
            arrays[f"result:{key}"] = np.asarray(value)
    meta = {
        "step": step,
        "atoms": encode(bare),  # JSON floats round-trip exactly
        "options": options or {},
        "results": results,
        "calculator": calc.state_dict(),
    }
    rng = getattr(dyn, "rng", None)
    if isinstance(rng, np.random.RandomState):
        name, keys, position, has_gauss, gauss = rng.get_state()
        arrays["thermostat_keys"] = keys
        meta["thermostat"] = [name, int(position), int(has_gauss), float(gauss)]
    elif isinstance(rng, np.random.Generator):
        meta["thermostat_generator"] = rng.bit_generator.state
    arrays["meta"] = np.array(json.dumps(meta))
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub: allow_pickle
    os.replace(partial, path)


def load_checkpoint(path: Path) -> dict | None:
    """A checkpoint as ``{"atoms", "step", "results", "calculator", ...}``; None if absent."""
    from ase.io.jsonio import decode

    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as error:
        raise CommandError(
            f"cannot read the checkpoint '{path}' ({error}); remove it to restart from the "
            "last trajectory frame instead"
        ) from error
    meta = json.loads(str(arrays.pop("meta")))
    atoms = decode(meta["atoms"])
    results = dict(meta["results"])
    for key in [key for key in arrays if key.startswith("result:")]:
        value = arrays.pop(key)
        results[key.split(":", 1)[1]] = value.item() if value.ndim == 0 else value
    checkpoint = {"atoms": atoms, "step": int(meta["step"]), "results": results}
    checkpoint["options"] = meta.get("options", {})
    checkpoint["calculator"] = meta["calculator"]
    if "thermostat" in meta:
        name, position, has_gauss, gauss = meta["thermostat"]
        checkpoint["thermostat"] = (name, arrays["thermostat_keys"], position, has_gauss, gauss)
    if "thermostat_generator" in meta:
        checkpoint["thermostat_generator"] = meta["thermostat_generator"]
    return checkpoint


def _resume(atoms, dyn, checkpoint) -> None:
    """Put the calculator and the thermostat back where the checkpoint left them."""
    # with the cached results of the restart step: its first step evaluates nothing again
    atoms.calc.load_state_dict(checkpoint["calculator"], atoms, checkpoint["results"])
    rng = getattr(dyn, "rng", None)
    if "thermostat" in checkpoint and isinstance(rng, np.random.RandomState):
        rng.set_state(checkpoint["thermostat"])
    elif "thermostat_generator" in checkpoint and isinstance(rng, np.random.Generator):
        rng.bit_generator.state = checkpoint["thermostat_generator"]


#: the options that decide the trajectory, saved with the checkpoint
RUN_OPTIONS = (
    "model",
    "mode",
    "quadrature",
    "tolerance",
    "ensemble",
    "temperature",
    "pressure",
    "timestep",
    "seed",
    "interval",
    "mts",
    "forces",
    "variant",
)


def _run_options(args) -> dict:
    return {name: getattr(args, name, None) for name in RUN_OPTIONS}


def _warn_changed_options(saved: dict, now: dict) -> None:
    """One stderr line when a restart changes what the run was doing."""
    changed = [
        f"--{name} {now.get(name)} (was {saved[name]})"
        for name in RUN_OPTIONS
        if name in saved and saved[name] != now.get(name)
    ]
    if changed:
        print(
            "ase-symcalc md: warning: the restart differs from the run: "
            + ", ".join(changed)
            + "; it will not reproduce an uninterrupted run",
            file=sys.stderr,
        )


class _Stopped(Exception):
    """The run ends early: a signal or a non-finite model output."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _resolve_defaults(args) -> None:
    if args.mode is None:
        args.mode = "grid" if args.mts else "random"
    if args.tolerance is not None and args.mode == "raw":
        raise CommandError("--tolerance has no use with --mode raw (nothing is symmetrized)")
    if args.quadrature is None:
        args.quadrature = "auto" if args.mode == "random" else "lebedev:3"
    if args.interval is None:
        args.interval = 10 if args.mode == "random" else 1
    if args.tolerance is not None and args.mode not in ("random", "raw"):
        if args.quadrature.strip() != "auto":
            raise CommandError(
                "--tolerance goes with --mode random (escalation) or --quadrature auto; "
                f"--mode {args.mode} with --quadrature {args.quadrature} has no use for it"
            )


def run_md(args) -> int:
    from tqdm.auto import tqdm

    from ..monitor import EquivarianceMonitor

    if args.steps < 0 or (args.interval is not None and args.interval < 1) or args.timestep <= 0:
        raise CommandError("--steps must be >= 0, --interval >= 1 and --timestep > 0")
    _resolve_defaults(args)
    outer_steps = args.steps
    if args.mts is not None:
        if args.mts < 1 or args.steps % args.mts:
            raise CommandError(
                f"--mts must be a positive divisor of --steps (got --mts {args.mts}, "
                f"--steps {args.steps})"
            )
        if args.mode in ("raw", "random"):
            raise CommandError(
                f"--mts needs a symmetrized model averaged over a rule: add --mode grid "
                f"(not {args.mode})"
            )
        outer_steps = args.steps // args.mts
        if args.forces is None:
            args.forces = "conservative"
    model_path = _model_path(args.model)
    step_offset = 0
    checkpoint = None
    if args.restart:
        output = Path(args.restart)
        atoms, step_offset, checkpoint = _restart_state(output)
    else:
        atoms = _load_structure(args.structure)
        output = Path(args.output)
        _check_output(output, args.overwrite)
    # the monitor asks for the probes at the logged steps: none on the calculator's own schedule
    args.probe_interval = 0
    atoms.calc = _make_calculator(args, model_path)
    evaluations_before = 0
    md_warnings(args, atoms)
    if checkpoint is None:
        # the model must take this structure before an old output is replaced; the
        # result is cached, so the first MD step does not evaluate again
        _first_evaluation(atoms, args.structure or "the default structure")
        large_force_warning("md", atoms)
    if not args.restart:
        _prepare_output(output, args.overwrite)
    if not atoms.has("momenta") or not atoms.get_momenta().any():
        _thermalize(atoms, args.temperature, args.seed)
    dyn = _dynamics(args, atoms)
    if checkpoint is not None:
        _resume(atoms, dyn, checkpoint)
        evaluations_before = atoms.calc.evaluation_count
        _warn_changed_options(checkpoint["options"], _run_options(args))
    monitor = EquivarianceMonitor(
        atoms,
        output / "log.csv",
        dynamics=dyn,
        trajectory=output / "trajectory.extxyz",
        step_offset=step_offset,
    )
    checkpoint_file = output / CHECKPOINT
    inner = args.mts or 1
    last_logged = {"step": step_offset if args.restart else None}
    options = _run_options(args)

    def log_step(probe: bool = True):
        step = dyn.nsteps * inner + step_offset
        if step == last_logged["step"]:
            return
        try:
            monitor(probe=probe)
        except NonFiniteOutputError as error:
            error.step = step  # the probe of a finished step
            raise
        if args.mts is None:  # the MTS integrator's state is not checkpointed
            save_checkpoint(checkpoint_file, atoms, step, dyn, options)
        last_logged["step"] = step

    def on_step():
        # rows at multiples of --interval, counted in time steps: a restart keeps the phase
        step = dyn.nsteps * inner + step_offset
        if step % (args.interval * inner) == 0:
            log_step()

    stop: dict[str, int] = {}

    def on_signal(signum, frame):
        stop.setdefault("signal", signum)
        # a second signal interrupts at once (KeyboardInterrupt, caught below)
        signal.signal(signum, signal.default_int_handler)

    def check_stop():
        if "signal" in stop:
            # the step just finished, flushed and checkpointed; not probed, so that
            # the probes' random stream and the escalation stay those of a whole run
            log_step(probe=False)
            step = dyn.nsteps * inner + step_offset
            name = signal.Signals(stop["signal"]).name
            left = args.steps - (step - step_offset)
            raise _Stopped(
                f"stopped by {name} after step {step}; the log, trajectory and checkpoint "
                f"are in {output}/; continue with: ase-symcalc md --restart {output} "
                f"--steps {left} (and the same options)",
                128 + stop["signal"],
            )

    bar = tqdm(total=outer_steps, desc="MD", unit="step", disable=None)
    dyn.attach(on_step, interval=1)
    dyn.attach(lambda: bar.update(1) if dyn.nsteps > 0 else None, interval=1)
    dyn.attach(check_stop, interval=1)
    handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    start = time.perf_counter()
    stopped = None
    try:
        dyn.run(outer_steps)
    except _Stopped as error:
        stopped = error
    except NonFiniteOutputError as error:
        # raised in a step's own evaluation, or in the probe of a step being logged
        step = error.step if error.step is not None else (dyn.nsteps + 1) * inner + step_offset
        where = ""
        if error.atom is not None:
            where = f" on atom {error.atom} ({atoms.get_chemical_symbols()[error.atom]})"
        stopped = _Stopped(
            f"step {step}: the model returned non-finite {error.name}{where}; stopped, the "
            f"log and trajectory keep the steps before it ({output}/); a smaller --timestep "
            "or a check of the structure there may help",
            1,
        )
    except KeyboardInterrupt:
        stopped = _Stopped(
            f"aborted by a second signal during step {dyn.nsteps * inner + step_offset + 1}; "
            f"continue from the last logged step with: ase-symcalc md --restart {output}",
            130,
        )
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        bar.close()
        monitor.close()
    elapsed = time.perf_counter() - start
    steps_done = dyn.nsteps * inner
    log = read_log(output / "log.csv")
    summary = summarize(log, len(atoms))
    calc = atoms.calc
    evaluations = calc.evaluation_count - evaluations_before + getattr(dyn, "fast_evaluations", 0)
    summary.update(
        {
            "structure": args.structure or "fcc Cu 3x3x3 (108 atoms)",
            "atoms": len(atoms),
            "model": model_path,
            "quadrature": (
                calc.quadrature.name if args.mode not in ("random-single", "random") else None
            ),
            "mode": args.mode,
            "tolerance": args.tolerance,
            "ensemble": args.ensemble,
            "timestep_fs": args.timestep,
            "steps": args.steps,
            "steps_done": steps_done,
            "interval": args.interval,
            "mts": args.mts,
            "forces": getattr(calc.evaluator, "forces", None),
            "wall_time_s": elapsed,
            "seconds_per_step": elapsed / max(steps_done, 1),
            "model_evaluations": evaluations,
            "model_evaluations_per_step": evaluations / max(steps_done, 1),
        }
    )
    if stopped is not None:
        summary["stopped"] = str(stopped)
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    save_plot(
        plot_log, log, output / "equivariance.png", title=f"{summary['structure']}, {args.mode}"
    )
    if stopped is not None:
        print(f"ase-symcalc md: {stopped}", file=sys.stderr)
        return stopped.code
    forces = summary["forces_equivariance_error"]
    print(
        f"{args.steps} steps in {elapsed:.1f} s ({summary['seconds_per_step']:.3f} s/step, "
        f"{summary['model_evaluations_per_step']:.2f} model evaluations/step); forces "
        f"equivariance error {_meV(forces['rms'])} ± {_meV(forces['rms_stderr'])} meV/Å (RMS over "
        f"{forces['count']} logged steps), max {_meV(forces['max'])} meV/Å; outputs in {output}/"
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
    if save_plot(plot_log, log, output, title=str(log_file)):
        print(f"wrote {output}")
    return 0


HANDLERS = {"md": run_md, "plot": run_plot}
