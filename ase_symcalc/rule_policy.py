"""Which rotations to evaluate at each call: one policy for every front end.

The ASE calculator (``SymmetrizedCalculator``) and the torch-sim model
(``ase_symcalc.torchsim.SymmetrizedModel``) ask the same questions at every
call: which matrices and weights (a fixed rule, the rule in a fresh random
orientation, one random rotation), in which orientation to re-evaluate the
rule to estimate its residual, and, with ``quadrature="auto"``, when to
measure the residual again and which rule of the ladder to climb to. The
answers live here, with no model and no ASE: the front ends hand in a
function that measures a rule's residual on their structures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from ._warnings import EquivarianceWarning, warn_user
from .quadrature import O3Quadrature, auto_ladder, get_quadrature

__all__ = [
    "CALM_PROBES",
    "MODES",
    "PARITY_MARGIN",
    "PROBE_INTERVAL",
    "ATOM_BOUND_FACTOR",
    "RESIDUAL_BOUND_FACTOR",
    "RESIDUAL_ORIENTATIONS",
    "WARN_LEVEL",
    "RulePolicy",
    "forces_metric",
]

MODES = ("grid", "random-grid", "random-single", "random")

#: mode="random": calls between two probes (the extra orientation that gives
#: the equivariance errors): 1 + 1/10 evaluations per call, 1 + 2/10 with the
#: raw (lab-frame) prediction
PROBE_INTERVAL = 10

#: mode="random" with a tolerance: consecutive probes below it before the run
#: returns from the grid to one random rotation per call
CALM_PROBES = 5

#: mode="random" without a tolerance: warn once when a probe's forces
#: equivariance error exceeds this (eV/Å), about the force error of a
#: well-trained potential on its own test set
WARN_LEVEL = 0.05

#: the residual of a rule is measured from its average in this many more
#: Haar-random orientations (one improper, one proper when the target is O(3)):
#: with one the estimate scattered by a factor 3 across orientations
RESIDUAL_ORIENTATIONS = 2

#: ``forces_residual_bound = RESIDUAL_BOUND_FACTOR * forces_residual``, the number
#: ``quadrature="auto"`` keeps below ``tolerance``. Measured with the shipped
#: model (5 copper structures x 8 rules, every choice of the estimate's two
#: orientations; ``benchmarks/bench_residual.py --parts calibration``): the
#: worst rotation error of the remaining 18 random orientations (RMS force
#: difference to the structure's own orientation, the quantity of a rotation
#: test) over the estimate had a median of 2.0, a 95th percentile of 2.2 and
#: a 99th of 2.9 (O(3); SO(3): 1.6, 2.2, 2.8); 3 covered 99.2% (99.6%)
RESIDUAL_BOUND_FACTOR = 3.0

#: ``tolerance_per_atom=True``: ``forces_residual_bound = ATOM_BOUND_FACTOR *
#: forces_residual_max_atom``, a bound on the largest change of any atom's
#: force vector (its length) under a rotation or mirror. Measured as
#: ``RESIDUAL_BOUND_FACTOR`` (same structures, rules and orientations): the
#: worst atom's change over the remaining 18 orientations divided by the
#: largest per-atom estimate had a median of 2.05, a 95th percentile of 2.7
#: and a 99th of 3.1 (O(3); SO(3): 1.95, 2.7, 3.1), noisier than the RMS
#: (one atom, not all); 3.5 covered 99.7% (99.9%)
ATOM_BOUND_FACTOR = 3.5

#: quadrature="auto" with inversion: a rule without inversion that fails is
#: measured in all its orientations until the climb knows whether the model's
#: parity-odd part (which only the inversion coset removes) alone exceeds the
#: tolerance: when ``RESIDUAL_BOUND_FACTOR`` times its estimate is above
#: ``PARITY_MARGIN`` times the tolerance on two rules in a row, the remaining
#: rules without inversion are skipped; below 1 / ``PARITY_MARGIN`` on two in a
#: row, they are kept and no longer split. One estimate scatters by a factor
#: of 3: a single one would skip the cheap rules at loose tolerances
PARITY_MARGIN = 2.0


class RulePolicy:
    """The rotations of each call: fixed rule, random modes or ``"auto"``.

    Parameters are those of ``SymmetrizedCalculator`` of the same names:
    ``quadrature`` (a spec, an ``O3Quadrature`` or ``"auto"``), ``inversion``,
    ``orientation``, ``mode`` (``"grid"``, ``"random-grid"``,
    ``"random-single"``), ``seed``, and for ``"auto"`` ``tolerance`` (eV/Å,
    default 1e-3) and ``recheck`` (calls between residual measurements; 0:
    never). Bad values raise a ``ValueError`` that names the fix.

    ``mode="random"`` evaluates one Haar-random O(3) element per call (random
    parity with ``inversion``) and, every ``probe_interval`` calls, probes:
    ``probe_orientations`` more independent random elements of the same
    structure, drawn from a stream of their own (probing never changes the
    rotations the dynamics sees), whose spread estimates the equivariance
    errors. ``observe(forces_error)`` takes each probe's estimate: with a
    ``tolerance`` an estimate above it *escalates* to averaging over
    ``quadrature`` every call (``"auto"``: the ladder, to the same
    tolerance), and ``calm_probes`` consecutive probes below it return to
    random rotations; without one, the first estimate above ``WARN_LEVEL``
    is reported once.
    """

    def __init__(
        self,
        quadrature="group:I",
        *,
        inversion: bool = True,
        orientation="generic",
        mode: str = "grid",
        seed: int | None = None,
        tolerance: float | None = None,
        recheck: int | None = 100,
        probe_interval: int = PROBE_INTERVAL,
        probe_orientations: int = 1,
        calm_probes: int = CALM_PROBES,
        residual: bool = False,
        tolerance_per_atom: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        if orientation is not None and not isinstance(orientation, str):
            orientation = np.asarray(orientation, dtype=np.float64)
        self.inversion = inversion
        self.orientation = orientation
        self.mode = mode
        self.seed = seed
        self.random = mode == "random"
        if self.random and residual:
            raise ValueError(
                "residual=True measures a rule's residual; mode='random' uses one random "
                "rotation per call and its probes estimate the equivariance errors instead: "
                "drop residual=True, or use mode='grid'"
            )
        for name, value, low in (
            ("probe_interval", probe_interval, 0),
            ("probe_orientations", probe_orientations, 1),
            ("calm_probes", calm_probes, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(tolerance_per_atom, (bool, np.bool_)):
            raise ValueError(
                f"tolerance_per_atom must be True or False, got {tolerance_per_atom!r}"
            )
        #: the bound is on the worst atom's force error (True) or on the RMS (False)
        self.per_atom = bool(tolerance_per_atom)
        self.probe_interval = int(probe_interval)
        self.probe_orientations = int(probe_orientations)
        self.calm_probes = int(calm_probes)
        #: mode="random": the forces error above which the run escalates (None: never)
        self.escalation_tolerance = None
        if self.random and tolerance is not None:
            _check_tolerance(tolerance)
            self.escalation_tolerance = float(tolerance)
        #: mode="random": the systems averaged over the rule (the calculator has one: 0)
        self.escalated_systems: set[int] = set()
        self.calm: dict[int, int] = {}
        self.warned = False
        self.calls = 0
        self.auto = isinstance(quadrature, str) and quadrature.strip() == "auto"
        if self.auto:
            if mode not in ("grid", "random"):
                raise ValueError(
                    f"quadrature='auto' picks one fixed rule; mode={mode!r} randomizes it: "
                    "use mode='grid' (the default) or mode='random' (escalating to the ladder)"
                )
            tolerance = 1e-3 if tolerance is None else tolerance
            _check_tolerance(tolerance)
            if recheck is not None and (not isinstance(recheck, int) or recheck < 0):
                raise ValueError(f"recheck must be a number of calls >= 0, got {recheck!r}")
            self.tolerance = float(tolerance)
            self.recheck = recheck
            # with inversion the target is O(3) and every rung is a candidate; without,
            # SO(3) and the rungs without the inversion coset
            self.ladder = tuple(rung for rung in auto_ladder() if inversion or not rung[1])
            self.rung = 0
            self.chosen = False
            self.calls_since_check = 0
            self.last_residual: dict = {}
            self.rule = self.rung_rule(0)
        else:
            if tolerance is not None and not self.random:
                raise ValueError(
                    "tolerance= sets the target of quadrature='auto'; with a fixed rule use "
                    "residual=True to see its residual, or quadrature='auto'"
                )
            if self.per_atom and not residual:
                raise ValueError(
                    "tolerance_per_atom=True sets what quadrature='auto' (or residual=True) "
                    "bounds; with a fixed rule add residual=True, or use quadrature='auto'"
                )
            self.rule = get_quadrature(
                quadrature, inversion=inversion, seed=seed, orientation=orientation
            )
        self._rng = np.random.default_rng(seed)
        # the residual's random orientations: seeded, so that 'auto' picks the
        # same rule on every rerun
        self._residual_rng = np.random.default_rng(
            np.random.SeedSequence(0 if seed is None else seed, spawn_key=(1,))
        )
        # the probes' orientations: a stream of their own, so that probing (or
        # a monitor asking for one more probe) never changes the step's rotation
        self._probe_rng = np.random.default_rng(
            np.random.SeedSequence(0 if seed is None else seed, spawn_key=(2,))
        )

    @property
    def bound_factor(self) -> float:
        """``forces_residual_bound`` / the metric it is made from."""
        return ATOM_BOUND_FACTOR if self.per_atom else RESIDUAL_BOUND_FACTOR

    @property
    def metric_key(self) -> str:
        """The residual the bound is made from: the worst atom's, or the RMS."""
        return "forces_residual_max_atom" if self.per_atom else "forces_residual"

    # -- every call ----------------------------------------------------------

    @property
    def single_rotation(self) -> bool:
        """Whether this call evaluates one random O(3) element (no rule)."""
        return self.mode == "random-single" or (self.random and not self.escalated)

    @property
    def escalated(self) -> bool:
        """Whether system 0 (the calculator's structure) is averaged over the rule."""
        return 0 in self.escalated_systems

    def probe_scheduled(self) -> bool:
        """mode="random": whether this call (before ``count_call``) is a probe on schedule."""
        return self.random and self.probe_interval > 0 and self.calls % self.probe_interval == 0

    def forget_systems(self) -> None:
        """Drop the per-system escalation state (a batch of other systems)."""
        self.escalated_systems.clear()
        self.calm.clear()

    def rule_for_call(self) -> tuple[np.ndarray, np.ndarray]:
        """``(matrices (M, 3, 3), weights (M,))`` to evaluate at this call."""
        rule = self.rule
        if self.single_rotation:
            return self.step_rotation(), np.ones(1)
        if self.mode in ("grid", "random"):
            return rule.matrices, rule.weights
        rotation = Rotation.random(random_state=self._rng).as_matrix()
        return rule.matrices @ rotation, rule.weights

    def step_rotation(self) -> np.ndarray:
        """The call's Haar-random O(3) element, (1, 3, 3) (random modes)."""
        return self._random_element(self._rng)[None]

    def _random_element(self, rng) -> np.ndarray:
        """A Haar-random element of O(3) (of SO(3) without inversion)."""
        rotation = Rotation.random(random_state=rng).as_matrix()
        if self.inversion and rng.random() < 0.5:
            rotation = -rotation
        return rotation

    # -- mode="random": probes and escalation --------------------------------

    def probe_due(self) -> bool:
        """Whether this call (before ``count_call``) probes on its own schedule."""
        return self.single_rotation and self.probe_scheduled()

    def observe_due(self) -> bool:
        """Whether an escalated call's spread counts as a probe (same schedule)."""
        return self.escalated and self.probe_scheduled()

    def probe_rotations(self) -> np.ndarray:
        """``probe_orientations`` independent Haar-random O(3) elements (k, 3, 3)."""
        return np.stack(
            [self._random_element(self._probe_rng) for _ in range(self.probe_orientations)]
        )

    def observe(self, forces_error: float, system: int = 0) -> str | None:
        """Take one probe's forces equivariance error (eV/Å) of ``system``; escalate or return.

        Returns a one-line message when the run switches (or, without a
        tolerance, the first time the error exceeds ``WARN_LEVEL``), else None.
        """
        if not self.random or forces_error is None or not np.isfinite(forces_error):
            return None
        tolerance = self.escalation_tolerance
        if tolerance is None:
            if forces_error > WARN_LEVEL and not self.warned:
                self.warned = True
                return (
                    f"the forces equivariance error is {forces_error * 1e3:.1f} meV/Å, above "
                    f"{WARN_LEVEL * 1e3:.0f} meV/Å: one random rotation per step moves every "
                    "force that far from the symmetrized one; give a tolerance (--tolerance) "
                    "to switch to a rule where it is larger"
                )
            return None
        if system not in self.escalated_systems:
            if forces_error <= tolerance:
                return None
            self.escalated_systems.add(system)
            self.calm[system] = 0
            if self.auto:
                self.chosen = False  # climb (from the rung last used) at the next call
            return (
                f"forces equivariance error {forces_error * 1e3:.2f} meV/Å is above the "
                f"tolerance of {tolerance * 1e3:.2f} meV/Å: symmetrizing every step over "
                + ("the auto ladder" if self.auto else self.rule.name)
            )
        self.calm[system] = self.calm.get(system, 0) + 1 if forces_error <= tolerance else 0
        if self.calm[system] < self.calm_probes:
            return None
        self.escalated_systems.discard(system)
        self.calm.pop(system)
        return (
            f"forces equivariance error below the tolerance of {tolerance * 1e3:.2f} meV/Å "
            f"for {self.calm_probes} probes: back to one random rotation per step"
        )

    # -- restarts ------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything that decides the next calls (random streams, escalation, rung)."""
        state = {
            "rng": self._rng.bit_generator.state,
            "residual_rng": self._residual_rng.bit_generator.state,
            "probe_rng": self._probe_rng.bit_generator.state,
            "calls": self.calls,
            "escalated": sorted(self.escalated_systems),
            "calm": {str(system): count for system, count in self.calm.items()},
            "warned": self.warned,
        }
        if self.auto:
            state.update(
                rung=self.rung,
                chosen=self.chosen,
                calls_since_check=self.calls_since_check,
                last_residual={k: _as_list(v) for k, v in self.last_residual.items()},
            )
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where ``state_dict`` was taken."""
        self._rng.bit_generator.state = state["rng"]
        self._residual_rng.bit_generator.state = state["residual_rng"]
        self._probe_rng.bit_generator.state = state["probe_rng"]
        self.calls = int(state["calls"])
        self.escalated_systems = {int(system) for system in state["escalated"]}
        self.calm = {int(system): int(count) for system, count in state["calm"].items()}
        self.warned = bool(state["warned"])
        if self.auto and "rung" in state:
            self.rung = int(state["rung"])
            self.rule = self.rung_rule(self.rung)
            self.chosen = bool(state["chosen"])
            self.calls_since_check = int(state["calls_since_check"])
            self.last_residual = dict(state["last_residual"])

    def residual_orientations(self) -> tuple[np.ndarray, list[bool]]:
        """The rule's other orientations for its residual: ``(Q (K, 3, 3), improper (K,))``.

        ``RESIDUAL_ORIENTATIONS`` Haar-random elements, stratified by parity:
        with ``inversion`` (the target is O(3)) the first is improper and the
        second proper, so that a rule without inversion is also measured
        against mirror images; without, all proper. Seeded.
        """
        rotations, improper = [], []
        for k in range(RESIDUAL_ORIENTATIONS):
            rotation = Rotation.random(random_state=self._residual_rng).as_matrix()
            flip = bool(self.inversion) and k == 0
            rotations.append(-rotation if flip else rotation)
            improper.append(flip)
        return np.array(rotations), improper

    def measure(self, matrices, weights, first, evaluate, residuals, *, tolerance=None):
        """The residual of the rule ``(matrices, weights)`` whose average is ``first``.

        ``evaluate(matrices, weights)`` returns the front end's average over
        a rule; ``residuals(averages, improper)`` turns a list of averages (the
        first one the result) into ``(metric, residual dict)``. The rule is
        evaluated again in each of ``residual_orientations()``; with a
        ``tolerance`` it stops after the first when the bound is already above
        it (the rule fails either way). Adds ``forces_residual_bound``.
        """
        rotations, improper = self.residual_orientations()
        averages, flags = [first], [False]
        for rotation, flip in zip(rotations, improper, strict=True):
            averages.append(evaluate(matrices @ rotation, weights))
            flags.append(flip)
            metric, residual = residuals(averages, flags)
            if tolerance is not None and self.bound_factor * metric > tolerance:
                break
        if self.metric_key in residual:
            residual["forces_residual_bound"] = self.bound_factor * residual[self.metric_key]
        self._last_averages = (averages, flags)
        return metric, residual

    @property
    def rule_name(self) -> str | None:
        """The rule in use: None in ``"random-single"`` mode, ``"random"`` for
        one random rotation per call in ``"random"`` mode (a rule when escalated)."""
        if self.mode == "random-single":
            return None
        return "random" if self.single_rotation else self.rule.name

    # -- quadrature="auto" ---------------------------------------------------

    def rung_rule(self, rung: int) -> O3Quadrature:
        spec, inversion = self.ladder[rung]
        return get_quadrature(spec, inversion=inversion, orientation=self.orientation)

    def climb_due(self, on_rule: bool | None = None) -> bool:
        """Whether this call must measure the residual (and maybe climb).

        ``on_rule``: whether the call averages over the rule at all (default:
        not one random rotation; the torch-sim model says so for its
        escalated systems).
        """
        on_rule = not self.single_rotation if on_rule is None else on_rule
        if not self.auto or not on_rule:
            return False
        if not self.chosen:
            return True
        return self.recheck is not None and 0 < self.recheck <= self.calls_since_check

    def count_call(self, on_rule: bool | None = None) -> None:
        """Called once per call that did not climb (``on_rule`` as in ``climb_due``)."""
        on_rule = not self.single_rotation if on_rule is None else on_rule
        self.calls += 1
        if self.auto and on_rule:
            self.calls_since_check += 1

    def climb(self, average, evaluate, residuals) -> tuple[O3Quadrature, dict, Any]:
        """Measure the rule in use; climb the ladder until its bound is below the tolerance.

        ``average(rule)`` evaluates ``rule`` on the front end's structures and
        returns its average (what the call returns if the rule is kept);
        ``evaluate`` and ``residuals`` are those of ``measure``. A rung is
        kept when ``bound_factor`` times its residual (``metric_key``) is at most the
        tolerance; a rung whose first extra orientation already puts it above
        costs two passes, a kept one three. With inversion, the rungs without
        it are skipped once the model's parity-odd part alone fails (``_parity_vote``).
        Returns the rule kept, its residual and its average. Raises a
        ``ValueError`` on the first call when no rule reaches the tolerance;
        later (and in ``mode="random"``, whose escalations happen mid-run),
        warns and keeps the best rule. Counts as the call (``count_call`` is
        not called after it).
        """
        previous = self.rule
        best = None
        # None: not known yet whether the parity-odd part alone fails the tolerance
        parity_fails = None if self.inversion else False
        votes = []
        for rung in range(self.rung, len(self.ladder)):
            with_inversion = self.ladder[rung][1]
            if parity_fails and not with_inversion:
                continue
            rule = self.rung_rule(rung)
            first = average(rule)
            split = parity_fails is None and not with_inversion
            metric, residual = self.measure(
                rule.matrices,
                rule.weights,
                first,
                evaluate,
                residuals,
                tolerance=None if split else self.tolerance,
            )
            if best is None or metric < best[0]:
                best = (metric, rung, rule, residual, first)
            if self.bound_factor * metric <= self.tolerance:
                break
            if split:
                votes.append(self._parity_vote(metric, residuals))
                if len(votes) >= 2 and votes[-1] == votes[-2] and votes[-1] is not None:
                    parity_fails = votes[-1]
        else:
            assert best is not None  # the ladder has at least one rung
            metric, rung, rule, residual, first = best
            message = (
                f"no rule on the auto ladder reaches a forces residual bound of "
                f"{self.tolerance:.2e} eV/Å on this structure: the best is "
                f"{self.bound_factor * metric:.2e} eV/Å with {rule.name}; raise tolerance= "
                "or give a finer rule (quadrature='design:10', inversion=True)"
            )
            if not self.chosen and not self.random:
                raise ValueError(message)
            warn_user(message + "; keeping the best rule", EquivarianceWarning)
        if self.chosen and rung != self.rung:
            warn_user(
                f"quadrature='auto': the residual bound of {previous.name} exceeded the "
                f"tolerance of {self.tolerance:.2e} eV/Å on this structure; now using "
                f"{rule.name} ({len(rule)} evaluations)",
                EquivarianceWarning,
            )
        self.rung = rung
        self.rule = rule
        self.chosen = True
        self.calls_since_check = 0
        self.calls += 1
        self.last_residual = residual
        return rule, residual, first

    def _parity_vote(self, metric, residuals) -> bool | None:
        """After a rule without inversion failed in all its orientations: True when
        its parity-odd part alone clearly fails the tolerance, False when it
        clearly passes, None in between.

        The proper pair (orientations 0 and 2) measures the rotational residual
        ``s_p``; the pooled metric is ``sqrt((s_i^2 + s_p^2) / 2)`` with ``s_i``
        from the improper pairs, which also see the parity-odd part
        ``p^2 = s_i^2 - s_p^2``.
        """
        averages, flags = self._last_averages
        proper = [k for k, flip in enumerate(flags) if not flip]
        if len(proper) < 2:
            return None
        rotational, _ = residuals([averages[k] for k in proper], [False] * len(proper))
        bound = self.bound_factor * np.sqrt(max(2.0 * (metric**2 - rotational**2), 0.0))
        if bound > PARITY_MARGIN * self.tolerance:
            return True
        if bound < self.tolerance / PARITY_MARGIN:
            return False
        return None


def _as_list(value):
    """A residual (a float, or per structure an array or tensor) for JSON."""
    return value.tolist() if hasattr(value, "tolist") else value


def forces_metric(forces_value, energy_value, n_atoms):
    """The number compared with a tolerance: the forces value (eV/Å), or for a
    model without forces the energy value per atom (eV)."""
    if forces_value is not None:
        return forces_value
    return energy_value / n_atoms


def _check_tolerance(tolerance) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance > 0:
        raise ValueError(f"tolerance must be a positive number (eV/Å), got {tolerance!r}")
