"""mode="random": one random rotation per call, probes, escalation, and the md runs built on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.io import read, write
from ase.md.verlet import VelocityVerlet
from conftest import thermalize

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc._warnings import EquivarianceWarning
from ase_symcalc.cli import main, read_log
from ase_symcalc.evaluators import ASECalculatorEvaluator
from ase_symcalc.monitor import EquivarianceMonitor
from ase_symcalc.rule_policy import RulePolicy
from ase_symcalc.serve import extras
from ase_symcalc.symmetrize import estimate_equivariance_errors
from ase_symcalc.testing import AnisotropicCalculator, random_o3

DIRECTION = (0.3, 0.5, 0.8)


def _anisotropic(amplitude=0.3):
    return AnisotropicCalculator(
        EMT(), terms=((2, amplitude, "pair"), (3, 2.0, "site")), direction=DIRECTION, cutoff=3.2
    )


# -- the estimator -------------------------------------------------------------


@pytest.mark.parametrize("n_orientations", [2, 3], ids=["pair", "triple"])
def test_estimate_is_unbiased_for_the_exact_o3_variance(cu4, n_orientations):
    """Mean of squared estimates from random O(3) samples = the exact Haar variance."""
    model = _anisotropic()
    exact = model.haar_statistics(cu4)
    n_atoms = len(cu4)
    evaluator = ASECalculatorEvaluator(model)
    samples = 300
    matrices = random_o3(samples * n_orientations, seed=11)
    outputs = evaluator.evaluate(cu4, matrices, ["energy", "forces", "stress"])
    squares = {"energy": [], "forces": [], "stress": []}
    for k in range(samples):
        index = slice(k * n_orientations, (k + 1) * n_orientations)
        estimate = estimate_equivariance_errors(outputs.select(index), matrices[index])
        squares["energy"].append(estimate.energy_error**2)
        squares["forces"].append(estimate.forces_error**2)
        squares["stress"].append(estimate.stress_error**2)
    expected = {
        "energy": exact["energy"][1],
        "forces": exact["forces"][1] / (3 * n_atoms),
        "stress": exact["stress"][1] / 9,
    }
    for name, values in squares.items():
        values = np.array(values)
        standard_error = values.std(ddof=1) / np.sqrt(samples)
        assert abs(values.mean() - expected[name]) < 3 * standard_error, name
        assert expected[name] > 0


def test_estimate_is_zero_for_an_equivariant_model(cu8):
    matrices = random_o3(2, seed=3)
    outputs = ASECalculatorEvaluator(EMT()).evaluate(cu8, matrices, ["energy", "forces", "stress"])
    estimate = estimate_equivariance_errors(outputs, matrices)
    assert estimate.energy_error < 1e-10
    assert estimate.forces_error < 1e-10 and estimate.stress_error < 1e-10
    with pytest.raises(ValueError, match="at least 2 orientations"):
        estimate_equivariance_errors(outputs.select(slice(0, 1)), matrices[:1])


# -- the calculator ------------------------------------------------------------


def test_random_mode_probes_on_schedule_without_changing_the_forces(cu8):
    model = _anisotropic()
    runs = {}
    for interval in (0, 1, 3):
        calc = SymmetrizedCalculator(model, mode="random", seed=4, probe_interval=interval)
        atoms = cu8.copy()
        atoms.calc = calc
        forces, errors, evaluations = [], [], []
        for step in range(6):
            atoms.positions[step % len(atoms), 0] += 0.01
            forces.append(atoms.get_forces().copy())
            errors.append(calc.results["forces_equivariance_error"])
            evaluations.append(calc.results["evaluations"])
        runs[interval] = (np.array(forces), np.array(errors), evaluations, calc)
    # probing draws from a stream of its own: the rotations of the calls do not move
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][0], runs[3][0])
    assert np.isnan(runs[0][1]).all() and runs[0][2] == [1] * 6
    assert np.isfinite(runs[1][1]).all() and runs[1][2] == [3] * 6  # + probe + lab frame
    assert np.isfinite(runs[3][1][[0, 3]]).all() and np.isnan(runs[3][1][[1, 2, 4, 5]]).all()
    assert runs[3][2] == [3, 1, 1, 3, 1, 1]
    calc = runs[0][3]
    assert calc.results["quadrature"] == "random" and "raw_forces" not in calc.results
    results = calc.probe()  # on demand: a fresh estimate, the lab frame, same forces
    assert np.isfinite(results["forces_equivariance_error"]) and "raw_forces" in results
    np.testing.assert_array_equal(results["forces"], runs[0][0][-1])
    assert results["evaluations"] == 3 and calc.probe()["evaluations"] == 3  # once only


def test_random_mode_average_is_the_haar_average_in_expectation(cu4):
    model = _anisotropic()
    exact = model.haar_statistics(cu4)
    calc = SymmetrizedCalculator(model, mode="random", seed=7, probe_interval=0, raw=False)
    atoms = cu4.copy()
    atoms.calc = calc
    energies = []
    for _ in range(400):
        calc.reset()
        energies.append(atoms.get_potential_energy())
    haar = exact["energy"][0] + EMT().get_potential_energy(cu4.copy())
    assert abs(np.mean(energies) - haar) < 3 * np.std(energies) / np.sqrt(len(energies))


class _Scaled(Calculator):
    """An analytic anisotropic model whose anisotropy the test turns up and down."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self):
        super().__init__()
        self.scale = 1.0
        self.model = _anisotropic()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        base = EMT()
        base.calculate(self.atoms, properties, all_changes)  # a fresh EMT each call
        self.model.calculate(self.atoms, ["energy", "forces", "stress"], all_changes)
        self.results = {
            key: base.results[key] + self.scale * (self.model.results[key] - base.results[key])
            for key in ("energy", "forces", "stress")
        }
        self.results["free_energy"] = self.results["energy"]


