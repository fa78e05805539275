"""What averaging over the structure's own symmetry costs.

    python benchmarks/bench_structure_symmetry.py [--repeats 5] [--rule group:I]
    python benchmarks/bench_structure_symmetry.py --scaling [--repeats 3]

On a 108-atom copper MD snapshot (EMT Langevin at 900 K, no symmetry) and
on structures that have symmetry, times (medians of ``--repeats``):

- ``find_symmetry`` alone (the snapshot is recognised without spglib);
- one raw call of the shipped model (the unit the cost is measured in);
- one ``SymmetrizedCalculator`` call with and without ``structure_symmetry``
  on a new structure each time (so the operations are searched every call,
  as in MD).

Prints the ratios: the search against one raw model call, and the
symmetrized call with against without. Writes
``benchmarks/results/structure_symmetry.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def snapshot(repeat=3, temperature=900, seed=1):
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin

    from ase_symcalc.cli._common import _thermalize

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    _thermalize(atoms, temperature, seed)
    Langevin(atoms, 5 * units.fs, temperature_K=temperature, friction=0.02, rng=rng).run(100)
    atoms.calc = None
    return atoms


def symmetric_structures():
    from ase.build import bulk, fcc111
    from ase.cluster import Icosahedron

    slab = fcc111("Cu", size=(3, 3, 4), a=3.61, vacuum=10.0, periodic=False)
    return {
        "fcc 108 (Fm-3m, 5184 ops)": bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3),
        "fcc 4 (Fm-3m)": bulk("Cu", "fcc", a=3.61, cubic=True),
        "Cu(111) slab 36": slab,
        "Cu55 icosahedron": Icosahedron("Cu", 3),
    }


def median_time(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scaling(
    repeats: int,
    sizes=(3, 5, 7, 10, 14),
    defect_limit: int = 11000,
    symmetrized_rule: str = "group:T",
) -> dict:
    """Cost against size: one raw call of the shipped model, and the symmetry search
    plus one projection of forces and stress, for a rattled cell, a vacancy cell
    and a perfect supercell (the last two up to ``defect_limit`` atoms)."""
    from ase.build import bulk

    from ase_symcalc import SymmetrizedCalculator
    from ase_symcalc.models import pretrained
    from ase_symcalc.structure_symmetry import (
        find_symmetry,
        symmetrize_forces,
        symmetrize_stress,
        symmetry_still_holds,
    )

    rows = []
    raw_calc = pretrained()
    rng = np.random.default_rng(0)
    for repeat in sizes:
        perfect = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
        rattled = perfect.copy()
        rattled.rattle(0.05, seed=1)
        vacancy = perfect.copy()
        del vacancy[0]
        row = {"atoms": len(perfect)}
        copy = rattled.copy()
        copy.calc = raw_calc
        copy.get_forces()  # warm-up at this size

        def raw_call(copy=copy):
            copy.positions += rng.normal(scale=1e-4, size=copy.positions.shape)
            copy.get_forces()

        row["raw_call_s"] = median_time(raw_call, repeats)
        # milliseconds: many repetitions, after one that imports and warms up
        find_symmetry(rattled)
        row["rattled_search_s"] = median_time(lambda s=rattled: find_symmetry(s), max(repeats, 20))
        for label, structure in (("vacancy", vacancy), ("perfect", perfect)):
            if len(structure) > defect_limit:
                continue
            start = time.perf_counter()
            symmetry = find_symmetry(structure)
            row[f"{label}_search_s"] = time.perf_counter() - start
            row[f"{label}_operations"] = len(symmetry)
            forces = rng.normal(size=(len(structure), 3))
            stress = rng.normal(size=(3, 3))
            row[f"{label}_projection_s"] = median_time(
                lambda s=symmetry, f=forces, t=stress: (
                    symmetrize_forces(f, s),
                    symmetrize_stress(t, s),
                ),
                repeats,
            )
            # a relaxation step: positions moved along projected forces keep the group,
            # and the calculator checks that instead of searching again
            step = 1e-3 * symmetrize_forces(forces, symmetry)
            assert symmetry_still_holds(symmetry, step)
            row[f"{label}_reuse_check_s"] = median_time(
                lambda s=symmetry, u=step: symmetry_still_holds(s, u), repeats
            )
        # one symmetrized evaluation where it matters: the vacancy cell, structure
        # symmetry on, its first call (the search included), timed once after the
        # calculator was warmed up on a small cell (model loading, first-call JIT)
        calc = SymmetrizedCalculator(
            pretrained(), quadrature=symmetrized_rule, raw=False, structure_symmetry=True
        )
        warm = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        warm.rattle(0.05, seed=2)
        warm.calc = calc
        warm.get_forces()
        copy = vacancy.copy()
        copy.calc = calc
        start = time.perf_counter()
        copy.get_forces()
        row["symmetrized_call_s"] = time.perf_counter() - start
        row["symmetrized_copies"] = len(calc.quadrature)
        rows.append(row)
        print(
            f"{row['atoms']:6d} atoms  one symmetrized call ({calc.quadrature.name}, "
            f"{row['symmetrized_copies']} copies, vacancy, structure symmetry) "
            f"{row['symmetrized_call_s']:7.3f} s "
            f"({row['symmetrized_call_s'] / row['raw_call_s']:.1f} raw)",
            flush=True,
        )
        print(
            f"{row['atoms']:6d} atoms  raw {row['raw_call_s']:7.3f} s  rattled search "
            f"{row['rattled_search_s']:7.3f} s ({row['rattled_search_s'] / row['raw_call_s']:.3f} "
            "raw)"
            + "".join(
                f"  {label} search {row[f'{label}_search_s']:7.3f} s "
                f"({row[f'{label}_search_s'] / row['raw_call_s']:.2f} raw, "
                f"{row[f'{label}_operations']} ops), projection "
                f"{row[f'{label}_projection_s'] / row['raw_call_s']:.4f} raw, reuse check "
                f"{row[f'{label}_reuse_check_s'] / row['raw_call_s']:.4f} raw"
                for label in ("vacancy", "perfect")
                if f"{label}_search_s" in row
            ),
            flush=True,
        )
    slopes = {}
    for key in (
        "raw_call_s",
        "symmetrized_call_s",
        "rattled_search_s",
        "vacancy_search_s",
        "perfect_search_s",
    ):
        points = [(row["atoms"], row[key]) for row in rows if key in row]
        if len(points) >= 2:
            x, y = np.log(np.array(points).T)
            slopes[key] = float(np.polyfit(x, y, 1)[0])
    print("log-log slopes: " + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()))
    _plot_scaling(rows, slopes, ROOT / "docs" / "figures" / "structure_symmetry_scaling.png")
    return {"rows": rows, "slopes": slopes}


def _plot_scaling(rows, slopes, output) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    labels = {
        "raw_call_s": "one raw call (shipped PET)",
        "symmetrized_call_s": "one symmetrized call (group:T, vacancy, first)",
        "rattled_search_s": "search, rattled cell",
        "vacancy_search_s": "search + maps, vacancy cell",
        "perfect_search_s": "search + maps, perfect supercell",
        "vacancy_projection_s": "projection per call, vacancy",
        "perfect_projection_s": "projection per call, perfect",
        "vacancy_reuse_check_s": "reuse check per relaxation step, vacancy",
    }
    for key, label in labels.items():
        points = [(row["atoms"], row[key]) for row in rows if key in row]
        if not points:
            continue
        x, y = np.array(points).T
        slope = f" (slope {slopes[key]:.2f})" if key in slopes else ""
        style = "--" if "projection" in key else (":" if "check" in key else "-")
        ax.loglog(x, y, style, marker="o", label=label + slope)
    ax.set_xlabel("atoms")
    ax.set_ylabel("seconds (2 CPU cores)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(output, dpi=130)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rule", default="group:I")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="cost against size, 108 to 10,976 atoms (writes structure_symmetry_scaling.json "
        "and docs/figures/structure_symmetry_scaling.png)",
    )
    parser.add_argument(
        "--defect-limit",
        type=int,
        default=11000,
        help="--scaling: largest vacancy and perfect cells searched (atoms; default all)",
    )
    args = parser.parse_args(argv)
    if args.scaling:
        result = scaling(args.repeats, defect_limit=args.defect_limit)
        out = ROOT / "benchmarks" / "results" / "structure_symmetry_scaling.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
        return 0

    from ase_symcalc import SymmetrizedCalculator
    from ase_symcalc.models import pretrained
    from ase_symcalc.structure_symmetry import find_symmetry

    atoms = snapshot()
    rng = np.random.default_rng(0)

    def moved():  # a new structure every call, as in MD
        copy = atoms.copy()
        copy.positions += rng.normal(scale=1e-3, size=copy.positions.shape)
        return copy

    search = median_time(lambda: find_symmetry(moved()), 5 * args.repeats)
    raw_calc = pretrained()

    def raw_call():
        copy = moved()
        copy.calc = raw_calc
        copy.get_forces()

    raw_call()  # warm-up
    raw = median_time(raw_call, args.repeats)
    results = {"rule": args.rule, "atoms": len(atoms)}
    calculators = {
        flag: SymmetrizedCalculator(
            pretrained(), quadrature=args.rule, raw=False, structure_symmetry=flag
        )
        for flag in (False, True)
    }
    times = {False: [], True: []}
    for repeat in range(args.repeats + 1):  # alternating, so that drift hits both alike
        for flag, calc in calculators.items():
            copy = moved()
            copy.calc = calc
            start = time.perf_counter()
            copy.get_forces()
            if repeat:  # the first round is a warm-up
                times[flag].append(time.perf_counter() - start)
    results["symmetrized_s_without"] = statistics.median(times[False])
    results["symmetrized_s_with"] = statistics.median(times[True])
    results.update(
        {
            "find_symmetry_ms": search * 1e3,
            "raw_call_ms": raw * 1e3,
            "search_over_raw_call": search / raw,
            "with_over_without": results["symmetrized_s_with"] / results["symmetrized_s_without"],
        }
    )
    groups = {}
    for name, structure in symmetric_structures().items():
        found = find_symmetry(structure)
        groups[name] = {
            "group": found.group,
            "operations": len(found),
            "find_symmetry_ms": median_time(lambda s=structure: find_symmetry(s), 3) * 1e3,
        }
    results["symmetric"] = groups

    print(f"108-atom MD snapshot, shipped model, rule {args.rule}")
    print(f"  find_symmetry (no symmetry)   {results['find_symmetry_ms']:8.3f} ms")
    print(f"  one raw model call            {results['raw_call_ms']:8.3f} ms")
    print(f"  search / raw call             {results['search_over_raw_call']:8.4f}")
    print(
        f"  symmetrized call without/with {results['symmetrized_s_without']:.3f} s / "
        f"{results['symmetrized_s_with']:.3f} s  (ratio {results['with_over_without']:.4f})"
    )
    for name, row in groups.items():
        print(
            f"  {name:28s} {row['group']:18s} {row['operations']:5d} ops "
            f"{row['find_symmetry_ms']:9.2f} ms"
        )
    out = ROOT / "benchmarks" / "results" / "structure_symmetry.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
