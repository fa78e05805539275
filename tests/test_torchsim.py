"""torch-sim models in the calculator, and the symmetrizing torch-sim model.

Real architectures with random weights (no downloads): Orb-v3 direct (not
equivariant), a small MACE (equivariant: a control), the shipped PET through
metatomic-torchsim. Skipped where torch-sim is not installed (Python < 3.12).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

pytest.importorskip("torch_sim", reason="torch-sim needs Python >= 3.12")
import mace  # noqa: E402, F401  (before e3nn on torch 2.13)
import torch  # noqa: E402
import torch_sim as ts  # noqa: E402
from torch_sim.models.interface import ModelInterface  # noqa: E402

from ase_symcalc import SymmetrizedCalculator  # noqa: E402
from ase_symcalc._torchsim_copies import copies_state  # noqa: E402
from ase_symcalc.evaluators import TorchSimEvaluator, rotated_atoms  # noqa: E402
from ase_symcalc.models.random_torchsim import (  # noqa: E402
    random_mace,
    random_orb,
    shipped_pet,
)
from ase_symcalc.quadrature import get_quadrature  # noqa: E402
from ase_symcalc.torchsim import ERROR_KEYS, SymmetrizedModel  # noqa: E402
from ase_symcalc.transforms import voigt_to_matrix  # noqa: E402


def _cu(repeat=(1, 1, 2), rattle=0.05, seed=0, a=3.61):
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def orb():
    return random_orb(seed=1)


@pytest.fixture(scope="module")
def orb64():
    return random_orb(seed=1, dtype=torch.float64)


@pytest.fixture(scope="module")
def mace64():
    return random_mace(seed=2)


@pytest.fixture(scope="module")
def pet():
    return shipped_pet()


def _random_o3(seed):
    from scipy.spatial.transform import Rotation

    g = Rotation.random(random_state=seed).as_matrix()
    return -g if seed % 2 else g


@pytest.mark.parametrize("seed", [0, 1, 2, 3], ids=["proper0", "improper1", "proper2", "improper3"])
def test_copies_follow_ase_convention(seed):
    """Columns in torch-sim, rows in ASE: a copy's state is the rotated Atoms' state."""
    atoms = _cu(repeat=(1, 2, 1))
    atoms.set_cell(atoms.cell.array + np.array([[0, 0.3, 0], [0.2, 0, 0], [0, 0, 0.1]]))
    g = _random_o3(seed)
    state = ts.io.atoms_to_state([atoms], device="cpu", dtype=torch.float64)
    copies = copies_state(state, torch.as_tensor(g[None]))
    expected = ts.io.atoms_to_state([rotated_atoms(atoms, g)], device="cpu", dtype=torch.float64)
    np.testing.assert_allclose(copies.positions, expected.positions, atol=1e-12, err_msg=f"g={g}")
    np.testing.assert_allclose(copies.cell, expected.cell, atol=1e-12, err_msg=f"g={g}")
    np.testing.assert_allclose(copies.row_vector_cell[0], rotated_atoms(atoms, g).cell.array)


def test_orb_direct_is_not_equivariant_and_its_average_is_exact_on_the_group(orb):
    atoms = _cu()
    # the group itself (not the generically oriented coset G O, whose average is
    # exact under O^T G O): a rattled cell has no symmetry the rule could hide
    rule = get_quadrature("group:O", orientation=None)
    calc = SymmetrizedCalculator(orb, quadrature=rule, raw=True)
    atoms.calc = calc
    forces = atoms.get_forces()
    # raw: clearly not equivariant (float32 noise is ~1e-7 eV/Å)
    assert calc.results["forces_equivariance_error"] > 1e-4
    assert calc.results["evaluations"] == 48  # the raw call is the identity copy
    for k in (5, 17, 30, 47):  # elements of the group, reflections included
        h = rule.matrices[k]
        moved = rotated_atoms(atoms, h)
        moved.calc = calc
        scale = np.abs(forces).max()
        np.testing.assert_allclose(
            moved.get_forces(), forces @ h.T, atol=1e-6 * max(scale, 1.0), err_msg=f"h={h}"
        )
        np.testing.assert_allclose(moved.get_potential_energy(), atoms.get_potential_energy())


def test_orb_design_residual_estimate_matches_the_measured_error(orb64):
    """The residual estimate of design:t is within 2x of |average - fine average|."""
    atoms = _cu(repeat=(1, 1, 1), rattle=0.1)
    atoms.calc = calc = SymmetrizedCalculator(
        orb64, quadrature="design:6", residual=True, raw=False
    )
    forces = atoms.get_forces()
    estimate = calc.results["forces_residual"]
    errors = []
    for seed in range(3):  # the measured error of typically oriented design:6 rules
        rotated = SymmetrizedCalculator(
            orb64, quadrature="design:6", raw=False, orientation=_random_o3(2 * seed)
        )
        atoms.calc = rotated
        errors.append(atoms.get_forces())
    atoms.calc = fine = SymmetrizedCalculator(orb64, quadrature="lebedev:11", raw=False)
    exact = atoms.get_forces()
    measured = np.sqrt(np.mean([np.mean((e - exact) ** 2) for e in errors + [forces]]))
    assert 0 < estimate < 1e-3 * np.abs(forces).max() + 1e-6  # small next to the forces
    assert measured / 2 < estimate < 2 * measured, (estimate, measured)
    assert fine.results["quadrature"].startswith("lebedev:11")


def test_mace_is_returned_unchanged(mace64):
    atoms = _cu(rattle=0.1)
    atoms.calc = calc = SymmetrizedCalculator(mace64, quadrature="group:T", raw=True)
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    np.testing.assert_allclose(forces, calc.results["raw_forces"], atol=1e-10)
    np.testing.assert_allclose(stress, calc.results["raw_stress"], atol=1e-10)
    assert calc.results["forces_equivariance_error"] < 1e-10


def test_pet_through_torchsim_equals_the_metatomic_evaluator(pet):
    atoms = _cu(rattle=0.05)
    # metatomic-torchsim removes the direct forces' net force itself, as the
    # calculator does for direct metatomic models by default
    calcs = [SymmetrizedCalculator(model, quadrature="group:T") for model in (pet, "pet-cu-emt")]
    results = []
    for calc in calcs:
        atoms.calc = calc
        atoms.get_forces()
        results.append(dict(calc.results))
    torchsim, metatomic = results
    np.testing.assert_allclose(torchsim["forces"], metatomic["forces"], atol=2e-5)
    np.testing.assert_allclose(torchsim["stress"], metatomic["stress"], atol=1e-6)
    np.testing.assert_allclose(torchsim["energy"], metatomic["energy"], rtol=1e-5)
    np.testing.assert_allclose(
        torchsim["forces_equivariance_error"], metatomic["forces_equivariance_error"], rtol=1e-3
    )


@pytest.mark.parametrize("name", ["orb", "pet"])
def test_one_batched_call_equals_copies_one_by_one(name, orb, pet):
    model = {"orb": orb, "pet": pet}[name]
    atoms = _cu()
    rule = get_quadrature("group:T")
    batched = TorchSimEvaluator(model).evaluate(atoms, rule.matrices, ["energy", "forces"])
    single = TorchSimEvaluator(model, batch_size=1).evaluate(
        atoms, rule.matrices, ["energy", "forces"]
    )
    # float32 models: a batch sums in another order than one copy (PET's
    # energies differ by up to 1e-6 eV, a few float32 ulps of the total)
    np.testing.assert_allclose(batched.forces, single.forces, atol=2e-5)
    np.testing.assert_allclose(batched.energy, single.energy, rtol=1e-5, atol=1e-5)


def test_symmetrized_model_md_of_three_systems(orb):
    systems = [_cu((1, 1, 1), seed=1), _cu((1, 1, 2), seed=2), _cu((1, 2, 2), seed=3)]
    model = SymmetrizedModel(orb, quadrature="group:T")
    state = ts.io.atoms_to_state(systems, device="cpu", dtype=torch.float32)
    output = model(state)
    assert output["energy"].shape == (3,)
    assert output["forces"].shape == (state.n_atoms, 3)
    assert output["stress"].shape == (3, 3, 3)
    for key in ERROR_KEYS[:3]:
        assert output[key].shape == (3,) and torch.all(output[key] > 0), key
    assert output["forces_equivariance_error_per_atom"].shape == (state.n_atoms,)
    raw = orb(state)  # the raw outputs are the inner model's on the unrotated batch
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(output[f"raw_{key}"], raw[key].detach(), atol=2e-5, err_msg=key)
    start = 0
    for atoms in systems:  # step 0 = the calculator, system by system
        atoms.calc = calc = SymmetrizedCalculator(orb, quadrature="group:T", raw=False)
        n = len(atoms)
        forces = output["forces"][start : start + n]
        np.testing.assert_allclose(forces, atoms.get_forces(), atol=2e-5)
        np.testing.assert_allclose(
            output["forces_equivariance_error"][systems.index(atoms)],
            calc.results["forces_equivariance_error"],
            rtol=1e-4,
        )
        start += n
    final = ts.integrate(
        system=systems,
        model=model,
        integrator=ts.Integrator.nve,
        n_steps=3,
        timestep=0.002,
        temperature=300,
    )
    assert final.n_systems == 3
    assert torch.isfinite(final.positions).all()
    # 24 copies of each of the 3 systems per forward, and the raw (lab-frame) one
    copies = 3 * (len(model.quadrature) + 1)
    assert model.evaluation_count % copies == 0 and model.evaluation_count >= 4 * copies


def test_symmetrized_model_in_static_optimize_and_langevin(orb):
    systems = [_cu((1, 1, 1), seed=4), _cu((1, 1, 2), seed=5)]
    model = SymmetrizedModel(orb, quadrature="group:T", remove_net_force=True)
    static = ts.static(system=systems, model=model)
    assert len(static) == 2 and "forces_equivariance_error" in static[0]
    relaxed = ts.optimize(system=systems, model=model, optimizer=ts.Optimizer.fire, max_steps=3)
    assert relaxed.n_systems == 2
    # FIRE starts from rest and moves along the symmetrized forces (the random
    # model's direct forces are no energy gradient, so the energy need not drop)
    start = ts.io.atoms_to_state(systems, device="cpu", dtype=torch.float32)
    forces = model(start)["forces"]
    step = relaxed.positions - start.positions
    for system in range(2):
        mask = start.system_idx == system
        assert (step[mask] * forces[mask]).sum() > 0
        assert step[mask].abs().max() > 0
    hot = ts.integrate(
        system=systems,
        model=model,
        integrator=ts.Integrator.nvt_langevin,
        n_steps=2,
        timestep=0.002,
        temperature=300,
    )
    assert torch.isfinite(hot.positions).all()


def test_symmetrized_model_modes_and_residual(orb):
    state = ts.io.atoms_to_state([_cu((1, 1, 1), seed=6)], device="cpu", dtype=torch.float32)
    single = SymmetrizedModel(orb, quadrature="group:T", mode="random-single", seed=1)
    assert single.copies_per_system == 1
    assert torch.isnan(single(state)["forces_equivariance_error"]).all()
    residual = SymmetrizedModel(orb, quadrature="group:O", residual=True)
    output = residual(state)
    assert output["forces_residual"].shape == (1,) and output["forces_residual"][0] > 0
    # the worst atom's residual is a length: at least the RMS per component
    assert (output["forces_residual_max_atom"] >= output["forces_residual"]).all()
    per_atom = SymmetrizedModel(orb, quadrature="group:O", residual=True, tolerance_per_atom=True)(
        state
    )
    assert torch.allclose(
        per_atom["forces_residual_bound"], 3.5 * per_atom["forces_residual_max_atom"]
    )
    auto = SymmetrizedModel(orb, quadrature="auto", tolerance=0.05)
    output = auto(state)
    # the rule kept meets the tolerance, and the cheaper one below it did not
    assert output["forces_residual_bound"][0] <= 0.05
    assert torch.allclose(output["forces_residual_bound"], 3 * output["forces_residual"])
    rung = auto.policy.rung
    if rung > 0:
        cheaper = SymmetrizedModel(
            orb,
            quadrature=auto.policy.ladder[rung - 1][0],
            residual=True,
            inversion=auto.policy.ladder[rung - 1][1],
        )
        assert cheaper(state)["forces_residual_bound"][0] > 0.05 / 3


def test_errors_name_the_fix(orb, tmp_path, monkeypatch):
    from ase_symcalc.models.named import MissingModelError

    monkeypatch.setenv("ASE_SYMCALC_OFFLINE", "1")
    monkeypatch.setenv("ASE_SYMCALC_MODEL_DIR", str(tmp_path))
    with pytest.raises(TypeError, match="ModelInterface"):
        SymmetrizedModel(object())
    with pytest.raises(MissingModelError, match="orb-v3-direct-20-omat-20250404.ckpt"):
        SymmetrizedCalculator("orb-v3-direct-20-omat")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SymmetrizedCalculator(f"orb:{tmp_path / 'missing.ckpt'}")


def test_orb_file_spec_loads_the_weights(orb, tmp_path):
    """``orb:FILE`` builds the direct architecture and loads the state dict."""
    full = random_orb(seed=3, size="full")
    path = tmp_path / "orb-v3-direct-inf-test.ckpt"
    torch.save(full.model.state_dict(), path)
    atoms = _cu((1, 1, 1))
    atoms.calc = from_file = SymmetrizedCalculator(f"orb:{path}", quadrature="group:T")
    atoms.calc = direct = SymmetrizedCalculator(full, quadrature="group:T")
    forces = atoms.get_forces()
    atoms.calc = from_file
    np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-5)
    assert direct.evaluator.name.startswith("torch-sim model")


def test_cli_takes_an_architecture_and_a_file(tmp_path, capsys):
    from ase.io import write

    from ase_symcalc.cli import main

    path = tmp_path / "orb-v3-direct-20-random.ckpt"
    torch.save(random_orb(seed=4, size="full", max_num_neighbors=20).model.state_dict(), path)
    write(tmp_path / "frames.extxyz", [_cu((1, 1, 1), seed=7)])
    out = tmp_path / "cmp"
    args = ["compare", str(tmp_path / "frames.extxyz"), "--quadrature", "group:T"]
    assert main([*args, "--model", f"orb:{path}", "--output", str(out)]) == 0
    assert (tmp_path / "cmp.csv").read_text().count("\n") == 2  # header + one frame
    assert main([*args, "--arch", "orb", "--model-path", str(path), "--output", str(out)]) == 0
    capsys.readouterr()
    assert main([*args, "--model", "orb-v3-direct-20-omat"]) == 2  # offline: conftest
    assert "orb-v3-direct-20-omat-20250404.ckpt" in capsys.readouterr().err
    assert main([*args, "--arch", "orb"]) == 2
    assert "--arch and --model-path go together" in capsys.readouterr().err


def test_random_mode_per_system_estimates_equal_the_calculator(orb64):
    """Three systems in one batch: the calculator's estimates for the same orientations."""
    systems = [_cu((1, 1, 1), seed=0), _cu((1, 1, 2), seed=1), _cu((2, 1, 1), seed=2)]
    state = ts.io.atoms_to_state(systems, device="cpu", dtype=torch.float64)
    model = SymmetrizedModel(orb64, mode="random", seed=5, probe_interval=2)
    probed = model(state)
    between = model(state)
    # step + probe + the lab frame (raw), then the step alone
    assert model.evaluation_count == 3 * 3 + 3
    assert torch.isnan(between["forces_equivariance_error"]).all()
    assert "raw_forces" in probed and "raw_forces" not in between
    np.testing.assert_allclose(probed["raw_forces"], orb64(state)["forces"].detach(), atol=1e-12)
    assert not probed["symmetrized_over_rule"].any()
    for index, atoms in enumerate(systems):
        calc = SymmetrizedCalculator(orb64, mode="random", seed=5, probe_interval=2, raw=False)
        atoms.calc = calc
        forces = atoms.get_forces()
        mask = state.system_idx == index
        np.testing.assert_allclose(probed["forces"][mask].numpy(), forces, atol=1e-10)
        for key in ("energy", "forces", "stress"):
            np.testing.assert_allclose(
                float(probed[f"{key}_equivariance_error"][index]),
                calc.results[f"{key}_equivariance_error"],
                rtol=1e-8,
            )


