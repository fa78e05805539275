"""Rotated copies of torch-sim states, and running a torch-sim model on them.

torch-sim's ``SimState`` holds a batch of systems: ``positions [N, 3]``,
``cell [S, 3, 3]`` as *column* vectors (``state.cell[s] = H_s^T`` with ASE's
row cell ``H_s``; ``row_vector_cell`` is the ASE layout), ``system_idx [N]``,
one ``pbc`` for the batch. A copy ``g.x`` has positions ``P g^T`` and row
cell ``H R^T`` (``R`` the proper part of ``g``, so the cell stays
right-handed, as in ``transforms.apply_to_cell``); as columns that is
``R H^T``.

Copies are ordered copy by copy: expanded system ``m * S + s`` is ``g_m.x_s``
and its atoms are the batch's atoms in their order. Every index is then an
arithmetic one (no per-system loop, no host sync), and the model's outputs
fold back by a reshape: energy ``(M, S)``, forces ``(M, N, 3)``, stress
``(M, S, 3, 3)``. Needs torch only; ``torch_sim`` is imported when a state is
built.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DEFAULT_ATOMS_PER_CALL", "copies_of_atoms", "copies_state", "run_copies"]

#: without a batch size, copies go through the model in calls of at most this
#: many atoms (at least one copy of the batch per call, which the model runs on
#: unwrapped anyway). CPU: batching does not pay, it costs (full-size Orb-v3,
#: 108 atoms, 24 copies, 1 thread: 18.9 s one copy per call, 20.6 s four,
#: 33.3 s nine; the loop of ASE calls 22.3 s), so only small structures are
#: batched. GPU: batches fill the device; a full-size Orb-v3 holds about 0.6 GB
#: per 108 atoms with 20 neighbours (1.8 GB with 120), so all 120 copies of a
#: 108-atom cell in one call would need 70 GB+.
DEFAULT_ATOMS_PER_CALL = {"cpu": 128, "cuda": 2048}


def _proper(matrices: torch.Tensor) -> torch.Tensor:
    return matrices * torch.sign(torch.linalg.det(matrices))[:, None, None]


def n_systems(state) -> int:
    """The batch's S, from the cell's shape (``SimState.n_systems`` counts the
    distinct ``system_idx`` values, a host sync on a GPU)."""
    return int(state.cell.shape[0])


def copies_state(state, matrices: torch.Tensor):
    """A ``SimState`` with the M copies ``g_m.x_s`` of every system, copy by copy.

    ``matrices`` (M, 3, 3) are cast to the state's dtype and device (a
    float32 model gets float32 rotations). Per-system extras (charge, spin)
    are repeated for every copy.
    """
    import torch_sim as ts

    matrices = matrices.to(device=state.device, dtype=state.dtype)
    n_copies, n_batch = len(matrices), n_systems(state)
    positions = torch.einsum("mij,nj->mni", matrices, state.positions).reshape(-1, 3)
    cells = (_proper(matrices)[:, None] @ state.cell[None]).reshape(-1, 3, 3)  # R H^T
    offsets = n_batch * torch.arange(n_copies, device=state.device)
    copies = ts.SimState(
        positions=positions,
        masses=state.masses.repeat(n_copies),
        cell=cells,
        pbc=state.pbc,
        atomic_numbers=state.atomic_numbers.repeat(n_copies),
        system_idx=(state.system_idx[None] + offsets[:, None]).reshape(-1),
    )
    for key, value in getattr(state, "_system_extras", {}).items():
        if key in ("charge", "spin") and value.shape[0] == n_batch:
            copies._system_extras[key] = value.repeat(n_copies, *([1] * (value.dim() - 1)))
    return copies


def copies_per_call(state, batch_size: int | None) -> int:
    """Copies of the whole batch per model call: ``batch_size`` inner systems
    (at least one copy), or (None) up to ``DEFAULT_ATOMS_PER_CALL`` atoms."""
    if batch_size is not None:
        return max(1, batch_size // n_systems(state))
    limit = DEFAULT_ATOMS_PER_CALL["cpu" if state.device.type == "cpu" else "cuda"]
    return max(1, limit // max(state.n_atoms, 1))


def run_copies(model, state, matrices, batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """The model on every copy ``g_m.x_s``: ``energy (M, S)``, ``forces (M, N, 3)``,
    ``stress (M, S, 3, 3)`` (what it computes), in the rotated frame, detached.

    The copies are built and run ``copies_per_call`` at a time, so memory is
    bounded by one call, not by M.
    """
    if not torch.is_tensor(matrices):  # a copy: rule matrices are read-only arrays
        matrices = torch.tensor(np.array(matrices, dtype=np.float64))
    matrices = matrices.to(device=state.device, dtype=torch.float64)
    n_batch, n_atoms = n_systems(state), state.n_atoms
    if batch_size is not None and batch_size < n_batch:
        return _run_in_groups(model, state, matrices, batch_size)
    step = copies_per_call(state, batch_size)
    pieces: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(matrices), step):
        chunk = matrices[start : start + step]
        output = model(copies_state(state, chunk))
        k = len(chunk)
        shapes = {"energy": (k, n_batch), "forces": (k, n_atoms, 3), "stress": (k, n_batch, 3, 3)}
        for key, shape in shapes.items():
            value = output.get(key)
            if value is not None:
                pieces.setdefault(key, []).append(value.detach().reshape(shape))
    return {key: torch.cat(values) for key, values in pieces.items()}


def _run_in_groups(model, state, matrices, batch_size: int) -> dict[str, torch.Tensor]:
    """``run_copies`` when ``batch_size`` is below the batch's S: every copy of the
    batch in groups of ``batch_size`` systems (a host loop over the groups, the
    smaller calls the user asked for). torch-sim keeps a batch's atoms ordered
    by system, so the groups' outputs join in order."""
    n_batch = n_systems(state)
    groups = [list(range(a, min(a + batch_size, n_batch))) for a in range(0, n_batch, batch_size)]
    parts = [state[group] for group in groups]
    copies: dict[str, list[torch.Tensor]] = {}
    for m in range(len(matrices)):
        joined: dict[str, list[torch.Tensor]] = {}
        for part in parts:
            output = model(copies_state(part, matrices[m : m + 1]))
            for key in ("energy", "forces", "stress"):  # (|g|,), (n_g, 3), (|g|, 3, 3)
                if output.get(key) is not None:
                    joined.setdefault(key, []).append(output[key].detach())
        for key, values in joined.items():
            copies.setdefault(key, []).append(torch.cat(values))
    return {key: torch.stack(values) for key, values in copies.items()}


def copies_of_atoms(atoms, device, dtype):
    """A one-system ``SimState`` of an ASE ``Atoms``, for ``run_copies``."""
    import torch_sim as ts

    return ts.io.atoms_to_state([atoms], device=device, dtype=dtype)
