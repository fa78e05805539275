"""How far ``quadrature="auto"`` keeps its tolerance, and at what cost, on the shipped model.

    python benchmarks/bench_residual.py                  # calibration, auto, checks: ~1.5 h
    python benchmarks/bench_residual.py --parts auto --structures slab

Structures (copper, the shipped model's element):
- bulk: 32-atom fcc cell rattled by 0.05 Å;
- hot: 108-atom fcc cell after 100 steps of EMT Langevin MD at 900 K;
- slab: Cu(111), 3x3 surface cell, 4 layers, 10 Å of vacuum each side,
  pbc (T, T, F), rattled by 0.05 Å; slab100: the same for Cu(100);
- cluster: Cu55 Mackay icosahedron, rattled by 0.05 Å.

Parts (``--parts``; each is resumable, kept in the output once done):

- ``calibration``: each of the first 8 rungs of the auto ladder averaged
  with the rule in the structure's own orientation and in 10 Haar-random
  proper orientations (and, for rules without inversion, 10 improper ones;
  averages cached in ``benchmarks/results/cache/``). From them, per rule:
  the leak against the exact average (the finest rule over all
  orientations), the rotation errors a rotation test would see (RMS, MAE,
  cosine, against the structure's own orientation), and the ratio of the
  worst rotation error to the two-orientation residual estimate ``auto``
  uses, over every choice of the estimate's orientations: the measurement
  behind ``rule_policy.RESIDUAL_BOUND_FACTOR``; the same for the worst
  atom's force change against the largest per-atom estimate
  (``tolerance_per_atom=True``, ``rule_policy.ATOM_BOUND_FACTOR``). Also the cheapest rung whose
  every random orientation passes MLIP Arena's criteria (MAE and cosine), for
  each tolerance and target (O(3) with inversion, SO(3) without).
- ``auto``: ``quadrature="auto"`` at tolerances 1e-2, 3e-3, 1e-3 and 3e-4
  eV/Å, with inversion (target O(3), the default) and without (SO(3)): the
  rule kept, the evaluations of the first call (the climb) and of later
  calls, the residual and its bound.
- ``checks``: MLIP Arena's force test (12 angles x ``--axes`` axes, and the
  same rotations composed with the inversion: mirror images) and ML-PEG's
  walk on raw, the default rule (group:I with inversion) and auto at 1e-3.
- ``rules`` (not run by default): the residual estimate of every rule
  family against evaluations (the figure of earlier versions).

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
CALIBRATION_RUNGS = (
    ("group:T", False),
    ("group:O", False),
    ("group:I", False),
    ("design:6", False),
    ("group:I", True),
    ("design:7", False),
    ("design:6", True),
    ("design:8", False),
)
CALIBRATION_ORIENTATIONS = 10
CACHE = ROOT / "benchmarks/results/cache"


def rung_label(spec, inversion):
    return spec + ("+inv" if inversion else "")


def calibration_averages(evaluator, name, atoms):
    """Symmetrized forces of each calibration rung in the structure's orientation and
    in 10 proper (and, without inversion, 10 improper) random orientations,
    rotated back: ``{label: (1 + 10 [+ 10], N, 3)}``, cached."""
    from scipy.spatial.transform import Rotation

    from ase_symcalc import SymmetrizedCalculator
    from ase_symcalc.evaluators.ase_loop import rotated_atoms

    cache = CACHE / f"calibration-{name}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    rotations = Rotation.random(CALIBRATION_ORIENTATIONS, random_state=1234).as_matrix()
    out = {}
    for spec, inversion in CALIBRATION_RUNGS:
        calc = SymmetrizedCalculator(evaluator, quadrature=spec, inversion=inversion, raw=False)
        orientations = [np.eye(3), *rotations] + ([] if inversion else [-r for r in rotations])
        forces = []
        for rotation in orientations:
            copy = rotated_atoms(atoms, rotation)
            copy.calc = calc
            forces.append(copy.get_forces() @ rotation)
        out[rung_label(spec, inversion)] = np.array(forces)
        print(f"  {name:8s} calibration {rung_label(spec, inversion):13s} done", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def _rms(values):
    return np.sqrt(np.mean(values**2, axis=tuple(range(1, values.ndim))))


def _min_cosines(expected, actual):
    from ase_symcalc.checks import _cosines

    return np.array([_cosines(e, a).min() for e, a in zip(expected, actual, strict=True)])


def part_calibration(evaluator, name, atoms):
    """Leaks, rotation errors and the bound's calibration per rung (see the docstring)."""
    import itertools

    from ase_symcalc.metrics import pooled_residual, pooled_residual_per_atom
    from ase_symcalc.quadrature import get_quadrature

    averages = calibration_averages(evaluator, name, atoms)
    k = CALIBRATION_ORIENTATIONS
    finest = averages["design:8"]
    exact = {"SO(3)": finest[1 : k + 1].mean(axis=0), "O(3)": finest[1:].mean(axis=0)}
    rows = []
    ratios = {"SO(3)": [], "O(3)": []}
    # tolerance_per_atom: the worst atom's force change (length) over the largest
    # per-atom estimate, the measurement behind rule_policy.ATOM_BOUND_FACTOR
    ratios_atom = {"SO(3)": [], "O(3)": []}
    for spec, inversion in CALIBRATION_RUNGS:
        label = rung_label(spec, inversion)
        values = averages[label]
        proper = values[1 : k + 1]
        improper = values[k + 1 :] if not inversion else proper  # the rule is closed under -1
        row = {
            "rule": label,
            "evaluations": len(get_quadrature(spec, inversion=inversion)),
            "degree": get_quadrature(spec).degree,
        }
        for target, others, flips in (
            ("SO(3)", proper, [False] * k),
            ("O(3)", np.concatenate([proper, improper]), [False] * k + [True] * k),
        ):
            if target == "SO(3)" and inversion:
                continue
            difference = others - values[0]
            rotation_error = _rms(difference)
            atom_error = np.linalg.norm(difference, axis=-1)  # (orientations, N)
            leak = _rms(np.concatenate([values[:1], others]) - exact[target])
            # the estimate auto makes: the structure's orientation and two more (O(3): the
            # first improper), over every choice; the worst rotation error of the rest
            first_pool = [i for i, f in enumerate(flips) if f == (target == "O(3)")]
            second_pool = [i for i, f in enumerate(flips) if not f]
            for i, j in itertools.product(first_pool, second_pool):
                if i == j:
                    continue
                chosen = [values[0], others[i], others[j]]
                parities = [False, flips[i], flips[j]]
                estimate = pooled_residual(chosen, parities)
                rest = [m for m in range(len(others)) if m not in (i, j)]
                ratios[target].append(float(rotation_error[rest].max() / estimate))
                worst_atom = pooled_residual_per_atom(chosen, parities).max()
                ratios_atom[target].append(float(atom_error[rest].max() / worst_atom))
            row[target] = {
                "leak_rms": float(np.sqrt(np.mean(leak**2))),
                "leak_max": float(leak.max()),
                "rotation_error_rms": float(np.sqrt(np.mean(rotation_error**2))),
                "rotation_error_max": float(rotation_error.max()),
                "mae_max": float(np.abs(difference).mean(axis=(1, 2)).max()),
                "atom_error_max": float(atom_error.max()),
                "min_cosine": float(_min_cosines(values[:1].repeat(len(others), 0), others).min()),
            }
        rows.append(row)
        o3 = row["O(3)"]
        print(
            f"  {name:8s} {label:13s} {row['evaluations']:4d} evaluations: O(3) leak "
            f"{1e3 * o3['leak_rms']:.3f}, rotation error rms {1e3 * o3['rotation_error_rms']:.3f} "
            f"max {1e3 * o3['rotation_error_max']:.3f}, Arena-like MAE max "
            f"{1e3 * o3['mae_max']:.3f} meV/Å",
            flush=True,
        )
    cheapest = {}
    for target in ("SO(3)", "O(3)"):
        for tolerance in TOLERANCES:
            passing = [
                row
                for row in rows
                if target in row
                and row[target]["mae_max"] < tolerance
                and row[target]["min_cosine"] > 1 - tolerance
            ]
            best = min(passing, key=lambda row: row["evaluations"]) if passing else None
            cheapest[f"{target} {tolerance:.0e}"] = best["rule"] if best else None
    return {
        "rules": rows,
        "ratios": ratios,
        "ratios_atom": ratios_atom,
        "cheapest_passing": cheapest,
    }