def test_random_mode_escalates_per_system(orb64):
    systems = [_cu((1, 1, 1), seed=0), _cu((1, 1, 2), seed=1), _cu((2, 1, 1), seed=2)]
    state = ts.io.atoms_to_state(systems, device="cpu", dtype=torch.float64)
    first = SymmetrizedModel(orb64, mode="random", seed=5, probe_interval=1)(state)
    errors = first["forces_equivariance_error"]
    # between the largest and the others: only that system escalates
    worst = int(torch.argmax(errors))
    tolerance = float((errors.max() + torch.sort(errors).values[-2]) / 2)
    model = SymmetrizedModel(
        orb64, mode="random", seed=5, probe_interval=1, tolerance=tolerance, quadrature="group:T"
    )
    with pytest.warns(UserWarning, match=f"system {worst}: .*above the tolerance"):
        model(state)
    second = model(state)
    # a probe: every system, escalated or not, has its lab-frame outputs
    np.testing.assert_allclose(second["raw_forces"], orb64(state)["forces"].detach(), atol=1e-12)
    expected = torch.zeros(3, dtype=torch.bool)
    expected[worst] = True
    assert torch.equal(second["symmetrized_over_rule"], expected)
    grid = SymmetrizedModel(orb64, quadrature="group:T")(state)
    mask = state.system_idx == worst
    torch.testing.assert_close(second["forces"][mask], grid["forces"][mask])
    torch.testing.assert_close(second["energy"][worst], grid["energy"][worst])


