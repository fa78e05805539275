"""Shared pieces of the workflows: input checks and space groups."""

from __future__ import annotations

from ase import Atoms

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
