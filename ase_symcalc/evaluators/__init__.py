"""Evaluators: run a model on many rotated copies of a structure."""

from __future__ import annotations

import os

from ._base import Evaluator, StackedOutputs, check_outputs
from .ase_loop import ASECalculatorEvaluator, rotated_atoms

__all__ = [
    "ASECalculatorEvaluator",
    "Evaluator",
    "StackedOutputs",
    "check_outputs",
    "make_evaluator",
    "rotated_atoms",
]


def _is_metatomic(base) -> bool:
    if isinstance(base, (str, os.PathLike)):
        return True
    name = type(base).__name__
    if name == "MetatomicCalculator":
        return True
    # an exported AtomisticModel, loaded or scripted
    return name == "AtomisticModel" or getattr(base, "original_name", None) == "AtomisticModel"


def make_evaluator(base, *, batch_size=None, forces=None, variant=None) -> Evaluator:
    """Pick the evaluator for ``base``.

    An ``Evaluator`` is used as is; a metatomic model (a ``.pt`` path, an
    ``AtomisticModel`` or a ``MetatomicCalculator``) gets the batched
    ``MetatomicEvaluator`` (``forces``: ``"direct"``, ``"conservative"`` or
    ``None`` for the model's own kind; ``variant``: its output variant); any
    other ASE calculator the generic loop.
    """
    if isinstance(base, Evaluator) and not hasattr(base, "get_property"):
        return base
    if _is_metatomic(base):
        from .metatomic import MetatomicEvaluator

        return MetatomicEvaluator(base, batch_size=batch_size, forces=forces, variant=variant)
    return ASECalculatorEvaluator(base)