def test_escalation_switches_to_the_rule_and_back(cu8):
    model = _Scaled()
    calc = SymmetrizedCalculator(
        model, mode="random", quadrature="auto", tolerance=5e-3, seed=1, probe_interval=1
    )
    atoms = cu8.copy()
    atoms.calc = calc
    rules, messages = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EquivarianceWarning)
        for step in range(12):
            model.scale = 1.0 if step < 3 else 1e-3
            atoms.positions[0, 0] += 1e-3
            atoms.get_forces()
            rules.append(calc.results["quadrature"])
        messages = [str(w.message) for w in caught if w.category is EquivarianceWarning]
    assert rules[0] == "random" and rules[1] != "random"  # the first probe is above 5 meV/Å
    assert rules[-1] == "random"  # 5 calm probes later
    assert len(messages) == 2
    assert "above the tolerance" in messages[0] and "back to one random rotation" in messages[1]
    # the warning points at this file, not into ase_symcalc or ASE
    assert all(w.filename == __file__ for w in caught if w.category is EquivarianceWarning)


def test_without_a_tolerance_one_warning_above_the_default_level(cu8):
    calc = SymmetrizedCalculator(_anisotropic(3.0), mode="random", seed=1, probe_interval=1)
    atoms = cu8.copy()
    atoms.calc = calc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EquivarianceWarning)
        for _ in range(3):
            atoms.positions[0, 0] += 1e-3
            atoms.get_forces()
    assert len([w for w in caught if w.category is EquivarianceWarning]) == 1
    assert calc.results["quadrature"] == "random"  # never switches


