"""Batched evaluator for torch-sim models (Orb, MACE, PET through metatomic, ...).

torch-sim's ``ModelInterface`` takes a batch of systems in one forward call.
All M rotated copies of the structure go into one ``SimState`` (reflected
copies too), on the model's device and in its dtype, and run through the
model ``batch_size`` copies at a time (None: all in one call). Outputs come
back in the rotated frame, as float64 numpy, for the shared averaging code.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence

import numpy as np
from ase import Atoms

from ._base import StackedOutputs, check_elements

__all__ = ["FEATURE_LAYERS", "TorchSimEvaluator", "is_torchsim_model"]

#: the per-atom features analysed layer by layer, by module name in the torch-sim
#: wrapper: Orb's message-passing stacks, MACE's products (the node features of
#: each interaction), SevenNet's gates (the end of each interaction) and its last
#: invariant features
FEATURE_LAYERS = (
    r"model\.model\.gnn_stacks\.\d+",
    r"model\.products\.\d+",
    r"model\.\d+_equivariant_gate",
    r"model\.reduce_input_to_hidden",
)


def is_torchsim_model(model) -> bool:
    """A torch-sim ``ModelInterface`` (an ``isinstance`` check; torch-sim is not
    imported to answer: an instance's class has imported it already)."""
    interface = sys.modules.get("torch_sim.models.interface")
    return interface is not None and isinstance(model, interface.ModelInterface)


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

    @functools.cached_property
    def known_elements(self) -> set[int] | None:
        """The atomic numbers the wrapped model was built for, where it says
        (MACE's ``atomic_numbers``); None otherwise (Orb: every element). Read
        once: a model's elements do not change, and reading a GPU buffer at
        every MD step would sync with the host."""
        inner = getattr(self.model, "model", None)
        numbers = getattr(inner, "atomic_numbers", None)
        if numbers is None or not hasattr(numbers, "tolist"):
            return None
        return {int(z) for z in numbers.tolist()}

    def available_properties(self, atoms: Atoms) -> set[str]:
        available = set(self.implemented_properties)
        if not (atoms.pbc.all() and atoms.cell.rank == 3):
            available.discard("stress")
        return available

    def evaluate(
        self, atoms: Atoms, matrices: np.ndarray, properties: Sequence[str]
    ) -> StackedOutputs:
        from .._torchsim_copies import copies_of_atoms, run_copies

        n_copies, n_atoms = len(matrices), len(atoms)
        check_elements(atoms, self.known_elements, self.name)
        state = copies_of_atoms(atoms, self.model.device, self.model.dtype)
        try:
            outputs = run_copies(self.model, state, matrices, self.batch_size)
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

    # -- internal features, through forward hooks ------------------------------

    def feature_names(self) -> list[str]:
        """Modules whose per-atom output ``evaluate_features`` can record.

        The layers of ``FEATURE_LAYERS`` found in this model, in forward order;
        any other module name (``model.named_modules()``) can be asked for too.
        """
        return [
            name
            for name, _ in self.model.named_modules()
            if any(re.fullmatch(pattern, name) for pattern in FEATURE_LAYERS)
        ]

    def evaluate_features(
        self,
        atoms: Atoms,
        matrices: np.ndarray,
        names: Sequence[str],
        batch_size=None,
        properties: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Per-atom outputs of the modules ``names`` on every copy, ``(M, N, F)`` float64.

        Forward hooks record each module's output during the ordinary forward
        pass: a tensor, the first per-atom tensor of a tuple (Orb's nodes,
        MACE's messages) or the ``x`` / ``node_feats`` entry of a graph
        dictionary (SevenNet). ``properties`` come from the same pass.
        """
        from .._torchsim_copies import copies_of_atoms, run_copies

        modules = dict(self.model.named_modules())
        missing = [name for name in names if name not in modules]
        if missing:
            raise ValueError(
                f"{self.name} has no module {', '.join(map(repr, missing))}; its feature "
                f"layers are: {', '.join(self.feature_names()) or 'none found'} (any name of "
                "model.named_modules() works)"
            )
        n_copies, n_atoms = len(matrices), len(atoms)
        recorded: dict[str, list] = {name: [] for name in names}

        def record(name):
            def hook(module, inputs, output):
                recorded[name].append(_per_atom(output, name))

            return hook

        handles = [modules[name].register_forward_hook(record(name)) for name in names]
        try:
            state = copies_of_atoms(atoms, self.model.device, self.model.dtype)
            outputs = run_copies(self.model, state, matrices, batch_size or self.batch_size)
        finally:
            for handle in handles:
                handle.remove()
        stacked = {}
        for name, chunks in recorded.items():
            values = np.concatenate(chunks) if chunks else np.zeros((0,))
            if values.shape[0] != n_copies * n_atoms:
                raise ValueError(
                    f"module {name!r} of {self.name} did not give one row per atom "
                    f"({values.shape[0]} rows for {n_copies} copies of {n_atoms} atoms): "
                    "pick a module that outputs node features"
                )
            stacked[name] = values.reshape(n_copies, n_atoms, -1)
        shapes = {
            "energy": (n_copies,),
            "forces": (n_copies, n_atoms, 3),
            "stress": (n_copies, 3, 3),
        }
        for name in properties:
            if name in outputs and name in shapes:
                stacked[name] = (
                    outputs[name].detach().to("cpu").double().numpy().reshape(shapes[name])
                )
        return stacked


def _per_atom(output, name: str) -> np.ndarray:
    """The node features in a module's output, as a 2D float64 array (a copy)."""
    import torch

    value = output
    if isinstance(output, (tuple, list)):
        value = next((item for item in output if torch.is_tensor(item)), None)
    elif not torch.is_tensor(output) and hasattr(output, "keys"):
        value = next((output[key] for key in ("x", "node_feats") if key in output.keys()), None)
    if not torch.is_tensor(value):
        raise ValueError(
            f"module {name!r} returned {type(output).__name__}, with no per-atom tensor to record"
        )
    return value.detach().to("cpu").double().numpy().reshape(len(value), -1).copy()
