"""Optional dependencies: imported where they are used, with a one-line error
naming the extra that installs them.

``SymmetrizedCalculator`` and the shipped model need ase, numpy, scipy, torch,
metatensor / metatomic, vesin, spglib and tqdm; the rest is optional, so that
wrapping EMT does not install phonopy or a plotting stack.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]

#: module -> (the extra that installs it, the package's name on PyPI)
EXTRAS = {
    "phonopy": ("phonons", "phonopy"),
    "matplotlib": ("plot", "matplotlib"),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.pyplot"``) or raise ``MissingExtraError``
    saying which extra installs it and what needed it (``purpose``)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        extra, package = EXTRAS.get(top, (None, top))
        how = (
            f"pip install 'ase-symcalc[{extra}]'" if extra is not None else f"pip install {package}"
        )
        raise MissingExtraError(
            f"{purpose} needs {package}, which is not installed: {how}"
        ) from error


def pyplot(purpose: str):
    """matplotlib's pyplot on the non-interactive Agg backend (files, not windows)."""
    matplotlib = require("matplotlib", purpose)
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", purpose)