def test_random_mode_climbs_the_ladder_for_an_escalated_system(orb64):
    systems = [_cu((1, 1, 1), seed=0), _cu((1, 1, 2), seed=1)]
    state = ts.io.atoms_to_state(systems, device="cpu", dtype=torch.float64)
    model = SymmetrizedModel(orb64, "auto", mode="random", seed=5, probe_interval=1, tolerance=1.0)
    model(state)  # this batch's systems: none above 1 eV/Å
    assert model.policy.observe(2.0, system=1)  # system 1 alone escalates, not system 0
    output = model(state)
    assert model.policy.chosen  # the ladder was measured for system 1
    assert output["symmetrized_over_rule"].tolist() == [False, True]
    assert torch.isfinite(output["forces_residual"][1])
    assert torch.isnan(output["forces_residual"][0])


def test_feature_hooks_tell_equivariant_layers_from_learned_ones(orb64, mace64):
    """Layer by layer, through forward hooks: MACE's invariant features are all in
    (0,+) to the float64 floor; random Orb's node features are not (1e-6)."""
    from ase_symcalc.diagnostics import feature_fractions

    atoms = _cu(repeat=(1, 1, 1), seed=3)
    orb_layers = TorchSimEvaluator(orb64).feature_names()
    assert orb_layers == ["model.model.gnn_stacks.0", "model.model.gnn_stacks.1"]
    orb = feature_fractions(orb64, [atoms], 2)
    for layer in ("model.gnn_stacks.0", "model.gnn_stacks.1"):
        assert 1e-8 < 1 - orb[layer][(0, 1)] < 1e-2, orb.table()
    fractions = feature_fractions(mace64, [atoms], 2)
    assert 1 - fractions["products.1"][(0, 1)] < 1e-12, fractions.table()  # the last: scalars
    # the first layer carries vectors too: all of it in (0,+) and (1,+)
    assert 1 - fractions["products.0"][(0, 1)] - fractions["products.0"][(1, 1)] < 1e-12
    assert abs(fractions["forces"][(1, 1)] - 1) < 1e-12
    with pytest.raises(ValueError, match="has no module 'nope'"):
        feature_fractions(mace64, [atoms], 1, features=["nope"])


