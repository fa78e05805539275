"""`ase-symcalc serve` against a real i-PI (PyPI `ipi`): two clients, two beads."""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from ase_symcalc import SymmetrizedCalculator
from ase_symcalc.cli import main
from ase_symcalc.models import path as model_path
from ase_symcalc.serve import extras, parse_address

IPI = shutil.which("i-pi") or str(Path(sys.executable).with_name("i-pi"))
SERVE = [sys.executable, "-m", "ase_symcalc.cli", "serve"]

INPUT = """<simulation verbosity='low'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ step, potential{{electronvolt}} ] </properties>
    <trajectory filename='feq' stride='1' extra_type='forces_equivariance_error'>
      extras </trajectory>
  </output>
  <total_steps> 3 </total_steps>
  <prng><seed> 12345 </seed></prng>
  <ffsocket name='symcalc' mode='unix'><address> {address} </address></ffsocket>
  <system>
    <initialize nbeads='2'>
      <file mode='ase'> init.extxyz </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities>
    </initialize>
    <forces><force forcefield='symcalc'> </force></forces>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> 2.0 </timestep>
        <thermostat mode='pile_l'><tau units='femtosecond'> 100 </tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'> 300 </temperature></ensemble>
  </system>
</simulation>
"""

pytestmark = pytest.mark.skipif(not os.path.exists(IPI), reason="i-PI (PyPI ipi) is not installed")


