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
"""


class CommandError(Exception):
    """A user-facing error: printed on one line, exit code 2."""


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
    md.add_argument("--quadrature", default="lebedev:3", help="rule spec (default lebedev:3)")
    md.add_argument(
        "--mode", default="grid", choices=["grid", "random-grid", "random-single", "raw"]
    )
    md.add_argument("--ensemble", default="langevin", choices=["nve", "langevin"])
    md.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    md.add_argument("--timestep", type=float, default=2.0, help="fs (default 2)")
    md.add_argument("--steps", type=int, default=30)
    md.add_argument("--interval", type=int, default=1, help="log every n steps")
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--batch-size", type=int, default=None)
    md.add_argument("--output", default="symcalc-md", help="output directory")
    md.add_argument("--overwrite", action="store_true", help="replace an existing output")

    sub.add_parser("quadratures", help="print the table of quadrature rules")

    export = sub.add_parser("export-metatomic", help="write the shipped model to a file")
    export.add_argument("output", help="destination .pt file")
    export.add_argument("--model", default=None, help="shipped model name")
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
                model_path, quadrature="identity", batch_size=args.batch_size
            )
        return SymmetrizedCalculator(
            model_path,
            quadrature=args.quadrature,
            mode=args.mode,
            seed=args.seed,
            batch_size=args.batch_size,
            raw=True,
        )
    except ValueError as error:
        raise CommandError(str(error)) from error


def _prepare_output(directory: Path, overwrite: bool):
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise CommandError(
                f"output directory '{directory}' exists and is not empty; "
                "use --overwrite to replace it or --output to choose another"
            )
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
    if args.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
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
            data[name].append(float(value) if value != "" else np.nan)
    return {name: np.asarray(values) for name, values in data.items()}


def summarize(log: dict, n_atoms: int) -> dict:
    """Means and maxima of the errors, and the drift of the total energy."""
    summary = {"logged_steps": int(len(log["step"]))}
    for name in (
        "energy_equivariance_error",
        "forces_equivariance_error",
        "stress_equivariance_error",
        "forces_raw_vs_sym_rmse",
        "max_atom_forces_error",
    ):
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


def run_md(args) -> int:
    from tqdm.auto import tqdm

    from .monitor import EquivarianceMonitor

    atoms = _load_structure(args.structure)
    model_path = _model_path(args.model)
    if args.steps < 0 or args.interval < 1 or args.timestep <= 0:
        raise CommandError("--steps must be >= 0, --interval >= 1 and --timestep > 0")
    output = Path(args.output)
    _prepare_output(output, args.overwrite)
    atoms.calc = _make_calculator(args, model_path)
    if not atoms.has("momenta") or not atoms.get_momenta().any():
        _thermalize(atoms, args.temperature, args.seed)
    dyn = _dynamics(args, atoms)
    monitor = EquivarianceMonitor(
        atoms, output / "log.csv", dynamics=dyn, trajectory=output / "trajectory.extxyz"
    )
    bar = tqdm(total=args.steps, desc="MD", unit="step", disable=None)
    dyn.attach(monitor, interval=args.interval)
    dyn.attach(lambda: bar.update(1) if dyn.nsteps > 0 else None, interval=1)
    start = time.perf_counter()
    try:
        dyn.run(args.steps)
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
            "wall_time_s": elapsed,
            "seconds_per_step": elapsed / max(args.steps, 1),
            "model_evaluations": calc.evaluation_count,
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


def run_export(args) -> int:
    source = Path(_model_path(args.model))
    destination = Path(args.output)
    if destination.suffix != ".pt":
        raise CommandError(f"'{destination}' should end in .pt (a metatomic model file)")
    if destination.exists():
        raise CommandError(f"'{destination}' exists; remove it first")
    shutil.copyfile(source, destination)
    print(f"wrote {destination} ({destination.stat().st_size / 1e6:.1f} MB) from {source.name}")
    return 0


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    handlers = {"md": run_md, "quadratures": run_quadratures, "export-metatomic": run_export}
    try:
        return handlers[args.command](args)
    except CommandError as error:
        print(f"ase-symcalc {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
