"""The shipped model and the batched metatomic evaluator."""

import subprocess
import sys
import zipfile

import numpy as np
import pytest
from ase.calculators.emt import EMT
from conftest import copper
from metatomic_ase import MetatomicCalculator

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.evaluators import ASECalculatorEvaluator, make_evaluator
from ase_symcalc.evaluators.metatomic import MetatomicEvaluator
from ase_symcalc.models import list_pretrained, metadata, path, pretrained
from ase_symcalc.testing import float64_model, random_o3, rotated_atoms


@pytest.fixture(scope="module")
def model64():
    return float64_model(path())


@pytest.fixture
def cu32():
    return copper((2, 2, 2), rattle=0.08, seed=3)


def test_shipped_model_is_listed_and_loads_offline(cu4):
    assert "pet-cu-emt" in list_pretrained()
    assert path().suffix == ".pt" and path().stat().st_size < 5e6
    record = metadata()
    assert record["name"] == "pet-cu-emt" and "versions" in record
    cu4.calc = pretrained()
    assert np.isfinite(cu4.get_potential_energy())
    assert cu4.get_forces().shape == (4, 3)
    assert cu4.get_stress().shape == (6,)
    with pytest.raises(ValueError, match="unknown shipped model 'nope'.*pet-cu-emt"):
        path("nope")


def test_the_first_model_is_archived_fetched_offline_and_selectable_by_environment(
    monkeypatch, tmp_path
):
    from ase_symcalc import models

    monkeypatch.setenv("ASE_SYMCALC_MODELS_DIR", str(tmp_path / "models"))
    # not in the wheel: a clear error naming the script, until it is fetched
    with pytest.raises(FileNotFoundError, match="scripts/fetch_model.py pet-cu-emt-v1"):
        path("pet-cu-emt-v1")
    with pytest.raises(FileNotFoundError, match="retrain"):
        models.fetch("pet-cu-emt-v1", source=tmp_path / "empty")
    assert not (tmp_path / "models" / "pet-cu-emt-v1.pt").exists()
    fetched = models.fetch("pet-cu-emt-v1")  # from this checkout's training/archive
    assert fetched == path("pet-cu-emt-v1") and fetched.stat().st_size < 5e6
    assert not list((tmp_path / "models").glob(".*partial"))
    assert metadata("pet-cu-emt-v1")["name"] == "pet-cu-emt-v1"
    assert metadata()["recipe"] == "elastic-v4"
    monkeypatch.setenv("ASE_SYMCALC_MODEL", "pet-cu-emt-v1")
    assert path() == path("pet-cu-emt-v1")
    assert path("pet-cu-emt").name == "pet-cu-emt.pt"  # a name given wins
    monkeypatch.setenv("ASE_SYMCALC_MODEL", "pet-cu")
    with pytest.raises(ValueError, match="ASE_SYMCALC_MODEL='pet-cu' is not a shipped model"):
        path()


def test_raw_predictions_match_metatomic_ase(cu32):
    reference = cu32.copy()
    reference.calc = pretrained()
    calc = SymmetrizedCalculator(path(), quadrature="lebedev:1")
    assert isinstance(calc.evaluator, MetatomicEvaluator)
    cu32.calc = calc
    cu32.get_potential_energy()
    r = calc.results
    # float32 model: agreement to float32 rounding of the inputs
    np.testing.assert_allclose(r["raw_energy"], reference.get_potential_energy(), rtol=1e-6)
    raw_forces = r["raw_forces"] - r["raw_forces"].mean(axis=0)  # metatomic-ase removes it
    np.testing.assert_allclose(raw_forces, reference.get_forces(), atol=2e-5)
    np.testing.assert_allclose(r["raw_stress"], reference.get_stress(), atol=2e-6)


