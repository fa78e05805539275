"""Warnings that point at the user's line, not into this package or ASE."""

from __future__ import annotations

import sys
import warnings
from types import FrameType

__all__ = ["EquivarianceWarning", "warn_user"]

_INTERNAL = ("ase_symcalc", "ase", "torch", "torch_sim")


class EquivarianceWarning(UserWarning):
    """A model's equivariance error crossed a level (``mode="random"`` escalation)."""


def warn_user(message: str, category=UserWarning) -> None:
    """``warnings.warn`` at the first frame outside ase_symcalc, ASE, torch and torch-sim."""
    frame: FrameType | None = sys._getframe(1)  # warn_user's caller: stacklevel 2
    level = 2
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in _INTERNAL:
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
