"""Any architecture from a file: ``orb:FILE``, ``mace:FILE``, ``sevennet:FILE``, ...

Users name a model the way janus-core does: an architecture and a file
(``--arch orb --model-path FILE`` or ``orb:FILE``). Each is built with its
own package, on the device asked for (default: CUDA when there is one) and in
the architecture's usual dtype:

- ``orb:FILE``: an Orb-v3 model (torch-sim's ``OrbModel``) with the weights of
  ``FILE`` (a state dict, as orb-models' ``load_model`` reads). Direct or
  conservative is read from the weights (a ``forces`` head, or the gradient
  normalizers); ``max_num_neighbors`` is 120 when the file name holds ``inf``
  (the ``-inf`` models), 20 otherwise (``-20``).
- ``mace:FILE``: a MACE model file (``torch.save``\\ d, as MACE writes them),
  float64, through torch-sim's ``MaceModel``.
- ``sevennet:FILE``: a SevenNet checkpoint, through ``sevenn``'s torch-sim
  ``SevenNetModel`` (float32).
- ``mattersim:FILE``: MatterSim's own ASE calculator; ``fairchem:FILE``:
  fairchem's torch-sim ``FairChemModel``; where those packages are installed
  (neither is a test dependency: their loaders are not exercised here).
- ``chgnet:FILE``: a CHGNet checkpoint as CHGNet's own ASE calculator (CHGNet
  has no torch-sim wrapper; the generic ASE loop runs it).
- ``upet:FILE``: a UPET checkpoint (``pet-mad-s-v1.0.2.ckpt``), exported with
  ``upet.get_upet``; ``metatomic:FILE``: an exported metatomic model (``.pt``),
  with its direct (non-conservative) outputs when it has them.

Named pretrained models (``orb-v3-direct-20-omat``, ``sevennet-0``, ...) are
found, or downloaded, by ``ase_symcalc.models.named`` and built here.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

__all__ = ["ARCHITECTURES", "is_architecture_spec", "load_architecture", "split_spec"]

#: architecture -> the pip install that provides it
ARCHITECTURES = {
    "orb": "torch-sim-atomistic[orb]",
    "mace": "torch-sim-atomistic[mace]",
    "metatomic": "metatomic-torchsim",
    "upet": "upet",
    "sevennet": "sevenn",
    "chgnet": "chgnet",
    "mattersim": "mattersim",
    "fairchem": "torch-sim-atomistic[fairchem]",
}


def split_spec(spec) -> tuple[str, str] | None:
    """``"orb:FILE"`` -> ``("orb", "FILE")``; None for anything else."""
    if not isinstance(spec, str):
        return None
    arch, sep, path = spec.partition(":")
    if sep and arch.lower() in ARCHITECTURES and path:
        return arch.lower(), path
    return None


def is_architecture_spec(spec) -> bool:
    return split_spec(spec) is not None


def load_architecture(arch: str, path, *, device=None, dtype=None, **options):
    """The model in ``path`` built with ``arch``'s package.

    A torch-sim ``ModelInterface`` (orb, mace, metatomic, sevennet, fairchem),
    an ASE calculator (chgnet, mattersim) or a metatomic ``AtomisticModel``
    (upet): whatever ``SymmetrizedCalculator`` takes.
    """
    import torch

    arch = arch.lower()
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)} "
            "(or a shipped model name / a metatomic .pt file without a prefix)"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{arch} model file '{path}' does not exist")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loader = _LOADERS[arch]
    try:
        return loader(path, torch.device(device), dtype, **options)
    except ImportError as error:
        raise ImportError(
            f"the {arch} architecture needs its package: pip install '{ARCHITECTURES[arch]}' "
            f"({error})"
        ) from error


def orb_is_conservative(state: dict) -> bool:
    """Whether an Orb-v3 state dict holds a conservative model (no direct forces head)."""
    if any(key.startswith("heads.forces.") for key in state):
        return False
    if any(key.startswith("grad_forces_normalizer.") for key in state):
        return True
    raise ValueError(
        "the file is not an Orb-v3 state dict (it has neither a 'heads.forces' head nor "
        "'grad_forces_normalizer'): give the .ckpt that orb-models publishes"
    )


def _orb(path: Path, device, dtype, max_num_neighbors=None):
    import torch
    from orb_models.forcefield.forcefield_adapter import ForcefieldAtomsAdapter
    from orb_models.forcefield.pretrained import (
        orb_v3_conservative_architecture,
        orb_v3_direct_architecture,
    )
    from torch_sim.models.orb import OrbModel

    neighbours = max_num_neighbors or (120 if "inf" in path.name.lower() else 20)
    state = torch.load(path, map_location=device, weights_only=True)
    if orb_is_conservative(state):
        model = orb_v3_conservative_architecture(device=device)
    else:
        model = orb_v3_direct_architecture(device=device)
    model.load_state_dict(state, strict=True)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # autograd still differentiates the positions
    adapter = ForcefieldAtomsAdapter(radius=6.0, max_num_neighbors=neighbours)
    return OrbModel(model, adapter, device=device, dtype=dtype or torch.float32)


def _mace(path: Path, device, dtype):
    import mace  # noqa: F401  (before e3nn: mace sets torch's weights-only default)
    import torch
    from torch_sim.models.mace import MaceModel

    # torch-sim's stubs see MaceModel as a fallback class when mace is absent
    return MaceModel(  # type: ignore[abstract]
        str(path),  # type: ignore[arg-type]
        device=device,
        dtype=dtype or torch.float64,
    )


def _metatomic(path: Path, device, dtype):
    from metatomic.torch import load_atomistic_model
    from metatomic_torchsim import MetatomicModel

    outputs = load_atomistic_model(str(path)).capabilities().outputs
    direct = any(name.startswith("non_conservative_force") for name in outputs)
    return MetatomicModel(str(path), device=device, non_conservative=direct)


def _upet(path: Path, device, dtype):
    from upet import get_upet

    return get_upet(checkpoint_path=str(path))


def _sevennet(path: Path, device, dtype):
    import torch

    try:
        from sevenn.torchsim import SevenNetModel
    except ValueError as error:  # sevenn refuses e3nn < 0.5 at import
        raise ImportError(
            f"{error} mace-torch pins e3nn==0.4.4, so SevenNet and MACE cannot share one "
            "environment: run SevenNet from an environment without MACE"
        ) from error
    return SevenNetModel(str(path), device=device, dtype=dtype or torch.float32)


def _chgnet(path: Path, device, dtype):
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    # CHGNet prints its parameter count and device on stdout, where the
    # commands write their tables
    with contextlib.redirect_stdout(io.StringIO()):
        model = CHGNet.from_file(str(path))
        # per-atom energies come from the same forward pass: ask for them
        return CHGNetCalculator(model=model, use_device=str(device), return_site_energies=True)


def _mattersim(path: Path, device, dtype):
    from mattersim.forcefield import MatterSimCalculator

    return MatterSimCalculator(load_path=str(path), device=str(device))


def _fairchem(path: Path, device, dtype):
    from fairchem.core.calculate.torchsim_interface import FairChemModel

    return FairChemModel(model=str(path), device=device)


_LOADERS = {
    "orb": _orb,
    "mace": _mace,
    "metatomic": _metatomic,
    "upet": _upet,
    "sevennet": _sevennet,
    "chgnet": _chgnet,
    "mattersim": _mattersim,
    "fairchem": _fairchem,
}
