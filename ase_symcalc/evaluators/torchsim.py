"""Batched evaluator for torch-sim models (Orb, MACE, PET through metatomic, ...).

torch-sim's ``ModelInterface`` takes a batch of systems in one forward call.
All M rotated copies of the structure go into one ``SimState`` (reflected
copies too), on the model's device and in its dtype, and run through the
model ``batch_size`` copies at a time (None: all in one call). Outputs come
back in the rotated frame, as float64 numpy, for the shared averaging code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from ._base import StackedOutputs

__all__ = ["TorchSimEvaluator", "is_torchsim_model"]


def is_torchsim_model(model) -> bool:
    """A torch-sim ``ModelInterface``, recognised without importing torch-sim."""
    return any(
        cls.__name__ == "ModelInterface" and cls.__module__.startswith("torch_sim")
        for cls in type(model).__mro__
    )


class TorchSimEvaluator:
    """Run a torch-sim model on many rotated copies of one structure, batched.

    Parameters
    ----------
    model :
        A torch-sim ``ModelInterface`` (``OrbModel``, ``MaceModel``,
        ``metatomic_torchsim.MetatomicModel``, a ``SumModel``, ...).
    batch_size :
        Copies per forward call; None (default): calls of up to 128 atoms on
        CPU (batching costs there: one copy per call for 108 atoms) and 2048
        on GPU (``_torchsim_copies.DEFAULT_ATOMS_PER_CALL``). Memory grows
        with the atoms of a call.
    """

    def __init__(self, model, batch_size: int | None = None):
        if not is_torchsim_model(model):
            raise TypeError(f"expected a torch-sim ModelInterface, got {type(model).__name__}")
        self.model = model
        self.batch_size = batch_size
        self.name = f"torch-sim model {type(model).__name__}"
        self.implemented_properties = ["energy"]
        if model.compute_forces:
            self.implemented_properties.append("forces")
        if model.compute_stress:
            self.implemented_properties.append("stress")

    def available_properties(self, atoms: Atoms) -> set[str]:
        available = set(self.implemented_properties)
        if not (atoms.pbc.all() and atoms.cell.rank == 3):
            available.discard("stress")
        return available

    def evaluate(
        self, atoms: Atoms, matrices: np.ndarray, properties: Sequence[str]
    ) -> StackedOutputs:
        from .._torchsim_copies import copies_of_atoms, run_model

        n_copies, n_atoms = len(matrices), len(atoms)
        state, _ = copies_of_atoms(atoms, matrices, self.model.device, self.model.dtype)
        try:
            outputs = run_model(self.model, state, self.batch_size)
        except Exception as error:
            if hasattr(error, "add_note"):
                error.add_note(f"raised by {self.name} on {n_copies} rotated copies")
            raise

        def numpy(name, shape):
            if name not in properties or name not in outputs:
                return None
            return outputs[name].detach().to("cpu").double().numpy().reshape(shape)

        return StackedOutputs(
            energy=numpy("energy", (n_copies,)),
            forces=numpy("forces", (n_copies, n_atoms, 3)),
            stress=numpy("stress", (n_copies, 3, 3)),
        )
