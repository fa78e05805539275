"""Any architecture as a torch-sim model: ``orb:FILE``, ``mace:FILE``, ``metatomic:FILE``.

Users name a model the way janus-core does: an architecture and a file
(``--arch orb --model-path FILE`` or ``orb:FILE``). Each is built with its
own package's torch-sim wrapper, on the device asked for (default: CUDA when
there is one) and in the architecture's usual dtype:

- ``orb:FILE``: an Orb-v3 *direct* model (``orb_v3_direct_architecture``,
  radius 6 Å) with the weights of ``FILE`` (a state dict, as orb-models'
  ``load_model`` reads); ``max_num_neighbors`` 120 when the file name holds
  ``inf`` (the ``-inf`` models), 20 otherwise (``-20``).
- ``mace:FILE``: a MACE model file (``torch.save``\\ d, as MACE writes them),
  float64.
- ``metatomic:FILE``: an exported metatomic model (``.pt``), with its direct
  (non-conservative) outputs when it has them.

Named pretrained models (``orb-v3-direct-20-omat``, ``mace-mp-0``, ``pet-mad``,
...) are downloaded by their packages on first use; this machine-independent
package never downloads, and says which file to give instead.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ARCHITECTURES", "is_architecture_spec", "load_torchsim_model", "split_spec"]

ARCHITECTURES = ("orb", "mace", "metatomic")

#: pretrained names that need a download, and where their file comes from
DOWNLOADS = {
    "orb-v3-direct-20-omat": "orb",
    "orb-v3-direct-inf-omat": "orb",
    "orb-v3-conservative-inf-omat": "orb",
    "orb-v3-direct-20-mpa": "orb",
    "mace-mp-0": "mace",
    "mace-mpa-0": "mace",
    "mace-omat-0": "mace",
    "pet-mad": "metatomic",
    "upet": "metatomic",
}


def split_spec(spec: str) -> tuple[str, str] | None:
    """``"orb:FILE"`` -> ``("orb", "FILE")``; None for anything else."""
    if not isinstance(spec, str):
        return None
    arch, sep, path = spec.partition(":")
    if sep and arch.lower() in ARCHITECTURES and path:
        return arch.lower(), path
    return None


def is_architecture_spec(spec) -> bool:
    return split_spec(spec) is not None


def download_message(name: str) -> str | None:
    """The one-line error for a named pretrained model, or None if ``name`` is none."""
    arch = DOWNLOADS.get(str(name).lower())
    if arch is None:
        return None
    return (
        f"'{name}' is a pretrained {arch} model that its package downloads on first use, "
        f"and ase_symcalc does not download: download it where you have network access and "
        f"give the file instead, --model {arch}:FILE (or --arch {arch} --model-path FILE)"
    )


def load_torchsim_model(arch: str, path, *, device=None, dtype=None):
    """A torch-sim ``ModelInterface`` for ``arch`` with the weights in ``path``."""
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
    loader = {"orb": _orb, "mace": _mace, "metatomic": _metatomic}[arch]
    try:
        return loader(path, torch.device(device), dtype)
    except ImportError as error:
        raise ImportError(
            f"the {arch} architecture needs its package and torch-sim (Python >= 3.12): "
            f"pip install 'torch-sim-atomistic[{arch}]' ({error})"
        ) from error


def _orb(path: Path, device, dtype):
    import torch
    from orb_models.forcefield.forcefield_adapter import ForcefieldAtomsAdapter
    from orb_models.forcefield.pretrained import orb_v3_direct_architecture
    from torch_sim.models.orb import OrbModel

    neighbours = 120 if "inf" in path.name.lower() else 20
    model = orb_v3_direct_architecture(device=device)
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    adapter = ForcefieldAtomsAdapter(radius=6.0, max_num_neighbors=neighbours)
    return OrbModel(model, adapter, device=device, dtype=dtype or torch.float32)


def _mace(path: Path, device, dtype):
    import mace  # noqa: F401  (before e3nn: mace sets torch's weights-only default)
    import torch
    from torch_sim.models.mace import MaceModel

    return MaceModel(str(path), device=device, dtype=dtype or torch.float64)


def _metatomic(path: Path, device, dtype):
    from metatomic.torch import load_atomistic_model
    from metatomic_torchsim import MetatomicModel

    outputs = load_atomistic_model(str(path)).capabilities().outputs
    direct = any(name.startswith("non_conservative_force") for name in outputs)
    return MetatomicModel(str(path), device=device, non_conservative=direct)
