"""Elastic constants of a model against EMT, for its direct and its conservative stress.

    python scripts/model_elasticity.py [MODEL.pt] [--rule group:O] [--json OUT]

C11, C12, C44 and the bulk modulus (GPa) of fcc copper (4-atom cubic cell,
a = 3.59 Å) from finite strains of the symmetrized model's stress
(``workflows.elastic_constants``: +-0.5% and +-1%, Richardson), with the
direct (non-conservative) stress head and with the conservative stress (the
strain derivative of the energy, autograd), beside EMT, the model's
reference. Default model: the shipped ``pet-cu-emt``.
"""

from __future__ import annotations

import argparse
import json

from ase.build import bulk
from ase.calculators.emt import EMT

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.workflows import cubic_summary, elastic_constants

KEYS = ("C11", "C12", "C44", "bulk_modulus")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="pet-cu-emt")
    parser.add_argument("--rule", default="group:O")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    atoms = bulk("Cu", "fcc", a=3.59, cubic=True)
    rows = {"EMT": cubic_summary(elastic_constants(EMT(), atoms))}
    for forces in ("direct", "conservative"):
        calc = SymmetrizedCalculator(args.model, quadrature=args.rule, raw=False, forces=forces)
        rows[f"{forces} stress"] = cubic_summary(elastic_constants(calc, atoms))
    print(f"fcc Cu, a = 3.59 Å, model {args.model}, rule {args.rule} (GPa)")
    print(f"{'':20s}" + "".join(f"{key:>14s}" for key in KEYS))
    for name, row in rows.items():
        print(f"{name:20s}" + "".join(f"{row[key]:14.1f}" for key in KEYS))
    for name, row in rows.items():
        if name == "EMT":
            continue
        ratios = {key: row[key] / rows["EMT"][key] for key in KEYS}
        ratios["C11-C12"] = (row["C11"] - row["C12"]) / (rows["EMT"]["C11"] - rows["EMT"]["C12"])
        print(f"{name + ' / EMT':20s}" + "".join(f"{ratios[key]:14.3f}" for key in KEYS), end="")
        print(f"   (C11-C12: {ratios['C11-C12']:.3f})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "rule": args.rule, "GPa": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