def test_policy_state_round_trips_and_bad_values_name_the_fix():
    policy = RulePolicy("auto", mode="random", tolerance=1e-2, seed=3)
    policy.rule_for_call()
    policy.observe(1.0)
    copy = RulePolicy("auto", mode="random", tolerance=1e-2, seed=3)
    copy.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    assert copy.escalated and copy.rule.name == policy.rule.name
    np.testing.assert_array_equal(copy.probe_rotations(), policy.probe_rotations())
    with pytest.raises(ValueError, match="probe_interval must be an integer >= 0"):
        RulePolicy(mode="random", probe_interval=-1)
    with pytest.raises(ValueError, match="mode='random'"):
        RulePolicy("auto", mode="random-grid")


def test_serve_extras_carry_the_estimate_or_nan(cu8):
    calc = SymmetrizedCalculator(_anisotropic(), mode="random", seed=2, probe_interval=2)
    atoms = cu8.copy()
    atoms.calc = calc
    payloads = []
    for _ in range(2):
        atoms.positions[0, 0] += 1e-3
        atoms.get_forces()
        payloads.append(json.loads(json.dumps(extras(calc.results))))
    assert payloads[0]["forces_equivariance_error"] > 0 and "raw_energy" in payloads[0]
    assert np.isnan(payloads[1]["forces_equivariance_error"]) and "raw_energy" not in payloads[1]
    assert payloads[1]["quadrature"] == "random" and payloads[1]["evaluations"] == 1


# -- ase-symcalc md --------------------------------------------------------------


def _cu32(tmp_path, seed=4):
    path = tmp_path / "cu32.extxyz"
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.03, seed=seed)
    write(path, atoms)
    return path


