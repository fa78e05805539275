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

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from .quadrature import O3Quadrature, auto_ladder, get_quadrature

__all__ = ["AUTO_MARGIN", "MODES", "RulePolicy"]

MODES = ("grid", "random-grid", "random-single")

#: quadrature="auto" accepts a rule when its estimated residual is below
#: tolerance / AUTO_MARGIN: one estimate scatters by tens of percent, and a
#: rotation test compares two averages, whose difference is sqrt(2) times
#: the residual of each
AUTO_MARGIN = 2.0


class RulePolicy:
    """The rotations of each call: fixed rule, random modes or ``"auto"``.

    Parameters are those of ``SymmetrizedCalculator`` of the same names:
    ``quadrature`` (a spec, an ``O3Quadrature`` or ``"auto"``), ``inversion``,
    ``orientation``, ``mode`` (``"grid"``, ``"random-grid"``,
    ``"random-single"``), ``seed``, and for ``"auto"`` ``tolerance`` (eV/Å,
    default 1e-3) and ``recheck`` (calls between residual measurements; 0:
    never). Bad values raise a ``ValueError`` that names the fix.
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
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        if orientation is not None and not isinstance(orientation, str):
            orientation = np.asarray(orientation, dtype=np.float64)
        self.inversion = inversion
        self.orientation = orientation
        self.mode = mode
        self.seed = seed
        self.auto = isinstance(quadrature, str) and quadrature.strip() == "auto"
        if self.auto:
            if mode != "grid":
                raise ValueError(
                    f"quadrature='auto' picks one fixed rule; mode={mode!r} randomizes it: "
                    "use mode='grid' (the default)"
                )
            tolerance = 1e-3 if tolerance is None else tolerance
            if not isinstance(tolerance, (int, float)) or not tolerance > 0:
                raise ValueError(f"tolerance must be a positive number (eV/Å), got {tolerance!r}")
            if recheck is not None and (not isinstance(recheck, int) or recheck < 0):
                raise ValueError(f"recheck must be a number of calls >= 0, got {recheck!r}")
            self.tolerance = float(tolerance)
            self.recheck = recheck
            self.rung = 0
            self.chosen = False
            self.calls_since_check = 0
            self.last_residual: dict = {}
            self.rule = self.rung_rule(0)
        else:
            if tolerance is not None:
                raise ValueError(
                    "tolerance= sets the target of quadrature='auto'; with a fixed rule use "
                    "residual=True to see its residual, or quadrature='auto'"
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

    # -- every call ----------------------------------------------------------

    def rule_for_call(self) -> tuple[np.ndarray, np.ndarray]:
        """``(matrices (M, 3, 3), weights (M,))`` to evaluate at this call."""
        rule = self.rule
        if self.mode == "grid":
            return rule.matrices, rule.weights
        rotation = Rotation.random(random_state=self._rng).as_matrix()
        if self.mode == "random-grid":
            return rule.matrices @ rotation, rule.weights
        if self.inversion and self._rng.random() < 0.5:
            rotation = -rotation
        return rotation[None], np.ones(1)

    def residual_rotation(self) -> np.ndarray:
        """A Haar-random rotation: the rule's second orientation for its residual."""
        return Rotation.random(random_state=self._residual_rng).as_matrix()

    @property
    def rule_name(self) -> str | None:
        """The rule's name, None in ``"random-single"`` mode (no rule is used)."""
        return None if self.mode == "random-single" else self.rule.name

    # -- quadrature="auto" ---------------------------------------------------

    def rung_rule(self, rung: int) -> O3Quadrature:
        spec, inversion = auto_ladder()[rung]
        return get_quadrature(spec, inversion=inversion, orientation=self.orientation)

    def climb_due(self) -> bool:
        """Whether this call must measure the residual (and maybe climb)."""
        if not self.auto:
            return False
        if not self.chosen:
            return True
        return bool(self.recheck) and self.calls_since_check >= self.recheck

    def count_call(self) -> None:
        if self.auto:
            self.calls_since_check += 1

    def climb(
        self, measure: Callable[[O3Quadrature], tuple[float, dict, Any]], stacklevel: int = 5
    ) -> tuple[O3Quadrature, dict, Any]:
        """Measure the rule in use; climb the ladder until the residual is small enough.

        ``measure(rule)`` evaluates ``rule`` on the front end's structures and
        returns ``(metric, residual, payload)``: the residual compared with
        the tolerance (eV/Å), the ``*_residual`` results and whatever the front
        end needs back (its averages). Returns the rule kept, its residual
        and its payload. Raises a ``ValueError`` on the first call when no
        rule reaches the tolerance; later, warns and keeps the best rule.
        """
        previous = self.rule
        best = None
        for rung in range(self.rung, len(auto_ladder())):
            rule = self.rung_rule(rung)
            metric, residual, payload = measure(rule)
            if best is None or metric < best[0]:
                best = (metric, rung, rule, residual, payload)
            if metric * AUTO_MARGIN <= self.tolerance:
                break
        else:
            metric, rung, rule, residual, payload = best
            message = (
                f"no rule on the auto ladder reaches a forces residual of "
                f"{self.tolerance:.2e} eV/Å on this structure: the best is "
                f"{metric:.2e} eV/Å with {rule.name}; raise tolerance= or "
                "give a finer rule (quadrature='design:10', inversion=True)"
            )
            if not self.chosen:
                raise ValueError(message)
            warnings.warn(message + "; keeping the best rule", UserWarning, stacklevel=stacklevel)
        if self.chosen and rung != self.rung:
            warnings.warn(
                f"quadrature='auto': the residual of {previous.name} exceeded the tolerance of "
                f"{self.tolerance:.2e} eV/Å on this structure; now using "
                f"{rule.name} ({len(rule)} evaluations)",
                UserWarning,
                stacklevel=stacklevel,
            )
        self.rung = rung
        self.rule = rule
        self.chosen = True
        self.calls_since_check = 0
        self.last_residual = residual
        return rule, residual, payload
