"""Install an archived model (not in the wheel) for whoever reproduces old numbers.

    python scripts/fetch_model.py pet-cu-emt-v1 [--source FOLDER]

Copies ``training/archive/NAME.pt`` (and its record) of this checkout into
``$ASE_SYMCALC_MODELS_DIR`` (default ``~/.cache/ase-symcalc/models``), where
``ase_symcalc.models.path(NAME)`` finds it. No network is needed or used; a
model missing from the archive is retrained into a folder of its own
(``python -m ase_symcalc.models.train --recipe v1 --workdir DIR --no-install``;
without ``--no-install`` it would replace the shipped model) and its
``DIR/model.pt`` copied as ``FOLDER/NAME.pt`` for ``--source FOLDER``.
"""

from __future__ import annotations

import argparse

from ase_symcalc import models


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(models.ARCHIVED))
    parser.add_argument("--source", help="folder holding NAME.pt (default: training/archive)")
    args = parser.parse_args(argv)
    print(models.fetch(args.name, args.source))


if __name__ == "__main__":
    main()