@pytest.mark.parametrize("non_conservative", [True, False], ids=["direct", "conservative"])
def test_wrapping_a_metatomic_calculator_reuses_its_model_and_force_mode(cu4, non_conservative):
    raw = pretrained(non_conservative=non_conservative)
    calc = SymmetrizedCalculator(raw, quadrature="lebedev:1")
    assert isinstance(calc.evaluator, MetatomicEvaluator)
    assert calc.evaluator.model is raw.model()
    forces = "direct" if non_conservative else "conservative"
    assert calc.evaluator.forces == forces
    reference = SymmetrizedCalculator(path(), quadrature="lebedev:1", forces=forces)
    atoms = cu4.copy()
    atoms.calc = calc
    cu4.calc = reference
    np.testing.assert_array_equal(atoms.get_forces(), cu4.get_forces())
    np.testing.assert_array_equal(atoms.get_stress(), cu4.get_stress())


@pytest.mark.parametrize("spec", ["lebedev:2", "group:O"])
def test_batched_and_looped_evaluation_agree_in_float64(model64, cu32, spec):
    batched = SymmetrizedCalculator(model64, quadrature=spec, batch_size=5)
    looped = SymmetrizedCalculator(
        ASECalculatorEvaluator(MetatomicCalculator(model64, non_conservative=True)),
        quadrature=spec,
        remove_net_force=True,
    )
    a, b = cu32.copy(), cu32.copy()
    a.calc, b.calc = batched, looped
    a.get_potential_energy()
    b.get_potential_energy()
    assert batched.results["quadrature"] == looped.results["quadrature"]
    for key in looped.results.keys() - {"quadrature"}:
        ours = batched.results[key]
        if key == "raw_forces":  # metatomic-ase removes the net force of direct forces
            ours = ours - ours.mean(axis=0)
        np.testing.assert_allclose(ours, looped.results[key], rtol=1e-10, atol=1e-12, err_msg=key)


def _cluster():
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Cu", 2)
    atoms.rattle(0.05, seed=1)
    return atoms


def _slab():
    from ase.build import fcc111

    atoms = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=5.0)  # pbc T, T, F
    atoms.rattle(0.05, seed=2)
    return atoms


def _triclinic():
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61).repeat((3, 2, 2))  # primitive fcc cell
    atoms.rattle(0.05, seed=3)
    return atoms


def _unwrapped():
    atoms = copper((2, 2, 2), seed=4)
    atoms.positions[:5] += [7.3, -4.1, 9.9]  # outside the cell
    return atoms


def _sheared():
    atoms = copper((2, 2, 2), seed=5)
    cell = atoms.cell.array.copy()
    cell[2] += [1.5, -0.8, 0.0]
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


def _dimer():
    from ase import Atoms

    return Atoms("Cu2", positions=[[0.0, 0.0, 0.0], [2.3, 0.4, 0.1]])


GEOMETRIES = [_cluster, _slab, _triclinic, _unwrapped, _sheared, _dimer]


@pytest.mark.parametrize("forces", ["direct", "conservative"])
@pytest.mark.parametrize("make", GEOMETRIES, ids=[f.__name__[1:] for f in GEOMETRIES])
def test_geometries_match_the_loop(model64, make, forces):
    # the batched evaluator builds each copy's System itself (shared pairs and
    # shifts, zero cell vectors along non-periodic directions as metatomic
    # wants): every geometry must match the loop over MetatomicCalculator
    direct = forces == "direct"
    batched = SymmetrizedCalculator(model64, quadrature="lebedev:1", forces=forces)
    # do_gradients_with_energy=False: metatomic-ase would otherwise also compute
    # a stress (0/0) for non-periodic systems along with the energy
    reference = MetatomicCalculator(
        model64, non_conservative=direct, do_gradients_with_energy=False
    )
    looped = SymmetrizedCalculator(
        ASECalculatorEvaluator(reference), quadrature="lebedev:1", remove_net_force=direct
    )
    a, b = make(), make()
    a.calc, b.calc = batched, looped
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.get_potential_energy(), b.get_potential_energy(), rtol=1e-12)
    if a.pbc.all():
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), rtol=1e-10, atol=1e-14)
    else:
        assert "stress" not in batched.results


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_batch_size_does_not_change_the_result(model64, cu4, forces):
    # conservative copies are differentiated batch by batch: the batch size
    # bounds the autograd graph and must not change the numbers
    evaluator = make_evaluator(model64, forces=forces)
    matrices = random_o3(7, seed=2)
    one = evaluator.evaluate(cu4, matrices, ["energy", "forces", "stress"], batch_size=1)
    many = evaluator.evaluate(cu4, matrices, ["energy", "forces", "stress"], batch_size=4)
    names = ["energy", "forces", "stress"]
    if forces == "conservative":
        names += ["direct_forces", "direct_stress"]
    for name in names:
        np.testing.assert_allclose(getattr(one, name), getattr(many, name), rtol=1e-12, atol=1e-14)