def test_mace_ase_calculator_through_the_ase_loop(mace64, tmp_path):
    """MACE's own ASE calculator (a model file with random weights, float64):
    E(3)-equivariant, so errors at 1e-10 and the outputs come back unchanged."""
    from mace.calculators import MACECalculator

    path = tmp_path / "random.model"
    torch.save(mace64.model, path)
    calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    atoms = _cu(repeat=(1, 1, 1), seed=5)
    atoms.calc = symmetrized = SymmetrizedCalculator(calc, quadrature="group:T")
    forces = atoms.get_forces()
    assert symmetrized.evaluator.name == "base calculator MACECalculator"
    assert symmetrized.results["forces_equivariance_error"] < 1e-10
    np.testing.assert_allclose(forces, symmetrized.results["raw_forces"], atol=1e-10)
    np.testing.assert_allclose(atoms.get_stress(), symmetrized.results["raw_stress"], atol=1e-10)


def test_diagnose_command_takes_a_torchsim_model_file(tmp_path, capsys):
    """``ase-symcalc diagnose orb:FILE``: layer-by-layer fractions through hooks."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from ase_symcalc.cli import main

    path = tmp_path / "orb-v3-direct-20-random.ckpt"
    torch.save(random_orb(seed=4, size="full", max_num_neighbors=20).model.state_dict(), path)
    frames = []
    for seed in range(2):
        atoms = _cu((1, 1, 1), seed=seed)
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((4, 3)))
        frames.append(atoms)
    write(tmp_path / "frames.extxyz", frames)
    out = tmp_path / "diag"
    code = main(
        ["diagnose", f"orb:{path}", str(tmp_path / "frames.extxyz"), "--lmax", "1"]
        + ["--quadrature", "group:T", "--output", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.with_suffix(".json").read_text())
    layers = [name for name in report["fractions"] if "gnn_stacks" in name]
    assert len(layers) == 5  # the published Orb-v3: five message-passing stacks
    assert out.with_suffix(".png").is_file()


def test_unknown_elements_are_refused_before_the_model_runs(mace64):
    """MACE was built for copper only: water is a one-line ValueError naming the
    elements, before any forward pass."""
    from ase.build import molecule

    water = molecule("H2O")
    water.calc = calc = SymmetrizedCalculator(mace64, quadrature="group:T")
    with pytest.raises(ValueError, match=r"knows Cu \(29\); this structure also has H \(1\), O"):
        water.get_potential_energy()
    assert calc.evaluation_count == 0


class _FieldModel(ModelInterface):
    """E_s = sum_i (e . r_i)^2 over the atoms of system s, in pure torch (index_add):
    an anisotropic model whose forward has no host sync of its own."""

    def __init__(self):
        super().__init__()
        self._device, self._dtype = torch.device("cpu"), torch.float64
        self._compute_forces, self._compute_stress = True, True
        self.direction = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)

    def forward(self, state, **kwargs):
        projection = state.positions @ self.direction
        n = state.cell.shape[0]
        energy = torch.zeros(n, dtype=torch.float64).index_add_(0, state.system_idx, projection**2)
        forces = -2 * projection[:, None] * self.direction
        stress = torch.zeros(n, 3, 3, dtype=torch.float64)
        return {"energy": energy, "forces": forces, "stress": stress}


class _HostSyncs(torch.overrides.TorchFunctionMode):
    """Records the operations that wait for the device (``item``, ``tolist``,
    truth values, ``nonzero``, ``unique``, copies to the host) called from
    ase_symcalc's own code."""

    #: waits for the device: reads back, truth values, data-dependent shapes, and
    #: tensors made from host data (a host-to-device copy from pageable memory)
    SYNCS = frozenset(
        {
            "item",
            "tolist",
            "__bool__",
            "__int__",
            "__float__",
            "__index__",
            "nonzero",
            "unique",
            "bincount",
            "cpu",
            "numpy",
            "tensor",
            "as_tensor",
            "from_numpy",
        }
    )

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.SYNCS:
            frame = sys._getframe(1)
            module = frame.f_globals.get("__name__", "")
            if module.startswith("ase_symcalc"):
                self.calls.append(f"{name} in {module}:{frame.f_lineno}")
        return func(*args, **(kwargs or {}))


