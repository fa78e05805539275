"""Real pretrained weights, offline: CHGNet 0.3.0 and SevenNet-0 ship inside
their PyPI wheels. Both were built to be equivariant, and the monitor must say
what their architectures predict:

- CHGNet reads distances and angles only (invariant features) and takes its
  forces as -dE/dx: equivariant under all of O(3), so its errors, proper
  rotations or not, sit at the float32 floor and the symmetrized outputs equal
  the raw ones.
- SevenNet-0 is a NequIP-style E(3) network trained with ``is_parity: False``:
  its spherical harmonics are all treated as even, so a cross product of two
  bond vectors counts as a vector and pseudoscalars (triple products) reach the
  energy. It is exact under proper rotations (float32 floor) and not under
  inversion: the O(3) error is orders of magnitude above the SO(3) one on
  structures that are not their own mirror image (all four rattled ones).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import util
from pathlib import Path

import numpy as np
import pytest
from real_structures import structures

from ase_symcalc import SymmetrizedCalculator

#: float32 models: errors of an exactly equivariant model stay below this (eV/Å)
FLOAT32_FLOOR = 2e-5

STRUCTURES = structures()


@pytest.fixture(scope="module")
def chgnet():
    pytest.importorskip("chgnet")
    from ase_symcalc.models import named

    return named.load("chgnet", device="cpu")


@pytest.mark.parametrize("label", list(STRUCTURES))
def test_chgnet_is_o3_equivariant_to_the_float_floor(chgnet, label):
    atoms = STRUCTURES[label].copy()
    atoms.calc = calc = SymmetrizedCalculator(chgnet, quadrature="group:T", inversion=True)
    forces = atoms.get_forces()  # the CHGNet bug: it used to fail on the first copy
    results = calc.results
    assert results["evaluations"] == 25  # 24 elements of T x {1, -1} and the raw copy
    assert results["forces_equivariance_error"] < FLOAT32_FLOOR
    assert results["energy_equivariance_error"] < FLOAT32_FLOOR * len(atoms)
    np.testing.assert_allclose(forces, results["raw_forces"], atol=10 * FLOAT32_FLOOR)
    if atoms.pbc.all():
        assert results["stress_equivariance_error"] < 1e-6
        np.testing.assert_allclose(results["stress"], results["raw_stress"], atol=1e-5)


def test_chgnet_by_name_equals_its_own_calculator(chgnet):
    from ase_symcalc.models import named

    atoms = STRUCTURES["bulk"].copy()
    atoms.calc = chgnet
    own = atoms.get_forces()
    assert named.local_file("chgnet")[1] == "upstream"  # the file in chgnet's wheel
    atoms.calc = SymmetrizedCalculator("chgnet", quadrature="identity", raw=False)
    np.testing.assert_allclose(atoms.get_forces(), own, atol=1e-6)
    # the named model asks CHGNet for its site energies (the same forward pass)
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert energies.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-4)


def test_a_calculator_without_site_energies_says_how_to_get_them():
    """CHGNet built without return_site_energies lists per-atom energies but does
    not compute them: one error that names the option."""
    pytest.importorskip("chgnet")
    from ase.calculators.calculator import PropertyNotImplementedError
    from chgnet.model.dynamics import CHGNetCalculator

    atoms = STRUCTURES["bulk"].copy()
    atoms.calc = SymmetrizedCalculator(CHGNetCalculator(use_device="cpu"), quadrature="identity")
    atoms.get_forces()  # energy, forces and stress: fine
    with pytest.raises(PropertyNotImplementedError, match="return_site_energies=True"):
        atoms.get_potential_energies()


def _sevennet_environment() -> dict | None:
    """The environment in which ``sevenn`` imports: this one, or this one with the
    overlay that setup.sh installs (sevenn and e3nn >= 0.5 beside mace's e3nn 0.4.4)."""
    if util.find_spec("sevenn") is not None:
        return dict(os.environ)
    overlay = Path(sys.prefix) / "overlays" / "sevenn"
    if (overlay / "sevenn").is_dir():
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(overlay), *filter(None, [env.get("PYTHONPATH")])])
        return env
    return None


@pytest.fixture(scope="module")
def sevennet_report():
    env = _sevennet_environment()
    if env is None:
        pytest.skip("sevenn is not installed (bash scripts/setup.sh installs it)")
    env["ASE_SYMCALC_OFFLINE"] = "1"
    script = Path(__file__).with_name("sevennet_checks.py")
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("label", list(STRUCTURES))
def test_sevennet_is_exact_under_rotations_and_not_under_inversion(sevennet_report, label):
    row = sevennet_report[label]
    for front in ("torchsim", "ase"):
        proper, full = row[f"{front}_SO3"], row[f"{front}_O3"]
        assert proper["forces_error"] < FLOAT32_FLOOR, (front, proper["forces_error"])
        # is_parity False: the O(3) error is the model's, far above the floor
        assert full["forces_error"] > 20 * max(proper["forces_error"], 1e-7), (front, full)
        # exact under SO(3): symmetrizing over proper rotations changes nothing
        np.testing.assert_allclose(proper["forces"], proper["raw_forces"], atol=10 * FLOAT32_FLOOR)
        # the raw prediction is SevenNet's own, through torch-sim or the ASE loop
        np.testing.assert_allclose(full["raw_forces"], row["own_forces"], atol=1e-4)


def test_sevennet_features_are_rotation_invariant_and_not_parity_invariant(sevennet_report):
    """The last invariant features (reduce_input_to_hidden): all in l = 0 to the
    float32 floor, part of it in (0,-) (pseudoscalars, is_parity False) on the
    chiral ethanol; the gated layers carry l = 1 and 2 (128x0e+64x1e+32x2e)."""
    features = sevennet_report["features"]
    last = features["reduce_input_to_hidden"]
    assert 1 - last["0,1"] - last["0,-1"] < 1e-5
    assert last["0,-1"] > 1e-6
    gate = features["0_equivariant_gate"]
    assert gate["1,1"] + gate["1,-1"] + gate["2,1"] + gate["2,-1"] > 1e-3
