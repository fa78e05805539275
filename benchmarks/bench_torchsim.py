"""torch-sim models: one batched call against the loop of ASE calls, MD, overhead.

    python benchmarks/bench_torchsim.py [--device cpu|cuda] [--repeats 3]
                                        [--models orb pet] [--rules group:T group:I]
                                        [--json benchmarks/results/torchsim-cpu.json]

Models (random weights where a download would be needed): ``orb`` = Orb-v3
direct at its published size (``orb_v3_direct_architecture()``, radius 6 Å,
20 neighbours as the ``-20`` models), ``pet`` = the shipped ``pet-cu-emt``
through ``metatomic-torchsim``. Structure: 108 Cu atoms, rattled.

1. Symmetrized evaluation, M = 24 (``group:T``) and 120 (``group:I`` with
   inversion): ``batched`` = ``SymmetrizedCalculator(torch-sim model)``, all
   M copies in one forward call; ``loop`` = ``SymmetrizedCalculator(ASE
   calculator)``, the rotated ``Atoms`` one by one through the model's own ASE
   calculator (``ORBCalculator``, ``MetatomicCalculator``). Median of
   ``--repeats`` calls on slightly moved atoms after one warm-up call.
2. The wrapper's own overhead: ``SymmetrizedModel.forward`` on 8 systems of
   32 atoms against the inner model alone on the same 8 x M prebuilt copies;
   the difference (building copies, back-rotating, averaging, errors) as a
   fraction of the model time.
3. torch-sim MD (NVT Langevin) of 8 systems of 32 atoms: time per step of
   the symmetrizing model (M = 24) over the raw model (2 steps after one).

On CPU a full-size Orb-v3 takes about 0.7 s per copy of 108 atoms, so the
M = 120 rows take minutes per call: ``--repeats 1`` there is a single timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path


def _atoms(repeat=3, seed=1):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=seed)
    return atoms


def _models(name, device):
    """(torch-sim model, ASE calculator) of the same weights."""
    from ase_symcalc.models.random_torchsim import random_orb, shipped_pet

    if name == "orb":
        from orb_models.forcefield.inference.calculator import ORBCalculator

        model = random_orb(seed=0, size="full", max_num_neighbors=20, device=device)
        return model, ORBCalculator(model.model, model.atoms_adapter, device=device)
    if name == "pet":
        from metatomic_ase import MetatomicCalculator

        from ase_symcalc.models import path

        return shipped_pet(device=device), MetatomicCalculator(
            str(path()), device=device, non_conservative=True
        )
    raise ValueError(f"unknown model {name!r}: orb or pet")


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _median_call(calc, atoms, repeats, device):
    atoms = atoms.copy()
    atoms.calc = calc
    times = []
    for step in range(repeats):
        atoms.positions[0, 0] += 1e-3 * (step + 1)
        _sync(device)
        start = time.perf_counter()
        atoms.get_forces()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_batched_vs_loop(names, rules, repeats, device):
    from ase_symcalc import SymmetrizedCalculator, get_quadrature

    rows = []
    atoms = _atoms()
    for name in names:
        model, ase_calc = _models(name, device)
        for base in (model, ase_calc):  # warm-up: kernels compile on first use
            warm = atoms.copy()
            warm.calc = SymmetrizedCalculator(base, quadrature="identity", raw=False)
            warm.get_forces()
        for spec in rules:
            rule = get_quadrature(spec)
            batched = SymmetrizedCalculator(model, quadrature=rule, raw=False)
            loop = SymmetrizedCalculator(ase_calc, quadrature=rule, raw=False)
            t_batched = _median_call(batched, atoms, repeats, device)
            t_loop = _median_call(loop, atoms, repeats, device)
            row = {
                "model": name,
                "rule": rule.name,
                "M": len(rule),
                "batched_s": t_batched,
                "loop_s": t_loop,
                "speedup": t_loop / t_batched,
            }
            print(
                f"{name:4s} {rule.name:28s} M={len(rule):4d}  batched {t_batched:8.3f} s  "
                f"loop {t_loop:8.3f} s  batched is {row['speedup']:.2f}x faster",
                flush=True,
            )
            rows.append(row)
    return rows


def bench_overhead(names, repeats, device, n_systems=8, spec="group:T"):
    import torch_sim as ts

    from ase_symcalc import get_quadrature
    from ase_symcalc._torchsim_copies import run_copies
    from ase_symcalc.torchsim import SymmetrizedModel

    rows = []
    for name in names:
        model, _ = _models(name, device)
        systems = [_atoms(2, seed=s) for s in range(n_systems)]
        state = ts.io.atoms_to_state(systems, device=model.device, dtype=model.dtype)
        wrapper = SymmetrizedModel(model, quadrature=spec)
        rule = get_quadrature(spec)
        run_copies(model, state, rule.matrices)
        wrapper(state)  # warm-up both
        t_inner, t_wrapper = [], []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            run_copies(model, state, rule.matrices)  # the copies and the model alone
            _sync(device)
            t_inner.append(time.perf_counter() - start)
            start = time.perf_counter()
            wrapper(state)
            _sync(device)
            t_wrapper.append(time.perf_counter() - start)
        inner, total = statistics.median(t_inner), statistics.median(t_wrapper)
        row = {
            "model": name,
            "systems": n_systems,
            "atoms_per_system": len(systems[0]),
            "M": len(rule),
            "inner_s": inner,
            "wrapper_s": total,
            "overhead_fraction": (total - inner) / inner,
        }
        print(
            f"{name:4s} overhead: {n_systems} systems x {len(rule)} copies, model alone "
            f"{inner:.3f} s, SymmetrizedModel {total:.3f} s: overhead "
            f"{100 * row['overhead_fraction']:.1f}% of the model time",
            flush=True,
        )
        rows.append(row)
    return rows


def bench_md(names, device, n_systems=8, steps=2, spec="group:T"):
    import torch_sim as ts

    from ase_symcalc.torchsim import SymmetrizedModel

    rows = []
    for name in names:
        model, _ = _models(name, device)
        systems = [_atoms(2, seed=10 + s) for s in range(n_systems)]
        times = {}
        for label, used in (("raw", model), ("symmetrized", SymmetrizedModel(model, spec))):
            ts.integrate(
                system=systems,
                model=used,
                integrator=ts.Integrator.nvt_langevin,
                n_steps=1,
                timestep=0.002,
                temperature=300,
            )  # warm-up
            _sync(device)
            start = time.perf_counter()
            ts.integrate(
                system=systems,
                model=used,
                integrator=ts.Integrator.nvt_langevin,
                n_steps=steps,
                timestep=0.002,
                temperature=300,
            )
            _sync(device)
            times[label] = (time.perf_counter() - start) / steps
        row = {
            "model": name,
            "systems": n_systems,
            "raw_step_s": times["raw"],
            "symmetrized_step_s": times["symmetrized"],
            "ratio": times["symmetrized"] / times["raw"],
            "M": 24,
        }
        print(
            f"{name:4s} MD of {n_systems} x 32 atoms: raw {times['raw']:.3f} s/step, "
            f"symmetrized (M=24) {times['symmetrized']:.3f} s/step ({row['ratio']:.1f}x)",
            flush=True,
        )
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["orb", "pet"])
    parser.add_argument("--rules", nargs="+", default=["group:T", "group:I"])
    parser.add_argument("--skip", nargs="*", default=[], choices=["calls", "overhead", "md"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import torch

    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    results = {"device": args.device, "repeats": args.repeats}
    if "calls" not in args.skip:
        results["calls"] = bench_batched_vs_loop(args.models, args.rules, args.repeats, args.device)
    if "overhead" not in args.skip:
        results["overhead"] = bench_overhead(args.models, args.repeats, args.device)
    if "md" not in args.skip:
        results["md"] = bench_md(args.models, args.device)
    out = Path(args.json or f"benchmarks/results/torchsim-{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