def test_the_fixed_rule_forward_is_vectorised_without_host_syncs():
    """Three systems: one inner call per chunk of copies for the whole batch, the
    result the calculator's for each system, and no host sync in ase_symcalc's
    code on the fixed-rule path (torch-sim's own SimState checks aside)."""
    systems = [_cu((1, 1, 1), seed=0), _cu((1, 1, 2), seed=1), _cu((2, 1, 1), seed=2)]
    inner = _FieldModel()
    state = ts.io.atoms_to_state(systems, device="cpu", dtype=torch.float64)
    model = SymmetrizedModel(inner, quadrature="group:T", batch_size=10_000)
    calls = []
    handle = inner.register_forward_hook(lambda module, args, output: calls.append(1))
    model(state)  # the first call copies the rule to the device
    syncs = _HostSyncs()
    with syncs:
        output = model(state)
    handle.remove()
    assert syncs.calls == []
    assert len(calls) == 2  # per forward, all 3 x 25 copies (the raw one included) in one call
    # (e . r)^2 has degree 2, which group:T averages exactly: E_s = |e|^2 sum |r|^2 / 3
    e2 = float(inner.direction @ inner.direction)
    for index, atoms in enumerate(systems):
        mask = (state.system_idx == index).numpy()
        positions = state.positions[mask].numpy()
        expected = e2 * (positions**2).sum() / 3
        np.testing.assert_allclose(float(output["energy"][index]), expected, rtol=1e-12)
        np.testing.assert_allclose(output["forces"][mask], -2 * e2 * positions / 3, atol=1e-12)
        atoms.calc = calc = SymmetrizedCalculator(inner, quadrature="group:T")
        atoms.get_forces()
        for key in ("energy_equivariance_error", "forces_equivariance_error"):
            np.testing.assert_allclose(output[key][index], calc.results[key], rtol=1e-10)
        np.testing.assert_allclose(
            output["forces_equivariance_error_per_atom"][mask],
            calc.results["forces_equivariance_error_per_atom"],
            rtol=1e-10,
        )


