"""Batched evaluator for metatomic models (PET, PET-MAD, UPET ... as ``.pt`` files).

The neighbour list of a structure is rotation invariant: the pairs and cell
shifts of ``g.x`` are those of ``x`` (shifts negated for improper ``g``, whose
copy keeps the cell ``H R^T``), only the pair vectors rotate. So the list is
computed once with vesin, and every rotated copy gets its pair vectors as
``r'_j - r'_i + S' H'`` from its own positions and cell, in torch (exact, and
differentiable for conservative forces). Copies run through the model in
batches of ``batch_size`` systems; outputs are accumulated in float64.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np
from ase import Atoms

from ..transforms import proper_part
from ._base import StackedOutputs, check_elements

__all__ = ["MetatomicEvaluator", "DEFAULT_CPU_BATCH_SIZE"]

# Measured on 2 CPU cores (benchmarks/bench_symmetrize.py): batching copies
# brings no speed on CPU for PET-sized models and costs memory; on GPUs larger
# batches fill the device.
DEFAULT_CPU_BATCH_SIZE = 1
DEFAULT_GPU_BATCH_SIZE = 16


def _import_torch():
    try:
        import metatomic.torch as mta
        import torch
        from metatensor.torch import Labels, TensorBlock
    except ImportError as error:  # pragma: no cover - dependencies of the package
        raise ImportError(
            "the metatomic evaluator needs torch, metatensor-torch and "
            "metatomic-torch: pip install ase-symcalc (they are dependencies)"
        ) from error
    return torch, mta, Labels, TensorBlock


def _pick_output(outputs, names, variant=None):
    """The model's output for the first of ``names`` it has, in ``variant``.

    metatomic's ``pick_output`` resolves variants (``energy/pbe``: ``name`` or
    ``name/variant``); None when the model has no output of any of ``names``.
    """
    from metatomic.torch import pick_output

    for name in names:
        if any(key == name or key.startswith(name + "/") for key in outputs):
            try:
                return pick_output(name, outputs, variant)
            except ValueError as error:
                reason = " ".join(line.strip() for line in str(error).splitlines())
                raise ValueError(
                    f"{reason}; choose a variant with SymmetrizedCalculator(model, "
                    "variant=...) or ase-symcalc --variant"
                ) from error
    return None


def is_metatomic_calculator(value) -> bool:
    """A ``metatomic_ase.MetatomicCalculator`` (nothing imported to answer)."""
    module = sys.modules.get("metatomic_ase")
    return module is not None and isinstance(value, module.MetatomicCalculator)


def is_metatomic_model(value) -> bool:
    """An exported ``AtomisticModel``: the Python class, or a loaded TorchScript one
    (``original_name``, the check metatomic-ase makes itself)."""
    module = sys.modules.get("metatomic.torch")
    if module is not None and isinstance(value, module.AtomisticModel):
        return True
    torch = sys.modules.get("torch")
    return (
        torch is not None
        and isinstance(value, torch.jit.ScriptModule)
        and getattr(value, "original_name", None) == "AtomisticModel"
    )


#: the outputs a MetatomicCalculator resolves from its ``variants`` parameter
_CALCULATOR_OUTPUTS = {
    "_energy_key": ("energy", None),
    "_nc_forces_key": ("non_conservative_force", ("forces", True)),
    "_nc_stress_key": ("non_conservative_stress", ("stress", True)),
}


def calculator_settings(calculator) -> tuple:
    """``(model, non_conservative, output keys, device)`` of a ``MetatomicCalculator``,
    from its public surface only (``model()``, ``parameters``).

    The output keys follow metatomic-ase's own rule: every output takes its
    entry of ``parameters["variants"]``, else the energy's; direct forces and
    stress only where ``non_conservative`` asks for them. The device is the one
    the user gave (None: ``pick_device`` chooses, as metatomic-ase did). Pinned
    against the installed metatomic-ase by ``tests/test_metatomic.py``.
    """
    parameters = calculator.parameters
    # metatomic-ase 0.1.4 has a model() method; older releases an attribute
    model = calculator.model() if callable(calculator.model) else calculator.model
    setting = parameters.get("non_conservative", False)
    variants = dict(parameters.get("variants") or {})
    if "non_conservative_forces" in variants:  # the deprecated spelling
        variants.setdefault("non_conservative_force", variants["non_conservative_forces"])
    outputs = model.capabilities().outputs
    chosen = {}
    for key, (name, wanted) in _CALCULATOR_OUTPUTS.items():
        if wanted is not None and setting not in wanted:
            continue
        picked = _pick_output(outputs, [name], variants.get(name, variants.get("energy")))
        if picked is not None:
            chosen[key] = picked
    return model, setting, chosen, parameters.get("device")


class MetatomicEvaluator:
    """Run a metatomic model on many rotated copies of one structure.

    Parameters
    ----------
    model :
        Path to an exported ``.pt`` model, the name of a shipped model
        (``"pet-cu-emt"``), an ``AtomisticModel``, or a
        ``metatomic_ase.MetatomicCalculator`` (its model, device and
        ``non_conservative`` setting are reused).
    forces :
        ``"direct"``: the model's ``non_conservative_force(s)`` and
        ``non_conservative_stress`` outputs; ``"conservative"``: minus the
        gradients of the energy (autograd, per batch); ``None``: direct when
        the model has direct outputs.
    device :
        torch device; default: the first the model supports that is available.
    batch_size :
        rotated copies per model call; default 1 on CPU, 16 on GPU.
    variant :
        the output variant of a model with several (``"pbe"`` picks
        ``energy/pbe`` and the forces and stress of the same variant); default:
        the model's default outputs, or the variants a ``MetatomicCalculator``
        was given.
    """

    def __init__(
        self,
        model,
        *,
        forces: str | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        variant: str | None = None,
        extensions_directory=None,
    ):
        torch, mta, _, _ = _import_torch()
        self._torch = torch
        nc_setting = None
        chosen = {}  # output keys a MetatomicCalculator resolved from its variants
        if is_metatomic_calculator(model):
            model, nc_setting, chosen, calculator_device = calculator_settings(model)
            device = device or calculator_device
        if isinstance(model, (str, os.PathLike)):
            from .. import models

            path = os.fspath(model)
            if not os.path.exists(path) and path in models.list_pretrained():
                path = str(models.path(path))  # a shipped model's name
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"metatomic model file '{path}' does not exist; give an ASE calculator, "
                    "or the path of an exported metatomic .pt model "
                    "(ase_symcalc.models.list_pretrained() lists the shipped ones)"
                )
            with models.loading(path):
                model = mta.load_atomistic_model(path, extensions_directory=extensions_directory)
            self.name = f"metatomic model {os.path.basename(path)}"
        else:
            self.name = "metatomic model"
        self.model = model
        capabilities = model.capabilities()
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[capabilities.dtype]
        self.device = torch.device(mta.pick_device(capabilities.supported_devices, device))
        # an explicit variant wins over the ones a MetatomicCalculator resolved
        self._select_outputs(variant, chosen if variant is None else None)
        if forces is None and nc_setting is not None:
            forces = "direct" if nc_setting in (True, "forces") else "conservative"
        self.forces = forces  # validated by the setter
        if model.requested_inputs(use_new_names=True):
            raise NotImplementedError(
                f"{self.name} requests extra inputs "
                f"({', '.join(model.requested_inputs(use_new_names=True))}), which the "
                "batched evaluator does not rotate yet; wrap a "
                "metatomic_ase.MetatomicCalculator in ase_symcalc.evaluators."
                "ASECalculatorEvaluator to use the generic loop"
            )
        self._nl_options = list(model.requested_neighbor_lists())
        self._atomic_types = sorted(int(z) for z in capabilities.atomic_types)
        if batch_size is None:
            batch_size = (
                DEFAULT_CPU_BATCH_SIZE if self.device.type == "cpu" else DEFAULT_GPU_BATCH_SIZE
            )
        self.batch_size = int(batch_size)

    def _select_outputs(self, variant: str | None, chosen: dict | None = None) -> None:
        """Resolve the energy / direct forces / direct stress output keys."""
        chosen = chosen or {}
        outputs = self.model.capabilities().outputs
        energy = chosen.get("_energy_key") or _pick_output(outputs, ["energy"], variant)
        if energy is None:
            raise ValueError(f"{self.name} has no 'energy' output, which the symmetrizer needs")
        if variant is None and "/" in energy:
            variant = energy.split("/", 1)[1]  # forces and stress follow the energy
        forces = chosen.get("_nc_forces_key") or _pick_output(
            outputs, ["non_conservative_force", "non_conservative_forces"], variant
        )
        stress = chosen.get("_nc_stress_key") or _pick_output(
            outputs, ["non_conservative_stress"], variant
        )
        self._energy_key, self._forces_key, self._stress_key = energy, forces, stress
        self._per_atom_energy = outputs[energy].sample_kind == "atom"
        self._variant = variant

    @property
    def variant(self) -> str | None:
        """The output variant in use (None: the model's default outputs)."""
        return self._variant

    @variant.setter
    def variant(self, value: str | None) -> None:
        names = ("_variant", "_energy_key", "_forces_key", "_stress_key", "_per_atom_energy")
        before = {name: getattr(self, name) for name in names}
        self._select_outputs(value)
        try:
            self.forces = self._forces  # re-validated against the new outputs
        except ValueError:
            for name, old in before.items():
                setattr(self, name, old)
            raise

    @property
    def forces(self) -> str:
        """``"direct"`` or ``"conservative"``: where forces and stress come from."""
        return self._forces

    @forces.setter
    def forces(self, value: str | None) -> None:
        if value is None:
            value = "direct" if self._forces_key is not None else "conservative"
        if value not in ("direct", "conservative"):
            raise ValueError(f"forces must be 'direct' or 'conservative', got {value!r}")
        if value == "direct" and self._forces_key is None:
            raise ValueError(
                f"{self.name} has no non_conservative_force output, so it has no direct "
                "forces; use forces='conservative' (minus the gradient of its energy)"
            )
        self._forces = value
        self.implemented_properties = ["energy", "forces"]
        if self._per_atom_energy:
            self.implemented_properties.append("energies")
        if value == "conservative" or self._stress_key is not None:
            self.implemented_properties.append("stress")

    @property
    def has_direct_outputs(self) -> bool:
        """Whether the model predicts forces directly (non-conservative outputs)."""
        return self._forces_key is not None

    # -- the Evaluator protocol ----------------------------------------------

    def available_properties(self, atoms: Atoms) -> set[str]:
        available = {"energy", "forces"}
        if self._per_atom_energy:
            available.add("energies")
        periodic = bool(atoms.pbc.all()) and atoms.cell.rank == 3
        if periodic and (self.forces == "conservative" or self._stress_key is not None):
            available.add("stress")
        return available

    def evaluate(
        self, atoms: Atoms, matrices: np.ndarray, properties: Sequence[str], batch_size=None
    ) -> StackedOutputs:
        torch = self._torch
        matrices = np.asarray(matrices, dtype=np.float64)
        batch_size = int(batch_size or self.batch_size)
        shared = self._prepare(atoms)
        names = ("energy", "forces", "stress", "energies", "direct_forces", "direct_stress")
        chunks: dict[str, list] = {name: [] for name in names}
        for start in range(0, len(matrices), batch_size):
            batch = matrices[start : start + batch_size]
            try:
                if self.forces == "conservative":
                    out = self._run_conservative(atoms, batch, shared, properties)
                else:
                    with torch.inference_mode():
                        out = self._run_direct(atoms, batch, shared, properties)
            except RuntimeError as error:
                if "out of memory" in str(error).lower():
                    raise MemoryError(
                        f"{self.name} ran out of memory on {self.device} evaluating "
                        f"{len(batch)} rotated copies of {len(atoms)} atoms at once; "
                        "lower batch_size (SymmetrizedCalculator(..., batch_size=1)), "
                        "use a smaller rule, or run on CPU"
                    ) from error
                raise
            for name, values in out.items():
                chunks[name].append(values)
        stacked = {name: np.concatenate(values) for name, values in chunks.items() if values}
        return StackedOutputs(
            energy=stacked["energy"],
            forces=stacked.get("forces"),
            stress=stacked.get("stress"),
            energies=stacked.get("energies"),
            direct_forces=stacked.get("direct_forces"),
            direct_stress=stacked.get("direct_stress"),
        )

    def feature_names(self) -> list[str]:
        """Per-atom internal outputs the model offers (``feature``, last-layer features)."""
        outputs = self.model.capabilities().outputs
        names = [name for name in ("feature", "features") if name in outputs][:1]
        names += sorted(name for name in outputs if name.endswith("_last_layer_features"))
        return names

    def evaluate_features(
        self,
        atoms: Atoms,
        matrices: np.ndarray,
        names: Sequence[str],
        batch_size=None,
        properties: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Per-atom internal features ``(M, N, F)`` on every copy, float64.

        ``names`` are model outputs such as ``"feature"`` or
        ``"mtt::aux::energy_last_layer_features"`` (see ``feature_names``).
        With direct forces, ``properties`` (energy, forces, stress, energies)
        come from the same forward pass, stacked under their own names.
        """
        if properties and self.forces != "direct":
            raise ValueError(
                "outputs ride along with the features only for direct forces; "
                "call evaluate() for the conservative ones"
            )
        from metatomic.torch import ModelEvaluationOptions, ModelOutput

        torch = self._torch
        outputs = self.model.capabilities().outputs
        missing = [name for name in names if name not in outputs]
        if missing:
            raise ValueError(
                f"{self.name} has no output {', '.join(map(repr, missing))}; "
                f"its per-atom features are: {', '.join(self.feature_names()) or 'none'}"
            )
        matrices = np.asarray(matrices, dtype=np.float64)
        batch_size = int(batch_size or self.batch_size)
        shared = self._prepare(atoms)
        requested = {name: ModelOutput(sample_kind="atom") for name in names}
        if properties:
            requested.update(self._outputs("stress" in properties, direct=True))
        options = ModelEvaluationOptions(
            length_unit="angstrom", outputs=requested, selected_atoms=None
        )
        chunks: dict[str, list] = {name: [] for name in [*names, *properties]}
        for start in range(0, len(matrices), batch_size):
            batch = matrices[start : start + batch_size]
            with torch.inference_mode():
                systems, _, _ = self._systems(atoms, batch, shared, requires_grad=False)
                result = self.model(systems, options, check_consistency=False)
            for name in names:
                values = result[name].block().values
                chunks[name].append(
                    values.reshape(len(batch), len(atoms), -1).double().cpu().numpy()
                )
            if properties:
                for name, values in self._direct_values(
                    result, len(batch), len(atoms), properties
                ).items():
                    chunks[name].append(values)
        return {name: np.concatenate(values) for name, values in chunks.items() if values}

    # -- internals -------------------------------------------------------------

    def _prepare(self, atoms: Atoms) -> dict:
        """Everything the copies share, built once per structure.

        Pairs and integer cell shifts come from vesin on the unrotated
        structure; the sample Labels for proper (shifts S) and improper
        (shifts -S) copies are built once and shared by every copy.
        """
        from vesin import NeighborList

        torch, _, Labels, _ = _import_torch()
        check_elements(atoms, self._atomic_types, self.name)
        device, dtype = self.device, self.dtype
        periodic = atoms.pbc.copy()
        # metatomic wants zero cell vectors along non-periodic directions (a
        # slab's vacuum vector, a cluster's box), as MetatomicCalculator sends
        box = np.zeros((3, 3))
        box[periodic] = atoms.cell.array[periodic]
        lists = []
        for options in self._nl_options:
            calculator = NeighborList(
                cutoff=options.engine_cutoff("angstrom"), full_list=options.full_list
            )
            i, j, shifts = calculator.compute(
                atoms.positions, box, periodic if periodic.any() else False, quantities="ijS"
            )
            samples = {}
            for sign in (1, -1):
                values = np.column_stack([i, j, sign * np.asarray(shifts)]).astype(np.int32)
                samples[sign] = Labels(
                    ["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"],
                    torch.tensor(values, device=device),
                    assume_unique=True,
                )
            lists.append(
                (
                    options,
                    torch.tensor(np.asarray(i), dtype=torch.long, device=device),
                    torch.tensor(np.asarray(j), dtype=torch.long, device=device),
                    torch.tensor(np.asarray(shifts), dtype=dtype, device=device),
                    samples,
                )
            )
        return {
            "box": box,
            "lists": lists,
            "types": torch.tensor(atoms.numbers, dtype=torch.int32, device=device),
            "pbc": torch.tensor(atoms.pbc, dtype=torch.bool, device=device),
            "components": Labels("xyz", torch.arange(3, device=device).reshape(-1, 1)),
            "properties": Labels("distance", torch.zeros((1, 1), dtype=torch.int32, device=device)),
        }

    def _systems(self, atoms: Atoms, batch: np.ndarray, shared: dict, requires_grad: bool):
        """Systems for the copies ``g.x`` of one batch, with their neighbour lists."""
        torch, mta, _, TensorBlock = _import_torch()
        device, dtype = self.device, self.dtype
        dets = np.linalg.det(batch)
        # rotate in float64, then cast to the model's dtype
        positions = atoms.positions @ np.swapaxes(batch, 1, 2)  # (B, N, 3)
        cells = shared["box"] @ np.swapaxes(proper_part(batch), 1, 2)  # (B, 3, 3)
        positions = torch.tensor(positions, dtype=dtype, device=device)
        cells = torch.tensor(cells, dtype=dtype, device=device)
        strains = None
        used_positions = positions
        if requires_grad:
            positions.requires_grad_(True)
            strains = torch.eye(3, dtype=dtype, device=device).repeat(len(batch), 1, 1)
            strains.requires_grad_(True)
            used_positions = positions @ strains
            cells = cells @ strains
        systems = []
        for k in range(len(batch)):
            sign = 1 if dets[k] > 0 else -1
            pos = used_positions[k]
            system = mta.System(shared["types"], pos, cells[k], shared["pbc"])
            for options, i_t, j_t, shifts_t, samples in shared["lists"]:
                # pair vectors of the copy from its own positions and cell
                vectors = pos[j_t] - pos[i_t] + (sign * shifts_t) @ cells[k]
                block = TensorBlock(
                    vectors.reshape(-1, 3, 1),
                    samples[sign],
                    [shared["components"]],
                    shared["properties"],
                )
                system.add_neighbor_list(options, block)
            systems.append(system)
        return systems, positions, strains

    def _outputs(self, want_stress: bool, direct: bool):
        from metatomic.torch import ModelOutput

        outputs = {
            self._energy_key: ModelOutput(
                unit="eV",
                sample_kind="atom" if self._per_atom_energy else "system",
            )
        }
        if direct:
            outputs[self._forces_key] = ModelOutput(unit="eV/A", sample_kind="atom")
            if want_stress:
                outputs[self._stress_key] = ModelOutput(unit="eV/A^3", sample_kind="system")
        return outputs

    def _forward(self, systems, want_stress, direct):
        from metatomic.torch import ModelEvaluationOptions

        options = ModelEvaluationOptions(
            length_unit="angstrom",
            outputs=self._outputs(want_stress, direct),
            selected_atoms=None,
        )
        return self.model(systems, options, check_consistency=False)

    def _energies(self, result, n_copies, n_atoms):
        values = result[self._energy_key].block().values
        if self._per_atom_energy:
            per_atom = values.reshape(n_copies, n_atoms)
            return per_atom.sum(dim=1), per_atom
        return values.reshape(n_copies), None

    def _run_direct(self, atoms, batch, shared, properties):
        systems, _, _ = self._systems(atoms, batch, shared, requires_grad=False)
        result = self._forward(systems, "stress" in properties, direct=True)
        return self._direct_values(result, len(batch), len(atoms), properties)

    def _direct_values(self, result, n_copies, n, properties) -> dict:
        """Energy, per-atom energies, direct forces and stress of one batch, float64."""
        energy, per_atom = self._energies(result, n_copies, n)
        out = {"energy": energy.double().cpu().numpy()}
        if "energies" in properties and per_atom is not None:
            out["energies"] = per_atom.double().cpu().numpy()
        if "forces" in properties:
            forces = result[self._forces_key].block().values.reshape(n_copies, n, 3)
            out["forces"] = forces.double().cpu().numpy()
        if "stress" in properties:
            stress = result[self._stress_key].block().values.reshape(n_copies, 3, 3)
            out["stress"] = stress.double().cpu().numpy()
        return out

    def _run_conservative(self, atoms, batch, shared, properties):
        torch = self._torch
        n = len(atoms)
        want_stress = "stress" in properties
        systems, positions, strains = self._systems(atoms, batch, shared, requires_grad=True)
        # the direct outputs ride along in the same forward pass, for comparison
        direct = self.has_direct_outputs and "forces" in properties
        want_direct_stress = direct and want_stress and self._stress_key is not None
        result = self._forward(systems, want_direct_stress, direct=direct)
        energy, per_atom = self._energies(result, len(batch), n)
        inputs = [positions, strains] if want_stress else [positions]
        grads = torch.autograd.grad(energy.sum(), inputs, allow_unused=True)
        out = {"energy": energy.detach().double().cpu().numpy()}
        if "energies" in properties and per_atom is not None:
            out["energies"] = per_atom.detach().double().cpu().numpy()
        out["forces"] = -grads[0].double().cpu().numpy()
        if want_stress:
            volume = abs(np.linalg.det(atoms.cell.array))
            out["stress"] = grads[1].double().cpu().numpy() / volume
        if direct:
            values = result[self._forces_key].block().values.detach()
            out["direct_forces"] = values.reshape(len(batch), n, 3).double().cpu().numpy()
        if want_direct_stress:
            values = result[self._stress_key].block().values.detach()
            out["direct_stress"] = values.reshape(len(batch), 3, 3).double().cpu().numpy()
        return out
