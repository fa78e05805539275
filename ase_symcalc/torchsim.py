"""A symmetrizing torch-sim model: any torch-sim model, averaged over O(3).

``SymmetrizedModel(inner, quadrature="group:I")`` is a torch-sim
``ModelInterface``. For every system of a batch it evaluates the inner model
on the M rotated copies of the rule (all S x M copies in one batched call,
or ``batch_size`` copies at a time), brings each output back to the input's
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
  exact Haar average.

The rule policy (fixed rule, ``random-grid``, ``random-single``, ``auto``) is
``rule_policy.RulePolicy`` and the averaging ``symmetrize.symmetrize``: the
same objects as in ``SymmetrizedCalculator``, run here in torch, float64, on
the model's device. Needs Python >= 3.12 and ``torch-sim-atomistic``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ase_symcalc.torchsim needs torch-sim (pip install torch-sim-atomistic, "
        "Python >= 3.12); bash scripts/setup.sh installs it where Python >= 3.12 exists"
    ) from error

from ._torchsim_copies import copies_state, run_model
from ._warnings import EquivarianceWarning, warn_user
from .evaluators import StackedOutputs
from .metrics import pooled_residual, pooled_residual_per_atom
from .rule_policy import CALM_PROBES, PROBE_INTERVAL, RulePolicy, forces_metric
from .symmetrize import estimate_equivariance_errors, symmetrize, with_errors_of

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
        Copies per inner forward call; None: calls of up to 128 atoms on CPU
        (batching costs there) and 2048 on GPU
        (``_torchsim_copies.DEFAULT_ATOMS_PER_CALL``). The S x M copies of a
        batch hold M times the atoms of the batch, so memory is bounded by the
        call size, not by M.
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
        probe_interval: int = PROBE_INTERVAL,
        probe_orientations: int = 1,
        calm_probes: int = CALM_PROBES,
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
        self._systems_seen = None
        self.batch_size = batch_size
        self.remove_net_force = bool(remove_net_force)  # None: off (see above)
        self.residual = residual
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
        """Inner-model systems per system of a batch (M, the rule's size; 1 for the
        random modes, whose escalated systems take the rule's size)."""
        return 1 if self.policy.single_rotation else len(self.policy.rule)

    @property
    def quadrature(self):
        """The rule in use (``"auto"``: the one chosen so far)."""
        return self.policy.rule

    # -- forward -------------------------------------------------------------

    def forward(self, state: ts.SimState, **kwargs) -> dict[str, torch.Tensor]:
        policy = self.policy
        if policy.random:
            return self._random_forward(state)
        if policy.climb_due():
            return self._climb(state)
        matrices, weights = policy.rule_for_call()
        averaged = self._average(state, matrices, weights)
        policy.count_call()
        if self.residual:
            averaged.update(self._residual(state, matrices, weights, averaged))
        elif policy.auto:
            averaged.update(policy.last_residual)
        return averaged

    def _stacked(self, state, matrices) -> tuple[torch.Tensor, list]:
        """The inner model on every copy ``g_m.x_s``: ``(g, [(atoms of s, StackedOutputs)])``."""
        g = torch.as_tensor(np.array(matrices), dtype=torch.float64, device=state.device)
        copies, layout = copies_state(state, g)
        outputs = run_model(self.model, copies, self.batch_size)
        self.evaluation_count += copies.n_systems
        n_copies = len(g)
        energy = outputs["energy"].reshape(state.n_systems, n_copies)
        forces = outputs.get("forces")
        stress = outputs.get("stress")
        per_system = []
        start = 0
        for s, atoms in enumerate(layout.atoms_of_system):
            n = len(atoms)
            stacked = StackedOutputs(
                energy=energy[s],
                forces=None
                if forces is None
                else forces[start : start + n_copies * n].reshape(n_copies, n, 3),
                stress=None if stress is None else stress[s * n_copies : (s + 1) * n_copies],
            )
            start += n_copies * n
            per_system.append((atoms, stacked))
        return g, per_system

    def _collect(self, state, per_system: list) -> dict[str, torch.Tensor]:
        """Per-system ``SymmetrizedOutputs`` -> torch-sim outputs, in the model dtype."""
        dtype = self.dtype
        result: dict[str, Any] = {key: [] for key in ("energy", *ERROR_KEYS[:3])}
        if per_system[0][1].forces is not None:
            result["forces"] = torch.zeros_like(state.positions)
            result["forces_equivariance_error_per_atom"] = state.positions.new_zeros(state.n_atoms)
        if per_system[0][1].stress is not None:
            result["stress"] = []
        for atoms, mean in per_system:
            result["energy"].append(torch.as_tensor(mean.energy, dtype=torch.float64))
            result["energy_equivariance_error"].append(mean.energy_error)
            if mean.forces is not None:
                result["forces"][atoms] = mean.forces.to(dtype)
                result["forces_equivariance_error"].append(mean.forces_error)
                per_atom = mean.forces_error_per_atom.to(dtype)
                result["forces_equivariance_error_per_atom"][atoms] = per_atom
            if mean.stress is not None:
                result["stress"].append(mean.stress)
                result["stress_equivariance_error"].append(mean.stress_error)
        out = {}
        for key, value in result.items():
            if isinstance(value, list):
                if value:
                    out[key] = torch.stack(value).to(dtype)
            else:
                out[key] = value
        return out

    def _average(self, state, matrices, weights) -> dict[str, torch.Tensor]:
        """One pass over a rule for every system: averages and errors, in the model dtype."""
        g, per_system = self._stacked(state, matrices)
        w = torch.as_tensor(np.array(weights), dtype=torch.float64, device=state.device)
        means = [
            (atoms, symmetrize(stacked, g, w, net_force_removal=self.remove_net_force))
            for atoms, stacked in per_system
        ]
        return self._collect(state, means)

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
        if state.n_systems != self._systems_seen:
            policy.forget_systems()
            self._systems_seen = state.n_systems
        probing = policy.probe_scheduled()
        escalated = sorted(s for s in policy.escalated_systems if s < state.n_systems)
        calm = [s for s in range(state.n_systems) if s not in escalated]
        pieces = []
        if calm:
            step = policy.step_rotation()
            extra = policy.probe_rotations() if probing else np.zeros((0, 3, 3))
            sub = state if not escalated else state[calm]
            g, per_system = self._stacked(sub, np.concatenate([step, extra]))
            outputs = []
            for atoms, stacked in per_system:
                mean = symmetrize(
                    stacked.select(slice(0, 1)),
                    g[:1],
                    g.new_ones(1),
                    net_force_removal=self.remove_net_force,
                )
                if probing:
                    estimate = estimate_equivariance_errors(
                        stacked, g, net_force_removal=self.remove_net_force
                    )
                    mean = with_errors_of(mean, estimate)
                outputs.append((atoms, mean))
            pieces.append((calm, sub, self._collect(sub, outputs)))
        climbed = False
        if escalated:
            sub = state[escalated]
            if policy.climb_due(on_rule=True):
                averaged, climbed = self._climb(sub), True
            else:
                rule = policy.rule
                averaged = self._average(sub, rule.matrices, rule.weights)
            pieces.append((escalated, sub, averaged))
        if not climbed:  # a climb counts its call
            policy.count_call(on_rule=bool(escalated))
        out = pieces[0][2] if len(pieces) == 1 else self._merge(state, pieces)
        out["symmetrized_over_rule"] = torch.zeros(
            state.n_systems, dtype=torch.bool, device=state.device
        )
        out["symmetrized_over_rule"][escalated] = True
        if probing:
            counts = torch.bincount(state.system_idx, minlength=state.n_systems)
            errors = forces_metric(
                out.get("forces_equivariance_error"), out["energy_equivariance_error"], counts
            )
            for system, error in enumerate(errors.tolist()):
                message = policy.observe(error, system)
                if message is not None:
                    warn_user(f"system {system}: {message}", EquivarianceWarning)
        elif calm:
            # one copy per calm system: no spread (the escalated keep their rule's)
            calm_atoms = torch.isin(state.system_idx, torch.as_tensor(calm, device=state.device))
            for key in ERROR_KEYS:
                if key in out:
                    mask = calm_atoms if key.endswith("per_atom") else torch.as_tensor(calm)
                    out[key][mask] = float("nan")
        return out

    @staticmethod
    def _merge(state, pieces) -> dict[str, torch.Tensor]:
        """Outputs of sub-batches (systems, sub-state, outputs) back into the batch's order."""
        out: dict[str, torch.Tensor] = {}
        for systems, sub, values in pieces:
            index = torch.as_tensor(systems, device=state.device)
            # the atoms of the sub-state's systems, in the full state's numbering
            atom_index = torch.cat(
                [torch.nonzero(state.system_idx == s).flatten() for s in systems]
            )
            order = torch.argsort(sub.system_idx, stable=True)
            for key, value in values.items():
                per_atom = value.shape[0] == sub.n_atoms and key not in ("energy",)
                per_atom = per_atom and (key == "forces" or key.endswith("per_atom"))
                if key not in out:
                    size = state.n_atoms if per_atom else state.n_systems
                    # NaN where a sub-batch has no such output (a residual after a climb)
                    out[key] = value.new_full((size, *value.shape[1:]), float("nan"))
                if per_atom:
                    out[key][atom_index] = value[order]
                else:
                    out[key][index] = value
        return out

    def _residual(self, state, matrices, weights, averaged):
        """Per system: the same rule again in Haar-random orientations (``RulePolicy.measure``)."""
        return self.policy.measure(
            matrices,
            weights,
            averaged,
            lambda rotated, weights: self._average(state, rotated, weights),
            lambda averages, improper: self._pooled(state, averages, improper),
        )[1]

    def _pooled(self, state, averages, improper) -> tuple[float, dict[str, torch.Tensor]]:
        """``(worst system's metric, *_residual [S])`` from the averages of several orientations."""
        energies = torch.stack([a["energy"] for a in averages], dim=1)  # (S, K)
        residual = {
            "energy_residual": _stack([pooled_residual(list(e), improper) for e in energies])
        }
        counts = torch.bincount(state.system_idx, minlength=state.n_systems)
        if "forces" in averages[0]:
            order = torch.argsort(state.system_idx, stable=True)
            per_system, worst_atom = [], []
            for atoms in torch.split(order, counts.tolist()):
                forces = [a["forces"][atoms] for a in averages]
                per_system.append(pooled_residual(forces, improper))
                worst_atom.append(pooled_residual_per_atom(forces, improper).max())
            residual["forces_residual"] = _stack(per_system)
            residual["forces_residual_max_atom"] = _stack(worst_atom)
        if "stress" in averages[0]:
            stresses = torch.stack([a["stress"] for a in averages], dim=1)  # (S, K, 3, 3)
            residual["stress_residual"] = _stack(
                [pooled_residual(list(s), improper) for s in stresses]
            )
        residual = {key: value.to(self.dtype) for key, value in residual.items()}
        metric = forces_metric(
            residual.get(self.policy.metric_key), residual["energy_residual"], counts
        )
        return float(metric.max()), residual

    def _climb(self, state) -> dict[str, torch.Tensor]:
        """quadrature="auto": measure the rule on this batch, climb while the residual is large."""
        _, residual, averaged = self.policy.climb(
            lambda rule: self._average(state, rule.matrices, rule.weights),
            lambda rotated, weights: self._average(state, rotated, weights),
            lambda averages, improper: self._pooled(state, averages, improper),
        )
        averaged = dict(averaged)
        averaged.update(residual)
        return averaged


def _stack(values) -> torch.Tensor:
    """0-d float64 tensors (``metrics`` on torch input) into one (S,) tensor."""
    return torch.stack([torch.as_tensor(value) for value in values])
