"""Evaluators: run a model on many rotated copies of a structure."""

from __future__ import annotations

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


def make_evaluator(base) -> Evaluator:
    """Pick the evaluator for ``base``: an Evaluator as is, else the ASE loop."""
    if isinstance(base, Evaluator) and not hasattr(base, "get_property"):
        return base
    return ASECalculatorEvaluator(base)
