"""Symmetrize unconstrained ML potentials on the fly over O(3), in ASE.

``SymmetrizedCalculator`` wraps any ASE calculator, averages its energy,
forces and stress over a rotation quadrature and reports, for every
structure, how far the raw predictions are from equivariance.
"""

from importlib.metadata import PackageNotFoundError, version

from .calculator import StressNotAvailableError, SymmetrizedCalculator
from .mts import MultipleTimeStepMD
from .quadrature import O3Quadrature, get_quadrature

try:
    __version__ = version("ase-symcalc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "MultipleTimeStepMD",
    "O3Quadrature",
    "StressNotAvailableError",
    "SymmetrizedCalculator",
    "get_quadrature",
    "__version__",
]
