"""Rotated copies of torch-sim states, and running a torch-sim model on them.

torch-sim's ``SimState`` holds a batch of systems: ``positions [N, 3]``,
``cell [S, 3, 3]`` as *column* vectors (``state.cell[s] = H_s^T`` with ASE's
row cell ``H_s``; ``row_vector_cell`` is the ASE layout), ``system_idx [N]``,
one ``pbc`` for the batch. A copy ``g.x`` has positions ``P g^T`` and row
cell ``H R^T`` (``R`` the proper part of ``g``, so the cell stays
right-handed, as in ``transforms.apply_to_cell``); as columns that is
``R H^T``. Copies are ordered system by system, ``s * M + m``. Needs torch
only; the ``torch_sim`` import happens when a state is built.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["CopyLayout", "DEFAULT_ATOMS_PER_CALL", "copies_state", "run_model", "copies_of_atoms"]

#: without a batch size, copies go through the model in calls of at most this
#: many atoms (at least one copy per call). CPU: batching does not pay, it
#: costs (full-size Orb-v3, 108 atoms, 24 copies, 1 thread: 18.9 s one copy
#: per call, 20.6 s four, 33.3 s nine; the loop of ASE calls 22.3 s), so only
#: small structures are batched. GPU: batches fill the device; a full-size
#: Orb-v3 holds about 0.6 GB per 108 atoms with 20 neighbours (1.8 GB with
#: 120), so all 120 copies of a 108-atom cell in one call would need 70 GB+.
DEFAULT_ATOMS_PER_CALL = {"cpu": 128, "cuda": 2048}


class CopyLayout:
    """Where the atoms of the S x M copies come from, and how to fold them back.

    ``gather[k]`` is the atom of the input state that expanded atom ``k``
    copies; ``copy_of_atom[k]`` its copy's rule index ``m``; expanded system
    ``s * M + m`` holds the atoms ``gather[starts[s] * M + m * n_s ...]``.
    """

    def __init__(self, system_idx: torch.Tensor, n_systems: int, n_copies: int):
        device = system_idx.device
        counts = torch.bincount(system_idx, minlength=n_systems)
        order = torch.argsort(system_idx, stable=True)  # atoms grouped by system
        self.n_systems, self.n_copies = n_systems, n_copies
        self.counts = counts.tolist()
        self.atoms_of_system = list(torch.split(order, self.counts))
        gather, copy_of_atom = [], []
        for atoms in self.atoms_of_system:
            gather.append(atoms.repeat(n_copies))
            copy_of_atom.append(torch.arange(n_copies, device=device).repeat_interleave(len(atoms)))
        self.gather = torch.cat(gather)
        self.copy_of_atom = torch.cat(copy_of_atom)
        self.system_of_copy = torch.arange(n_systems, device=device).repeat_interleave(n_copies)
        # expanded system index of every expanded atom
        self.expanded_system_idx = torch.repeat_interleave(
            torch.arange(n_systems * n_copies, device=device),
            torch.tensor(self.counts, device=device).repeat_interleave(n_copies),
        )


def _proper(matrices: torch.Tensor) -> torch.Tensor:
    return matrices * torch.sign(torch.linalg.det(matrices))[:, None, None]


def copies_state(state, matrices: torch.Tensor, layout: CopyLayout | None = None):
    """A ``SimState`` with the M copies ``g_m.x_s`` of every system, and its layout.

    ``matrices`` (M, 3, 3) are cast to the state's dtype and device (a
    float32 model gets float32 rotations). Per-system extras (charge, spin)
    are repeated for every copy.
    """
    import torch_sim as ts

    matrices = matrices.to(device=state.device, dtype=state.dtype)
    n_copies = len(matrices)
    if layout is None:
        layout = CopyLayout(state.system_idx, state.n_systems, n_copies)
    g_atom = matrices[layout.copy_of_atom]  # (K, 3, 3)
    positions = torch.einsum("kij,kj->ki", g_atom, state.positions[layout.gather])
    proper = _proper(matrices)
    cells = state.cell[layout.system_of_copy]  # columns H^T
    cells = proper.repeat(state.n_systems, 1, 1) @ cells  # R H^T
    copies = ts.SimState(
        positions=positions,
        masses=state.masses[layout.gather],
        cell=cells,
        pbc=state.pbc,
        atomic_numbers=state.atomic_numbers[layout.gather],
        system_idx=layout.expanded_system_idx,
    )
    for key, value in getattr(state, "_system_extras", {}).items():
        if key in ("charge", "spin") and value.shape[0] == state.n_systems:
            copies._system_extras[key] = value.repeat_interleave(n_copies, dim=0)
    return copies, layout


def chunks(state, batch_size: int | None) -> list[list[int]]:
    """Systems per call: ``batch_size`` at a time, or (None) up to
    ``DEFAULT_ATOMS_PER_CALL`` atoms of the device at a time, at least one
    system per call."""
    n_systems = state.n_systems
    if batch_size is not None:
        return [
            list(range(start, min(start + batch_size, n_systems)))
            for start in range(0, n_systems, batch_size)
        ]
    limit = DEFAULT_ATOMS_PER_CALL["cpu" if state.device.type == "cpu" else "cuda"]
    counts = torch.bincount(state.system_idx, minlength=n_systems).tolist()
    groups: list[list[int]] = []
    current: list[int] = []
    atoms = 0
    for system, count in enumerate(counts):
        if current and atoms + count > limit:
            groups.append(current)
            current, atoms = [], 0
        current.append(system)
        atoms += count
    groups.append(current)
    return groups


def run_model(model, state, batch_size: int | None) -> dict[str, torch.Tensor]:
    """``model(state)``, in calls of ``batch_size`` systems (see ``chunks``)."""
    groups = chunks(state, batch_size)
    if len(groups) == 1:
        return _outputs(model(state))
    pieces: dict[str, list] = {}
    for indices in groups:
        for key, value in _outputs(model(state[indices])).items():
            pieces.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in pieces.items()}


def _outputs(output: dict) -> dict[str, torch.Tensor]:
    return {
        key: value.detach()
        for key, value in output.items()
        if key in ("energy", "forces", "stress") and value is not None
    }


def copies_of_atoms(atoms, matrices: np.ndarray, device, dtype):
    """One ``SimState`` of the M copies of an ASE ``Atoms`` (ordered like ``matrices``)."""
    import torch_sim as ts

    state = ts.io.atoms_to_state([atoms], device=device, dtype=dtype)
    return copies_state(state, torch.as_tensor(np.array(matrices, dtype=np.float64)))
