"""A symmetrizing torch-sim model: any torch-sim model, averaged over O(3).

``SymmetrizedModel(inner, quadrature="group:I")`` is a torch-sim
``ModelInterface``. For every system of a batch it evaluates the inner model
on the M rotated copies of the rule (all S x M copies in batched calls of
``batch_size`` inner systems), brings each output back to the input's
frame and averages: energy, forces and stress come out exactly equivariant
up to the rule's degree, and torch-sim's integrators (``ts.integrate``,
``ts.static``, ``ts.optimize``) run on them unchanged. The spread of the
back-rotated copies is returned beside them, per system, as extra outputs
that torch-sim keeps on the state:

- ``energy_equivariance_error [S]`` (eV), ``forces_equivariance_error [S]``
  (eV/Å, RMS per component), ``stress_equivariance_error [S]`` (eV/Å^3),
- ``forces_equivariance_error_per_atom [N]`` (eV/Å),
- with ``residual=True`` (or ``quadrature="auto"``) ``forces_residual [S]``,
  ``forces_residual_bound [S]`` etc.: how far the average still is from the
  exact Haar average;
- with ``raw`` (default) ``raw_energy [S]``, ``raw_forces [N, 3]``,
  ``raw_stress [S, 3, 3]``: the inner model on the unrotated input.

One orchestration serves both front ends: ``core.SymmetrizationCore`` (the
rule policy, the pass over the rule, the residual, ``auto``'s climb) over
``symmetrize.symmetrize_systems``, here in torch, float64, on the model's
device, vectorised over the batch: the copies are built copy by copy
(``_torchsim_copies``), the outputs fold back by a reshape and the per-system
errors are segment sums, with no Python loop over systems and no host sync on
the fixed-rule path (``auto``, ``residual``, ``mode="random"`` and
``structure_symmetry`` take their decisions on the host). Needs Python >=
3.12 and ``torch-sim-atomistic``.

Not here: conservative mode (a torch-sim ``ModelInterface`` returns forces, not
an energy graph to differentiate; a conservative inner model's averaged forces
are already minus the gradient of the averaged energy) and per-atom energies
(torch-sim models do not return them).
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ase_symcalc.torchsim needs torch-sim (pip install torch-sim-atomistic, "
        "Python >= 3.12); bash scripts/setup.sh installs it where Python >= 3.12 exists"
    ) from error

from dataclasses import replace

from ._arrays import as_float64
from ._torchsim_copies import n_systems, run_copies
from ._warnings import EquivarianceWarning, warn_user
from .core import CallResult, SymmetrizationCore
from .evaluators import StackedOutputs
from .rule_policy import CALM_PROBES, PROBE_INTERVAL, RulePolicy, forces_metric
from .structure_symmetry import SymmetryCache
from .symmetrize import (
    SymmetrizedOutputs,
    Systems,
    project_onto_structure,
)

__all__ = ["SymmetrizedModel", "ERROR_KEYS"]

#: the per-system and per-atom diagnostics every forward returns
ERROR_KEYS = (
    "energy_equivariance_error",
    "forces_equivariance_error",
    "stress_equivariance_error",
    "forces_equivariance_error_per_atom",
)


class SymmetrizedModel(ModelInterface):
    """Average any torch-sim model over a rotation quadrature on O(3).

    Parameters
    ----------
    model :
        The inner torch-sim ``ModelInterface`` (Orb, MACE, metatomic PET, a
        ``SumModel``, ...). Device and dtype are the inner model's.
    quadrature, inversion, orientation, mode, seed, tolerance, tolerance_per_atom, recheck :
        The rule and its policy, as in ``SymmetrizedCalculator`` (default
        ``"group:I"`` with inversion: 120 copies per system, exact to degree 5;
        ``"auto"``: the cheapest rule of the ladder whose forces residual bound
        is below ``tolerance`` on the first batch, the worst system deciding).
    batch_size :
        Inner systems (rotated copies of systems) per inner forward call;
        None: calls of up to 128 atoms on CPU (batching costs there) and 2048
        on GPU (``_torchsim_copies.DEFAULT_ATOMS_PER_CALL``), at least one
        copy of the batch per call. The S x M copies of a batch hold M times
        the atoms of the batch, so memory is bounded by the call size, not by M.
    remove_net_force :
        Remove the net force of every back-rotated copy (direct-force models
        predict a small spurious one that makes the centre of mass drift).
        ``None`` (default, as in ``SymmetrizedCalculator``): as the wrapped
        model's own front end does, which in torch-sim is off here (the
        metatomic torch-sim model removes it itself, before the copies are
        averaged; metatomic-ase does not, so the calculator does it there).
    residual :
        Also estimate the residual per system (two more passes over the rule
        in Haar-random orientations, as in ``SymmetrizedCalculator``):
        ``energy_residual``, ``forces_residual``, ``forces_residual_max_atom``,
        ``stress_residual`` and ``forces_residual_bound`` [S].
    raw :
        Also return the inner model's prediction on the unrotated input:
        ``raw_energy [S]``, ``raw_forces [N, 3]``, ``raw_stress [S, 3, 3]``
        (default, as in ``SymmetrizedCalculator``; one more copy per system
        unless the rule holds the identity; ``mode="random"``: on probes).
    structure_symmetry, symmetry_tolerance :
        Also average each system over its own symmetry operations, as in
        ``SymmetrizedCalculator`` (found on the host, per system, and reused
        while they hold); adds ``symmetry_operations [S]``.
    probe_interval, probe_orientations, calm_probes :
        ``mode="random"``, as in ``SymmetrizedCalculator``: one random O(3)
        element per call for the whole batch; every ``probe_interval`` calls
        ``probe_orientations`` more give every system an unbiased estimate of
        its equivariance errors (the error outputs, NaN between probes).
        With ``tolerance``, each system whose estimate exceeds it is averaged
        over ``quadrature`` (``"auto"``: the ladder) until ``calm_probes``
        probes in a row are below it: ``symmetrized_over_rule [S]`` says
        which. The per-system state is keyed by the system's position in the
        batch and dropped when the batch changes size; call
        ``model.policy.forget_systems()`` when other systems take the places.
    """

    def __init__(
        self,
        model: ModelInterface,
        quadrature="group:I",
        *,
        inversion: bool = True,
        orientation="generic",
        mode: str = "grid",
        seed: int | None = None,
        tolerance: float | None = None,
        tolerance_per_atom: bool = False,
        recheck: int | None = 100,
        batch_size: int | None = None,
        remove_net_force: bool | None = None,
        residual: bool = False,
        raw: bool = True,
        probe_interval: int = PROBE_INTERVAL,
        probe_orientations: int = 1,
        calm_probes: int = CALM_PROBES,
        structure_symmetry: bool = False,
        symmetry_tolerance: float = 1e-5,
    ) -> None:
        super().__init__()
        if not isinstance(model, ModelInterface):
            raise TypeError(
                f"SymmetrizedModel wraps a torch-sim ModelInterface, got {type(model).__name__}; "
                "for an ASE calculator use ase_symcalc.SymmetrizedCalculator"
            )
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self.model = model
        self.policy = RulePolicy(
            quadrature,
            inversion=inversion,
            orientation=orientation,
            mode=mode,
            seed=seed,
            tolerance=tolerance,
            recheck=recheck,
            probe_interval=probe_interval,
            probe_orientations=probe_orientations,
            calm_probes=calm_probes,
            residual=residual,
            tolerance_per_atom=tolerance_per_atom,
        )
        if not isinstance(symmetry_tolerance, (int, float)) or not symmetry_tolerance > 0:
            raise ValueError(
                f"symmetry_tolerance must be a positive distance in Å, got {symmetry_tolerance!r}"
            )
        self.core = SymmetrizationCore(self.policy, residual=residual)
        self._systems_seen: int | None = None
        self.batch_size = batch_size
        self.remove_net_force = bool(remove_net_force)  # None: off (see above)
        self.residual = residual
        self.raw = raw
        self.structure_symmetry = structure_symmetry
        self.symmetry_tolerance = symmetry_tolerance
        self._symmetry_caches: list[SymmetryCache] = []
        self._device = model.device
        self._dtype = model.dtype
        self._compute_forces = model.compute_forces
        self._compute_stress = model.compute_stress
        #: rotated copies the inner model has evaluated so far
        self.evaluation_count = 0

    # compute_stress / compute_forces pass to the inner model, as SumModel does
    @ModelInterface.compute_stress.setter  # type: ignore[attr-defined]  # a property
    def compute_stress(self, value: bool) -> None:
        self.model.compute_stress = value
        self._compute_stress = value

    @ModelInterface.compute_forces.setter  # type: ignore[attr-defined]  # a property
    def compute_forces(self, value: bool) -> None:
        self.model.compute_forces = value
        self._compute_forces = value

    @property
    def memory_scales_with(self):
        return self.model.memory_scales_with

    @property
    def copies_per_system(self) -> int:
        """Rotated copies per system of a batch (M, the rule's size; 1 for the
        random modes, whose escalated systems take the rule's size). With
        ``raw``, one more (the lab frame) where the rule lacks the identity."""
        return 1 if self.policy.single_rotation else len(self.policy.rule)

    @property
    def quadrature(self):
        """The rule in use (``"auto"``: the one chosen so far)."""
        return self.policy.rule

    # -- forward -------------------------------------------------------------

    def forward(self, state: ts.SimState, **kwargs) -> dict[str, torch.Tensor]:
        if self.policy.random:
            return self._random_forward(state)
        call = self.core.run(
            self._evaluator(state),
            _systems(state),
            raw=self.raw,
            net_force_removal=self.remove_net_force,
        )
        return self._outputs(state, call)

    def _evaluator(self, state):
        """The core's ``evaluate`` on this batch: every copy of every system, by
        ``_torchsim_copies.run_copies`` (energy (M, S), forces (M, N, 3), ...)."""
        n_batch = n_systems(state)

        def evaluate(matrices, measuring: bool) -> StackedOutputs:
            matrices = self.core.on_device(matrices, state.positions)  # once per rule
            outputs = run_copies(self.model, state, matrices, self.batch_size)
            self.evaluation_count += len(matrices) * n_batch
            return StackedOutputs(
                energy=outputs["energy"],
                forces=outputs.get("forces"),
                stress=outputs.get("stress"),
            )

        return evaluate

    def _outputs(self, state, call: CallResult) -> dict[str, torch.Tensor]:
        """A call's batch results as torch-sim outputs, in the model dtype."""
        averaged = call.averaged
        out: dict[str, Any] = {}
        if self.structure_symmetry:
            averaged, out["symmetry_operations"] = self._project(state, averaged)
        out["energy"] = averaged.energy
        out["energy_equivariance_error"] = averaged.energy_error
        if averaged.forces is not None:
            out["forces"] = averaged.forces
            out["forces_equivariance_error"] = averaged.forces_error
            out["forces_equivariance_error_per_atom"] = averaged.forces_error_per_atom
        if averaged.stress is not None:
            out["stress"] = averaged.stress
            out["stress_equivariance_error"] = averaged.stress_error
        raw = call.raw
        if raw is not None:
            out["raw_energy"] = raw.energy
            for name in ("forces", "stress"):
                if getattr(raw, name) is not None:
                    out[f"raw_{name}"] = getattr(raw, name)
        if call.residual:
            out.update({key: torch.as_tensor(value) for key, value in call.residual.items()})
        device = state.device
        return {
            key: value if value.dtype == torch.bool else value.to(device=device, dtype=self.dtype)
            for key, value in out.items()
        }

    def _project(self, state, averaged: SymmetrizedOutputs):
        """Average each system's outputs over its own symmetry operations.

        The search runs on the host, per system (spglib / moyopy, one
        ``SymmetryCache`` per batch position, reused while the operations
        hold); the projection of forces and stress is per system too. Off by
        default, as in ``SymmetrizedCalculator``.
        """
        atoms_list = ts.io.state_to_atoms(state)
        if len(self._symmetry_caches) != len(atoms_list):
            self._symmetry_caches = [SymmetryCache(self.symmetry_tolerance) for _ in atoms_list]
        order = torch.argsort(state.system_idx, stable=True)
        counts = torch.bincount(state.system_idx, minlength=len(atoms_list)).tolist()
        forces, stress = _tensor(averaged.forces), _tensor(averaged.stress)
        per_atom = _tensor(averaged.forces_error_per_atom)
        energy, energy_error = _tensor(averaged.energy), _tensor(averaged.energy_error)
        sizes = []
        for s, (atoms, index) in enumerate(
            zip(atoms_list, torch.split(order, counts), strict=True)
        ):
            symmetry = self._symmetry_caches[s].find(atoms)
            sizes.append(len(symmetry))
            # the projection is numpy (the operations live on the host)
            one = SymmetrizedOutputs(
                energy=energy[s],
                forces=None if forces is None else forces[index].cpu().numpy(),
                stress=None if stress is None else stress[s].cpu().numpy(),
                energies=None,
                energy_error=energy_error[s],
                forces_error=None,
                forces_error_per_atom=None if per_atom is None else per_atom[index].cpu().numpy(),
                stress_error=None,
            )
            one = project_onto_structure(one, symmetry)
            if forces is not None:
                forces[index] = as_float64(one.forces, like=forces)
            if stress is not None:
                stress[s] = as_float64(one.stress, like=stress)
            if per_atom is not None:
                per_atom[index] = as_float64(one.forces_error_per_atom, like=per_atom)
        projected = replace(averaged, forces=forces, stress=stress, forces_error_per_atom=per_atom)
        return projected, torch.as_tensor(sizes, device=state.device)

    # -- mode="random" -------------------------------------------------------

    def _random_forward(self, state) -> dict[str, torch.Tensor]:
        """One random O(3) element per call; probes and escalation per system.

        All systems that are not escalated share the call's random element
        (and the probe's): each system's estimate is still unbiased. The
        escalated ones are averaged over the rule (``"auto"``: the ladder,
        climbed on them, the worst deciding). The per-system state is
        dropped when the batch changes size.
        """
        policy = self.policy
        size = n_systems(state)
        if size != self._systems_seen:
            policy.forget_systems()
            self._systems_seen = size
        probing = policy.probe_scheduled()
        escalated = sorted(s for s in policy.escalated_systems if s < size)
        calm = [s for s in range(size) if s not in escalated]
        cleaning: dict[str, Any] = {"net_force_removal": self.remove_net_force}
        pieces = []
        if calm:
            sub = state if not escalated else state[calm]
            call, _ = self.core.random_call(
                self._evaluator(sub), _systems(sub), probing=probing, raw=self.raw, **cleaning
            )
            pieces.append((calm, self._outputs(sub, call)))
        climbed = False
        if escalated:
            sub = state[escalated]
            evaluate, systems = self._evaluator(sub), _systems(sub)
            raw = self.raw and probing  # the lab frame on probes, as for the calm systems
            if policy.climb_due(on_rule=True):
                call, climbed = self.core.climb(evaluate, systems, raw=raw, **cleaning), True
            else:
                rule = policy.rule
                averaged, raw_copy = self.core.average(
                    evaluate, systems, rule.matrices, rule.weights, raw=raw, **cleaning
                )
                call = CallResult(averaged, raw_copy, None)
            pieces.append((escalated, self._outputs(sub, call)))
        if not climbed:  # a climb counts its call
            policy.count_call(on_rule=bool(escalated))
        out = pieces[0][1] if len(pieces) == 1 else self._merge(state, pieces)
        out["symmetrized_over_rule"] = torch.zeros(size, dtype=torch.bool, device=state.device)
        out["symmetrized_over_rule"][escalated] = True
        if probing:
            counts = torch.bincount(state.system_idx, minlength=size)
            errors = forces_metric(
                out.get("forces_equivariance_error"), out["energy_equivariance_error"], counts
            )
            for system, error in enumerate(errors.tolist()):
                message = policy.observe(error, system)
                if message is not None:
                    warn_user(f"system {system}: {message}", EquivarianceWarning)
        return out

    @staticmethod
    def _merge(state, pieces) -> dict[str, torch.Tensor]:
        """Outputs of sub-batches (systems, outputs) back into the batch's order."""
        out: dict[str, torch.Tensor] = {}
        for systems, values in pieces:
            index = torch.as_tensor(systems, device=state.device)
            # the atoms of the sub-state's systems, in the full state's numbering
            atom_index = torch.nonzero(torch.isin(state.system_idx, index)).flatten()
            for key, value in values.items():
                per_atom = key in PER_ATOM_KEYS
                if key not in out:
                    size = state.n_atoms if per_atom else n_systems(state)
                    # NaN where a sub-batch has no such output (a residual after a climb)
                    out[key] = value.new_full((size, *value.shape[1:]), float("nan"))
                if per_atom:
                    out[key][atom_index] = value
                else:
                    out[key][index] = value
        return out


#: the outputs with one row per atom (the rest have one per system)
PER_ATOM_KEYS = frozenset({"forces", "raw_forces", "forces_equivariance_error_per_atom"})


def _tensor(value) -> Any:
    """A copy of a torch-side result (None stays None), for in-place projection."""
    return None if value is None else torch.as_tensor(value).clone()


def _systems(state) -> Systems:
    return Systems.of_batch(state.system_idx, n_systems(state))
