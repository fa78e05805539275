"""The generic evaluator: rotate ``Atoms`` copies, call any ASE calculator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import (
    BaseCalculator,
    Calculator,
    PropertyNotImplementedError,
    PropertyNotPresent,
    all_changes,
)

from ..transforms import apply_to_cell, apply_to_positions, voigt_to_matrix
from ._base import StackedOutputs

__all__ = ["ASECalculatorEvaluator", "get_properties", "rotated_atoms"]


def get_properties(calculator: BaseCalculator, properties, atoms: Atoms) -> dict:
    """All ``properties`` of ``atoms`` from one run of the calculator, fresh.

    For an ASE ``Calculator``: ``reset()`` (no result of an earlier copy can
    come back, whatever its ``check_state`` compares), then one ``calculate``
    with every property asked for, the call ASE's own ``get_property`` makes
    (a calculator that computes only what it is asked runs once, not once per
    property). Other ``BaseCalculator`` objects: ``get_property`` each. Only the
    calculator contract's public methods are used.
    """
    properties = list(properties)
    try:
        if isinstance(calculator, Calculator):
            calculator.reset()
            calculator.calculate(atoms, properties, all_changes)
            missing = [name for name in properties if name not in calculator.results]
            if missing:
                raise PropertyNotPresent(", ".join(missing))
            return {name: calculator.results[name] for name in properties}
        return {name: calculator.get_property(name, atoms) for name in properties}
    except (PropertyNotImplementedError, PropertyNotPresent) as error:
        missing = [name for name in properties if name not in getattr(calculator, "results", {})]
        raise PropertyNotImplementedError(
            f"{type(calculator).__name__} did not compute {', '.join(map(repr, missing))} "
            f"({error}); if it computes them only when configured to, configure it so "
            "(e.g. CHGNetCalculator(return_site_energies=True) for per-atom energies)"
        ) from error


def rotated_atoms(atoms: Atoms, g: np.ndarray) -> Atoms:
    """A fresh copy of ``atoms`` acted on by ``g`` (no calculator, no constraints).

    Positions and momenta rotate as polar vectors (``P g^T``); a 3-vector
    ``initial_magmoms`` array as an axial one (``det g m g^T``); the cell as
    ``H R^T`` (``R`` the proper part, so it stays right-handed). Scalar arrays
    and ``info`` are copied unchanged. Positions are not wrapped.
    """
    g = np.asarray(g, dtype=np.float64)
    copy = atoms.copy()
    copy.calc = None
    copy.constraints = []
    copy.set_cell(apply_to_cell(atoms.cell.array, g), scale_atoms=False)
    copy.positions = apply_to_positions(atoms.positions, g)
    if "momenta" in copy.arrays:
        copy.arrays["momenta"] = apply_to_positions(atoms.arrays["momenta"], g)
    magmoms = copy.arrays.get("initial_magmoms")
    if magmoms is not None and magmoms.ndim == 2:
        copy.arrays["initial_magmoms"] = np.linalg.det(g) * apply_to_positions(magmoms, g)
    return copy


class ASECalculatorEvaluator:
    """Evaluates any ASE calculator on rotated copies, one copy at a time.

    The base calculator runs once per copy through its public API
    (``get_properties`` here: ``reset`` and ``calculate_properties``).
    ``batch_size`` has no meaning here (ASE calculators take one structure).
    Per-atom ``energies`` are asked for only when the caller asks for them:
    many calculators list them but compute them only when configured to
    (CHGNet's ``return_site_energies``); when the calculator computed them
    anyway (EMT, MACE), they are taken from its results.
    """

    #: properties the symmetrizer evaluates only when they are asked for
    on_request = frozenset({"energies"})

    def __init__(self, calculator: BaseCalculator):
        if not isinstance(calculator, BaseCalculator):
            raise TypeError(
                f"expected an ASE calculator (an ase.calculators.calculator."
                f"BaseCalculator), got {type(calculator).__name__}"
            )
        self.calculator = calculator
        self.name = f"base calculator {type(calculator).__name__}"
        self.implemented_properties = list(calculator.implemented_properties)

    def available_properties(self, atoms: Atoms) -> set[str]:
        implemented = set(self.calculator.implemented_properties)
        available = implemented & {"energy", "forces", "energies"}
        if "stress" in implemented and atoms.cell.rank == 3 and atoms.pbc.all():
            available.add("stress")
        return available

    def evaluate(
        self, atoms: Atoms, matrices: np.ndarray, properties: Sequence[str]
    ) -> StackedOutputs:
        properties = list(properties)
        # per-atom energies the caller did not ask for are kept when the calculator
        # computed them anyway (EMT, MACE), read from its public results
        optional = [
            name
            for name in sorted(self.on_request - set(properties))
            if name in self.calculator.implemented_properties
        ]
        # a free energy of the base's own (smearing) is averaged on its own; it comes
        # with the energy from the same run, read from the public results
        if "energy" in properties and "free_energy" in self.calculator.implemented_properties:
            optional.append("free_energy")
        n_atoms = len(atoms)
        stacks: dict[str, list[np.ndarray]] = {name: [] for name in properties + optional}
        for index, g in enumerate(matrices):
            copy = rotated_atoms(atoms, g)
            try:
                values = get_properties(self.calculator, properties, copy)
            except Exception as error:
                if hasattr(error, "add_note"):
                    error.add_note(
                        f"raised by {self.name} on rotated copy {index} of {len(matrices)}"
                    )
                raise
            for name in list(optional):
                value = getattr(self.calculator, "results", {}).get(name)
                if value is None:  # not computed for this copy: drop it for all
                    optional.remove(name)
                    del stacks[name]
                else:
                    values[name] = value
            for name in properties + optional:
                value = np.asarray(values[name], dtype=np.float64)
                if name == "stress":
                    value = _stress_as_matrix(value, self.name, index)
                elif name in ("energy", "free_energy"):
                    value = value.reshape(()) if value.size == 1 else value
                expected = {"energy": (), "forces": (n_atoms, 3), "energies": (n_atoms,)}
                if name in expected and value.shape != expected[name]:
                    raise ValueError(
                        f"{self.name} returned {name!r} with shape {value.shape} for "
                        f"rotated copy {index}, expected {expected[name]}"
                    )
                stacks[name].append(value)
        stacked = {name: np.stack(values) for name, values in stacks.items()}
        return StackedOutputs(
            # a caller that asked for forces only gets NaN energies, not None
            energy=stacked["energy"] if "energy" in stacked else np.full(len(matrices), np.nan),
            forces=stacked.get("forces"),
            stress=stacked.get("stress"),
            energies=stacked.get("energies"),
            free_energy=stacked.get("free_energy"),
        )


def _stress_as_matrix(value: np.ndarray, name: str, index: int) -> np.ndarray:
    if value.shape == (6,):
        return np.asarray(voigt_to_matrix(value))
    if value.shape == (3, 3):
        return np.asarray(value)
    raise ValueError(
        f"{name} returned 'stress' with shape {value.shape} for rotated copy "
        f"{index}, expected Voigt (6,) or (3, 3)"
    )
