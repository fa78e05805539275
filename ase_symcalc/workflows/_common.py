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
    """A 3D-periodic, well-formed structure (finite positions, a cell that is not
    degenerate), or a ``ValueError`` naming the problem, before any model call."""
    from ..evaluators import check_structure

    if not isinstance(atoms, Atoms):
        raise TypeError(f"{workflow} takes an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError(f"{workflow} needs atoms; this structure is empty")
    if not (atoms.pbc.all() and atoms.cell.rank == 3):
        raise NotACrystalError(
            f"{workflow} needs a crystal (pbc=True in 3 directions and a full cell); this "
            f"structure has pbc={atoms.pbc.tolist()} and a cell of rank {atoms.cell.rank}"
        )
    check_structure(atoms)


def check_calculators(calculators) -> None:
    """A non-empty mapping of names to ASE calculators."""
    from collections.abc import Mapping

    from ase.calculators.calculator import BaseCalculator

    if not isinstance(calculators, Mapping):
        raise TypeError(
            "calculators must be a dict of name -> ASE calculator, got "
            f"{type(calculators).__name__}"
        )
    if not calculators:
        raise ValueError("calculators must be a non-empty dict of name -> ASE calculator")
    for name, calculator in calculators.items():
        if not isinstance(calculator, BaseCalculator):
            raise TypeError(
                f"calculators[{name!r}] is a {type(calculator).__name__}, not an ASE "
                "calculator (wrap a model in SymmetrizedCalculator first)"
            )


def check_number(name: str, value, *, low=0.0, inclusive=False, fix: str = "") -> float:
    """``value`` as a finite float above ``low`` (or at it, with ``inclusive``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    ok = np.isfinite(number) and (number >= low if inclusive else number > low)
    if not ok or isinstance(value, bool):
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        hint = f" ({fix})" if fix else ""
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}{hint}")
    return number


def check_count(name: str, value, *, low: int = 0) -> int:
    """``value`` as an integer >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_supercell(supercell, *, largest: int = 20) -> tuple[int, int, int]:
    """Three repetitions, each an integer from 1 to ``largest``."""
    try:
        values = tuple(supercell)
    except TypeError:
        values = ()
    if len(values) != 3 or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and 1 <= n <= largest
        for n in values
    ):
        raise ValueError(
            f"supercell must be three integers from 1 to {largest}, got {supercell!r} "
            "(e.g. (3, 3, 3) for a conventional fcc cell)"
        )
    first, second, third = (int(n) for n in values)
    return first, second, third


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