def structures():
    from ase import units
    from ase.build import bulk, fcc100, fcc111
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

    slab100 = fcc100("Cu", size=(3, 3, 4), a=3.61, vacuum=10.0)
    slab100.pbc = (True, True, False)
    slab100.rattle(0.05, seed=5)
    out["slab100"] = slab100
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


def auto_calc(evaluator, tolerance, inversion=True):
    from ase_symcalc import SymmetrizedCalculator

    return SymmetrizedCalculator(
        evaluator, quadrature="auto", tolerance=tolerance, inversion=inversion, raw=False
    )


def part_auto(evaluator, name, atoms):
    rows = []
    for inversion in (True, False):
        target = "O(3)" if inversion else "SO(3)"
        for tolerance in TOLERANCES:
            calc = auto_calc(evaluator, tolerance, inversion)
            copy = atoms.copy()
            copy.calc = calc
            start = time.perf_counter()
            try:
                copy.get_forces()
            except ValueError as error:
                rows.append({"target": target, "tolerance": tolerance, "error": str(error)})
                print(f"  {name:8s} auto {target} {tolerance:.0e}: {error}", flush=True)
                continue
            elapsed = time.perf_counter() - start
            first = calc.results["evaluations"]
            residual = calc.results["forces_residual"]
            moved = atoms.copy()
            moved.rattle(0.005, seed=9)
            moved.calc = calc
            moved.get_forces()
            rows.append(
                {
                    "target": target,
                    "tolerance": tolerance,
                    "rule": calc.results["quadrature"],
                    "first_call_evaluations": first,
                    "first_call_seconds": elapsed,
                    "later_call_evaluations": calc.results["evaluations"],
                    "forces_residual": residual,
                    "forces_residual_bound": 3.0 * residual,
                }
            )
            print(
                f"  {name:8s} auto {target:5s} {tolerance:.0e}: {calc.results['quadrature']:28s} "
                f"first call {first} evaluations, later {calc.results['evaluations']}; "
                f"residual {1e3 * residual:.4f} meV/Å",
                flush=True,
            )
    return rows


