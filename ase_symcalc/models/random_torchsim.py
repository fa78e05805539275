"""Real third-party architectures with random weights, as torch-sim models.

Pretrained weights need downloads, which tests, benchmarks and offline
machines cannot do; the architectures themselves are built here from their
own packages' constructors, seeded, so that the averaging is exercised on the
real code paths (neighbour lists, batching, heads) of each family:

- ``random_orb``: Orb-v3 *direct* (``orb_v3_direct_architecture``), not
  equivariant by construction; ``size="full"`` is the published size (25M
  parameters), ``"small"`` a narrow one for fast tests.
- ``random_mace``: a small ``ScaleShiftMACE`` (equivariant by construction:
  a control, its average must equal it).
- ``shipped_pet``: the shipped ``pet-cu-emt`` through ``metatomic-torchsim``.

Needs torch-sim and the model packages (``torch-sim-atomistic[orb,mace,metatomic]``).
"""

from __future__ import annotations

__all__ = ["random_mace", "random_orb", "shipped_pet"]


def random_orb(
    seed: int = 0,
    *,
    size: str = "small",
    max_num_neighbors: int = 120,
    device="cpu",
    dtype=None,
):
    """An Orb-v3 direct model with random weights, as torch-sim's ``OrbModel``.

    ``max_num_neighbors`` 20 is what the ``-20`` pretrained models use: with it
    Orb keeps the 20 nearest neighbours and breaks ties among equal distances
    (perfect crystals) by index order, which differs between copies in a
    batch and looks like equivariance error; 120 (the ``-inf`` models) keeps
    every neighbour within 6 Å of a metal.
    """
    import torch
    from orb_models.forcefield.forcefield_adapter import ForcefieldAtomsAdapter
    from orb_models.forcefield.pretrained import orb_v3_direct_architecture
    from torch_sim.models.orb import OrbModel

    dtype = dtype or torch.float32
    torch.manual_seed(seed)
    if size == "full":
        model = orb_v3_direct_architecture(device=device)
    elif size == "small":
        model = orb_v3_direct_architecture(
            latent_dim=64,
            base_mlp_hidden_dim=128,
            head_mlp_hidden_dim=64,
            num_message_passing_steps=2,
            device=device,
        )
    else:
        raise ValueError(f"size must be 'small' or 'full', got {size!r}")
    model = model.to(dtype=dtype).eval()
    adapter = ForcefieldAtomsAdapter(radius=6.0, max_num_neighbors=max_num_neighbors)
    return OrbModel(model, adapter, device=device, dtype=dtype)


def random_mace(seed: int = 0, *, device="cpu", dtype=None, atomic_numbers=(29,)):
    """A small ``ScaleShiftMACE`` with random weights, as torch-sim's ``MaceModel``."""
    import mace  # noqa: F401  (before e3nn on torch 2.13)
    import numpy as np
    import torch
    from e3nn import o3
    from mace.modules import interaction_classes
    from mace.modules.models import ScaleShiftMACE
    from torch_sim.models.mace import MaceModel

    dtype = dtype or torch.float64
    torch.manual_seed(seed)
    model = ScaleShiftMACE(
        r_max=5.0,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=2,
        interaction_cls=interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2,
        num_elements=len(atomic_numbers),
        hidden_irreps=o3.Irreps("16x0e + 16x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(atomic_numbers)),
        avg_num_neighbors=20.0,
        atomic_numbers=list(atomic_numbers),
        correlation=2,
        gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    # torch-sim's stubs see MaceModel as a fallback class when mace is absent
    return MaceModel(model.to(dtype), device=device, dtype=dtype)  # type: ignore[abstract, arg-type]


def shipped_pet(name: str = "pet-cu-emt", *, device="cpu"):
    """The shipped PET through ``metatomic_torchsim.MetatomicModel``, direct outputs."""
    from metatomic_torchsim import MetatomicModel

    from . import loading
    from . import path as shipped_path

    model_file = shipped_path(name)
    with loading(model_file):
        return MetatomicModel(str(model_file), device=device, non_conservative=True)
