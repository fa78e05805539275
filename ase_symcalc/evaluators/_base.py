"""The evaluator seam: run a model on many rotated copies of one structure.

An evaluator takes a structure and a stack of O(3) matrices and returns the
model's outputs on every copy ``g_i.x``, in the *rotated* (direct) frame,
stacked along a first axis of length M. The symmetrizer back-rotates and
averages; the evaluator only has to be fast. The generic loop over an ASE
calculator lives in ``ase_loop``; batched torch evaluators plug in beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from ase import Atoms

from .._arrays import Array, concatenate

__all__ = [
    "Evaluator",
    "NonFiniteOutputError",
    "StackedOutputs",
    "check_outputs",
    "check_structure",
]


class NonFiniteOutputError(ValueError):
    """A model returned NaN or infinity; names the property, the copy and the atom."""

    def __init__(self, message: str, name: str, copy: int, atom: int | None):
        super().__init__(message)
        self.name = name
        self.copy = copy
        self.atom = atom
        #: the MD step at which it happened, where a driver knows it
        self.step: int | None = None


@dataclass
class StackedOutputs:
    """Outputs on M rotated copies, in the rotated frame, float64.

    energy : (M,) eV; forces : (M, N, 3) eV/Å; stress : (M, 3, 3) eV/Å^3
    (full matrix, possibly asymmetric for direct-stress models); energies :
    (M, N) eV; free_energy : (M,) eV, only from a base whose free energy is
    its own (Mermin, with smearing). Absent properties are None. numpy arrays from the evaluators,
    torch tensors inside the torch-sim model. ``direct_forces`` and
    ``direct_stress`` hold a model's direct (non-conservative) predictions when
    ``forces`` and ``stress`` are the conservative ones and the model has both.
    """

    energy: Array
    forces: Array | None = None
    stress: Array | None = None
    energies: Array | None = None
    direct_forces: Array | None = None
    direct_stress: Array | None = None
    #: (M,) eV: a base's free energy where it reports one of its own (smearing)
    free_energy: Array | None = None

    def __len__(self) -> int:
        return len(self.energy)

    def select(self, index) -> StackedOutputs:
        """The outputs of a subset of copies (an index array or a slice)."""

        def pick(array):
            return None if array is None else array[index]

        return StackedOutputs(
            pick(self.energy),
            pick(self.forces),
            pick(self.stress),
            pick(self.energies),
            pick(self.direct_forces),
            pick(self.direct_stress),
            pick(self.free_energy),
        )

    def concatenate(self, other: StackedOutputs) -> StackedOutputs:
        """These copies followed by ``other``'s (properties both have)."""

        def join(first, second):
            return None if first is None or second is None else concatenate([first, second])

        return StackedOutputs(
            join(self.energy, other.energy),
            join(self.forces, other.forces),
            join(self.stress, other.stress),
            join(self.energies, other.energies),
            join(self.direct_forces, other.direct_forces),
            join(self.direct_stress, other.direct_stress),
            join(self.free_energy, other.free_energy),
        )


@runtime_checkable
class Evaluator(Protocol):
    """Runs one model on rotated copies of a structure."""

    #: readable name of the model, used in error messages
    name: str
    #: what the model can give at all (energy, forces, stress, energies)
    implemented_properties: list[str]

    def available_properties(self, atoms: Atoms) -> set[str]:
        """Which of energy, forces, stress, energies the model gives for ``atoms``."""

    def evaluate(
        self, atoms: Atoms, matrices: np.ndarray, properties: Sequence[str]
    ) -> StackedOutputs:
        """Outputs on every ``g.x`` for ``g`` in ``matrices`` (M, 3, 3)."""


_SHAPES = {
    "energy": lambda n: (),
    "forces": lambda n: (n, 3),
    "stress": lambda n: (3, 3),
    "energies": lambda n: (n,),
}


def check_outputs(
    outputs: StackedOutputs,
    n_atoms: int,
    n_copies: int,
    properties: Sequence[str],
    model_name: str,
) -> None:
    """Raise a ValueError naming the property and the copy if anything is off."""
    for name in properties:
        values = getattr(outputs, name)
        if values is None:
            raise ValueError(f"{model_name} returned no {name!r} for the rotated copies")
        expected = (n_copies, *_SHAPES[name](n_atoms))
        if values.shape != expected:
            raise ValueError(
                f"{model_name} returned {name!r} with shape {values.shape}, "
                f"expected {expected} ({n_copies} rotated copies of {n_atoms} atoms)"
            )
        finite = np.isfinite(values.reshape(n_copies, -1)).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            atom = None
            if name in ("forces", "energies"):
                per_atom = np.isfinite(values[bad].reshape(n_atoms, -1)).all(axis=1)
                atom = int(np.flatnonzero(~per_atom)[0])
            raise NonFiniteOutputError(
                f"{model_name} returned non-finite {name!r} for rotated copy {bad} "
                f"(of {n_copies}){'' if atom is None else f' on atom {atom}'}; the structure "
                "or the model is broken there",
                name,
                bad,
                atom,
            )


def check_structure(atoms: Atoms) -> None:
    """Raise a ValueError for what no model can take: non-finite positions or cell,
    a degenerate periodic cell (checked before any copy is evaluated)."""
    finite = np.isfinite(atoms.positions).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"atom {int(np.flatnonzero(~finite)[0])} has a non-finite position; the structure "
            "is broken (a previous step may have exploded: check the time step)"
        )
    cell = atoms.cell.array
    periodic = np.flatnonzero(atoms.pbc)
    if not np.isfinite(cell).all():
        raise ValueError("the cell has non-finite entries; fix atoms.cell")
    if len(periodic):
        vectors = cell[periodic]
        lengths = np.linalg.norm(vectors, axis=1)
        smallest = np.linalg.svd(vectors, compute_uv=False).min()
        if lengths.min() < 1e-3 or smallest < 1e-3 * max(lengths.max(), 1.0):
            raise ValueError(
                f"the cell is degenerate along its periodic directions (pbc="
                f"{atoms.pbc.tolist()}, lengths {np.round(lengths, 4).tolist()} Å); give a "
                "full cell, or set atoms.pbc = False along the directions without one"
            )


def check_elements(atoms, known, name: str) -> None:
    """A ``ValueError`` naming the elements of ``atoms`` that a model does not know
    (``known``: atomic numbers, or None when the model does not say)."""
    if known is None:
        return
    unknown = sorted(set(int(z) for z in atoms.numbers) - set(known))
    if unknown:
        from ase.data import chemical_symbols

        def names(numbers):
            return ", ".join(f"{chemical_symbols[z]} ({z})" for z in numbers)

        raise ValueError(
            f"{name} knows {names(sorted(known))}; this structure also has "
            f"{names(unknown)}: use a model trained on every element in it"
        )
