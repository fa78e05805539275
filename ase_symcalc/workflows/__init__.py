"""Symmetry-sensitive workflows, for any ASE calculator: phonons (phonopy),
elastic constants (finite strains) and relaxations that keep the space group
(spglib). Each compares calculators by name (``raw``, ``symmetrized``,
``reference``) and returns plain dicts ready for JSON.

Crystal symmetry is never imposed: the point is to see whether the *model*
respects it (phonopy runs with ``is_symmetry=False``, unsymmetrized force
constants and explicit q-points).
"""

from ._common import NotACrystalError, O3OnlyView, spacegroups
from .elastic import cubic_spread, cubic_summary, elastic_constants, elastic_tensors
from .phonons import phonon_report
from .relax import relax_report

__all__ = [
    "NotACrystalError",
    "O3OnlyView",
    "cubic_spread",
    "cubic_summary",
    "elastic_constants",
    "elastic_tensors",
    "phonon_report",
    "relax_report",
    "spacegroups",
]
