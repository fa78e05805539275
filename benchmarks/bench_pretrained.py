"""Real and random-weight models side by side: equivariance errors and cost.

    python benchmarks/bench_pretrained.py [--repeats 3]

For each model (SevenNet-0 through torch-sim and through its own ASE
calculator, CHGNet 0.3.0, the shipped PET, Orb-v3 direct with random
weights), on a rattled 108-atom copper cell and a rattled ethanol molecule:

- the forces equivariance error under proper rotations (``group:T`` without
  inversion, 12 copies) and under O(3) (with inversion, 24 copies);
- what symmetrizing leaves: on a rattled 32-atom cell, the RMS of
  ``F(g x) - g F(x)`` for a random O(3) element ``g``, raw and symmetrized;
- one raw call and one symmetrized call (``group:T`` with inversion) on
  the 108-atom cell, medians of ``--repeats``, and their ratio.

Every model runs in its own process (one at a time: never two torch jobs on
the 2 cores); SevenNet in the overlay environment that ``scripts/setup.sh``
installs (sevenn needs e3nn >= 0.5, mace-torch pins 0.4.4). Writes
``benchmarks/results/pretrained.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("sevennet-0", "sevennet-0-ase", "chgnet", "pet-cu-emt", "orb-v3-direct-random")


def _base(name: str):
    if name == "sevennet-0-ase":
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator("7net-0", device="cpu")
    if name == "orb-v3-direct-random":
        from ase_symcalc.models.random_torchsim import random_orb

        return random_orb(seed=0, size="full", max_num_neighbors=120)
    if name == "pet-cu-emt":
        return name
    from ase_symcalc.models import named

    return named.load(name, device="cpu")


def _structures():
    from ase.build import bulk, molecule

    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    cell.rattle(0.05, seed=1)
    ethanol = molecule("CH3CH2OH")
    ethanol.center(vacuum=6.0)
    ethanol.rattle(0.05, seed=4)
    return {"bulk108": cell, "ethanol": ethanol}


def measure(name: str, repeats: int) -> dict:
    warnings.filterwarnings("ignore")
    from ase_symcalc import SymmetrizedCalculator

    base = _base(name)
    row = {"model": name}
    for label, atoms in _structures().items():
        if name == "pet-cu-emt" and label == "ethanol":
            continue  # a copper model
        for inversion in (False, True):
            calc = SymmetrizedCalculator(base, quadrature="group:T", inversion=inversion)
            copy = atoms.copy()
            copy.calc = calc
            copy.get_forces()
            key = f"{label}_forces_error_{'O3' if inversion else 'SO3'}_meV_per_A"
            row[key] = 1e3 * float(calc.results["forces_equivariance_error"])
    # what symmetrizing leaves: F_sym(g x) against g F_sym(x) for a random O(3) element
    from ase.build import bulk

    from ase_symcalc.evaluators import rotated_atoms
    from ase_symcalc.testing import random_o3

    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    cell.rattle(0.05, seed=2)
    g = random_o3(1, seed=7)[0]
    symmetrized = SymmetrizedCalculator(base, quadrature="group:T", raw=True)
    copy = cell.copy()
    copy.calc = symmetrized
    forces = copy.get_forces()
    raw = symmetrized.results["raw_forces"]
    moved = rotated_atoms(cell, g)
    moved.calc = symmetrized
    moved_forces = moved.get_forces()
    moved_raw = symmetrized.results["raw_forces"]
    row["bulk32_rotated_rms_raw_meV_per_A"] = 1e3 * _rms(moved_raw - raw @ g.T)
    row["bulk32_rotated_rms_symmetrized_meV_per_A"] = 1e3 * _rms(moved_forces - forces @ g.T)
    atoms = _structures()["bulk108"]
    for setting, options in (
        ("raw", {"quadrature": "identity", "raw": False}),
        ("symmetrized", {"quadrature": "group:T", "inversion": True, "raw": False}),
    ):
        calc = SymmetrizedCalculator(base, **options)
        times = []
        for repeat in range(repeats + 1):  # the first call warms up (compilation, caches)
            copy = atoms.copy()
            copy.positions[0, 0] += 1e-4 * repeat
            copy.calc = calc
            start = time.perf_counter()
            copy.get_forces()
            times.append(time.perf_counter() - start)
        row[f"{setting}_s"] = statistics.median(times[1:])
        row[f"{setting}_evaluations"] = calc.results["evaluations"]
    row["symmetrized_over_raw"] = row["symmetrized_s"] / row["raw_s"]
    return row


def _rms(values) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _environment(name: str) -> dict:
    env = dict(os.environ, ASE_SYMCALC_OFFLINE="1")
    if name.startswith("sevennet"):
        overlay = Path(sys.prefix) / "overlays" / "sevenn"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(overlay), env.get("PYTHONPATH")]))
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="measure one model in this process")
    args = parser.parse_args()
    if args.model:
        print(json.dumps(measure(args.model, args.repeats)))
        return 0
    rows = []
    for name in MODELS:
        done = subprocess.run(
            [sys.executable, __file__, "--model", name, "--repeats", str(args.repeats)],
            env=_environment(name),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        nan = float("nan")
        print(
            f"{name:22s} bulk SO(3) {row['bulk108_forces_error_SO3_meV_per_A']:9.2e}  "
            f"O(3) {row['bulk108_forces_error_O3_meV_per_A']:9.2e}  ethanol SO(3) "
            f"{row.get('ethanol_forces_error_SO3_meV_per_A', nan):9.2e}  O(3) "
            f"{row.get('ethanol_forces_error_O3_meV_per_A', nan):9.2e} meV/Å | rotated 32 "
            f"atoms: raw {row['bulk32_rotated_rms_raw_meV_per_A']:9.2e} sym "
            f"{row['bulk32_rotated_rms_symmetrized_meV_per_A']:9.2e} | raw {row['raw_s']:.3f} s  "
            f"sym {row['symmetrized_s']:.3f} s ({row['symmetrized_evaluations']} evals) = "
            f"{row['symmetrized_over_raw']:.1f}x",
            flush=True,
        )
    out = ROOT / "benchmarks" / "results" / "pretrained.json"
    out.write_text(
        json.dumps({"command": "python benchmarks/bench_pretrained.py", "rows": rows}, indent=1)
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