def test_structure_symmetry_per_system_matches_the_calculator(orb64):
    perfect = _cu((1, 1, 1), rattle=0.0)
    displaced = _cu((1, 1, 2), rattle=0.0)
    displaced.positions[0, 2] += 0.1  # keeps the operations that fix atom 0's column
    rattled = _cu((1, 1, 1), seed=4)
    systems = [perfect, displaced, rattled]
    state = ts.io.atoms_to_state(systems, device="cpu", dtype=torch.float64)
    model = SymmetrizedModel(orb64, quadrature="group:T", structure_symmetry=True)
    output = model(state)
    for index, atoms in enumerate(systems):
        atoms.calc = calc = SymmetrizedCalculator(
            orb64, quadrature="group:T", structure_symmetry=True, raw=False
        )
        mask = (state.system_idx == index).numpy()
        np.testing.assert_allclose(output["forces"][mask], atoms.get_forces(), atol=1e-10)
        np.testing.assert_allclose(
            output["stress"][index], voigt_to_matrix(atoms.get_stress()), atol=1e-10
        )
        assert int(output["symmetry_operations"][index]) == calc.results["symmetry_operations"]
    assert int(output["symmetry_operations"][0]) >= 48  # the cubic cell: Fm-3m
    np.testing.assert_allclose(output["forces"][(state.system_idx == 0).numpy()], 0, atol=1e-12)
    assert int(output["symmetry_operations"][2]) == 1


