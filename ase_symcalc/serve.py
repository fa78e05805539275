"""Serve a ``SymmetrizedCalculator`` to i-PI over its socket protocol.

ASE's ``SocketClient`` speaks the protocol; this module adds what it lacks:
the per-structure diagnostics sent back as i-PI "extras" (a JSON object that
i-PI parses into a dict per bead and writes with
``<trajectory extra_type='KEY'>`` or ``extras_component_raw(0)``), retries
while i-PI is not listening yet, and one-line errors when i-PI goes away.

Any number of clients may serve one i-PI run: i-PI hands beads, replicas and
the rotated copies of its own ``<ffrotations>`` to whichever client is free.
"""

from __future__ import annotations

import json
import time

import numpy as np
from ase import Atoms

__all__ = ["EXTRAS_KEYS", "ServeError", "connect", "extras", "parse_address", "serve"]

#: result keys sent as i-PI extras (eV, Å; those present in the results)
EXTRAS_KEYS = (
    "raw_energy",
    "energy_equivariance_error",
    "forces_equivariance_error",
    "stress_equivariance_error",
    "energy_residual",
    "forces_residual",
    "stress_residual",
    "evaluations",
    "quadrature",
)


class ServeError(RuntimeError):
    """A connection problem, told in one line."""


def parse_address(address: str) -> dict:
    """``unix:NAME`` (socket file /tmp/ipi_NAME) or ``HOST:PORT`` (inet)."""
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest:
        return {"unixsocket": rest}
    if rest.isdigit() and kind:
        return {"host": kind, "port": int(rest)}
    raise ValueError(
        f"bad address {address!r}: use unix:NAME (i-PI <ffsocket mode='unix'> with "
        "<address>NAME</address>) or HOST:PORT (mode='inet')"
    )


#: sent at every structure, NaN when not measured (mode="random" between its
#: probes), so that an i-PI output of the key has a value at every step
ALWAYS_SENT = (
    "energy_equivariance_error",
    "forces_equivariance_error",
    "stress_equivariance_error",
)


def extras(results: dict) -> dict:
    """The per-structure diagnostics of a ``SymmetrizedCalculator``, JSON-ready.

    The equivariance errors are sent even when NaN (JSON ``NaN``, which i-PI's
    Python parser reads): with ``--mode random`` they are estimated every
    ``--probe-interval`` structures only.
    """
    out: dict[str, str | float | int] = {}
    for key in EXTRAS_KEYS:
        value = results.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            out[key] = value
        elif np.isfinite(value) or key in ALWAYS_SENT:
            out[key] = float(value) if key != "evaluations" else int(value)
    raw_forces = results.get("raw_forces")
    if raw_forces is not None and "forces" in results:
        out["forces_raw_vs_sym_rmse"] = float(
            np.sqrt(np.mean((raw_forces - results["forces"]) ** 2))
        )
    per_atom = results.get("forces_equivariance_error_per_atom")
    if per_atom is not None and np.isfinite(per_atom).any():
        worst = int(np.nanargmax(per_atom))
        out["max_atom_forces_error"] = float(per_atom[worst])
        out["worst_atom"] = worst
    return out


def connect(address: str, timeout: float, *, log=None):
    """A ``SocketClient`` with extras, retrying until i-PI listens or ``timeout``."""
    from ase.calculators.socketio import SocketClient

    class _ExtrasClient(SocketClient):
        """SocketClient that sends the diagnostics as i-PI extras with the forces."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._payload = np.frombuffer(b"{}", dtype=np.byte)
            send = self.protocol.sendforce  # IPIProtocol.sendforce takes morebytes
            self.protocol.sendforce = lambda e, f, v: send(e, f, v, morebytes=self._payload)

        def calculate(self, atoms, use_stress):
            result = super().calculate(atoms, use_stress)
            payload = json.dumps(extras(atoms.calc.results)).encode()
            self._payload = np.frombuffer(payload, dtype=np.byte)
            return result

    where = parse_address(address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _ExtrasClient(log=log, **where)
        except (ConnectionRefusedError, FileNotFoundError, OSError) as error:
            if time.monotonic() >= deadline:
                raise ServeError(
                    f"i-PI is not listening on {address} after {timeout:g} s ({error}); start "
                    "i-pi first, check the address, or raise --connect-timeout"
                ) from error
            time.sleep(0.25)


def serve(atoms: Atoms, address: str, *, connect_timeout: float = 60.0, log=None) -> int:
    """Answer every structure i-PI sends until it ends the run; returns the count.

    ``atoms`` (with its ``SymmetrizedCalculator``) is the template: species,
    periodicity; i-PI sends positions and cell. The stress (virial) is sent
    for 3D-periodic cells, zero otherwise.
    """
    use_stress = bool(atoms.pbc.all()) and atoms.cell.rank == 3
    client = connect(address, connect_timeout, log=log)
    count = 0
    try:
        for _ in client.irun(atoms, use_stress=use_stress):
            count += 1
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as error:
        raise ServeError(
            f"i-PI closed the connection on {address} in the middle of the run after "
            f"{count} structures ({error.__class__.__name__})"
        ) from error
    return count