CHECK_SETUPS = {
    "raw": dict(quadrature="identity"),
    "group:I": dict(quadrature="group:I"),
    "auto:1e-3": dict(quadrature="auto", tolerance=1e-3),
    "auto:1e-3-SO(3)": dict(quadrature="auto", tolerance=1e-3, inversion=False),
    "auto-per-atom:1e-3": dict(quadrature="auto", tolerance=1e-3, tolerance_per_atom=True),
}


def part_checks(evaluator, name, atoms, axes, setups, walk_too):
    from ase_symcalc import SymmetrizedCalculator
    from ase_symcalc.checks import arena_force_equivariance, rotational_symmetry_walk

    rows = {}
    for label in setups:
        options = CHECK_SETUPS[label]
        calc = SymmetrizedCalculator(evaluator, raw=False, **options)
        estimate = bound = None
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
            bound = probe.results["forces_residual_bound"]
        start_count = calc.evaluation_count
        arena = arena_force_equivariance(calc, atoms, axes=axes).summary()
        mirror = arena_force_equivariance(calc, atoms, axes=axes, improper=True).summary()
        walk = rotational_symmetry_walk(calc, atoms).summary() if walk_too else None
        calls = 2 * (12 * axes + 1) + (115 if walk_too else 0)
        row = {
            "arena": arena,
            "arena_mirror": mirror,
            "walk": walk,
            "forces_residual": estimate,
            "forces_residual_bound": bound,
            "rule": calc.quadrature.name,
            "evaluations_per_call": (calc.evaluation_count - start_count) / calls,
        }
        rows[label] = row
        print(
            f"  {name:8s} {label:15s} arena MAE max {1e3 * arena['force_mae_max']:8.4f} meV/Å "
            f"{'PASS' if arena['passed'] else 'fail'}; mirrors max "
            f"{1e3 * mirror['force_mae_max']:8.4f} {'PASS' if mirror['passed'] else 'fail'}; "
            + (f"walk |dF| max {1e3 * walk['forces_change_max']:.4f} meV/Å" if walk else "")
            + (f"; bound {1e3 * bound:.4f} meV/Å" if bound else "")
            + f"; {row['evaluations_per_call']:.1f} evaluations/call ({row['rule']})",
            flush=True,
        )
    return rows