def _field_clusters():
    """Two small Cu clusters, not periodic (the field model is not periodic)."""
    clusters = []
    for seed, count in ((0, 4), (1, 6)):
        rng = np.random.default_rng(seed)
        atoms = Atoms(f"Cu{count}", positions=rng.normal(scale=1.5, size=(count, 3)))
        atoms.center(vacuum=10.0)
        atoms.positions -= atoms.cell.diagonal() / 2  # about the origin
        atoms.pbc = False
        clusters.append(atoms)
    return clusters


def test_optimize_lowers_and_nve_conserves_the_symmetrized_energy():
    """A conservative inner model stays conservative when symmetrized: FIRE lowers
    the energy of every system, and NVE from rest conserves potential plus
    kinetic energy (velocity Verlet, 1 fs, in a well of period ~0.6 ps)."""
    inner = _FieldModel()
    inner._compute_stress = False
    model = SymmetrizedModel(inner, quadrature="group:T")
    clusters = _field_clusters()
    start = ts.io.atoms_to_state(clusters, device="cpu", dtype=torch.float64)
    initial = model(start)["energy"]
    relaxed = ts.optimize(system=clusters, model=model, optimizer=ts.Optimizer.fire, max_steps=20)
    assert (model(relaxed)["energy"] < 0.5 * initial).all()
    final = ts.integrate(
        system=clusters,
        model=model,
        integrator=ts.Integrator.nve,
        n_steps=100,
        timestep=0.001,
        temperature=0.0,
    )
    kinetic = torch.zeros(2, dtype=torch.float64).index_add_(
        0, final.system_idx, (final.momenta**2).sum(axis=1) / (2 * final.masses)
    )
    assert (kinetic > 0.05 * initial).all()  # the atoms did fall into the well
    total = model(final)["energy"] + kinetic
    np.testing.assert_allclose(total, initial, rtol=1e-4)  # measured: 1.7e-5


