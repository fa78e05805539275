"""Symmetrized MD at the price of raw MD? Cost, drift and observables per setting.

    python benchmarks/bench_md.py [--atoms 32] [--scale 1.0] [--output build/bench_md]
    python benchmarks/bench_md.py --settings raw "mts 16" --duration "mts 16=20"
    python benchmarks/bench_md.py --interleaved raw random random-single   # cost only

Runs the shipped model in NVE from one equilibrated start (copper, 2 fs steps)
with every setting of issue 6, one after the other in this process:

- ``raw``: the raw direct forces, velocity Verlet;
- ``random``: the default of ``ase-symcalc md`` (issue 24): one random O(3)
  element per step, and every 10 steps a probe (one more random orientation
  and the lab frame) that estimates the equivariance errors; the probes'
  cost is part of the run's. After the run, frames saved every 100 steps are
  measured with ``group:I`` (with inversion) and the run's RMS estimate is
  compared with the grid's RMS on them;
- ``sym lebedev:3`` / ``sym group:I``: symmetrized direct forces every step;
- ``random-single`` / ``random-grid``: one random rotation, or the
  ``lebedev:3`` rule randomly rotated, every step;
- ``mts M`` (M = 4, 8, 16): multiple time stepping, raw direct forces every
  step and the ``lebedev:3`` correction every M steps (``slow=direct``), and
  ``mts 8 cons``: the correction towards the conservative forces of the
  symmetrized energy.

Each run records the total energy (potential of the model the run follows +
kinetic), the temperature, the mean-square displacement from the lattice
sites, the radial distribution function, the equivariance error of the
forces (from the symmetrized calculator, or every 100 steps with a
``lebedev:3`` probe for the raw runs), and its wall time per step. Printed and
written (``results.json``, ``md_settings.png``): drift in meV/atom/ps (linear
fit), mean temperature and MSD with block-average errors, first RDF peak, cost
per step relative to raw MD. The durations are what 2 CPU cores afford in
about 25 minutes (``--scale`` multiplies them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.geometry.rdf import get_rdf
from ase.md.verlet import VelocityVerlet

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.cli import _thermalize
from ase_symcalc.metrics import block_standard_error
from ase_symcalc.models import path as model_path
from ase_symcalc.mts import MultipleTimeStepMD

TIMESTEP_FS = 2.0
COMMON_WINDOW_PS = 0.3
#: T, MSD and RDF compared over the same first picosecond of every run
OBSERVABLE_WINDOW_PS = 1.0
RULE = "lebedev:3"
PROBE_INTERVAL = 10  # steps between probes, as in `ase-symcalc md`
GRID_FRAMES_EVERY = 100  # steps between the frames measured on group:I
# name: (kind, options, simulated ps at --scale 1)
SETTINGS = {
    "raw": ("raw", {}, 10.0),
    "random": ("sym", {"mode": "random", "probe_interval": 0, "raw": True}, 10.0),
    "random-single": ("sym", {"mode": "random-single"}, 10.0),
    "random-grid": ("sym", {"mode": "random-grid"}, 0.4),
    "sym lebedev:3": ("sym", {}, 0.6),
    "sym group:I": ("sym", {"quadrature": "group:I"}, 0.3),
    "mts 4": ("mts", {"inner": 4, "forces": "direct"}, 1.6),
    "mts 8": ("mts", {"inner": 8, "forces": "direct"}, 2.4),
    "mts 16": ("mts", {"inner": 16, "forces": "direct"}, 3.2),
    "mts 8 cons": ("mts", {"inner": 8, "forces": "conservative"}, 1.6),
}


def _start(n_atoms: int, seed: int = 5):
    """An equilibrated start: 300 K Langevin with the raw model for 0.4 ps."""
    from ase.md.langevin import Langevin

    repeat = {32: 2, 108: 3}[n_atoms]
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    lattice = atoms.positions.copy()
    _thermalize(atoms, 600, seed)
    atoms.calc = _raw()
    dyn = Langevin(
        atoms,
        TIMESTEP_FS * units.fs,
        temperature_K=300,
        friction=0.02 / units.fs,
        fixcm=True,
        rng=np.random.RandomState(seed),
    )
    dyn.run(200)
    start = atoms.copy()
    start.set_momenta(atoms.get_momenta() - atoms.get_momenta().mean(axis=0))
    return start, lattice


def _raw():
    return SymmetrizedCalculator(model_path(), quadrature="identity", raw=False)


class Recorder:
    """Everything a run measures, read from the cached results of each step."""

    def __init__(self, atoms, lattice, probe_every: int | None, monitored: bool = False):
        self.atoms, self.lattice = atoms, lattice
        self.probe = SymmetrizedCalculator(model_path(), quadrature=RULE) if probe_every else None
        self.probe_every = probe_every
        self.monitored = monitored  # mode="random": the calculator's own probes
        self.rows, self.frames, self.errors = [], [], []
        self.grid_frames, self.grid_frame_estimates = [], []
        self.calls = 0
        self.probe_seconds = 0.0  # taken out of the run's wall time

    def __call__(self, time_fs):
        atoms = self.atoms
        calc = atoms.calc
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        msd = float(np.mean(np.sum((atoms.positions - self.lattice) ** 2, axis=1)))
        self.rows.append((time_fs, epot + ekin, atoms.get_temperature(), msd))
        error = calc.results.get("forces_equivariance_error", np.nan)
        if self.monitored and self.calls % PROBE_INTERVAL == 0:
            error = calc.probe()["forces_equivariance_error"]  # part of the run's cost
            if self.calls % GRID_FRAMES_EVERY == 0:
                self.grid_frames.append(atoms.copy())
                self.grid_frame_estimates.append(error)
        if self.probe is not None and self.calls % self.probe_every == 0:
            begin = time.perf_counter()
            self.probe.calculate(atoms.copy(), ["energy", "forces"])
            error = self.probe.results["forces_equivariance_error"]
            self.probe_seconds += time.perf_counter() - begin
        if np.isfinite(error):
            self.errors.append(error)
        if self.calls % 5 == 0:
            self.frames.append(atoms.copy())
        self.calls += 1


def run_setting(name, start, lattice, scale, durations=None):
    kind, options, ps = SETTINGS[name]
    ps = (durations or {}).get(name, ps)
    atoms = start.copy()
    steps = max(int(round(ps * scale * 1000 / TIMESTEP_FS)), 16)
    dt = TIMESTEP_FS * units.fs
    if kind == "raw":
        atoms.calc = _raw()
        dyn, outer, every = VelocityVerlet(atoms, dt), steps, 1
    elif kind == "sym":
        atoms.calc = SymmetrizedCalculator(
            model_path(), **{"quadrature": RULE, "raw": False, "seed": 1, **options}
        )
        dyn, outer, every = VelocityVerlet(atoms, dt), steps, 1
    else:
        inner = options["inner"]
        steps -= steps % inner
        atoms.calc = SymmetrizedCalculator(
            model_path(), quadrature=RULE, raw=False, forces=options["forces"]
        )
        dyn = MultipleTimeStepMD(atoms, dt * inner, _raw(), inner)
        outer, every = steps // inner, inner
    probe = 100 if kind == "raw" or options.get("mode") == "random-single" else None
    recorder = Recorder(atoms, lattice, probe, monitored=options.get("mode") == "random")
    dyn.attach(lambda: recorder(dyn.nsteps * every * TIMESTEP_FS), interval=1)
    begin = time.perf_counter()
    dyn.run(outer)
    wall = time.perf_counter() - begin - recorder.probe_seconds
    rows = np.array(recorder.rows)
    t_ps, etot, temperature, msd = rows.T
    t_ps = t_ps / 1000.0
    n = len(atoms)
    drift = float(np.polyfit(t_ps, etot, 1)[0] * 1000 / n)
    # the same window for every setting: the expensive ones only afford that much
    window = t_ps <= COMMON_WINDOW_PS + 1e-9
    drift_window = float(np.polyfit(t_ps[window], etot[window], 1)[0] * 1000 / n)
    evaluations = getattr(atoms.calc, "evaluation_count", None)
    if kind == "mts":
        evaluations += dyn.fast_evaluations
    # the same window for every setting: the expensive ones only afford that much
    in_window = t_ps <= OBSERVABLE_WINDOW_PS + 1e-9
    frames_in_window = [frame for k, frame in enumerate(recorder.frames) if 5 * k < in_window.sum()]
    result = {
        "name": name,
        "steps": steps,
        "simulated_ps": steps * TIMESTEP_FS / 1000,
        "seconds_per_step": wall / steps,
        "drift_meV_per_atom_per_ps": drift,
        "drift_first_window_meV_per_atom_per_ps": drift_window,
        "etot_change_meV_per_atom": float((etot[-1] - etot[0]) * 1000 / n),
        **_observables(temperature, msd, recorder.frames),
        "window": _observables(temperature[in_window], msd[in_window], frames_in_window),
        "evaluations_per_step": evaluations / steps if evaluations is not None else 1.0,
        "forces_equivariance_error_meV_A": 1e3 * float(np.mean(recorder.errors))
        if recorder.errors
        else None,
        "trace": {
            "t_ps": t_ps.tolist(),
            "etot_meV_per_atom": ((etot - etot[0]) * 1e3 / n).tolist(),
        },
        "rdf": dict(zip(("r", "g"), (v.tolist() for v in _rdf(recorder.frames)), strict=True)),
    }
    if recorder.monitored:
        result.update(_estimate_against_grid(recorder))
    return result


def _observables(temperature, msd, frames) -> dict:
    """T, MSD and the RDF's first peak after the first fifth, with block errors."""
    skip = len(temperature) // 5
    frames = frames[len(frames) // 5 :]
    r, g = _rdf(frames)
    peak = int(np.argmax(g))
    peaks = [_rdf_peak(chunk) for chunk in _split(frames, 5)]
    return {
        "temperature_K": float(temperature[skip:].mean()),
        "temperature_error_K": block_standard_error(temperature[skip:], blocks=5),
        "msd_A2": float(msd[skip:].mean()),
        "msd_error_A2": block_standard_error(msd[skip:], blocks=5),
        "rdf_peak_A": float(r[peak]),
        "rdf_peak_height": float(g[peak]),
        "rdf_peak_error_A": block_standard_error([p[0] for p in peaks], blocks=len(peaks)),
        "rdf_peak_height_error": block_standard_error([p[1] for p in peaks], blocks=len(peaks)),
    }


def interleaved_costs(start, lattice, names, repeats: int = 5, steps: int = 200) -> dict:
    """ms per step of each setting, in blocks interleaved ``repeats`` times (medians).

    One long run per setting is exposed to the machine's drifts (on 2 cores
    the same setting can differ by 20% an hour apart); blocks of ``steps``
    steps taken in turn (each setting continuing its own run from the common
    start) and their medians give cost ratios measured under the same
    conditions. Each block includes what the setting does every step in
    ``ase-symcalc md`` (the probes of ``random``).
    """
    runs = {}
    for name in names:
        kind, options, _ = SETTINGS[name]
        if kind == "mts":
            continue
        atoms = start.copy()
        if kind == "raw":
            atoms.calc = _raw()
        else:
            atoms.calc = SymmetrizedCalculator(
                model_path(), **{"quadrature": RULE, "raw": False, "seed": 1, **options}
            )
        recorder = Recorder(atoms, lattice, None, monitored=options.get("mode") == "random")
        dyn = VelocityVerlet(atoms, TIMESTEP_FS * units.fs)
        dyn.attach(lambda r=recorder: r(0.0), interval=1)
        dyn.run(2)  # warm up
        runs[name] = (atoms, dyn)
    timings = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (atoms, dyn) in runs.items():
            evaluations = atoms.calc.evaluation_count
            begin = time.perf_counter()
            dyn.run(steps)
            timings[name].append(1e3 * (time.perf_counter() - begin) / steps)
            timings[name + " evaluations"] = (atoms.calc.evaluation_count - evaluations) / steps
    return {
        name: {
            "ms_per_step": float(np.median(values)),
            "all": values,
            "evaluations_per_step": timings[name + " evaluations"],
        }
        for name, values in timings.items()
        if not name.endswith(" evaluations")
    }


def _estimate_against_grid(recorder) -> dict:
    """The run's RMS forces estimate against group:I's spread on frames of the run."""
    grid = SymmetrizedCalculator(model_path(), quadrature="group:I", raw=False)
    measured = []
    for frame in recorder.grid_frames:
        grid.calculate(frame, ["energy", "forces"])
        measured.append(grid.results["forces_equivariance_error"])
    estimates = np.asarray(recorder.errors)
    measured = np.asarray(measured)
    paired = np.asarray(recorder.grid_frame_estimates)

    def rms(values):
        return float(np.sqrt(np.mean(np.square(values))))

    return {
        "estimate_rms_meV_A": 1e3 * rms(estimates),
        "estimate_rms_error_meV_A": 1e3
        * block_standard_error(estimates**2, blocks=10)
        / (2 * rms(estimates)),
        "estimates": int(len(estimates)),
        "grid_frames": int(len(measured)),
        "grid_rms_meV_A": 1e3 * rms(measured),
        "estimate_over_grid": rms(estimates) / rms(measured),
        "paired_estimate_over_grid": rms(paired) / rms(measured),
    }


def _split(items, parts):
    size = len(items) // parts
    return [items[k * size : (k + 1) * size] for k in range(parts)] if size else []


def _rdf_peak(frames):
    r, g = _rdf(frames)
    peak = int(np.argmax(g))
    return float(r[peak]), float(g[peak])


def _rdf(frames):
    g, r = get_rdf(frames, rmax=3.5, nbins=70)
    return np.asarray(r), np.asarray(g)


def plot(results, output: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for result in results:
        axes[0].plot(
            result["trace"]["t_ps"],
            result["trace"]["etot_meV_per_atom"],
            lw=1,
            label=result["name"],
        )
        axes[1].plot(result["rdf"]["r"], result["rdf"]["g"], lw=1, label=result["name"])
    # the raw run drifts by hundreds of meV/atom: zoom on the others
    others = [r for r in results if r["name"] != "raw"]
    if others:
        span = max(max(np.abs(r["trace"]["etot_meV_per_atom"])) for r in others)
        axes[0].set_ylim(-1.5 * span, 1.5 * span)
        axes[0].set_xlim(0, max(r["trace"]["t_ps"][-1] for r in others))
    axes[0].set(
        xlabel="time (ps)",
        ylabel="E_tot - E_tot(0) (meV/atom)",
        title="NVE energy (raw leaves the panel)",
    )
    axes[1].set(xlabel="r (Å)", ylabel="g(r)", title="radial distribution", xlim=(2.0, 3.5))
    raw = next(r for r in results if r["name"] == "raw")["seconds_per_step"]
    for result in results:
        cost = result["seconds_per_step"] / raw
        axes[2].scatter(cost, abs(result["drift_meV_per_atom_per_ps"]))
        axes[2].annotate(
            result["name"], (cost, abs(result["drift_meV_per_atom_per_ps"])), fontsize=8
        )
    axes[2].set(
        xscale="log",
        yscale="log",
        xlabel="cost per step / raw MD",
        ylabel="|drift| (meV/atom/ps)",
        title="cost vs drift",
    )
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(output, dpi=120)


def table(results) -> str:
    raw = next(r for r in results if r["name"] == "raw")["seconds_per_step"]
    lines = [
        f"| setting | ps | cost / raw | drift (meV/atom/ps) | drift, first {COMMON_WINDOW_PS} ps "
        "| T (K) | MSD (Å²) | RDF peak (Å, height) | forces eq. error (meV/Å) | evaluations/step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        eq = r["forces_equivariance_error_meV_A"]
        lines.append(
            f"| {r['name']} | {r['simulated_ps']:.1f} | {r['seconds_per_step'] / raw:.1f} "
            f"| {r['drift_meV_per_atom_per_ps']:+.2f} "
            f"| {r['drift_first_window_meV_per_atom_per_ps']:+.2f} "
            f"| {r['temperature_K']:.1f} ± {r['temperature_error_K']:.1f} "
            f"| {r['msd_A2']:.4f} ± {r['msd_error_A2']:.4f} "
            f"| {r['rdf_peak_A']:.3f} ± {r.get('rdf_peak_error_A', float('nan')):.3f}, "
            f"{r['rdf_peak_height']:.2f} ± {r.get('rdf_peak_height_error', float('nan')):.2f} "
            f"| {'n/a' if eq is None else f'{eq:.1f}'} "
            f"| {r.get('evaluations_per_step', float('nan')):.2f} |"
        )
    lines += [
        "",
        f"The same observables over the first {OBSERVABLE_WINDOW_PS} ps of every run "
        "(after its first fifth):",
        "",
        "| setting | T (K) | MSD (Å²) | RDF peak (Å, height) |",
        "|---|---|---|---|",
    ]
    for r in results:
        w = r.get("window")
        if w is None:
            continue
        lines.append(
            f"| {r['name']} | {w['temperature_K']:.1f} ± {w['temperature_error_K']:.1f} "
            f"| {w['msd_A2']:.4f} ± {w['msd_error_A2']:.4f} "
            f"| {w['rdf_peak_A']:.3f} ± {w['rdf_peak_error_A']:.3f}, "
            f"{w['rdf_peak_height']:.2f} ± {w['rdf_peak_height_error']:.2f} |"
        )
    for r in results:
        if "estimate_over_grid" in r:
            lines.append(
                f"\n{r['name']}: RMS forces estimate {r['estimate_rms_meV_A']:.2f} ± "
                f"{r['estimate_rms_error_meV_A']:.2f} meV/Å over {r['estimates']} probes; "
                f"group:I on {r['grid_frames']} frames of the run {r['grid_rms_meV_A']:.2f} meV/Å; "
                f"estimate / grid {r['estimate_over_grid']:.3f} (the probes of those frames: "
                f"{r['paired_estimate_over_grid']:.3f})"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=32, choices=[32, 108])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the run lengths")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS))
    parser.add_argument("--output", type=Path, default=Path("build/bench_md"))
    parser.add_argument("--replot", action="store_true", help="table and figure from results.json")
    parser.add_argument(
        "--duration",
        action="append",
        default=[],
        metavar="NAME=PS",
        help="simulated ps of one setting (before --scale), e.g. --duration 'mts 16=20'",
    )
    parser.add_argument(
        "--interleaved",
        nargs="*",
        default=None,
        metavar="NAME",
        help="only the cost: blocks of 200 steps of these settings in turn, 5 times, medians "
        "(default: raw random random-single)",
    )
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.interleaved is not None:
        names = args.interleaved or ["raw", "random", "random-single"]
        start, lattice = _start(args.atoms)
        costs = interleaved_costs(start, lattice, names)
        raw = costs["raw"]["ms_per_step"] if "raw" in costs else None
        for name, cost in costs.items():
            ratio = f"{cost['ms_per_step'] / raw:.2f}x raw" if raw else ""
            print(
                f"{name:14s} {cost['ms_per_step']:7.2f} ms/step (median of "
                f"{len(cost['all'])}: {', '.join(f'{v:.2f}' for v in cost['all'])}) "
                f"{cost['evaluations_per_step']:.2f} evaluations/step  {ratio}"
            )
        (args.output / "interleaved.json").write_text(json.dumps(costs, indent=1) + "\n")
        return
    if args.replot:
        results = json.loads((args.output / "results.json").read_text())
        print(table(results))
        plot(results, args.output / "md_settings.png")
        return
    if "raw" not in args.settings:
        args.settings.insert(0, "raw")
    durations = {}
    for item in args.duration:
        name, _, ps = item.rpartition("=")
        if name not in SETTINGS:
            parser.error(f"unknown setting {name!r} in --duration; known: {', '.join(SETTINGS)}")
        durations[name] = float(ps)
    start, lattice = _start(args.atoms)
    results = []
    for name in args.settings:
        result = run_setting(name, start, lattice, args.scale, durations)
        results.append(result)
        print(
            f"{name:14s} {result['simulated_ps']:5.1f} ps  {result['seconds_per_step'] * 1e3:8.1f}"
            f" ms/step  drift {result['drift_meV_per_atom_per_ps']:+7.2f} meV/atom/ps",
            flush=True,
        )
        (args.output / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    plot(results, args.output / "md_settings.png")
    print(f"figure: {args.output / 'md_settings.png'}")


if __name__ == "__main__":
    main()