def test_default_md_costs_at_most_1_3_evaluations_per_step(tmp_path):
    out = tmp_path / "run"
    assert main(["md", str(_cu32(tmp_path)), "--steps", "100", "--output", str(out)]) == 0
    log = read_log(out / "log.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "random" and summary["interval"] == 10
    assert summary["model_evaluations_per_step"] <= 1.3
    np.testing.assert_array_equal(log["step"], np.arange(0, 101, 10))
    assert (log["evaluations"][1:] == 12).all()  # 10 steps, one probe, the lab frame
    for name in ("energy", "forces", "stress"):
        assert np.isfinite(log[f"{name}_equivariance_error"]).all()
    assert np.isfinite(log["epot_raw"]).all() and (log["max_atom_forces_error"] > 0).all()
    forces = summary["forces_equivariance_error"]
    assert forces["count"] == 11 and forces["rms"] > 0 and forces["rms_stderr"] > 0


def test_md_escalates_to_the_rule_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["md", str(_cu32(tmp_path)), "--steps", "10", "--interval", "5"]
    argv += ["--tolerance", "1e-4", "--quadrature", "lebedev:1", "--output", str(out)]
    assert main(argv) == 0
    log = read_log(out / "log.csv")
    assert log["rule"][0] == "random" and set(log["rule"][1:]) == {"lebedev:1+inversion@generic"}
    err = capsys.readouterr().err
    assert "above the tolerance" in err and "lebedev:1" in err


def _md_process(structure, out, ensemble, steps, interval):
    command = [sys.executable, "-m", "ase_symcalc.cli", "md", str(structure), "--seed", "3"]
    command += ["--steps", str(steps), "--interval", str(interval), "--ensemble", ensemble]
    return command + ["--output", str(out)]


@pytest.mark.parametrize("ensemble, interval", [("nve", 1), ("langevin", 3)])
def test_sigterm_then_restart_reproduces_the_uninterrupted_run(tmp_path, ensemble, interval):
    structure = _cu32(tmp_path)
    steps = 60
    env = dict(os.environ, OMP_NUM_THREADS="1")
    whole = tmp_path / "whole"
    assert main(_md_process(structure, whole, ensemble, steps, interval)[3:]) == 0
    cut = tmp_path / "cut"
    process = subprocess.Popen(
        _md_process(structure, cut, ensemble, steps, interval),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log_file = cut / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log_file.exists() and len(log_file.read_text().splitlines()) >= 1 + 6 // interval:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    message = err.strip().splitlines()[-1]
    assert "stopped by SIGTERM after step" in message and "--restart" in message
    done = int(message.split("after step ")[1].split(";")[0])
    assert 0 < done < steps
    assert read_log(log_file)["step"][-1] == done  # the last step is flushed
    argv = ["md", "--restart", str(cut), "--steps", str(steps - done), "--seed", "3"]
    assert main([*argv, "--interval", str(interval), "--ensemble", ensemble]) == 0
    log = read_log(log_file)
    # the rows of the whole run, plus the interrupted step's: no gap, no repeat
    expected = sorted(set(range(0, steps + 1, interval)) | {done})
    np.testing.assert_array_equal(log["step"], expected)
    assert np.isfinite(log["forces_equivariance_error"][log["step"] % interval == 0]).all()
    first = {int(f.info["step"]): f for f in read(whole / "trajectory.extxyz", ":")}
    second = {int(f.info["step"]): f for f in read(cut / "trajectory.extxyz", ":")}
    assert sorted(second) == expected
    for step in sorted(first):
        np.testing.assert_allclose(second[step].positions, first[step].positions, atol=1e-8)
    # the estimates too: the interruption took nothing from the probes' random stream
    whole_log = read_log(whole / "log.csv")
    np.testing.assert_allclose(
        log["forces_equivariance_error"][np.isin(log["step"], whole_log["step"])],
        whole_log["forces_equivariance_error"],
        rtol=1e-6,
    )


class _NaNAfter(Calculator):
    """EMT until its n-th call, then NaN forces on atom 5 (or a NaN energy)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, good_calls, bad="forces"):
        super().__init__()
        self.calls = 0
        self.good_calls = good_calls
        self.bad = bad

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        base = EMT()
        base.calculate(self.atoms, ["energy", "forces", "stress"], all_changes)
        self.results = dict(base.results)
        self.calls += 1
        if self.calls > self.good_calls and self.bad == "forces":
            self.results["forces"] = self.results["forces"].copy()
            self.results["forces"][5, 1] = np.nan
        elif self.calls > self.good_calls:
            self.results["energy"] = np.nan


@pytest.mark.parametrize("bad", ["forces", "energy"])
def test_non_finite_outputs_stop_the_run_in_one_line(tmp_path, capsys, monkeypatch, bad):
    from ase_symcalc.cli import _common

    def make(args, model_path):
        # one evaluation per step (--mode random, no probe between logged rows)
        return SymmetrizedCalculator(
            _NaNAfter(good_calls=8, bad=bad), mode="random", seed=1, raw=False, probe_interval=0
        )

    monkeypatch.setattr(_common, "_make_calculator", make)
    monkeypatch.setattr("ase_symcalc.cli.md._make_calculator", make)
    out = tmp_path / "run"
    argv = ["md", str(_cu32(tmp_path)), "--steps", "20", "--interval", "1", "--output", str(out)]
    # every step: its own evaluation and the monitor's probe; calls 9 on are NaN
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    expected = "non-finite forces on atom 5 (Cu)" if bad == "forces" else "non-finite energy;"
    assert "step 4" in err and expected in err
    log = read_log(out / "log.csv")
    np.testing.assert_array_equal(log["step"], np.arange(4))
    assert len(read(out / "trajectory.extxyz", ":")) == 4


def test_monitor_counts_evaluations_since_the_previous_row(tmp_path, cu8):
    atoms = cu8.copy()
    thermalize(atoms, 300, seed=1)
    atoms.calc = SymmetrizedCalculator(_anisotropic(), mode="random", seed=1, probe_interval=0)
    dyn = VelocityVerlet(atoms, timestep=2 * units.fs)
    monitor = EquivarianceMonitor(atoms, tmp_path / "log.csv", dynamics=dyn)
    dyn.attach(monitor, interval=4)
    dyn.run(8)
    monitor.close()
    log = read_log(tmp_path / "log.csv")
    # row 0: the first step and the monitor's probe (one orientation, the lab frame);
    # then 4 steps + 2
    assert log["evaluations"].tolist() == [3, 6, 6]
    assert np.isfinite(log["forces_equivariance_error"]).all()
    assert set(log["rule"]) == {"random"}


def test_restart_with_bad_checkpoint_names_the_fix(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["md", str(_cu32(tmp_path)), "--steps", "2", "--interval", "1", "--output", str(out)])
        == 0
    )
    (out / "checkpoint.npz").write_bytes(b"not a checkpoint")
    assert main(["md", "--restart", str(out), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "remove it" in err and len(err.strip().splitlines()) == 1


def test_mts_runs_on_a_grid_and_refuses_random_mode(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["md", str(_cu32(tmp_path)), "--mts", "2", "--steps", "2", "--quadrature", "lebedev:1"]
    assert main([*argv, "--output", str(out)]) == 0  # --mts: --mode grid by default
    assert json.loads((out / "summary.json").read_text())["mode"] == "grid"
    assert main([*argv, "--mode", "random", "--output", str(tmp_path / "p")]) == 2
    assert "--mode grid" in capsys.readouterr().err
    assert main(["md", "--mode", "raw", "--tolerance", "0.1", "--output", str(tmp_path / "q")]) == 2
    assert "--tolerance has no use with --mode raw" in capsys.readouterr().err


def test_checkpoint_keeps_everything_the_model_reads(tmp_path):
    from ase.constraints import FixAtoms

    from ase_symcalc.cli.md import load_checkpoint, save_checkpoint

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    atoms.info["charge"] = 1
    atoms.set_tags(np.arange(len(atoms)))
    atoms.set_masses(np.linspace(60.0, 70.0, len(atoms)))
    atoms.set_constraint(FixAtoms([0]))
    thermalize(atoms, 300, seed=2)
    calc = SymmetrizedCalculator(EMT(), mode="random", seed=3)
    atoms.calc = calc
    atoms.get_forces()
    save_checkpoint(tmp_path / "c.npz", atoms, 7, None, {"seed": 3})
    loaded = load_checkpoint(tmp_path / "c.npz")
    back = loaded["atoms"]
    assert loaded["step"] == 7 and loaded["options"] == {"seed": 3}
    np.testing.assert_array_equal(back.positions, atoms.positions)
    np.testing.assert_array_equal(back.get_momenta(), atoms.get_momenta())
    np.testing.assert_array_equal(back.get_masses(), atoms.get_masses())
    assert back.info == {"charge": 1} and back.get_tags().tolist() == list(range(len(atoms)))
    assert [c.index.tolist() for c in back.constraints] == [[0]]
    assert loaded["results"]["evaluations"] == calc.results["evaluations"]
    assert isinstance(loaded["results"]["evaluations"], int)
    np.testing.assert_array_equal(loaded["results"]["forces"], calc.results["forces"])


class _ReseedingCalculator(Calculator):
    """A base that reseeds numpy's global generator on every call, as fairchem does."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        np.random.seed(0)  # noqa: NPY002  (what the test is about)
        self.inner.calculate(atoms, properties, system_changes)
        self.results = {k: self.inner.results[k] for k in ("energy", "free_energy", "forces")}


def test_random_rotations_keep_their_own_generator():
    """A base that reseeds numpy's global generator changes nothing: the same
    rotations, call after call, as with the plain base."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.05, seed=1)
    runs = []
    for base in (_anisotropic(), _ReseedingCalculator(_anisotropic())):
        calc = SymmetrizedCalculator(base, mode="random", seed=5, probe_interval=1000)
        forces = []
        for step in range(3):
            copy = atoms.copy()
            copy.positions[0, 0] += 0.01 * step
            copy.calc = calc
            forces.append(copy.get_forces())
        runs.append(np.array(forces))
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-12)
    assert np.abs(runs[0][1] - runs[0][0]).max() > 1e-3  # a new rotation every call
