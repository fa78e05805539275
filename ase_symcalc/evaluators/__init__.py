"""Evaluators: run a model on many rotated copies of a structure."""

from __future__ import annotations

import os

from ._base import (
    Evaluator,
    NonFiniteOutputError,
    StackedOutputs,
    check_outputs,
    check_structure,
)
from .ase_loop import ASECalculatorEvaluator, rotated_atoms
from .torchsim import TorchSimEvaluator, is_torchsim_model

__all__ = [
    "ASECalculatorEvaluator",
    "Evaluator",
    "NonFiniteOutputError",
    "StackedOutputs",
    "TorchSimEvaluator",
    "check_outputs",
    "check_structure",
    "make_evaluator",
    "rotated_atoms",
]


def _is_metatomic(base) -> bool:
    """A ``.pt`` path, a ``MetatomicCalculator`` or an ``AtomisticModel`` (by type:
    an instance's module is imported already, so nothing is imported to answer)."""
    if isinstance(base, (str, os.PathLike)):
        return True
    from .metatomic import is_metatomic_calculator, is_metatomic_model

    return is_metatomic_calculator(base) or is_metatomic_model(base)


def make_evaluator(base, *, batch_size=None, forces=None, variant=None) -> Evaluator:
    """Pick the evaluator for ``base``.

    An ``Evaluator`` is used as is; a metatomic model (a ``.pt`` path, an
    ``AtomisticModel`` or a ``MetatomicCalculator``) gets the batched
    ``MetatomicEvaluator`` (``forces``: ``"direct"``, ``"conservative"`` or
    ``None`` for the model's own kind; ``variant``: its output variant); a
    torch-sim ``ModelInterface`` (Orb, MACE, ...) the batched
    ``TorchSimEvaluator``; any other ASE calculator the generic loop. A string
    ``ARCH:FILE`` or the name of a pretrained model (``models.named``) is
    loaded first, then given the evaluator of what it is.
    """
    if isinstance(base, Evaluator) and not hasattr(base, "get_property"):
        return base
    if is_torchsim_model(base):
        return TorchSimEvaluator(base, batch_size=batch_size)
    from ..models import named
    from ..models.architectures import load_architecture, split_spec

    spec = split_spec(base)
    if spec is not None:  # "orb:FILE", "sevennet:FILE", "chgnet:FILE", ...
        base = load_architecture(*spec)
    elif named.is_named(base) and not os.path.exists(base):  # "orb-v3-direct-20-omat", ...
        base = named.load(base)
    elif isinstance(base, str) and not os.path.exists(base):
        _refuse_unknown_name(base)
    if is_torchsim_model(base):
        return TorchSimEvaluator(base, batch_size=batch_size)
    if _is_metatomic(base):
        from .metatomic import MetatomicEvaluator

        return MetatomicEvaluator(base, batch_size=batch_size, forces=forces, variant=variant)
    return ASECalculatorEvaluator(base)


def _refuse_unknown_name(name: str) -> None:
    """A string that is neither a file, a shipped model nor a pretrained name, and
    looks like a name (no folder, no .pt): one error with the closest names."""
    import difflib

    from ..models import list_pretrained, named

    if os.sep in name or name.endswith(".pt") or name in list_pretrained():
        return
    known = list(list_pretrained()) + list(named.named_models())
    close = difflib.get_close_matches(name.lower(), known, n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    raise FileNotFoundError(
        f"model {name!r} does not exist; give an ASE calculator, a shipped or pretrained "
        f"name{hint} (`ase-symcalc models` lists them), a metatomic .pt file, or ARCH:FILE "
        "(orb:FILE, mace:FILE, ...)"
    )
