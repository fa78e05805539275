"""MD monitoring and the command line."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ase import units
from ase.calculators.emt import EMT
from ase.io import read, write
from ase.md.verlet import VelocityVerlet
from conftest import copper, thermalize

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.cli import main, read_log
from ase_symcalc.monitor import COLUMNS, EquivarianceMonitor
from ase_symcalc.testing import AnisotropicCalculator


def test_monitor_rows_equal_the_calculator_results(tmp_path):
    atoms = copper((2, 1, 1), seed=2)
    thermalize(atoms, 300, seed=1)
    model = AnisotropicCalculator(EMT(), terms=((2, 1.0),), direction=(0.3, 0.5, 0.8))
    calc = SymmetrizedCalculator(model, quadrature="lebedev:2")
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=2 * units.fs)
    seen = []
    log = tmp_path / "log.csv"
    monitor = EquivarianceMonitor(atoms, log, dynamics=dyn, trajectory=tmp_path / "t.extxyz")
    dyn.attach(monitor, interval=2)
    dyn.attach(lambda: seen.append(dict(calc.results)), interval=2)
    evaluations = []
    dyn.attach(lambda: evaluations.append(calc.evaluation_count), interval=1)
    dyn.run(4)
    monitor.close()
    # the monitor adds no model evaluation: one pass per step
    assert evaluations[-1] == 5 * (len(calc.quadrature) + 1)
    data = read_log(log)
    assert list(data) == list(COLUMNS)
    np.testing.assert_array_equal(data["step"], [0, 2, 4])
    np.testing.assert_allclose(data["time_fs"], [0, 4, 8], atol=1e-9)
    for k, results in enumerate(seen):
        np.testing.assert_allclose(data["epot_sym"][k], results["energy"], rtol=1e-9)
        np.testing.assert_allclose(data["epot_raw"][k], results["raw_energy"], rtol=1e-9)
        np.testing.assert_allclose(
            data["forces_equivariance_error"][k], results["forces_equivariance_error"], rtol=1e-9
        )
        per_atom = results["forces_equivariance_error_per_atom"]
        assert data["worst_atom"][k] == np.argmax(per_atom)
        np.testing.assert_allclose(data["max_atom_forces_error"][k], per_atom.max(), rtol=1e-9)
    with open(log) as handle:
        header = next(csv.reader(handle))
    assert "forces_equivariance_error [eV/Å]" in header
    frames = read(tmp_path / "t.extxyz", ":")
    assert len(frames) == 3
    assert frames[-1].arrays["forces_equivariance_error"].shape == (len(atoms),)
    np.testing.assert_allclose(frames[-1].get_potential_energy(), seen[-1]["energy"], rtol=1e-9)
    assert "forces_equivariance_error" not in atoms.info  # user's atoms untouched


def test_monitor_leaves_stress_empty_without_a_cell(tmp_path):
    atoms = copper(seed=3)
    atoms.pbc = False
    atoms.calc = SymmetrizedCalculator(EMT(), quadrature="lebedev:1")
    monitor = EquivarianceMonitor(atoms, tmp_path / "log.csv")
    monitor()
    monitor.close()
    assert np.isnan(read_log(tmp_path / "log.csv")["stress_equivariance_error"][0])


def test_md_command_end_to_end(tmp_path):
    structure = tmp_path / "cu.extxyz"
    write(structure, copper(seed=4))
    out = tmp_path / "run"
    code = main(
        [
            "md",
            str(structure),
            "--mode",
            "grid",
            "--quadrature",
            "lebedev:1",
            "--steps",
            "3",
            "--ensemble",
            "nve",
            "--output",
            str(out),
            "--seed",
            "1",
        ]
    )
    assert code == 0
    log = read_log(out / "log.csv")
    assert len(log["step"]) == 4 and np.isfinite(log["forces_equivariance_error"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["logged_steps"] == 4 and "etot_drift_meV_per_atom_per_ps" in summary
    assert summary["model_evaluations"] == 4 * 25
    assert len(read(out / "trajectory.extxyz", ":")) == 4
    png = (out / "equivariance.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # never overwritten without --overwrite
    assert main(["md", str(structure), "--steps", "1", "--output", str(out)]) == 2
    assert len(read_log(out / "log.csv")["step"]) == 4


@pytest.mark.parametrize("ensemble", ["nve", "langevin"])
def test_md_command_with_multiple_time_stepping(tmp_path, capsys, ensemble):
    structure = tmp_path / "cu.extxyz"
    write(structure, copper(seed=4))
    out = tmp_path / "run"
    argv = [
        "md",
        str(structure),
        "--mode",
        "grid",
        "--quadrature",
        "lebedev:1",
        "--ensemble",
        ensemble,
    ]
    assert main([*argv, "--steps", "6", "--mts", "3", "--output", str(out)]) == 0
    log = read_log(out / "log.csv")
    # a row per outer step, numbered in time steps of 2 fs
    assert log["step"].tolist() == [0, 3, 6] and log["time_fs"].tolist() == [0, 6, 12]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mts"] == 3 and summary["forces"] == "conservative"
    # direct and conservative forces side by side, every logged step
    assert (log["forces_direct_vs_conservative_rmse"] > 0).all()
    # 3 symmetrized passes (24 copies + raw) and 1 + 6 fast evaluations
    assert summary["model_evaluations"] == 3 * 25 + 7
    assert main([*argv, "--steps", "5", "--mts", "3", "--output", str(tmp_path / "x")]) == 2
    assert "--mts must be a positive divisor" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["md", "missing.xyz"], "does not exist"),
        (["md", "--model", "nope"], "unknown model 'nope'"),
        (["md", "--quadrature", "lebedev:x", "--steps", "1"], "valid forms"),
        (["md", "--steps", "-1"], "--steps -1: must be"),
        (["md", "--variant", "x", "--steps", "1"], "variant 'x' for output 'energy'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, arguments, message):
    assert main(arguments + ["--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_structure_the_model_cannot_take_is_one_line_and_keeps_old_output(tmp_path, capsys):
    from ase.build import bulk

    structure = tmp_path / "al.extxyz"
    write(structure, bulk("Al", "fcc", a=4.05, cubic=True))
    old = tmp_path / "old"
    old.mkdir()
    (old / "log.csv").write_text("an earlier run\n")
    argv = ["md", str(structure), "--steps", "1", "--output", str(old), "--overwrite"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Al (13)" in err and len(err.splitlines()) == 1
    assert (old / "log.csv").read_text() == "an earlier run\n"  # not replaced
    assert main(["compare", str(structure), "--output", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip()
    assert "frame 0" in err and "Al (13)" in err and len(err.splitlines()) == 1


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["md", "--mode", "sometimes"])
    assert exit_info.value.code == 2


def test_quadratures_and_export(tmp_path, capsys):
    assert main(["quadratures"]) == 0
    assert "group:I" in capsys.readouterr().out
    target = tmp_path / "model.pt"
    assert main(["export-metatomic", str(target)]) == 0
    assert target.stat().st_size > 100_000
    assert main(["export-metatomic", str(target)]) == 2


def test_console_script_help():
    exe = os.path.join(os.path.dirname(sys.executable), "ase-symcalc")
    if not os.path.exists(exe):
        pytest.skip("console script not installed")
    out = subprocess.run([exe, "md", "--help"], capture_output=True, text=True, check=True)
    assert "examples:" in out.stdout and "--quadrature" in out.stdout


def _tiny_structure(tmp_path):
    structure = tmp_path / "cu.extxyz"
    write(structure, copper(seed=5))
    return structure


def test_npt_runs_and_changes_the_cell(tmp_path):
    structure = _tiny_structure(tmp_path)
    out = tmp_path / "npt"
    assert (
        main(
            [
                "md",
                str(structure),
                "--ensemble",
                "npt",
                "--pressure",
                "10000",
                "--steps",
                "3",
                "--mode",
                "grid",
                "--quadrature",
                "lebedev:1",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    frames = read(out / "trajectory.extxyz", ":")
    assert abs(frames[-1].get_volume() - frames[0].get_volume()) > 1e-6
    molecule_file = tmp_path / "mol.xyz"
    write(molecule_file, copper(seed=1)[:2].copy(), format="xyz")
    assert (
        main(
            [
                "md",
                str(molecule_file),
                "--ensemble",
                "npt",
                "--steps",
                "1",
                "--output",
                str(tmp_path / "m"),
            ]
        )
        == 2
    )


def test_restart_continues_without_losing_or_duplicating_rows(tmp_path):
    structure = _tiny_structure(tmp_path)
    out = tmp_path / "run"
    common = ["--mode", "grid", "--quadrature", "lebedev:1", "--ensemble", "nve"]
    assert main(["md", str(structure), "--steps", "3", "--output", str(out)] + common) == 0
    assert main(["md", "--restart", str(out), "--steps", "2"] + common) == 0
    log = read_log(out / "log.csv")
    np.testing.assert_array_equal(log["step"], [0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(np.diff(log["time_fs"]), 2.0)
    frames = read(out / "trajectory.extxyz", ":")
    assert [f.info["step"] for f in frames] == [0, 1, 2, 3, 4, 5]
    # NVE from a restart conserves what the run conserved: no kick at the seam
    assert abs(log["etot"][3] - log["etot"][2]) < 5 * abs(log["etot"][2] - log["etot"][1]) + 1e-3


def test_killed_run_keeps_a_readable_log_and_restarts(tmp_path):
    import signal
    import time

    structure = _tiny_structure(tmp_path)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "ase_symcalc.cli",
        "md",
        str(structure),
        "--steps",
        "500",
        "--mode",
        "grid",
        "--quadrature",
        "lebedev:1",
        "--ensemble",
        "nve",
        "--output",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log_file = out / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log_file.exists() and len(log_file.read_text().splitlines()) >= 6:
            break
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    log = read_log(log_file)  # every complete row is there and parses
    assert len(log["step"]) >= 5
    np.testing.assert_array_equal(log["step"], np.arange(len(log["step"])))
    assert (
        main(
            [
                "md",
                "--restart",
                str(out),
                "--steps",
                "2",
                "--mode",
                "grid",
                "--quadrature",
                "lebedev:1",
                "--ensemble",
                "nve",
            ]
        )
        == 0
    )
    after = read_log(log_file)
    np.testing.assert_array_equal(after["step"], np.arange(len(after["step"])))  # no gap, no repeat
    frames = read(out / "trajectory.extxyz", ":")
    assert [f.info["step"] for f in frames] == list(after["step"].astype(int))


def test_compare_and_plot_commands(tmp_path, capsys):
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for seed in range(3):
        atoms = copper(seed=seed)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
        )
        frames.append(atoms)
    dataset = tmp_path / "data.extxyz"
    write(dataset, frames)
    prefix = tmp_path / "cmp"
    assert (
        main(["compare", str(dataset), "--quadrature", "lebedev:1", "--output", str(prefix)]) == 0
    )
    printed = capsys.readouterr().out
    assert "RMSE raw vs reference" in printed and "equivariance error" in printed
    with open(prefix.with_suffix(".csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and float(rows[0]["forces_rmse_raw"]) > 0
    assert prefix.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", str(tmp_path / "nope.xyz")]) == 2
    # plot: the figure again from a log
    out = tmp_path / "run"
    assert (
        main(
            [
                "md",
                str(dataset),
                "--steps",
                "1",
                "--mode",
                "grid",
                "--quadrature",
                "lebedev:1",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    (out / "equivariance.png").unlink()
    assert main(["plot", str(out / "log.csv")]) == 0
    assert (out / "equivariance.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(tmp_path / "missing.csv")]) == 2


def test_diagnose_command(tmp_path, capsys):
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for seed in range(2):
        atoms = copper(seed=seed)
        atoms.calc = EMT()
        labels = {k: atoms.calc.get_property(k, atoms) for k in ("energy", "forces", "stress")}
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    dataset = tmp_path / "data.extxyz"
    write(dataset, frames)
    prefix = tmp_path / "diag"
    argv = ["diagnose", "pet-cu-emt", str(dataset), "--lmax", "1", "--quadrature", "lebedev:1"]
    assert main([*argv, "--output", str(prefix)]) == 0
    printed = capsys.readouterr().out
    assert "A: errors over 2 frames" in printed and "B: fraction of the norm" in printed
    assert "node features, layer 1" in printed and "energy head" in printed
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert report["errors"]["forces"]["equivariance_error"] > 0
    assert abs(sum(report["fractions"]["energy"].values()) - 1) < 0.05
    assert prefix.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert main(["diagnose", "pet-cu-emt", str(dataset), "--lmax", "-1"]) == 2
    assert main(["diagnose", "no-such-model", str(dataset)]) == 2
