"""The torch-sim wrapper's own cost per forward, against the inner model alone.

    python benchmarks/bench_orchestration.py [--systems 1 8 64 256] [--repeats 7]
    PYTHONPATH=OLD_TREE python benchmarks/bench_orchestration.py --label old

The inner model is analytic and nearly free (``E_s = sum_i (e . r_i)^2``, pure
torch, no neighbour list), so what is timed is the orchestration: building
the S x M copies, folding the outputs back, the averaging and the per-system
errors. Prints, per batch size S (4 atoms per system, ``group:T`` with
inversion, M = 24, plus the raw copy where the tree has it), the median
forward time of ``SymmetrizedModel`` and of the inner model on the same
number of atoms, and their ratio. Self-contained (the model is defined here)
so that it runs against older trees of the package too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch_sim as ts
from ase.build import bulk
from torch_sim.models.interface import ModelInterface


class FieldModel(ModelInterface):
    """``E_s = sum_i (e . r_i)^2``: forces and energies with no host sync."""

    def __init__(self):
        super().__init__()
        self._device, self._dtype = torch.device("cpu"), torch.float64
        self._compute_forces, self._compute_stress = True, True
        self.direction = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)

    def forward(self, state, **kwargs):
        projection = state.positions @ self.direction
        n = state.cell.shape[0]
        energy = torch.zeros(n, dtype=torch.float64).index_add_(0, state.system_idx, projection**2)
        return {
            "energy": energy,
            "forces": -2 * projection[:, None] * self.direction,
            "stress": torch.zeros(n, 3, 3, dtype=torch.float64),
        }


def _median(call, repeats):
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import ase_symcalc
    from ase_symcalc.torchsim import SymmetrizedModel

    print(f"{args.label}: ase_symcalc from {Path(ase_symcalc.__file__).parent}")
    inner = FieldModel()
    rows = []
    for size in args.systems:
        systems = []
        for seed in range(size):
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
            atoms.rattle(0.05, seed=seed)
            systems.append(atoms)
        state = ts.io.atoms_to_state(systems, device="cpu", dtype=torch.float64)
        model = SymmetrizedModel(inner, quadrature="group:T", batch_size=10**9)
        copies = model.copies_per_system + 1  # the rule and, where there is one, the raw copy
        # the inner model alone on as many atoms as the wrapper gives it
        big = ts.io.atoms_to_state(systems * copies, device="cpu", dtype=torch.float64)
        wrapped = _median(lambda: model(state), args.repeats)  # noqa: B023
        alone = _median(lambda: inner(big), args.repeats)  # noqa: B023
        row = {"systems": size, "wrapper_s": wrapped, "inner_s": alone}
        rows.append(row)
        print(
            f"S = {size:4d}: SymmetrizedModel {1e3 * wrapped:8.2f} ms, inner model on the "
            f"same atoms {1e3 * alone:7.2f} ms ({wrapped / alone:6.1f}x)",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"label": args.label, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
