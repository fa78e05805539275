"""``python -m ase_symcalc.cli``."""

from . import main

raise SystemExit(main())