def test_net_force_is_removed_per_system_in_a_batch():
    """Each system loses its own net force (not the batch's): the batched model
    equals the calculator, system by system, with remove_net_force=True."""
    inner = _FieldModel()
    systems = [_cu((1, 1, 1), seed=6), _cu((1, 1, 2), seed=7)]
    state = ts.io.atoms_to_state(systems, device="cpu", dtype=torch.float64)
    output = SymmetrizedModel(inner, quadrature="group:T", remove_net_force=True)(state)
    for index, atoms in enumerate(systems):
        mask = (state.system_idx == index).numpy()
        np.testing.assert_allclose(output["forces"][mask].sum(axis=0), 0, atol=1e-12)
        atoms.calc = calc = SymmetrizedCalculator(
            inner, quadrature="group:T", remove_net_force=True
        )
        np.testing.assert_allclose(output["forces"][mask], atoms.get_forces(), atol=1e-12)
        np.testing.assert_allclose(
            output["forces_equivariance_error"][index],
            calc.results["forces_equivariance_error"],
            rtol=1e-10,
        )


def test_a_batch_size_below_the_batch_is_honoured():
    """batch_size=1 with two systems: one inner system per call, the same results."""
    inner = _FieldModel()
    state = ts.io.atoms_to_state(
        [_cu((1, 1, 1), seed=8), _cu((1, 1, 2), seed=9)], device="cpu", dtype=torch.float64
    )
    sizes = []
    handle = inner.register_forward_hook(
        lambda module, args, output: sizes.append(args[0].cell.shape[0])
    )
    small = SymmetrizedModel(inner, quadrature="group:T", batch_size=1)(state)
    handle.remove()
    assert sizes == [1] * 2 * 25  # 2 systems x (24 copies + the lab frame)
    whole = SymmetrizedModel(inner, quadrature="group:T")(state)
    for key, value in whole.items():
        np.testing.assert_allclose(small[key], value, atol=1e-12, err_msg=key)
