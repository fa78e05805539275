"""Cost of symmetrized evaluation: ours against the raw model and the peers.

    python benchmarks/bench_symmetrize.py [--sizes 108 500] [--rules lebedev:3 group:I]
                                          [--repeats 5] [--model PATH] [--device cpu]

For every size and rule, each method runs in a fresh subprocess (so peak
memory is its own): one warm-up call, then ``--repeats`` timed calls on
slightly moved atoms (so no cache is hit). Printed: the median time per call,
its ratio to ``evaluations x raw`` (raw = one MetatomicCalculator call), its
speed-up over the peers, and the peak resident memory of the process.

Methods:
- raw: ``metatomic_ase.MetatomicCalculator`` (direct forces and stress), one call;
- ours: ``SymmetrizedCalculator(model_path, quadrature=rule)`` (batched
  metatomic evaluator, neighbour list once, default batch size); ``ours-bN``:
  the same with ``batch_size=N``;
- loop: the plain loop, rotated ``Atoms`` through the raw calculator one by one
  (``SymmetrizedCalculator`` over ``ASECalculatorEvaluator``);
- mta-model: ``metatomic.torch.o3.SymmetrizedModel`` wrapping the same model
  with the same rotations, run by ``MetatomicCalculator``, at its default
  batch of 32 and at batch 1;
- mta-ase: ``metatomic_ase.SymmetrizedCalculator`` with the same rotations.

``--check`` also verifies, in float64, that ours and both peers give the same
averages (relative 1e-10) when given the same rotations.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

METHODS = ["raw", "ours", "loop", "mta-model", "mta-model-b1", "mta-ase"]


def _structure(size: int):
    from ase.build import bulk

    repeat = {4: 1, 32: 2, 108: 3, 256: 4, 500: 5}[size]
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=1)
    return atoms


def _rule(spec):
    from ase_symcalc import get_quadrature

    return get_quadrature(spec)


def _wrap_symmetrized_model(model, rule, batch_size):
    """metatomic's SymmetrizedModel with our rotations (proper half + inversion)."""
    from ase_symcalc.export import symmetrized_model

    return symmetrized_model(model, quadrature=rule, batch_size=batch_size)


def make_calculator(method, model_path, rule_spec, model=None):
    from metatomic.torch import load_atomistic_model
    from metatomic_ase import MetatomicCalculator

    from ase_symcalc import SymmetrizedCalculator
    from ase_symcalc.evaluators import ASECalculatorEvaluator

    model = model if model is not None else load_atomistic_model(model_path)
    rule = _rule(rule_spec)
    if method == "raw":
        return MetatomicCalculator(model, non_conservative=True)
    if method == "ours" or method.startswith("ours-b"):
        batch = int(method[len("ours-b") :]) if method.startswith("ours-b") else None
        return SymmetrizedCalculator(
            model, quadrature=rule, batch_size=batch, remove_net_force=True
        )
    if method == "loop":
        base = MetatomicCalculator(model, non_conservative=True)
        return SymmetrizedCalculator(ASECalculatorEvaluator(base), quadrature=rule)
    if method in ("mta-model", "mta-model-b1"):
        batch = 32 if method == "mta-model" else 1
        return MetatomicCalculator(
            _wrap_symmetrized_model(model, rule, batch), non_conservative=True
        )
    if method == "mta-ase":
        from metatomic_ase import SymmetrizedCalculator as PeerCalculator

        base = MetatomicCalculator(model, non_conservative=True)
        calc = PeerCalculator(base, l_max=3, batch_size=1)
        calc.quadrature_rotations = rule.matrices
        calc.quadrature_weights = rule.weights
        return calc
    raise ValueError(method)


def run_one(method, size, rule_spec, repeats, model_path):
    """Time one method in this process; print a JSON line."""
    warnings.simplefilter("ignore")
    atoms = _structure(size)
    calc = make_calculator(method, model_path, rule_spec)
    atoms.calc = calc
    atoms.get_forces()  # warm-up (TorchScript profiling runs)
    times = []
    for k in range(repeats):
        atoms.positions[0, 0] += 1e-4 * (k + 1)
        start = time.perf_counter()
        atoms.get_forces()
        atoms.get_potential_energy()
        atoms.get_stress()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median_s": statistics.median(times), "times": times, "peak_mb": peak_mb}))


def check_identical(model_path, rule_spec="lebedev:3", size=32):
    """Same rotations -> same averages, in float64 (relative 1e-10)."""
    from ase_symcalc.testing import float64_model

    warnings.simplefilter("ignore")
    model = float64_model(model_path)
    rows = {}
    for method in ("ours", "loop", "mta-model", "mta-ase"):
        atoms = _structure(size)
        atoms.calc = make_calculator(method, model_path, rule_spec, model=model)
        rows[method] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    e0, f0, s0 = rows["ours"]
    print(f"\nsame rotations ({rule_spec}, {size} atoms, float64): max relative difference to ours")
    for method, (e, f, s) in rows.items():
        if method == "ours":
            continue
        de = abs(e - e0) / abs(e0)
        df = np.abs(f - f0).max() / np.abs(f0).max()
        ds = np.abs(s - s0).max() / np.abs(s0).max()
        print(f"  {method:10s} energy {de:.1e}  forces {df:.1e}  stress {ds:.1e}")


def main(argv=None):
    from ase_symcalc.models import path as model_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[108, 500])
    parser.add_argument("--rules", nargs="+", default=["lebedev:3", "group:I"])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=None)
    parser.add_argument("--check", action="store_true")
    parser.add_argument(
        "--one", nargs=3, metavar=("METHOD", "SIZE", "RULE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    model_path = args.model or str(model_file())
    if args.one:
        method, size, rule = args.one
        run_one(method, int(size), rule, args.repeats, model_path)
        return
    import torch

    print(
        f"model {os.path.basename(model_path)}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} cores, medians of {args.repeats}"
    )
    for size in args.sizes:
        results = {}
        raw = None
        for rule in args.rules:
            for method in args.methods:
                if method == "raw" and raw is not None:
                    results[(rule, method)] = raw
                    continue
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--one",
                        method,
                        str(size),
                        rule,
                        "--repeats",
                        str(args.repeats),
                        "--model",
                        model_path,
                    ],
                    capture_output=True,
                    text=True,
                )
                if out.returncode != 0:
                    print(f"  {method} failed: {out.stderr.strip().splitlines()[-1]}")
                    continue
                results[(rule, method)] = json.loads(out.stdout.strip().splitlines()[-1])
                if method == "raw":
                    raw = results[(rule, method)]
        print(
            f"\n{size} atoms: raw call {raw['median_s'] * 1e3:.1f} ms, peak {raw['peak_mb']:.0f} MB"
        )
        print(
            f"  {'rule':10s} {'method':13s} {'time (s)':>9s} {'/ (M x raw)':>11s} "
            f"{'ours faster by':>14s} {'peak MB':>8s}"
        )
        for rule in args.rules:
            evaluations = len(_rule(rule)) + 1
            ours = results.get((rule, "ours"))
            for method in args.methods:
                if method == "raw" or (rule, method) not in results:
                    continue
                r = results[(rule, method)]
                ratio = r["median_s"] / (evaluations * raw["median_s"])
                speedup = r["median_s"] / ours["median_s"] if ours else float("nan")
                print(
                    f"  {rule:10s} {method:13s} {r['median_s']:9.3f} {ratio:11.2f} "
                    f"{speedup:13.2f}x {r['peak_mb']:8.0f}"
                )
    if args.check:
        check_identical(model_path)


if __name__ == "__main__":
    main()
