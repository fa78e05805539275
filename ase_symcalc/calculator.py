"""``SymmetrizedCalculator``: an ASE calculator that symmetrizes another one."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
)

from ._warnings import EquivarianceWarning, warn_user
from .core import SymmetrizationCore
from .evaluators import StackedOutputs, check_outputs, check_structure, make_evaluator
from .quadrature import O3Quadrature, get_quadrature, next_rule
from .rule_policy import CALM_PROBES, PROBE_INTERVAL, RulePolicy, forces_metric
from .structure_symmetry import StructureSymmetry, SymmetryCache
from .symmetrize import (
    Systems,
    as_batch,
    first_structure,
    project_onto_structure,
    symmetrize,
    system,
)
from .transforms import matrix_to_voigt

__all__ = ["SymmetrizedCalculator", "StressNotAvailableError"]


class StressNotAvailableError(PropertyNotImplementedError):
    """Stress was asked for a structure that is not periodic in 3D."""


class SymmetrizedCalculator(Calculator):
    """Symmetrize any ASE calculator over a quadrature on O(3).

    For a structure ``x`` and a rule ``{(g_i, w_i)}`` the base model is run on
    every rotated copy ``g_i.x`` (positions, cell and momenta rotated; improper
    copies keep a right-handed cell), each output is brought back to the
    input's frame (``rho(g_i)^-1``: forces ``F g``, stress ``g^T S g``) and
    averaged with the weights. The average is exactly equivariant up to the
    rule's degree, whatever the base model does; the weighted spread of the
    back-rotated copies is the model's equivariance error for that structure.

    One pass over the rule fills every property the base provides (energy,
    per-atom energies, forces, stress for 3D-periodic cells), so asking for
    forces and then energy costs one pass. The stress is averaged as a full
    3x3 matrix and reported in ASE's Voigt order.

    Parameters
    ----------
    base :
        The model: any ASE calculator, or an ``Evaluator``.
    quadrature :
        A spec for ``get_quadrature`` (default ``"group:I"``: 60 rotations, 120
        with inversion, exact to degree 5), an ``O3Quadrature`` (used as is),
        or ``"auto"``: the cheapest rule of ``quadrature.auto_ladder()`` whose
        forces residual bound is below ``tolerance`` (see below).
    inversion, orientation :
        Passed to ``get_quadrature`` for string specs. The default ``"generic"``
        orientation keeps the rule off the symmetry axes of axis-aligned
        crystals, where an aligned rule averages nothing.
    mode :
        ``"grid"``: the fixed rule every call. ``"random-grid"``: the rule
        right-multiplied by a fresh random rotation at each call (exactness
        kept, unbiased for the rest, noisy in MD). ``"random-single"``: one
        random rotation (random parity when ``inversion``) per call.
        ``"random"``: one random O(3) element per call, monitored: every
        ``probe_interval`` calls (and whenever ``probe()`` is called) one more
        random orientation of the same structure gives an unbiased estimate
        of its equivariance errors (``symmetrize.estimate_equivariance_errors``),
        and with ``raw`` the lab frame gives the ``raw_*`` results, in the same
        batch. In expectation every call is the exact Haar average; each
        call's forces differ from it by the forces equivariance error (RMS).
        With ``tolerance``, a probe above it switches to averaging over
        ``quadrature`` every call (``"auto"``: the ladder, to the same
        tolerance) until ``calm_probes`` probes in a row are below it; without
        one, a ``UserWarning`` the first time a probe exceeds
        ``rule_policy.WARN_LEVEL`` (50 meV/Å). Cost per call:
        ``1 + (probe_orientations + raw) / probe_interval`` evaluations.
    seed :
        Seed of the random rotations of the random modes.
    batch_size :
        Copies evaluated together by batched evaluators; ignored by the ASE loop.
    remove_net_force :
        Remove the net force from every back-rotated copy (direct forces). The
        equivariance errors are then computed on the forces after removal.
        ``None`` (default): on for metatomic models run with direct forces (as
        metatomic-ase's own calculator does), off otherwise.
    forces :
        Metatomic models only: ``"direct"`` (the model's non-conservative
        forces and stress), ``"conservative"`` (minus the gradients of the
        energy of each copy, by autograd, batch by batch: their average is
        exactly minus the gradient of the symmetrized energy, and the stress
        its strain derivative), or ``None`` (direct when the model has direct
        outputs). In conservative mode a model with direct outputs also
        reports them, symmetrized, as ``direct_forces`` / ``direct_stress``.
    variant :
        Metatomic models with several output variants (``energy/pbe``,
        ``energy/r2scan``, ...): the one to use, for energy, forces and stress
        alike; ``None``: the model's default (a ``MetatomicCalculator`` base
        keeps the variants it was given).
    remove_net_torque :
        Remove the net force and then the net torque of the forces, per copy;
        only for non-periodic systems, where angular momentum is conserved.
    convergence_tolerance :
        If set (eV/Å), the first structure is also symmetrized with the next
        finer rule (``diagnostics.next_rule``) and a ``UserWarning`` is issued
        once when the RMS change of the forces exceeds it: the model's
        anisotropy then lies above the rule's degree. Costs one evaluation of
        the finer rule, once.
    residual :
        Also estimate how far the symmetrized output still is from the exact
        average: the rule is evaluated again in two independent seeded
        Haar-random orientations ``g_i Q`` (with ``inversion`` one of them a
        rotoinversion, so a rule without the inversion coset is measured
        against mirror images too), and the pairs of the three averages give
        the squared residual (each average is unbiased, so
        ``E|avg_a - avg_b|^2 = 2 E|avg - exact|^2``). Adds
        ``energy_residual`` (eV), ``forces_residual`` (eV/Å, RMS per
        component), ``stress_residual`` (eV/Å^3) and
        ``forces_residual_bound`` (``rule_policy.RESIDUAL_BOUND_FACTOR`` = 3
        times ``forces_residual``: see ``tolerance``); costs two extra passes
        over the rule.
    probe_interval, probe_orientations, calm_probes :
        ``mode="random"``: calls between probes (default 10; 0: only when
        ``probe()`` is called), random orientations per probe (default 1),
        and probes below ``tolerance`` before an escalated run returns to
        random rotations (default 5). Probes use a random stream of their own:
        they never change the rotation of any call.
    tolerance, recheck :
        ``mode="random"``: the forces equivariance error (eV/Å) above which
        the run escalates (see ``mode``). Otherwise ``quadrature="auto"``
        only: ``tolerance`` (eV/Å, default 1e-3) is a bound on the *rotation
        error* of the forces: the RMS per component of the difference between
        the symmetrized forces of the structure and those of a rotated (with
        ``inversion``: or mirrored) copy, rotated back, which is what rotation
        tests such as MLIP Arena's and ML-PEG's measure (their MAE is
        smaller than this RMS). A rule is kept when ``forces_residual_bound``
        (3 times the residual estimate from two more orientations; models
        without forces: the energy residual per atom, eV) is at most the
        tolerance; measured on the shipped model, the worst of ten
        orientations stayed below it in 99% of cases. On the first structure
        ``quadrature.auto_ladder()`` (only its rules without inversion when
        ``inversion=False``, then the target is SO(3)) is climbed from 12
        evaluations up: a failing rung costs two passes, the kept one three
        (a ``ValueError`` names the best bound if no rung passes). Every
        ``recheck`` calls (default 100; 0: never) the rule in use is measured
        again (two extra passes) and the ladder climbed further, with a
        warning, when its bound exceeds the tolerance.
        ``results["quadrature"]`` names the rule in use and the ``*_residual``
        keys hold the last measured residual.
    tolerance_per_atom :
        ``quadrature="auto"`` (or ``residual=True``): the bound is on the
        largest change of any *one atom's* force vector (its length, eV/Å)
        under a rotation or mirror, instead of the RMS over atoms:
        ``forces_residual_bound`` = ``rule_policy.ATOM_BOUND_FACTOR`` times
        ``forces_residual_max_atom`` (the largest per-atom residual, also
        reported). Stricter and dearer; what per-atom protocols such as MLIP
        Arena's force-direction cosine need (an atom whose force is 25 meV/Å
        turns by more than Arena's 1e-3 allows at a 1 meV/Å error).
    structure_symmetry, symmetry_tolerance :
        With ``structure_symmetry=True`` the O(3)-averaged outputs are also
        averaged over the structure's own symmetry operations, found at
        ``symmetry_tolerance`` (Å, default 1e-5): the space group of a
        crystal, the layer group of a slab, the point group of a cluster or
        molecule (``structure_symmetry.find_symmetry``). Forces, stress,
        per-atom energies and per-atom forces errors are projected; the
        energy is unchanged. No extra model evaluation; the operations are
        found once per structure and reused while it does not change, and a
        structure without symmetry (an MD snapshot) is recognised in about
        2 ms per 100 atoms, a few percent of one model call. Adds ``symmetry_group``,
        ``symmetry_operations`` and the O(3) average alone as ``o3_forces``,
        ``o3_stress``, ``o3_energies``.
    raw :
        Also report the raw prediction on the unrotated input (``raw_*``
        keys). Free when the rule contains the identity, one extra evaluation
        otherwise (the default generic orientation).

    Notes
    -----
    ``results`` holds ``energy``, ``free_energy`` (the average of the base's own
    free energy where it reports one, e.g. with smearing; else the energy), ``forces``,
    ``stress`` (Voigt, eV/Å^3), ``energies``; ``raw_energy``, ``raw_forces``,
    ``raw_stress``, ``raw_energies``; ``energy_equivariance_error`` (eV),
    ``forces_equivariance_error`` (eV/Å), ``forces_equivariance_error_per_atom``
    (N,), ``stress_equivariance_error`` (eV/Å^3); in conservative mode also
    ``direct_forces``, ``direct_stress``, ``direct_forces_equivariance_error``;
    ``quadrature`` (the rule's name) and ``evaluations`` (model evaluations of
    this call). Errors are NaN when only one copy is evaluated (``"identity"``,
    ``"random-single"``). A base that is an ASE calculator is asked for
    per-atom ``energies`` only when they are asked for
    (``get_potential_energies``), since many calculators list them but compute
    them only when configured to; they are reported whenever it computed them.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    default_parameters = {
        "quadrature": "group:I",
        "inversion": True,
        "orientation": "generic",
        "mode": "grid",
        "seed": None,
        "batch_size": None,
        "remove_net_force": None,
        "remove_net_torque": False,
        "forces": None,
        "variant": None,
        "convergence_tolerance": None,
        "raw": True,
        "residual": False,
        "tolerance": None,
        "tolerance_per_atom": False,
        "recheck": 100,
        "probe_interval": PROBE_INTERVAL,
        "probe_orientations": 1,
        "calm_probes": CALM_PROBES,
        "structure_symmetry": False,
        "symmetry_tolerance": 1e-5,
    }

    def __init__(
        self,
        base,
        quadrature="group:I",  # a spec or an O3Quadrature (see above)
        *,
        inversion: bool = True,
        orientation: str | np.ndarray | None = "generic",
        mode: str = "grid",
        seed: int | None = None,
        batch_size: int | None = None,
        remove_net_force: bool | None = None,
        remove_net_torque: bool = False,
        forces: str | None = None,
        variant: str | None = None,
        convergence_tolerance: float | None = None,
        raw: bool = True,
        residual: bool = False,
        tolerance: float | None = None,
        tolerance_per_atom: bool = False,
        recheck: int | None = 100,
        probe_interval: int = PROBE_INTERVAL,
        probe_orientations: int = 1,
        calm_probes: int = CALM_PROBES,
        structure_symmetry: bool = False,
        symmetry_tolerance: float = 1e-5,
        **kwargs,
    ):
        # the options are ASE parameters (todict, set); **kwargs: ASE's own (label,
        # directory, atoms), an unknown one is an UnknownOptionError from set()
        options = {
            "inversion": inversion,
            "orientation": orientation,
            "mode": mode,
            "seed": seed,
            "batch_size": batch_size,
            "remove_net_force": remove_net_force,
            "remove_net_torque": remove_net_torque,
            "forces": forces,
            "variant": variant,
            "convergence_tolerance": convergence_tolerance,
            "raw": raw,
            "residual": residual,
            "tolerance": tolerance,
            "tolerance_per_atom": tolerance_per_atom,
            "recheck": recheck,
            "probe_interval": probe_interval,
            "probe_orientations": probe_orientations,
            "calm_probes": calm_probes,
            "structure_symmetry": structure_symmetry,
            "symmetry_tolerance": symmetry_tolerance,
        }
        # only what differs from the defaults, so that todict() stays as short as before
        kwargs.update(
            {k: v for k, v in options.items() if not _same(v, self.default_parameters[k])}
        )
        self.evaluator = make_evaluator(base, batch_size=batch_size, forces=forces, variant=variant)
        self.base = base
        #: number of rotated copies the base model has evaluated so far
        self.evaluation_count = 0
        self._quadrature = None
        self._convergence_checked = False
        super().__init__(quadrature=quadrature, **kwargs)
        self._configure()
        # Truthful per instance: only what the base provides (stress needs a
        # 3D-periodic cell on top, checked at call time).
        self.implemented_properties = self._provided()

    def _provided(self) -> list[str]:
        provided = set(self.evaluator.implemented_properties)
        return [
            name
            for name in type(self).implemented_properties
            if name in provided or (name == "free_energy" and "energy" in provided)
        ]

    # -- configuration ------------------------------------------------------

    def set(self, **kwargs):
        """Change options; returns ASE's dict of the changed ones.

        Old results are dropped when anything changed. The rule policy (the
        rule ``auto`` climbed to, the random streams, ``mode="random"``'s
        escalation) is rebuilt only when one of ``POLICY_OPTIONS`` changed,
        with a ``UserWarning`` saying what was reset when it held state.
        """
        unknown = sorted(set(kwargs) - set(self.default_parameters) - {"parameters"})
        if unknown:
            raise UnknownOptionError(_unknown_options_message(unknown, self.default_parameters))
        changed = super().set(**kwargs)
        if changed and self._quadrature is not None:
            self.reset()  # new rule or options: old results are stale
            rebuild = bool(set(changed) & POLICY_OPTIONS)
            policy = self._policy
            if rebuild and policy.calls and (policy.auto or policy.mode != "grid"):
                warn_user(
                    f"set({', '.join(sorted(changed))}): the rule policy starts afresh "
                    f"({'the climb of auto, ' if policy.auto else ''}the random streams"
                    f"{' and escalations' if policy.random else ''} after {policy.calls} calls)"
                )
            self._configure(rebuild_policy=rebuild)
        return changed

    def _configure(self, rebuild_policy: bool = True):
        p = self.parameters
        if p.convergence_tolerance is not None:
            warn_user(
                "convergence_tolerance is deprecated and will be removed: the residual answers "
                "the same question on every structure; use residual=True (its *_residual "
                "results) or quadrature='auto' with tolerance=",
                FutureWarning,
            )
        orientation = p.orientation
        if orientation is not None and not isinstance(orientation, str):
            p.orientation = np.asarray(orientation, dtype=np.float64).tolist()  # JSON-friendly
        if rebuild_policy:
            self._build_policy(orientation)
        self._finish_configure()

    def _build_policy(self, orientation):
        p = self.parameters
        self._policy = RulePolicy(
            p.quadrature,
            inversion=p.inversion,
            orientation=orientation,
            mode=p.mode,
            seed=p.seed,
            tolerance=p.tolerance,
            recheck=p.recheck,
            probe_interval=p.probe_interval,
            probe_orientations=p.probe_orientations,
            calm_probes=p.calm_probes,
            residual=p.residual,
            tolerance_per_atom=p.tolerance_per_atom,
        )
        self._core = SymmetrizationCore(self._policy, residual=p.residual)
        self._quadrature = self._policy.rule  # set(): "configured" marker
        self._step_copy = None  # mode="random": the call's copy and average, for probe()
        self._observed = False  # mode="random": this call's errors went to the policy

    def _finish_configure(self):
        p = self.parameters
        tolerance = p.symmetry_tolerance
        if not isinstance(tolerance, (int, float)) or not tolerance > 0:
            raise ValueError(
                f"symmetry_tolerance must be a positive distance in Å, got {tolerance!r}"
            )
        self._symmetry_cache = SymmetryCache(tolerance)
        if p.batch_size is not None and (not isinstance(p.batch_size, int) or p.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {p.batch_size!r}")
        if p.batch_size is not None and hasattr(self.evaluator, "batch_size"):
            self.evaluator.batch_size = p.batch_size
        if p.forces is not None and getattr(self.evaluator, "forces", None) != p.forces:
            if not hasattr(self.evaluator, "forces"):
                raise ValueError(
                    f"forces={p.forces!r} needs a metatomic model (the conservative forces "
                    f"come from autograd); {self.evaluator.name} gives its forces as it "
                    "computes them: leave forces=None"
                )
            self.evaluator.forces = p.forces
            self.implemented_properties = self._provided()
        if p.variant is not None and getattr(self.evaluator, "variant", None) != p.variant:
            if not hasattr(self.evaluator, "variant"):
                raise ValueError(
                    f"variant={p.variant!r} selects an output variant of a metatomic model; "
                    f"{self.evaluator.name} has none: leave variant=None"
                )
            self.evaluator.variant = p.variant
            self.implemented_properties = self._provided()

    def _remove_net_force(self) -> bool:
        setting = self.parameters.remove_net_force
        if setting is None:
            return getattr(self.evaluator, "forces", None) == "direct"
        return bool(setting)

    @property
    def quadrature(self) -> O3Quadrature:
        """The rule used in ``"grid"`` mode (before any random rotation)."""
        return self._policy.rule

    # -- ASE contract -------------------------------------------------------

    def check_state(self, atoms, tol=1e-15):
        changes = super().check_state(atoms, tol=tol)
        # Charge, spin and other model inputs live in atoms.info.
        if self.atoms is not None and not _info_equal(self.atoms.info, atoms.info):
            changes.append("info")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {}
        try:
            self.results = self._compute(self.atoms, properties)
        except BaseException:
            self.reset()  # never leave stale or partial results behind
            raise

    def _compute(self, atoms: Atoms, properties) -> dict:
        if len(atoms) == 0:
            raise ValueError("cannot evaluate an empty Atoms object (it has no atoms)")
        check_structure(atoms)
        available = self.evaluator.available_properties(atoms)
        periodic_3d = bool(atoms.pbc.all()) and atoms.cell.rank == 3
        for name in properties:
            wanted = "energy" if name == "free_energy" else name
            if wanted in available:
                continue
            if wanted == "stress" and not periodic_3d:
                raise StressNotAvailableError(
                    f"stress is only defined for 3D-periodic cells, this structure has "
                    f"pbc={atoms.pbc.tolist()} and a cell of rank {atoms.cell.rank}; "
                    "give it a full cell with pbc=True, or don't ask for stress"
                )
            raise PropertyNotImplementedError(
                f"{self.evaluator.name} does not provide {wanted!r} "
                f"(it provides: {', '.join(sorted(available)) or 'nothing'}), "
                "so SymmetrizedCalculator cannot average it"
            )
        if "energy" not in available:
            raise PropertyNotImplementedError(
                f"{self.evaluator.name} does not provide 'energy', which the symmetrizer needs"
            )
        # energy, forces and stress together (ASE asks for them one at a time); what
        # the evaluator computes only on request, only when asked (CHGNet's energies;
        # the ASE loop still returns them when the base computed them anyway)
        on_request: frozenset[str] = getattr(self.evaluator, "on_request", frozenset())
        wanted = [
            name
            for name in ("energy", "forces", "stress", "energies")
            if name in available and (name not in on_request or name in properties)
        ]

        # found first: a structure whose symmetry cannot be built fails before any model call
        symmetry = self._structure_symmetry(atoms) if self.parameters.structure_symmetry else None
        count_before = self.evaluation_count
        policy = self._policy
        self._step_copy = None
        self._observed = False
        probed = False
        if policy.single_rotation and policy.random:
            probed = policy.probe_due()
            averaged, raw = self._random_call(atoms, wanted, probed)
            residual = None
            policy.count_call()
        else:
            climbing = policy.climb_due()
            probed = not climbing and policy.observe_due()  # a climb is no probe
            with_raw = self.parameters.raw and (climbing or not policy.random or probed)
            call = self._core.run(
                self._batch_evaluate(atoms, wanted),
                Systems.single(len(atoms)),
                raw=with_raw,
                **self._cleaning(atoms),
            )
            averaged, raw = self._one(call)
            residual = None if call.residual is None else _scalars(call.residual)
        results = self._results(averaged, raw, residual, symmetry)
        if self.parameters.convergence_tolerance is not None and not self._convergence_checked:
            self._check_convergence(atoms, averaged)
        results["evaluations"] = self.evaluation_count - count_before
        if probed:
            self._observe(results)
        return results

    def _results(self, averaged, raw, residual, symmetry) -> dict:
        """The ``results`` of one call from its averages (projected onto ``symmetry``)."""
        free_energy = averaged.energy if averaged.free_energy is None else averaged.free_energy
        results = {"energy": averaged.energy, "free_energy": free_energy}
        if symmetry is not None:
            results["symmetry_group"] = symmetry.group
            results["symmetry_operations"] = len(symmetry)
            for name in ("forces", "stress", "energies"):
                value = getattr(averaged, name)
                if value is not None:
                    results[f"o3_{name}"] = (
                        matrix_to_voigt(value) if name == "stress" else np.array(value)
                    )
            averaged = project_onto_structure(averaged, symmetry)
        results["energy_equivariance_error"] = averaged.energy_error
        if averaged.forces is not None:
            results["forces"] = averaged.forces
            results["forces_equivariance_error"] = averaged.forces_error
            results["forces_equivariance_error_per_atom"] = averaged.forces_error_per_atom
        if averaged.stress is not None:
            results["stress"] = matrix_to_voigt(averaged.stress)
            results["stress_equivariance_error"] = averaged.stress_error
        if averaged.energies is not None:
            results["energies"] = averaged.energies
        if averaged.direct_forces is not None:
            results["direct_forces"] = averaged.direct_forces
            results["direct_forces_equivariance_error"] = averaged.direct_forces_error
        if averaged.direct_stress is not None:
            results["direct_stress"] = matrix_to_voigt(averaged.direct_stress)
        if raw is not None:
            results.update(self._raw_results(raw))
        if residual:
            results.update(residual)
        if self._policy.rule_name is not None:
            results["quadrature"] = self._policy.rule_name
        return results

    # -- mode="random" ------------------------------------------------------

    def _random_call(self, atoms, wanted, probe: bool):
        """One random O(3) element; with ``probe``, the estimate from more orientations."""
        call, self._step_copy = self._core.random_call(
            self._batch_evaluate(atoms, wanted),
            Systems.single(len(atoms)),
            probing=probe,
            raw=self.parameters.raw,
            **self._cleaning(atoms),
        )
        return self._one(call)

    def _probed(self, atoms, wanted):
        """The step's averages with the errors estimated by a probe, and the raw outputs."""
        call = self._core.probe(
            self._batch_evaluate(atoms, wanted),
            Systems.single(len(atoms)),
            self._step_copy,
            raw=self.parameters.raw,
            **self._cleaning(atoms),
        )
        return self._one(call)

    @staticmethod
    def _one(call) -> tuple:
        """A batch of one's averages and raw copy as one structure's."""
        return system(call.averaged), None if call.raw is None else first_structure(call.raw)

    def _evaluate(self, atoms, matrices, wanted) -> StackedOutputs:
        outputs = self.evaluator.evaluate(atoms, matrices, wanted)
        self.evaluation_count += len(matrices)
        check_outputs(outputs, len(atoms), len(matrices), wanted, self.evaluator.name)
        return outputs

    def probe(self) -> dict:
        """Estimate the equivariance errors of the current structure now, if not yet done.

        ``mode="random"``: when the last call did not probe, evaluates
        ``probe_orientations`` more random orientations (and the lab frame
        with ``raw``) of the same structure and adds the estimated errors
        (and ``raw_*``) to ``results``; the energy, forces and stress stay
        those of the call. An escalated call (a rule) has its errors already
        and gets the lab frame only. What ``EquivarianceMonitor`` calls at
        every logged step, so that every logged row has a fresh estimate.
        A no-op in the other modes and when the last call already probed.
        Returns ``results``.
        """
        if not self.results or not self._policy.random or self._observed:
            return self.results
        atoms = self.atoms
        wanted = [
            name for name in ("energy", "forces", "stress", "energies") if name in self.results
        ]
        count_before = self.evaluation_count
        try:
            if self._step_copy is not None:
                averaged, raw = self._probed(atoms, wanted)
                symmetry = (
                    self._structure_symmetry(atoms) if self.parameters.structure_symmetry else None
                )
                results = self._results(averaged, raw, None, symmetry)
            else:
                results = dict(self.results)
                if self.parameters.raw and "raw_energy" not in results:
                    raw = self._evaluate(atoms, np.eye(3)[None], wanted).select(0)
                    results.update(self._raw_results(raw))
        except BaseException:
            self.reset()
            raise
        results["evaluations"] = self.results["evaluations"] + self.evaluation_count - count_before
        self.results = results
        self._observe(results)
        return results

    def _observe(self, results: dict) -> None:
        """Hand a probe's forces error to the policy; say so when the run switches."""
        error = forces_metric(
            results.get("forces_equivariance_error"),
            results.get("energy_equivariance_error", np.nan),
            len(self.atoms),
        )
        self._observed = True
        message = self._policy.observe(float(error))
        if message is not None:
            warn_user(message, EquivarianceWarning)

    # -- restarts -----------------------------------------------------------

    def state_dict(self) -> dict:
        """The random streams and the escalation / auto state, JSON-ready.

        With the cached ``results`` and the atoms, what a restarted run needs
        to make the same calls as the uninterrupted one.
        """
        return {"policy": self._policy.state_dict(), "evaluation_count": self.evaluation_count}

    def load_state_dict(self, state: dict, atoms: Atoms | None = None, results=None) -> None:
        """Continue from ``state_dict``; with ``atoms`` and their ``results``, as if
        this calculator had just computed them (a restarted run's first step
        evaluates nothing again)."""
        self._policy.load_state_dict(state["policy"])
        self.evaluation_count = int(state["evaluation_count"])
        if results is not None:
            if atoms is None:
                raise ValueError(
                    "load_state_dict: results= needs the atoms they belong to (atoms=)"
                )
            self.atoms = atoms.copy()
            self.results = dict(results)
            self._step_copy = None
            self._observed = True  # its probe, if any, was taken before the checkpoint

    def _structure_symmetry(self, atoms: Atoms) -> StructureSymmetry:
        return self._symmetry_cache.find(atoms)

    def _symmetrize(self, outputs, matrices, weights, atoms):
        return symmetrize(outputs, matrices, weights, **self._cleaning(atoms))

    def _cleaning(self, atoms: Atoms) -> dict:
        """The net force and torque removal of this structure's copies."""
        return {
            "net_force_removal": self._remove_net_force(),
            "net_torque_positions": self._torque_positions(atoms),
        }

    def _batch_evaluate(self, atoms: Atoms, wanted):
        """The core's ``evaluate``: this structure's copies as a batch of one (the
        residual's passes without per-atom energies)."""
        measured = [name for name in wanted if name != "energies"]

        def evaluate(matrices, measuring: bool) -> StackedOutputs:
            return as_batch(self._evaluate(atoms, matrices, measured if measuring else wanted))

        return evaluate

    def _torque_positions(self, atoms: Atoms):
        if not self.parameters.remove_net_torque:
            return None
        if atoms.pbc.any():
            raise ValueError(
                "remove_net_torque is only meaningful for non-periodic systems (angular "
                f"momentum is not conserved with pbc={atoms.pbc.tolist()}); set "
                "remove_net_torque=False or atoms.pbc = False"
            )
        return atoms.positions

    def _check_convergence(self, atoms: Atoms, averaged) -> None:
        self._convergence_checked = True
        finer = next_rule(self._policy.rule)
        if finer is None or averaged.forces is None or self._policy.single_rotation:
            return
        rule = get_quadrature(
            finer, inversion=self.parameters.inversion, orientation=self._policy.orientation
        )
        outputs = self.evaluator.evaluate(atoms, rule.matrices, ["energy", "forces"])
        self.evaluation_count += len(rule)
        reference = symmetrize(
            outputs, rule.matrices, rule.weights, net_force_removal=self._remove_net_force()
        )
        change = float(np.sqrt(np.mean((reference.forces - averaged.forces) ** 2)))
        tolerance = self.parameters.convergence_tolerance
        if change > tolerance:
            warn_user(
                f"symmetrized forces change by {change * 1e3:.2f} meV/Å (RMS) from "
                f"{self._policy.rule.name} to {rule.name}, above the tolerance of "
                f"{tolerance * 1e3:.2f} meV/Å: the model's anisotropy is not averaged out "
                f"by this rule; use quadrature={finer!r} or finer "
                "(ase_symcalc.diagnostics.check_convergence shows the whole ladder)",
            )

    def _raw_results(self, raw: StackedOutputs) -> dict:
        results: dict[str, float | np.ndarray] = {"raw_energy": float(raw.energy)}
        if raw.forces is not None:
            results["raw_forces"] = np.array(raw.forces)
        if raw.stress is not None:
            results["raw_stress"] = np.asarray(matrix_to_voigt(raw.stress))
        if raw.energies is not None:
            results["raw_energies"] = np.array(raw.energies)
        return results


#: the options that decide the rotations of each call: changing one with set()
#: starts the rule policy afresh
POLICY_OPTIONS = frozenset(
    {
        "quadrature",
        "inversion",
        "orientation",
        "mode",
        "seed",
        "tolerance",
        "tolerance_per_atom",
        "recheck",
        "probe_interval",
        "probe_orientations",
        "calm_probes",
        "residual",
    }
)


class UnknownOptionError(TypeError, ValueError):
    """An option ``SymmetrizedCalculator`` does not have (a ``TypeError``, as for any
    unexpected keyword; also a ``ValueError`` for code written before)."""


def _unknown_options_message(unknown: list[str], known) -> str:
    """Name the misspelt option and the closest valid one (``residuals`` -> ``residual``)."""
    import difflib

    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(known), n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (
        f"SymmetrizedCalculator got unknown option{'s' if len(unknown) > 1 else ''} "
        f"{', '.join(parts)}; its options are {', '.join(sorted(known))}"
    )


def _scalars(residual: dict) -> dict:
    """A batch of one's residuals (arrays of one, or lists after a restart) as floats."""
    return {key: float(np.asarray(value).reshape(-1)[0]) for key, value in residual.items()}


def _same(value, default) -> bool:
    try:
        return bool(value is default or (type(value) is type(default) and value == default))
    except (TypeError, ValueError):  # arrays
        return False


def _info_equal(first: dict, second: dict) -> bool:
    if first.keys() != second.keys():
        return False
    for key, value in first.items():
        other = second[key]
        try:
            if isinstance(value, np.ndarray) or isinstance(other, np.ndarray):
                if not np.array_equal(np.asarray(value), np.asarray(other)):
                    return False
            elif value != other:
                return False
        except (TypeError, ValueError):
            return False
    return True
