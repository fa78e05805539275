"""``EquivarianceMonitor``: log raw vs symmetrized values during ASE dynamics.

Attach it to any ASE dynamics (``dyn.attach(monitor, interval=n)``). It reads
the ``SymmetrizedCalculator``'s cached results of the current step and appends
one row to a CSV file, flushed at once, so a killed run keeps every finished
step. In ``mode="random"`` it first asks the calculator to probe the current
structure (``SymmetrizedCalculator.probe``: one or two more evaluations, none
if the step already probed), so that every row holds a fresh estimate of the
equivariance errors; in the other modes it adds no model evaluation.
Optionally it also appends extxyz frames with the same values in ``info`` and
the per-atom errors in ``arrays``.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np
from ase import Atoms, units

__all__ = ["EquivarianceMonitor", "COLUMNS"]

#: CSV columns and their units (the header carries the units)
COLUMNS = {
    "step": "",
    "time_fs": "fs",
    "epot_raw": "eV",
    "epot_sym": "eV",
    "ekin": "eV",
    "temperature_K": "K",
    "etot": "eV",
    "energy_equivariance_error": "eV",
    "forces_equivariance_error": "eV/Å",
    "stress_equivariance_error": "eV/Å^3",
    "forces_raw_vs_sym_rmse": "eV/Å",
    "max_atom_forces_error": "eV/Å",
    "worst_atom": "",
    # conservative runs of direct-force models: how far the two kinds are apart
    "forces_direct_vs_conservative_rmse": "eV/Å",
    # residual of the symmetrized output (residual=True, or the last check of 'auto')
    "energy_residual": "eV",
    "forces_residual": "eV/Å",
    "stress_residual": "eV/Å^3",
    # model evaluations since the previous logged row (this row's step included)
    "evaluations": "",
    "rule": "",
}


def _header() -> list[str]:
    return [f"{name} [{unit}]" if unit else name for name, unit in COLUMNS.items()]


class EquivarianceMonitor:
    """Append one row per logged step: raw and symmetrized energies, errors.

    Parameters
    ----------
    atoms : the simulated ``Atoms`` (its calculator must be a
        ``SymmetrizedCalculator`` or anything with the same result keys).
    logfile : path of the CSV file. Appended to if it exists (restarts).
    dynamics : the ASE dynamics, to read the step count and time step; without
        it the monitor counts its own calls.
    trajectory : optional extxyz path; each logged step appends a frame.
    """

    def __init__(self, atoms: Atoms, logfile, *, dynamics=None, trajectory=None, step_offset=0):
        self.atoms = atoms
        self.dynamics = dynamics
        self.trajectory = trajectory
        self.step_offset = step_offset
        self._calls = 0
        self._evaluations_logged = self._evaluation_count()
        new = not os.path.exists(logfile) or os.path.getsize(logfile) == 0
        self._file = open(logfile, "a", newline="")  # noqa: SIM115 - kept open for the run
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(_header())
            self._file.flush()

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _evaluation_count(self) -> int | None:
        """Model evaluations so far, the fast ones of multiple time stepping included."""
        count = getattr(self.atoms.calc, "evaluation_count", None)
        if count is None:
            return None
        return int(count) + int(getattr(self.dynamics, "fast_evaluations", 0))

    def _step_and_time(self):
        if self.dynamics is not None:
            # multiple time stepping: count the inner (fast) steps, so that
            # step numbers mean the same with and without --mts
            inner = getattr(self.dynamics, "inner_steps", 1)
            step = self.dynamics.nsteps * inner + self.step_offset
            dt = getattr(self.dynamics, "dt", 0.0) / inner
            return step, step * dt / units.fs
        step = self._calls + self.step_offset
        return step, float("nan")

    def row(self, probe: bool = True) -> dict:
        """The values of the current step (from the calculator's cached results).

        With ``probe`` (and a calculator in ``mode="random"``) the structure is
        probed first. A probe can escalate the calculator (``tolerance=``),
        which then averages over its rule from the next call on: with a
        tolerance, monitoring is part of the dynamics. ``probe=False`` logs
        what the call gave (NaN errors between probes).
        """
        atoms = self.atoms
        calc = atoms.calc
        atoms.get_forces()  # cached: the dynamics just asked for them
        if probe and hasattr(calc, "probe"):
            calc.probe()  # mode="random": a fresh estimate for this structure
        r = calc.results
        count = self._evaluation_count()
        if count is not None and self._evaluations_logged is not None:
            evaluations = count - self._evaluations_logged
        else:
            evaluations = r.get("evaluations")
        self._evaluations_logged = count
        step, time_fs = self._step_and_time()
        ekin = atoms.get_kinetic_energy()
        epot = r["energy"]
        per_atom = r.get("forces_equivariance_error_per_atom")
        worst = (
            int(np.nanargmax(per_atom))
            if per_atom is not None and np.isfinite(per_atom).any()
            else -1
        )
        raw_forces = r.get("raw_forces")
        return {
            "step": step,
            "time_fs": time_fs,
            "epot_raw": r.get("raw_energy", float("nan")),
            "epot_sym": epot,
            "ekin": ekin,
            "temperature_K": atoms.get_temperature(),
            "etot": epot + ekin,
            "energy_equivariance_error": r.get("energy_equivariance_error", float("nan")),
            "forces_equivariance_error": r.get("forces_equivariance_error", float("nan")),
            "stress_equivariance_error": r.get("stress_equivariance_error"),
            "forces_raw_vs_sym_rmse": (
                float(np.sqrt(np.mean((raw_forces - r["forces"]) ** 2)))
                if raw_forces is not None
                else float("nan")
            ),
            "max_atom_forces_error": float(per_atom[worst]) if worst >= 0 else float("nan"),
            "worst_atom": worst,
            "forces_direct_vs_conservative_rmse": (
                float(np.sqrt(np.mean((r["direct_forces"] - r["forces"]) ** 2)))
                if "direct_forces" in r
                else float("nan")
            ),
            "energy_residual": r.get("energy_residual"),
            "forces_residual": r.get("forces_residual"),
            "stress_residual": r.get("stress_residual"),
            "evaluations": evaluations,
            "rule": r.get("quadrature", ""),
        }

    def __call__(self, probe: bool = True):
        values = self.row(probe)
        self._writer.writerow([_format(values[name]) for name in COLUMNS])
        self._file.flush()
        if self.trajectory is not None:
            self._write_frame(values)
        self._calls += 1

    def _write_frame(self, values: dict):
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.io import write

        r = self.atoms.calc.results
        frame = self.atoms.copy()  # never touch the user's atoms.info
        keep = {k: r[k] for k in ("energy", "free_energy", "forces", "stress") if k in r}
        frame.calc = SinglePointCalculator(frame, **keep)
        for name, value in values.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                frame.info[name] = value
        if "forces_equivariance_error_per_atom" in r:
            frame.arrays["forces_equivariance_error"] = np.asarray(
                r["forces_equivariance_error_per_atom"], dtype=float
            )
        if "raw_forces" in r:
            frame.arrays["raw_forces"] = np.asarray(r["raw_forces"], dtype=float)
        write(self.trajectory, frame, format="extxyz", append=True)


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    return "" if math.isnan(value) else f"{value:.10g}"
