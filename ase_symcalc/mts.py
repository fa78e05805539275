"""Multiple time stepping (RESPA) for ASE, with symmetrization as the slow force.

The force is split as ``F = F_fast + (F - F_fast)``: ``F_fast`` is the raw
model (one evaluation), ``F`` the symmetrized model (M' evaluations). The
reversible RESPA splitting (Tuckerman, Berne and Martyna, J. Chem. Phys. 97,
1990 (1992)) kicks with the slow difference once per outer step ``Dt`` and
integrates the fast force with velocity Verlet at ``dt = Dt / n``::

    p += Dt/2 (F - F_fast)(x)
    n times:  p += dt/2 F_fast;  x += dt p/m;  p += dt/2 F_fast
    p += Dt/2 (F - F_fast)(x)

so the expensive model runs once per ``n`` steps. When ``F`` is conservative
(``SymmetrizedCalculator(..., forces="conservative")``) the scheme is
symplectic for ``F``'s energy, whatever ``F_fast`` is: the raw direct forces
only steer the inner steps. With ``temperature_K`` and ``friction`` a Langevin
thermostat acts as exact Ornstein-Uhlenbeck half steps around the outer step
(OBABO).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.md.md import MolecularDynamics

__all__ = ["MultipleTimeStepMD"]


class MultipleTimeStepMD(MolecularDynamics):
    """RESPA velocity Verlet: raw forces every step, the correction every n steps.

    Parameters
    ----------
    atoms :
        The system; ``atoms.calc`` is the full (slow) model, typically a
        ``SymmetrizedCalculator``. Observers attached to the dynamics see its
        cached results at every outer step.
    timestep :
        The *outer* time step ``Dt`` (ASE units); one ``step()`` advances the
        system by ``Dt``, in ``inner_steps`` fast steps of ``Dt / inner_steps``.
    fast_calculator :
        The cheap model (the raw model: one evaluation per inner step).
    inner_steps :
        ``n``, the number of fast steps per outer step (1 gives velocity Verlet
        on the full force, with one wasted fast evaluation per step).
    temperature_K, friction :
        Langevin thermostat (friction in inverse ASE time units); both or neither.
    rng :
        Random generator for the thermostat (a seed or a numpy Generator).
    fixcm :
        Remove the centre-of-mass momentum the thermostat noise adds.
    """

    def __init__(
        self,
        atoms: Atoms,
        timestep: float,
        fast_calculator,
        inner_steps: int = 4,
        *,
        temperature_K: float | None = None,
        friction: float | None = None,
        rng=None,
        fixcm: bool = True,
        **kwargs,
    ):
        if not isinstance(inner_steps, (int, np.integer)) or inner_steps < 1:
            raise ValueError(f"inner_steps must be a positive integer, got {inner_steps!r}")
        if (temperature_K is None) != (friction is None):
            raise ValueError(
                "the Langevin thermostat needs both temperature_K and friction "
                "(give neither for NVE)"
            )
        if atoms.constraints:
            raise NotImplementedError(
                "MultipleTimeStepMD does not handle constraints yet; remove them "
                "(atoms.set_constraint()) or use an ASE integrator"
            )
        if atoms.calc is None:
            raise ValueError(
                "atoms has no calculator: attach the full (symmetrized) model as atoms.calc"
            )
        super().__init__(atoms, timestep, **kwargs)
        self.fast_calculator = fast_calculator
        self.inner_steps = int(inner_steps)
        self.temperature_K = temperature_K
        self.friction = friction
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.fixcm = fixcm
        #: evaluations of the fast model so far
        self.fast_evaluations = 0
        self._fast = None  # F_fast at the current positions
        self._slow = None  # F - F_fast at the current positions

    # -- forces ----------------------------------------------------------------

    def _fast_forces(self) -> np.ndarray:
        self.fast_evaluations += 1
        # an ASE calculator keeps its own copy of the atoms: atoms.calc's cache is untouched
        return np.array(self.fast_calculator.get_forces(self.atoms))

    def _full_forces(self) -> np.ndarray:
        return np.array(self.atoms.get_forces(md=True))

    def _ensure_forces(self):
        if self._fast is None:
            self._fast = self._fast_forces()
            self._slow = self._full_forces() - self._fast

    # -- integration -------------------------------------------------------------

    def _thermostat_half_step(self):
        """Exact Ornstein-Uhlenbeck update of the momenta over Dt / 2."""
        from ase import units

        masses = self.atoms.get_masses()[:, None]
        c1 = np.exp(-0.5 * self.friction * self.dt)
        sigma = np.sqrt((1.0 - c1**2) * masses * units.kB * self.temperature_K)
        p = self.atoms.get_momenta()
        p = c1 * p + sigma * self.rng.standard_normal(p.shape)
        if self.fixcm:
            p -= masses * p.sum(axis=0) / masses.sum()
        self.atoms.set_momenta(p, apply_constraint=False)

    def step(self, forces=None):
        """Advance by one outer step; returns the full forces at the new positions."""
        atoms = self.atoms
        self._ensure_forces()
        thermostat = self.temperature_K is not None
        if thermostat:
            self._thermostat_half_step()
        masses = atoms.get_masses()[:, None]
        dt = self.dt / self.inner_steps
        p = atoms.get_momenta() + 0.5 * self.dt * self._slow
        fast = self._fast
        for _ in range(self.inner_steps):
            p += 0.5 * dt * fast
            atoms.set_positions(atoms.positions + dt * p / masses, apply_constraint=False)
            fast = self._fast_forces()
            p += 0.5 * dt * fast
        atoms.set_momenta(p, apply_constraint=False)
        full = self._full_forces()
        self._fast, self._slow = fast, full - fast
        atoms.set_momenta(p + 0.5 * self.dt * self._slow, apply_constraint=False)
        if thermostat:
            self._thermostat_half_step()
        return full

    def todict(self):
        info = super().todict()
        info.update(
            inner_steps=self.inner_steps,
            temperature_K=self.temperature_K,
            friction=self.friction,
            fixcm=self.fixcm,
        )
        return info