def test_improper_copies_rotate_the_pair_vectors_consistently(model64):
    # a copy evaluated by the batched evaluator equals the model run on an
    # explicitly rotated Atoms (improper included), with its own neighbour list
    atoms = copper((2, 1, 1), rattle=0.1, seed=8, cubic=False)
    evaluator = make_evaluator(model64)
    reference = MetatomicCalculator(model64, non_conservative=True)
    for g in random_o3(3, seed=5):
        out = evaluator.evaluate(atoms, g[None], ["energy", "forces", "stress"])
        copy = rotated_atoms(atoms, g)
        copy.calc = reference
        np.testing.assert_allclose(out.energy[0], copy.get_potential_energy(), rtol=1e-12)
        forces = out.forces[0] - out.forces[0].mean(axis=0)
        np.testing.assert_allclose(forces, copy.get_forces(), atol=1e-10)


def test_symmetrized_shipped_model_is_equivariant(cu32):
    calc = SymmetrizedCalculator(path())  # group:I, exact to degree 5
    cu32.calc = calc
    e0, f0 = cu32.get_potential_energy(), cu32.get_forces()
    raw0, spread = calc.results["raw_energy"], calc.results["energy_equivariance_error"]
    raw_forces0 = calc.results["raw_forces"]
    raw_change, sym_change, sym_force_change, raw_force_change = [], [], [], []
    for g in random_o3(2, seed=4):
        copy = rotated_atoms(cu32, g)
        copy.calc = calc
        sym_change.append(abs(copy.get_potential_energy() - e0))
        sym_force_change.append(np.abs(copy.get_forces() - f0 @ g.T).max())
        raw_change.append(abs(calc.results["raw_energy"] - raw0))
        raw_force_change.append(np.abs(calc.results["raw_forces"] - raw_forces0 @ g.T).max())
    # the residual beyond degree 5 is what is left: far below the raw change
    # and below the model's own spread over rotations (an unsymmetrized model
    # changes by the whole raw amount and fails both)
    assert max(sym_change) < 0.2 * max(raw_change) + 1e-5
    assert max(sym_change) < 0.5 * spread + 1e-5
    assert max(sym_force_change) < 0.2 * min(raw_force_change)


def test_conservative_forces_are_minus_the_gradient_of_the_average(model64):
    atoms = copper((1, 1, 1), rattle=0.1, seed=6)
    calc = SymmetrizedCalculator(model64, forces="conservative", quadrature="lebedev:1")
    atoms.calc = calc
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, 1e-5), atol=1e-7)
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, 1e-6), atol=1e-8)


