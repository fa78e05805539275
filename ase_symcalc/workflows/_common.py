"""Shared pieces of the workflows: input checks and space groups."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

#: spglib tolerances (Å) at which space groups are reported
SYMPREC = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


class NotACrystalError(ValueError):
    """The workflow needs a 3D-periodic structure."""


def require_crystal(atoms: Atoms, workflow: str) -> None:
    if not (atoms.pbc.all() and atoms.cell.rank == 3):
        raise NotACrystalError(
            f"{workflow} needs a crystal (pbc=True in 3 directions and a full cell); this "
            f"structure has pbc={atoms.pbc.tolist()} and a cell of rank {atoms.cell.rank}"
        )


def spacegroups(atoms: Atoms, tolerances=SYMPREC) -> dict[str, str]:
    """Space group symbol and number found by spglib at each tolerance (Å)."""
    import spglib

    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    found = {}
    for tolerance in tolerances:
        name = spglib.get_spacegroup(cell, symprec=tolerance)
        found[f"{tolerance:g}"] = name if name is not None else "none"
    return found


class O3OnlyView(Calculator):
    """The O(3) average alone, read from a ``SymmetrizedCalculator`` that also
    averages over the structure's symmetry (``structure_symmetry=True``).

    It asks its source for the same structure and returns the source's
    ``o3_*`` results: no model call of its own when the source has just
    evaluated that structure (the workflows run every calculator on each
    structure in turn).
    """

    _keys = {"forces": "o3_forces", "stress": "o3_stress", "energies": "o3_energies"}

    def __init__(self, source, **kwargs):
        if not source.parameters.get("structure_symmetry"):
            raise ValueError(
                "O3OnlyView needs a SymmetrizedCalculator with structure_symmetry=True"
            )
        super().__init__(**kwargs)
        self.source = source
        self.implemented_properties = list(source.implemented_properties)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        results = {}
        for name in properties:
            self.source.get_property(name, self.atoms)
        source = self.source.results
        results["energy"] = results["free_energy"] = source["energy"]
        for name, key in self._keys.items():
            if key in source:
                results[name] = np.array(source[key])
        self.results = results
