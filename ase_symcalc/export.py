"""The symmetrized model as a metatomic model, for every metatomic engine.

``symmetrized_model`` wraps a metatomic model in metatomic's own
``metatomic.torch.o3.SymmetrizedModel`` (TorchScript, neighbour lists
computed once and rotated, float64 accumulation) and gives it *this*
package's rotations: the same rule, generic orientation and weights as
``SymmetrizedCalculator``, so that any engine that runs metatomic models
(``metatomic_ase.MetatomicCalculator``, i-PI's metatomic driver, LAMMPS
``pair_style metatomic``, torch-sim) averages exactly as the calculator
does. The wrapped model keeps every output of the original under its name
(energy, non-conservative forces and stress, averaged; the energy stays
differentiable, so engines that take forces as minus its gradient get the
gradient of the average) and adds metatomic's ``o3::variance::<name>``
diagnostics.

metatomic's wrapper always averages over the inversion coset too, so only
rules with inversion can be exported.
"""

from __future__ import annotations

import warnings

import numpy as np

from .quadrature import O3Quadrature, get_quadrature

__all__ = ["symmetrized_model"]


def _load(model):
    from metatomic.torch import AtomisticModel, load_atomistic_model

    from .models import list_pretrained, loading
    from .models import path as shipped_path

    if isinstance(model, AtomisticModel):
        return model
    if model is None or str(model) in list_pretrained():
        model = shipped_path(model)
    with loading(model):
        return load_atomistic_model(str(model))


def _proper_half(rule: O3Quadrature) -> tuple[np.ndarray, np.ndarray]:
    """The proper rotations and their weights of a rule closed under inversion."""
    dets = np.linalg.det(rule.matrices)
    proper = rule.matrices[dets > 0]
    weights = rule.weights[dets > 0]
    improper = rule.matrices[dets < 0]
    if len(improper) != len(proper) or not np.allclose(improper, -proper, atol=1e-12):
        raise ValueError(
            f"rule {rule.name} is not a proper rule plus its inversion coset (g and -g with "
            "equal weights), which is what metatomic's SymmetrizedModel averages over; "
            "export it with inversion=True"
        )
    return proper, 2.0 * weights


def symmetrized_model(
    model=None,
    *,
    quadrature="group:I",
    inversion: bool = True,
    orientation="generic",
    batch_size: int = 1,
):
    """A metatomic ``AtomisticModel`` averaging ``model`` over a rule of this package.

    ``model``: a shipped name (default: the shipped model), a ``.pt`` path or
    an ``AtomisticModel``. ``quadrature``, ``inversion`` and ``orientation``
    as in ``get_quadrature`` (``inversion`` must be True); ``batch_size``
    rotated copies per model call (default 1: fastest on CPU, where one copy
    already fills the cores, ``benchmarks/bench_engines.py``; raise it on a
    GPU). Save with ``.save(path)``.
    """
    import torch
    from metatomic.torch.o3 import SymmetrizedModel
    from metatomic.torch.o3._transformations import O3Transformations

    if not inversion:
        raise ValueError(
            "metatomic's SymmetrizedModel always averages over inversion: export with "
            "inversion=True"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    rule = get_quadrature(quadrature, inversion=True, orientation=orientation)
    proper, weights = _proper_half(rule)
    source = _load(model)
    with warnings.catch_warnings():
        # wrap() rebuilds the model and repeats the output-name deprecation that
        # loading it already reported (or silenced, for the shipped files)
        warnings.filterwarnings("ignore", message=r"the '\w+' output name is deprecated")
        wrapped = SymmetrizedModel.wrap(source, batch_size=batch_size)
    module = wrapped.module
    # metatomic builds its own Lebedev rule; swap in ours (private fields,
    # metatomic-torch 0.1.x, pinned in pyproject and tested)
    dtype = module._rotation_weights.dtype
    rotations = torch.tensor(proper, dtype=dtype)
    lmax = module._max_angular_momentum_wigner
    module._batches = torch.nn.ModuleList(
        [
            O3Transformations(rotations[start : start + batch_size], lmax)
            for start in range(0, len(proper), batch_size)
        ]
    )
    module._rotation_weights = torch.tensor(weights, dtype=dtype)
    return wrapped
