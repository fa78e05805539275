"""SevenNet-0's equivariance through ase_symcalc, printed as JSON.

Run by ``test_real_pretrained.py`` in an environment where ``sevenn`` imports
(sevenn needs e3nn >= 0.5, mace-torch pins e3nn 0.4.4, so the test
environment keeps sevenn and its e3nn in an overlay on ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def main() -> int:
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from real_structures import structures
    from sevenn.calculator import SevenNetCalculator

    from ase_symcalc import SymmetrizedCalculator

    own = SevenNetCalculator("7net-0", device="cpu")
    report = {}
    for label, atoms in structures().items():
        row = {}
        reference = atoms.copy()
        reference.calc = own
        row["own_forces"] = reference.get_forces().tolist()
        for front, base in (("torchsim", "sevennet-0"), ("ase", own)):
            for inversion in (False, True):
                copy = atoms.copy()
                copy.calc = calc = SymmetrizedCalculator(
                    base, quadrature="group:T", inversion=inversion
                )
                copy.get_forces()
                r = calc.results
                row[f"{front}_{'O3' if inversion else 'SO3'}"] = {
                    "forces_error": float(r["forces_equivariance_error"]),
                    "energy_error": float(r["energy_equivariance_error"]),
                    "raw_forces": np.asarray(r["raw_forces"]).tolist(),
                    "forces": np.asarray(r["forces"]).tolist(),
                    "max_force": float(np.abs(r["raw_forces"]).max()),
                }
        report[label] = row
    # the paper's B metric, layer by layer, through forward hooks on torch-sim's wrapper
    from ase_symcalc.diagnostics import feature_fractions

    fractions = feature_fractions("sevennet-0", [structures()["molecule"]], 2)
    report["features"] = {
        layer: {f"{l},{s}": value for (l, s), value in values.items()}
        for layer, values in fractions.fractions.items()
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