def test_conservative_mode_reports_the_direct_predictions_beside(model64):
    atoms = copper((1, 1, 1), rattle=0.1, seed=7)
    conservative = SymmetrizedCalculator(model64, forces="conservative", quadrature="lebedev:1")
    direct = SymmetrizedCalculator(model64, forces="direct", quadrature="lebedev:1")
    conservative.calculate(atoms, ["energy", "forces", "stress"])
    direct.calculate(atoms, ["energy", "forces", "stress"])
    c, d = conservative.results, direct.results
    # one forward pass gives both kinds; the direct ones match a direct-mode run
    np.testing.assert_allclose(c["direct_forces"], d["forces"], atol=1e-10)
    np.testing.assert_allclose(c["direct_stress"], d["stress"], atol=1e-12)
    assert c["direct_forces_equivariance_error"] == pytest.approx(
        d["forces_equivariance_error"], rel=1e-8
    )
    assert c["energy"] == pytest.approx(d["energy"], rel=1e-12)
    # an unconstrained model's direct forces are not its energy gradient
    assert np.abs(c["forces"] - d["forces"]).max() > 1e-3
    assert "direct_forces" not in d


def test_forces_kind_can_be_switched_and_is_refused_for_ase_calculators(model64, cu4):
    calc = SymmetrizedCalculator(model64, quadrature="lebedev:1")
    assert calc.evaluator.forces == "direct"
    calc.set(forces="conservative")
    assert calc.evaluator.forces == "conservative"
    calc.calculate(cu4, ["forces"])
    assert "direct_forces" in calc.results
    with pytest.raises(ValueError, match="needs a metatomic model"):
        SymmetrizedCalculator(EMT(), forces="conservative")


def test_out_of_memory_is_reraised_with_the_knobs(cu4, monkeypatch):
    evaluator = make_evaluator(path())

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(evaluator, "_run_direct", boom)
    with pytest.raises(MemoryError, match="lower batch_size"):
        evaluator.evaluate(cu4, np.eye(3)[None], ["energy"])


def test_a_shipped_model_can_be_named(cu4):
    atoms = cu4.copy()
    atoms.calc = SymmetrizedCalculator("pet-cu-emt", quadrature="lebedev:1")
    cu4.calc = SymmetrizedCalculator(path(), quadrature="lebedev:1")
    assert atoms.calc.evaluator.name == "metatomic model pet-cu-emt.pt"
    np.testing.assert_array_equal(atoms.get_forces(), cu4.get_forces())


def test_output_variants_are_chosen_explicitly():
    from ase import Atoms
    from variant_model import WEIGHTS, variant_model

    model = variant_model()
    atoms = Atoms("Cu2", positions=[[0.0, 0.0, 0.0], [1.0, 2.0, 0.5]])
    # E_v = w_v sum |r|^2 is invariant: every variant comes back unchanged
    for variant, weight in WEIGHTS.items():
        for base in (
            model,
            MetatomicCalculator(model, non_conservative="forces", variants={"energy": variant}),
        ):
            copy = atoms.copy()
            kwargs = {"variant": variant} if base is model else {}
            copy.calc = SymmetrizedCalculator(base, quadrature="lebedev:1", **kwargs)
            np.testing.assert_allclose(copy.get_potential_energy(), weight * 5.25, rtol=1e-12)
            expected = -2 * weight * (atoms.positions - atoms.positions.mean(axis=0))
            np.testing.assert_allclose(copy.get_forces(), expected, atol=1e-12)
            assert copy.calc.evaluator.variant == variant
    # no default variant: the error lists them and says how to choose
    with pytest.raises(ValueError, match=r"no default variant.*'energy/a'.*variant="):
        SymmetrizedCalculator(model, quadrature="lebedev:1")
    # switching with set(), and a variant the model does not have
    calc = SymmetrizedCalculator(model, quadrature="lebedev:1", variant="a")
    calc.set(variant="b")
    copy = atoms.copy()
    copy.calc = calc
    np.testing.assert_allclose(copy.get_potential_energy(), 2 * 5.25, rtol=1e-12)
    with pytest.raises(ValueError):
        calc.set(variant="c")
    with pytest.raises(ValueError, match="leave variant=None"):
        SymmetrizedCalculator(EMT(), variant="a")


