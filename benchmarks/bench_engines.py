"""Cost of the production routes: i-PI + `ase-symcalc serve` against `ase-symcalc md`
in process, and the exported symmetrized model in MetatomicCalculator against
SymmetrizedCalculator and metatomic's SymmetrizedModel at its default batch.

    python benchmarks/bench_engines.py [--rule lebedev:3] [--repeats 5]   # ~4 min, 2 cores

Serving: NVE of the 108-atom copper cell with the shipped model, the same
rule, 5 and then 15 steps with each route; the cost per step is
(wall(15) - wall(5)) / 10, which removes start-up (imports, model load,
i-PI start) from both. Exported model: median of ``--repeats`` calls on
slightly moved atoms (no cache), after one warm-up call, all in this process,
one after the other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
IPI_INPUT = """<simulation verbosity='low'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ step, potential ] </properties>
  </output>
  <total_steps> {steps} </total_steps>
  <prng><seed> 1 </seed></prng>
  <ffsocket name='symcalc' mode='unix'><address> {address} </address></ffsocket>
  <system>
    <initialize nbeads='1'><file mode='ase'> init.extxyz </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities></initialize>
    <forces><force forcefield='symcalc'> </force></forces>
    <motion mode='dynamics'><dynamics mode='nve'>
      <timestep units='femtosecond'> 2.0 </timestep></dynamics></motion>
  </system>
</simulation>
"""


def _structure():
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.02, seed=0)
    return atoms


def run_ipi(workdir: Path, steps: int, rule: str) -> float:
    address = f"bench-{uuid.uuid4().hex[:8]}"
    (workdir / "input.xml").write_text(IPI_INPUT.format(steps=steps, address=address))
    start = time.perf_counter()
    ipi = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=workdir, stdout=subprocess.DEVNULL)
    client = subprocess.Popen(
        [str(BIN / "ase-symcalc"), "serve", f"unix:{address}", "--structure", "init.extxyz"]
        + ["--quadrature", rule],
        cwd=workdir,
        stderr=subprocess.DEVNULL,
    )
    ipi.wait(timeout=1200)
    client.wait(timeout=120)
    Path(f"/tmp/ipi_{address}").unlink(missing_ok=True)
    return time.perf_counter() - start


def run_md(workdir: Path, steps: int, rule: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [str(BIN / "ase-symcalc"), "md", "init.extxyz", "--ensemble", "nve", "--steps", str(steps)]
        + ["--quadrature", rule, "--output", "md", "--overwrite"],
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def part_serve(rule: str) -> dict:
    from ase.io import write

    workdir = Path(tempfile.mkdtemp())
    write(workdir / "init.extxyz", _structure())
    walls = {}
    for name, function in (("md", run_md), ("ipi+serve", run_ipi)):
        short, long = function(workdir, 5, rule), function(workdir, 15, rule)
        walls[name] = (long - short) / 10.0
        print(
            f"  {name:10s} {1e3 * walls[name]:8.1f} ms/step "
            f"({short:.1f} s for 5, {long:.1f} s for 15)"
        )
    shutil.rmtree(workdir)
    print(f"  serve / md: {walls['ipi+serve'] / walls['md']:.3f}")
    return walls


def _median_call(calc, repeats: int) -> float:
    atoms = _structure()
    atoms.calc = calc
    atoms.get_forces()  # warm-up
    times = []
    for index in range(repeats):
        atoms.positions += np.random.default_rng(index).normal(
            scale=1e-3, size=atoms.positions.shape
        )
        start = time.perf_counter()
        atoms.get_forces()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def part_export(rule: str, repeats: int) -> dict:
    import warnings

    from metatomic_ase import MetatomicCalculator

    from ase_symcalc import SymmetrizedCalculator
    from ase_symcalc.export import symmetrized_model
    from ase_symcalc.models import path

    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp())
    times = {
        "ours": _median_call(
            SymmetrizedCalculator(str(path()), quadrature=rule, raw=False), repeats
        )
    }
    for batch in (1, 4, 8, 32):
        target = tmp / f"sym-b{batch}.pt"
        symmetrized_model(quadrature=rule, batch_size=batch).save(str(target))
        calc = MetatomicCalculator(str(target), non_conservative=True)
        times[f"exported-b{batch}"] = _median_call(calc, repeats)
    shutil.rmtree(tmp)
    for name, value in times.items():
        print(f"  {name:14s} {1e3 * value:8.1f} ms/call  ({value / times['ours']:.2f}x ours)")
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", default="lebedev:3")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    print(f"serving, 108 Cu atoms, {args.rule}+inversion")
    part_serve(args.rule)
    print(f"exported model, 108 Cu atoms, {args.rule}+inversion, direct forces")
    part_export(args.rule, args.repeats)


if __name__ == "__main__":
    main()