def _kill(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_two_clients_serve_a_path_integral_run(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.02, seed=1)
    write(tmp_path / "init.extxyz", atoms)
    address = f"symcalc-test-{uuid.uuid4().hex[:8]}"
    socket_file = Path(f"/tmp/ipi_{address}")
    (tmp_path / "input.xml").write_text(INPUT.format(address=address))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    processes = []
    try:
        # clients first (they retry until i-PI listens): a client that connects
        # only after i-PI has finished the 3 steps would find it gone
        clients = [
            subprocess.Popen(
                [*SERVE, f"unix:{address}", "--structure", "init.extxyz"]
                + ["--quadrature", "group:T", "--connect-timeout", "60"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        processes += clients
        time.sleep(5.0)  # both load the model and start polling the socket
        ipi = subprocess.Popen(
            [IPI, "input.xml"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        processes.append(ipi)
        ipi.wait(timeout=240)
        for client in clients:
            _, err = client.communicate(timeout=60)
            assert client.returncode == 0, err.decode()
    finally:
        _kill(processes)
        socket_file.unlink(missing_ok=True)

    rows = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    calc = SymmetrizedCalculator(str(model_path()), quadrature="group:T")
    reference = atoms.copy()
    reference.calc = calc
    expected = reference.get_potential_energy()
    # both beads start at the input positions; Hartree/Bohr conversions ~1e-7
    # relative, and the float32 model rounds its atomic energies (a few eV
    # each) to ~1e-7 eV, which matters where the total is near zero
    assert rows[0, 1] == pytest.approx(expected, rel=1e-6, abs=1e-6)
    for bead in range(2):
        values = [
            float(line)
            for line in (tmp_path / f"sim.feq_{bead}").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        assert len(values) >= 3 and all(np.isfinite(values)) and min(values) > 0


def _run_ipi(tmp_path, atoms, clients, nbeads=1, extras=True, template=None):
    """i-PI on a fresh unix socket with client commands (``{address}`` filled in)."""
    write(tmp_path / "init.extxyz", atoms)
    address = f"symcalc-test-{uuid.uuid4().hex[:8]}"
    text = (template or INPUT).format(address=address).replace("nbeads='2'", f"nbeads='{nbeads}'")
    if not extras:  # clients that send none: i-PI stops on a missing extras key
        start, end = text.index("    <trajectory"), text.index("</trajectory>") + 13
        text = text[:start] + text[end:]
    (tmp_path / "input.xml").write_text(text)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    processes = []
    try:
        ipi = subprocess.Popen(
            [IPI, "input.xml"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        processes.append(ipi)
        for command in clients:
            processes.append(
                subprocess.Popen(
                    [part.format(address=address) for part in command],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        ipi.wait(timeout=240)
        for client in processes[1:]:
            _, err = client.communicate(timeout=60)
            assert client.returncode == 0, err.decode()[-2000:]
    finally:
        _kill(processes)
        Path(f"/tmp/ipi_{address}").unlink(missing_ok=True)
    return np.loadtxt(tmp_path / "sim.out", ndmin=2)


def test_exported_model_runs_in_ipi_metatomic_driver(tmp_path):
    from metatomic_ase import MetatomicCalculator

    from ase_symcalc.export import symmetrized_model

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.02, seed=1)
    symmetrized_model(quadrature="group:T", batch_size=12).save(str(tmp_path / "sym.pt"))
    driver = str(Path(sys.executable).with_name("i-pi-py_driver"))
    command = [driver, "-u", "-a", "{address}", "-m", "metatomic"]
    command += ["-o", "template=init.extxyz,model=sym.pt,non_conservative=True"]
    rows = _run_ipi(tmp_path, atoms, [command], extras=False)
    reference = atoms.copy()
    reference.calc = MetatomicCalculator(str(tmp_path / "sym.pt"), non_conservative=True)
    # a float32 model: per-atom energies of ~-3.5 eV summed in another order
    assert rows[0, 1] == pytest.approx(reference.get_potential_energy(), abs=1e-5)
    assert len(rows) >= 3


def test_serve_without_ipi_is_a_one_line_error_after_the_timeout(tmp_path, capsys):
    write(tmp_path / "cu.extxyz", bulk("Cu", "fcc", a=3.61, cubic=True))
    argv = ["serve", f"unix:nobody-{uuid.uuid4().hex[:8]}", "--structure"]
    start = time.monotonic()
    code = main(
        [*argv, str(tmp_path / "cu.extxyz"), "--quadrature", "group:T", "--connect-timeout", "1"]
    )
    assert code == 2 and time.monotonic() - start < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not listening" in err[0]


def test_serve_refuses_an_unknown_element_before_connecting(tmp_path, capsys):
    write(tmp_path / "au.extxyz", bulk("Au", "fcc", a=4.08, cubic=True))
    code = main(
        ["serve", "unix:x", "--structure", str(tmp_path / "au.extxyz"), "--connect-timeout", "1"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Au" in err[0]


def test_extras_and_addresses():
    results = {
        "raw_energy": -1.0,
        "energy_equivariance_error": 0.01,
        "forces": np.zeros((2, 3)),
        "raw_forces": np.ones((2, 3)),
        "forces_equivariance_error_per_atom": np.array([0.1, 0.3]),
        "quadrature": "group:I+inversion@generic",
        "evaluations": 121,
    }
    payload = json.loads(json.dumps(extras(results)))
    assert payload["forces_raw_vs_sym_rmse"] == 1.0
    assert payload["worst_atom"] == 1 and payload["max_atom_forces_error"] == 0.3
    assert payload["evaluations"] == 121 and "raw" not in payload
    assert parse_address("unix:abc") == {"unixsocket": "abc"}
    assert parse_address("node1:31415") == {"host": "node1", "port": 31415}
    with pytest.raises(ValueError, match="unix:NAME"):
        parse_address("nonsense")


ROTATIONS_INPUT = """<simulation verbosity='low'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ step, potential{{electronvolt}} ] </properties>
    <trajectory filename='pots' stride='1' extra_type='o3grid_pots'> extras </trajectory>
    <trajectory filename='frc' stride='1' format='xyz'> forces </trajectory>
  </output>
  <total_steps> 1 </total_steps>
  <prng><seed> 12345 </seed></prng>
  <ffrotations name='symcalc'>
    <grid_mode> lebedev </grid_mode>
    <grid_order> 3 </grid_order>
    <inversion> True </inversion>
    <ffsocket name='raw' mode='unix'><address> {address} </address></ffsocket>
  </ffrotations>
  <system>
    <initialize nbeads='1'>
      <file mode='ase'> init.extxyz </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities>
    </initialize>
    <forces><force forcefield='symcalc'> </force></forces>
    <motion mode='dynamics'>
      <dynamics mode='nve'><timestep units='femtosecond'> 1.0 </timestep></dynamics>
    </motion>
  </system>
</simulation>
"""


def _numbers(path):
    return np.array(
        [
            float(x)
            for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
            for x in line.split()
        ]
    )


def test_ipi_ffrotations_around_a_raw_client_matches_our_average(tmp_path):
    """An independent implementation: i-PI's own rotation averaging of the raw model."""
    from ase import units
    from ase.io import read
    from ipi.utils.mathtools import get_rotation_quadrature_lebedev

    from ase_symcalc import O3Quadrature

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.02, seed=1)
    client = [*SERVE, "unix:{address}", "--structure", "init.extxyz", "--mode", "raw"]
    rows = _run_ipi(tmp_path, atoms, [client], template=ROTATIONS_INPUT)

    # i-PI's 18 rotations and their inversions, in its order (R, -R, ...)
    matrices, weights = [], []
    for rotation, weight, _ in get_rotation_quadrature_lebedev(3):
        matrices += [rotation, -rotation]
        weights += [weight, weight]
    weights = np.array(weights) / np.sum(weights)
    rule = O3Quadrature.from_matrices(np.array(matrices), weights, name="ipi-lebedev-3")
    # the raw client removes each copy's net force, as our default does
    calc = SymmetrizedCalculator(str(model_path()), quadrature=rule, raw=False)
    ours = atoms.copy()
    ours.calc = calc
    energy = ours.get_potential_energy()
    assert len(rule) == 36
    assert rows[0, 1] == pytest.approx(energy, abs=1e-5)  # float32 model
    # i-PI's per-copy energies (Hartree) against ours, copy by copy
    per_copy = calc.evaluator.evaluate(atoms, rule.matrices, ["energy"]).energy
    pots = _numbers(tmp_path / "sim.pots_0")[: len(rule)] * units.Hartree
    np.testing.assert_allclose(pots, per_copy, atol=1e-5)
    assert np.std(pots) == pytest.approx(np.std(per_copy), rel=1e-3)
    # averaged forces, written by i-PI in atomic units at step 0
    frames = read(tmp_path / "sim.frc_0.xyz", ":")
    forces = frames[0].positions * units.Hartree / units.Bohr
    np.testing.assert_allclose(forces, calc.results["forces"], atol=1e-5)


def test_random_mode_client_sends_estimates_every_probe_interval(tmp_path):
    """--mode random in a real i-PI run: every step answered, the error extra finite at
    the probes (every second structure) and NaN between them."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.02, seed=1)
    client = [*SERVE, "unix:{address}", "--structure", "init.extxyz", "--mode", "random"]
    client += ["--probe-interval", "2", "--seed", "4"]
    rows = _run_ipi(tmp_path, atoms, [client], nbeads=1)
    assert len(rows) == 4 and np.isfinite(rows[:, 1]).all()
    values = _numbers(tmp_path / "sim.feq_0")
    assert len(values) >= 4
    assert np.isfinite(values[0::2]).all() and (values[0::2] > 0).all()
    assert np.isnan(values[1::2]).all()