def test_elements_the_model_does_not_know_are_named(cu4):
    cu4[0].symbol = "Al"
    cu4.calc = SymmetrizedCalculator(path(), quadrature="lebedev:1")
    with pytest.raises(ValueError, match=r"knows Cu \(29\); this structure also has Al \(13\)"):
        cu4.get_forces()
    assert cu4.calc.results == {}


def test_bad_model_inputs():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SymmetrizedCalculator("missing-model.pt")
    with pytest.raises(ValueError, match="forces must be 'direct' or 'conservative'"):
        MetatomicEvaluator(path(), forces="magic")


def test_model_ships_in_the_wheel_and_loads_from_it(tmp_path):
    root = path().parents[3]
    if not (root / "pyproject.toml").is_file():
        pytest.skip("not running from a source tree")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("ase_symcalc-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        models_in_wheel = [name for name in archive.namelist() if name.endswith(".pt")]
        assert models_in_wheel == ["ase_symcalc/models/data/pet-cu-emt.pt"]  # one model ships
        archive.extractall(tmp_path / "site")
    site = str(tmp_path / "site")
    code = (
        "import ase_symcalc.models as m, ase.build as b;"
        f"p = m.path(); assert str(p).startswith({site!r}), p;"
        "a = b.bulk('Cu', cubic=True); a.calc = m.pretrained(); print(a.get_potential_energy())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.isfinite(float(result.stdout.strip().splitlines()[-1]))


def test_accuracy_evaluation_reuses_the_raw_copy(cu4):
    from ase.calculators.singlepoint import SinglePointCalculator

    from ase_symcalc.models.evaluate import evaluate_accuracy

    reference = cu4.copy()
    reference.calc = pretrained()
    raw = {k: reference.calc.get_property(k, reference) for k in ("energy", "forces", "stress")}
    frame = cu4.copy()
    frame.calc = SinglePointCalculator(
        frame, energy=raw["energy"] + 0.4, forces=raw["forces"], stress=raw["stress"]
    )
    result = evaluate_accuracy([frame], rule="lebedev:1", progress=False)
    # raw errors against a reference equal to metatomic-ase's own raw prediction
    np.testing.assert_allclose(result["energy_rmse_per_atom"], 0.1, rtol=1e-4)
    assert result["forces_rmse"] < 1e-4 and result["stress_rmse"] < 1e-5
    assert result["forces_equivariance_error"] > 0


def test_training_hyperparameter_overrides():
    from ase_symcalc.models.train import PET_HYPERS, parse_hypers

    hypers = parse_hypers(["d_pet=64", "cutoff=5.0", "activation=SiLU"])
    assert hypers == {**PET_HYPERS, "d_pet": 64, "cutoff": 5.0, "activation": "SiLU"}
    assert parse_hypers([]) == PET_HYPERS and PET_HYPERS["d_pet"] == 32  # not mutated
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_hypers(["d_pet"])


@pytest.mark.parametrize("non_conservative", [False, "forces"])
@pytest.mark.parametrize(
    "variants",
    [None, {"energy": "a"}, {"energy": "a", "non_conservative_force": "b"}],
    ids=["default", "energy-a", "forces-b"],
)
def test_calculator_settings_pin_metatomic_ase(non_conservative, variants):
    """The adapter reads MetatomicCalculator's public parameters only; this pins
    it to what the installed metatomic-ase resolves itself (its private keys,
    read here and nowhere in the package)."""
    from variant_model import variant_model

    from ase_symcalc.evaluators.metatomic import calculator_settings

    model = variant_model()
    if variants is None:
        variants = {"energy": "b"}  # the test model has no default variant
    calculator = MetatomicCalculator(model, non_conservative=non_conservative, variants=variants)
    found_model, setting, chosen, device = calculator_settings(calculator)
    assert found_model is calculator.model()
    assert setting == non_conservative
    assert device is None
    for key in ("_energy_key", "_nc_forces_key", "_nc_stress_key"):
        assert chosen.get(key) == getattr(calculator, key), key
