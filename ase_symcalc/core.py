"""The one orchestration of a symmetrized call, shared by both front ends.

``SymmetrizationCore`` runs the rule policy's decision for a call over a
batch of structures: the pass over the rule (with the raw copy when asked),
the averaging and equivariance errors (``symmetrize.symmetrize_systems``),
the residual from more orientations, ``auto``'s climb
(``rule_policy.RulePolicy``) and ``mode="random"``'s step and probes, with
net force (and torque) removal. The front end gives it one callable,
``evaluate(matrices, measuring) -> StackedOutputs`` with a batch's shapes
(``symmetrize.Systems``), and turns the batch results into its own:
``SymmetrizedCalculator`` (numpy, one structure) and the torch-sim
``SymmetrizedModel`` (torch, a batch, on the model's device) are thin shells
over it. What stays in the front ends: their output formats, and the
torch-sim model's split of a batch into escalated and calm systems.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._arrays import Array, as_float64, is_torch, segment_max, sqrt
from .evaluators import StackedOutputs
from .metrics import _pooled_squares
from .quadrature import find_identity
from .rule_policy import RulePolicy, forces_metric
from .symmetrize import (
    SymmetrizedOutputs,
    Systems,
    estimate_equivariance_errors,
    symmetrize_systems,
    with_errors_of,
)

__all__ = ["CallResult", "RandomStep", "SymmetrizationCore", "pooled_residuals"]

#: ``evaluate(matrices, measuring)``: the model on the copies ``g_m.x`` of every
#: structure of the batch; ``measuring`` is true for the residual's passes,
#: which need no per-atom energies
Evaluate = Callable[[Array, bool], StackedOutputs]


@dataclass
class CallResult:
    """One call's batch results: averages and errors, the raw copy (the lab
    frame, when asked and evaluated), and the residual dict (``*_residual``,
    ``forces_residual_bound``; per structure) when measured or kept by ``auto``."""

    averaged: SymmetrizedOutputs
    raw: StackedOutputs | None
    residual: dict[str, Any] | None


@dataclass
class RandomStep:
    """``mode="random"``: a call's one copy (its outputs, matrix and average), kept
    so that a later probe of the same structure estimates its errors."""

    outputs: StackedOutputs
    matrix: np.ndarray
    averaged: SymmetrizedOutputs


def pooled_residuals(
    averages: list[SymmetrizedOutputs], improper: list[bool], systems: Systems
) -> dict[str, Array]:
    """Per-structure residuals (S,) from one rule's averages in several orientations.

    ``metrics.pooled_residual`` for every structure of a batch at once: the
    squared differences of every pair of averages, pooled by the parity of
    their relative orientation, reduced per structure with segment sums.
    """

    def pooled(values, reduce):
        return sqrt(_pooled_squares(values, improper, reduce))

    residual = {"energy_residual": pooled([a.energy for a in averages], lambda d: d * d)}
    if averages[0].forces is not None:
        forces = [a.forces for a in averages]
        counts = as_float64(systems.counts, like=forces[0])
        residual["forces_residual"] = pooled(
            forces, lambda d: systems.sum((d * d).sum(axis=-1)) / (3 * counts)
        )
        per_atom = pooled(forces, lambda d: (d * d).sum(axis=-1))
        residual["forces_residual_max_atom"] = segment_max(per_atom, systems.index, systems.size)
    if averages[0].stress is not None:
        residual["stress_residual"] = pooled(
            [a.stress for a in averages], lambda d: (d * d).sum(axis=(-2, -1)) / 9
        )
    return residual


class SymmetrizationCore:
    """Runs a rule policy over batches of structures (see the module docstring).

    Parameters
    ----------
    policy :
        The ``RulePolicy``: the rule, ``auto``'s ladder, the random streams.
    residual :
        Measure the residual on every call (two more passes).
    """

    def __init__(self, policy: RulePolicy, *, residual: bool = False):
        self.policy = policy
        self.residual = residual
        # host arrays (a rule's matrices and weights, with the lab frame) and their
        # device copies, kept while the rule is in use: one copy per rule, not
        # one per call (a host-to-device copy waits for the device)
        self._kept: dict[tuple, tuple] = {}

    def _keep(self, key: tuple, make, *sources):
        entry = self._kept.get(key)
        if entry is None or any(a is not b for a, b in zip(entry[0], sources, strict=True)):
            if len(self._kept) > 16:
                self._kept.clear()
            entry = (sources, make())
            self._kept[key] = entry
        return entry[1]

    def on_device(self, array, like):
        """``array`` (a rule's host array) as a float64 tensor on ``like``'s device,
        made once while the same array is in use."""
        return self._keep(
            ("device", id(array), str(like.device)), lambda: as_float64(array, like=like), array
        )

    def average(
        self,
        evaluate: Evaluate,
        systems: Systems,
        matrices,
        weights,
        *,
        raw: bool = False,
        measuring: bool = False,
        **cleaning,
    ) -> tuple[SymmetrizedOutputs, StackedOutputs | None]:
        """One pass over a rule: the averages and errors of every structure, and
        with ``raw`` the lab-frame copy (free when the rule holds the identity).
        ``cleaning``: ``net_force_removal``, ``net_torque_positions``."""
        evaluated, raw_index = matrices, None
        if raw:
            raw_index = find_identity(matrices)
            if raw_index is None:
                raw_index = len(matrices)
                evaluated = self._keep(
                    ("with lab frame", id(matrices)),
                    lambda: np.concatenate([matrices, np.eye(3)[None]]),
                    matrices,
                )
        outputs = evaluate(evaluated, measuring)
        on_rule = outputs if raw_index != len(matrices) else outputs.select(slice(0, len(matrices)))
        if is_torch(outputs.energy):  # the rule on the outputs' device, once per rule
            matrices = self.on_device(matrices, outputs.energy)
            weights = self.on_device(weights, outputs.energy)
        averaged = symmetrize_systems(on_rule, matrices, weights, systems, **cleaning)
        return averaged, (outputs.select(raw_index) if raw_index is not None else None)

    def run(self, evaluate: Evaluate, systems: Systems, *, raw: bool = False, **cleaning):
        """The call the policy asks for: ``auto``'s climb when due, else one pass
        over the rule in use (plus the residual's passes with ``residual``)."""
        policy = self.policy
        if policy.climb_due():
            return self.climb(evaluate, systems, raw=raw, **cleaning)
        matrices, weights = policy.rule_for_call()
        averaged, raw_copy = self.average(evaluate, systems, matrices, weights, raw=raw, **cleaning)
        residual = None
        if self.residual:
            residual = self.measure(evaluate, systems, matrices, weights, averaged, **cleaning)
        elif policy.auto:
            residual = policy.last_residual
        policy.count_call()
        return CallResult(averaged, raw_copy, residual)

    def _callbacks(self, evaluate: Evaluate, systems: Systems, cleaning: dict):
        """``(evaluate, residuals)`` for ``RulePolicy.measure`` and ``climb``."""

        def average(rotated, weights):
            return self.average(evaluate, systems, rotated, weights, measuring=True, **cleaning)[0]

        def residuals(averages, improper):
            residual = pooled_residuals(averages, improper, systems)
            metric = forces_metric(
                residual.get(self.policy.metric_key),
                residual["energy_residual"],
                as_float64(systems.counts, like=residual["energy_residual"]),
            )
            return float(metric.max()), residual  # the worst structure decides

        return average, residuals

    def measure(self, evaluate, systems, matrices, weights, averaged, **cleaning) -> dict:
        """The residual of the rule ``(matrices, weights)`` whose average is ``averaged``."""
        callbacks = self._callbacks(evaluate, systems, cleaning)
        return self.policy.measure(matrices, weights, averaged, *callbacks)[1]

    def climb(self, evaluate: Evaluate, systems: Systems, *, raw: bool = False, **cleaning):
        """``quadrature="auto"``: measure the rule in use, climb while its bound is
        above the tolerance (the raw copy taken on the first pass only)."""
        kept: dict[str, Any] = {"raw": None}

        def first_pass(rule):
            with_raw = raw and kept["raw"] is None
            averaged, raw_copy = self.average(
                evaluate, systems, rule.matrices, rule.weights, raw=with_raw, **cleaning
            )
            kept["raw"] = raw_copy if raw_copy is not None else kept["raw"]
            return averaged

        _, residual, averaged = self.policy.climb(
            first_pass, *self._callbacks(evaluate, systems, cleaning)
        )
        return CallResult(averaged, kept["raw"], residual)

    # -- mode="random" -------------------------------------------------------

    def random_call(
        self, evaluate: Evaluate, systems: Systems, *, probing: bool, raw: bool = False, **cleaning
    ) -> tuple[CallResult, RandomStep]:
        """One random O(3) element for the batch; with ``probing``, in the same
        call, ``probe_orientations`` more (and the lab frame with ``raw``): the
        errors are then the unbiased estimate of ``estimate_equivariance_errors``.
        The step's outputs stay those of its one copy (probing never changes the
        dynamics)."""
        policy = self.policy
        step = policy.step_rotation()
        extra = policy.probe_rotations() if probing else np.zeros((0, 3, 3))
        lab = np.eye(3)[None] if probing and raw else np.zeros((0, 3, 3))
        matrices = np.concatenate([step, extra, lab])
        outputs = evaluate(matrices, False)
        first = outputs.select(slice(0, 1))
        averaged = symmetrize_systems(first, step, np.ones(1), systems, **cleaning)
        memo = RandomStep(first, step, averaged)
        if not probing:
            return CallResult(averaged, None, None), memo
        return self._estimated(memo, outputs.select(slice(1, None)), extra, systems, cleaning), memo

    def probe(
        self,
        evaluate: Evaluate,
        systems: Systems,
        memo: RandomStep,
        *,
        raw: bool = False,
        **cleaning,
    ) -> CallResult:
        """A later probe of the structure of ``memo``'s call (see ``random_call``)."""
        extra = self.policy.probe_rotations()
        lab = np.eye(3)[None] if raw else np.zeros((0, 3, 3))
        outputs = evaluate(np.concatenate([extra, lab]), False)
        return self._estimated(memo, outputs, extra, systems, cleaning)

    @staticmethod
    def _estimated(memo: RandomStep, outputs, extra, systems, cleaning) -> CallResult:
        """The step's average with the errors estimated from it and the probe's
        copies (``outputs``: the probe's, then the lab frame's if evaluated)."""
        k = len(extra)
        stacked = memo.outputs.concatenate(outputs.select(slice(0, k)))
        estimate = estimate_equivariance_errors(
            stacked, np.concatenate([memo.matrix, extra]), systems=systems, **cleaning
        )
        raw = outputs.select(k) if len(outputs) > k else None
        return CallResult(with_errors_of(memo.averaged, estimate), raw, None)