def plot(results, output):
    """Per structure: worst rotation error against evaluations, with and without inversion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in results if "calibration" in results[name]]
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.3 * len(names), 3.6), squeeze=False, sharey=True
    )
    for ax, name in zip(axes[0], names, strict=True):
        rows = sorted(results[name]["calibration"]["rules"], key=lambda row: row["evaluations"])
        series = (
            ("O(3)", False, "C0", "s--", "no inversion, vs mirror images too (O(3))"),
            ("SO(3)", False, "C0", "o:", "no inversion, rotations only (SO(3))"),
            ("O(3)", True, "C3", "D-", "with inversion (O(3))"),
        )
        for target, inversion, color, style, label in series:
            picked = [r for r in rows if r["rule"].endswith("+inv") == inversion and target in r]
            ax.loglog(
                [r["evaluations"] for r in picked],
                [1e3 * r[target]["rotation_error_max"] for r in picked],
                style,
                color=color,
                ms=4,
                label=label,
            )
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_xticks([12, 24, 60, 120, 245])
        ax.set_xticklabels(["12", "24", "60", "120", "245"])
        ax.minorticks_off()
        ax.set_title(f"{name} ({results[name]['atoms']} atoms)", fontsize=9)
        ax.set_xlabel("model evaluations per call")
    axes[0][0].set_ylabel("worst rotation error (meV/Å)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


def calibration_summary(results) -> dict:
    """The ratio worst rotation error / estimate pooled over structures and rules."""
    summary = {}
    for key, factor, prefix in (("ratios", 3.0, ""), ("ratios_atom", 3.5, "per atom ")):
        for target in ("SO(3)", "O(3)"):
            ratios = np.concatenate(
                [
                    results[name]["calibration"].get(key, {}).get(target, [])
                    for name in results
                    if "calibration" in results[name]
                ]
            )
            if len(ratios):
                summary[prefix + target] = {
                    "samples": len(ratios),
                    **{
                        f"q{int(q * 100)}": float(np.quantile(ratios, q)) for q in (0.5, 0.95, 0.99)
                    },
                    "max": float(ratios.max()),
                    "factor": factor,
                    "covered": float(np.mean(ratios <= factor)),
                }
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--structures", nargs="+", default=["bulk", "hot", "slab", "slab100", "cluster"]
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["calibration", "auto", "checks"],
        choices=["calibration", "auto", "checks", "rules"],
    )
    parser.add_argument("--seeds", type=int, default=1, help="residual estimates per rule (rules)")
    parser.add_argument("--axes", type=int, default=4, help="MLIP Arena axes (4)")
    parser.add_argument(
        "--setups",
        nargs="+",
        default=["raw", "auto:1e-3"],
        choices=list(CHECK_SETUPS),
        help="what the checks part scores (default: raw and auto at 1e-3)",
    )
    parser.add_argument(
        "--walk", action="store_true", help="the checks part also runs ML-PEG's walk (115 calls)"
    )
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
    functions = {
        "calibration": part_calibration,
        "auto": part_auto,
        "checks": part_checks,
        "rules": part_rules,
    }
    for part in args.parts:
        for name in args.structures:
            atoms = all_structures[name]
            entry = results.setdefault(name, {"atoms": len(atoms)})
            # the checks part is resumable per setup: new setups join the ones done
            setups = [s for s in args.setups if s not in entry.get("checks", {})]
            if part in entry and not (part == "checks" and setups):
                continue
            print(f"{name} ({len(atoms)} atoms, pbc {atoms.pbc.tolist()}): {part}", flush=True)
            extra = {"rules": (args.seeds,), "checks": (args.axes, setups, args.walk)}
            extra = extra.get(part, ())
            done = functions[part](evaluator, name, atoms, *extra)
            entry[part] = {**entry[part], **done} if part == "checks" and part in entry else done
            results["calibration_summary"] = calibration_summary(
                {k: v for k, v in results.items() if k != "calibration_summary"}
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(results, indent=1) + "\n")  # as it goes
    print(json.dumps(results.get("calibration_summary", {}), indent=1))
    structures_done = {k: v for k, v in results.items() if k != "calibration_summary"}
    if any("calibration" in v for v in structures_done.values()):
        plot(structures_done, args.figure)
    print(f"wrote {args.output} and {args.figure}")


if __name__ == "__main__":
    main()
