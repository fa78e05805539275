"""Residual of the symmetrized output against model evaluations, per rule family,
and what ``quadrature="auto"`` picks, on the shipped model.

    python benchmarks/bench_residual.py                     # ~45 min on 2 CPU cores
    python benchmarks/bench_residual.py --structures slab --no-checks

Structures (copper, the shipped model's element):
- bulk: 32-atom fcc cell rattled by 0.05 Å;
- hot: 108-atom fcc cell after 100 steps of EMT Langevin MD at 900 K;
- slab: Cu(111), 3x3 surface cell, 4 layers, 10 Å of vacuum each side,
  pbc (T, T, F), rattled by 0.05 Å;
- cluster: Cu55 Mackay icosahedron, rattled by 0.05 Å.

Part 1, every rule family with and without inversion (groups, ``lebedev:t``,
``design:t``; ``lebedev-products:t`` is the rule ``lebedev:2t``): the
estimated forces residual (median of ``--seeds`` independent estimates)
against the number of evaluations. Part 2,
``auto`` at tolerances 1e-2, 3e-3, 1e-3 and 3e-4 eV/Å: the rule chosen, the
cost of the first call (the climb) and of later calls. Part 3 (``--checks``,
default on): MLIP Arena's force-equivariance test (12 angles x ``--axes`` axes)
and ML-PEG's walk on raw, the default rule (group:I) and auto at 1e-3, with the
ratio of each protocol's force score to the residual estimate.

Writes ``benchmarks/results/residual.json`` and
``docs/figures/residual_vs_evaluations.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {
    "group": ["group:T", "group:O", "group:I"],
    "lebedev": [f"lebedev:{t}" for t in range(3, 9)],
    "design": [f"design:{t}" for t in range(6, 11)],
}
TOLERANCES = (1e-2, 3e-3, 1e-3, 3e-4)


def structures():
    from ase import units
    from ase.build import bulk, fcc111
    from ase.calculators.emt import EMT
    from ase.cluster import Icosahedron
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    out = {}
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    out["bulk"] = atoms

    hot = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    hot.calc = EMT()
    MaxwellBoltzmannDistribution(hot, temperature_K=900, rng=np.random.default_rng(2))
    Langevin(hot, 2 * units.fs, temperature_K=900, friction=0.02, rng=np.random.RandomState(2)).run(
        100
    )
    hot = hot.copy()
    hot.calc = None
    out["hot"] = hot

    slab = fcc111("Cu", size=(3, 3, 4), a=3.61, vacuum=10.0)
    slab.pbc = (True, True, False)
    slab.rattle(0.05, seed=3)
    out["slab"] = slab

    cluster = Icosahedron("Cu", noshells=3, latticeconstant=3.61)
    cluster.rattle(0.05, seed=4)
    out["cluster"] = cluster
    return out


def residual(evaluator, atoms, spec, inversion, seeds):
    from ase_symcalc import SymmetrizedCalculator

    values = []
    for seed in range(seeds):
        calc = SymmetrizedCalculator(
            evaluator, quadrature=spec, inversion=inversion, residual=True, raw=False, seed=seed
        )
        copy = atoms.copy()
        copy.calc = calc
        copy.get_forces()
        values.append(calc.results["forces_residual"])
        degree, count = calc.quadrature.degree, len(calc.quadrature)
    return statistics.median(values), degree, count


def part_rules(evaluator, name, atoms, seeds):
    rows = []
    for family, specs in FAMILIES.items():
        for spec in specs:
            for inversion in (False, True):
                value, degree, count = residual(evaluator, atoms, spec, inversion, seeds)
                rows.append(
                    {
                        "family": family,
                        "spec": spec,
                        "inversion": inversion,
                        "evaluations": count,
                        "degree": degree,
                        "forces_residual": value,
                    }
                )
                print(
                    f"  {name:8s} {spec:20s} {'+inv' if inversion else '    '} {count:5d} "
                    f"evaluations, degree {degree:2d}: residual {1e3 * value:9.4f} meV/Å",
                    flush=True,
                )
    return rows


def auto_calc(evaluator, tolerance):
    from ase_symcalc import SymmetrizedCalculator

    return SymmetrizedCalculator(evaluator, quadrature="auto", tolerance=tolerance, raw=False)


def part_auto(evaluator, name, atoms):
    rows = []
    for tolerance in TOLERANCES:
        calc = auto_calc(evaluator, tolerance)
        copy = atoms.copy()
        copy.calc = calc
        start = time.perf_counter()
        try:
            copy.get_forces()
        except ValueError as error:
            rows.append({"tolerance": tolerance, "error": str(error)})
            print(f"  {name:8s} auto {tolerance:.0e}: {error}", flush=True)
            continue
        elapsed = time.perf_counter() - start
        first = calc.results["evaluations"]
        moved = atoms.copy()
        moved.rattle(0.005, seed=9)
        moved.calc = calc
        moved.get_forces()
        rows.append(
            {
                "tolerance": tolerance,
                "rule": calc.results["quadrature"],
                "first_call_evaluations": first,
                "first_call_seconds": elapsed,
                "later_call_evaluations": calc.results["evaluations"],
                "forces_residual": calc.results["forces_residual"],
            }
        )
        print(
            f"  {name:8s} auto {tolerance:.0e}: {calc.results['quadrature']:28s} first call "
            f"{first} evaluations, later {calc.results['evaluations']}; residual "
            f"{1e3 * calc.results['forces_residual']:.4f} meV/Å",
            flush=True,
        )
    return rows


def part_checks(evaluator, name, atoms, axes):
    from ase_symcalc import SymmetrizedCalculator
    from ase_symcalc.checks import arena_force_equivariance, rotational_symmetry_walk

    rows = {}
    setups = {
        "raw": dict(quadrature="identity"),
        "group:I": dict(quadrature="group:I"),
        "auto:1e-3": dict(quadrature="auto", tolerance=1e-3),
    }
    for label, options in setups.items():
        calc = SymmetrizedCalculator(evaluator, raw=False, **options)
        estimate = None
        if label != "raw":
            probe = (
                calc
                if label.startswith("auto")
                else SymmetrizedCalculator(evaluator, raw=False, residual=True, **options)
            )
            copy = atoms.copy()
            copy.calc = probe
            copy.get_forces()
            estimate = probe.results["forces_residual"]
        start_count = calc.evaluation_count
        arena = arena_force_equivariance(calc, atoms, axes=axes).summary()
        walk = rotational_symmetry_walk(calc, atoms).summary()
        calls = 12 * axes + 1 + 115
        row = {
            "arena": arena,
            "walk": walk,
            "forces_residual": estimate,
            "rule": calc.quadrature.name,
            "evaluations_per_call": (calc.evaluation_count - start_count) / calls,
        }
        if estimate:
            row["arena_mae_over_residual"] = arena["force_mae_mean"] / estimate
            row["walk_mean_over_residual"] = walk["forces_change_mean"] / estimate
        rows[label] = row
        print(
            f"  {name:8s} {label:10s} arena MAE {1e3 * arena['force_mae_mean']:9.4f} "
            f"(max {1e3 * arena['force_mae_max']:.4f}) meV/Å, min cos {arena['min_cosine']:.6f}, "
            f"{'PASS' if arena['passed'] else 'fail'}; walk |dF| mean "
            f"{1e3 * walk['forces_change_mean']:.4f} max {1e3 * walk['forces_change_max']:.4f} "
            f"meV/Å, |dE| max {1e3 * walk['energy_change_max']:.4f} meV/atom"
            + (f"; residual {1e3 * estimate:.4f} meV/Å" if estimate else "")
            + f"; {row['evaluations_per_call']:.1f} evaluations/call ({row['rule']})",
            flush=True,
        )
    return rows


def plot(results, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
    markers = {"group": "o", "lebedev": "s", "design": "D"}
    for ax, name in zip(axes[0], names, strict=True):
        rows = results[name]["rules"]
        for index, family in enumerate(FAMILIES):
            for inversion in (False, True):
                pts = [r for r in rows if r["family"] == family and r["inversion"] == inversion]
                ax.loglog(
                    [r["evaluations"] for r in pts],
                    [1e3 * max(r["forces_residual"], 1e-7) for r in pts],
                    marker=markers[family],
                    ls="-" if inversion else "--",
                    color=f"C{index}",
                    ms=4,
                    label=f"{family}{' +inv' if inversion else ''}",
                )
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("model evaluations per call")
    axes[0][0].set_ylabel("forces residual estimate (meV/Å)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", nargs="+", default=["bulk", "hot", "slab", "cluster"])
    parser.add_argument("--seeds", type=int, default=1, help="residual estimates per rule")
    parser.add_argument("--axes", type=int, default=2, help="MLIP Arena axes (2)")
    parser.add_argument("--no-checks", dest="checks", action="store_false")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/residual.json")
    parser.add_argument(
        "--figure", type=Path, default=ROOT / "docs/figures/residual_vs_evaluations.png"
    )
    args = parser.parse_args(argv)

    from ase_symcalc.evaluators import make_evaluator
    from ase_symcalc.models import path

    evaluator = make_evaluator(str(path()))
    all_structures = structures()
    # resumable: parts already in the output are kept (delete the file to redo)
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    parts = [("auto", part_auto), ("rules", part_rules)]
    if args.checks:
        parts.insert(1, ("checks", part_checks))
    for part, function in parts:
        for name in args.structures:
            atoms = all_structures[name]
            entry = results.setdefault(name, {"atoms": len(atoms)})
            if part in entry:
                continue
            print(f"{name} ({len(atoms)} atoms, pbc {atoms.pbc.tolist()}): {part}", flush=True)
            extra = {"rules": (args.seeds,), "checks": (args.axes,)}.get(part, ())
            entry[part] = function(evaluator, name, atoms, *extra)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(results, indent=1) + "\n")  # as it goes
    results = {k: v for k, v in results.items() if "rules" in v}
    if results:
        plot(results, args.figure)
    print(f"wrote {args.output} and {args.figure}")


if __name__ == "__main__":
    main()
