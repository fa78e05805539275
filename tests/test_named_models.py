"""Pretrained models by name, offline: resolution order, the one-line message
for a missing file (without waiting for a network), downloads into the model
directory (from a local file:// URL), ``ase-symcalc models``, and Orb-v3
direct and conservative checkpoints with random weights under their published
file names."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
from ase.build import bulk

from ase_symcalc.cli import main
from ase_symcalc.models import named


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    directory = tmp_path / "models"
    monkeypatch.setenv(named.MODEL_DIR_VARIABLE, str(directory))
    monkeypatch.delenv(named.OFFLINE_VARIABLE, raising=False)
    return directory


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt fails at once (and is counted)."""
    attempts = []

    def refuse(address, timeout=None, *args, **kwargs):
        attempts.append((address, timeout))
        raise OSError("network disabled in the tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_names_aliases_and_case():
    assert named.canonical_name("7net-0") == "sevennet-0"
    assert named.canonical_name("PET-MAD") == "pet-mad-s"
    assert named.canonical_name("orb-v3-direct-20-omat") == "orb-v3-direct-20-omat"
    assert named.canonical_name("no-such-model") is None
    assert named.canonical_name(3) is None
    names = named.named_models()
    for required in (
        "orb-v3-direct-20-omat",
        "orb-v3-direct-inf-omat",
        "orb-v3-conservative-inf-omat",
        "orb-v3-direct-20-mpa",
        "mace-mp-0",
        "mace-mpa-0",
        "sevennet-0",
        "chgnet",
        "mattersim-v1",
        "pet-mad-s",
    ):
        assert required in names


@pytest.mark.parametrize("offline", [True, False], ids=["ASE_SYMCALC_OFFLINE", "no-network"])
def test_missing_model_is_one_line_with_path_and_url(model_dir, no_network, monkeypatch, offline):
    if offline:
        monkeypatch.setenv(named.OFFLINE_VARIABLE, "1")
    start = time.perf_counter()
    with pytest.raises(named.MissingModelError) as info:
        named.resolve("orb-v3-direct-20-omat")
    message = str(info.value)
    assert "\n" not in message
    assert str(model_dir / "orb-v3-direct-20-omat-20250404.ckpt") in message
    assert "https://orbitalmaterials-public-models" in message
    if offline:
        assert not no_network  # never tried the network
        assert named.OFFLINE_VARIABLE in message
    else:  # one bounded attempt
        assert len(no_network) == 1 and no_network[0][1] == named.CONNECT_TIMEOUT
        assert "no network" in message
    assert time.perf_counter() - start < 5.0  # no retries, no hang


def test_gated_and_versioned_models_say_what_to_do(model_dir, no_network):
    with pytest.raises(named.MissingModelError, match="gated: accept the licence"):
        named.resolve("esen-sm-direct-all-omol")
    with pytest.raises(named.MissingModelError, match="lab-cosmo/upet"):
        named.resolve("pet-omat-l")  # no version known offline: any version in the directory
    assert not no_network


def test_download_lands_in_the_model_directory(model_dir, tmp_path, monkeypatch):
    """(c) with a file:// URL: atomic write, then (a) finds it without downloading."""
    source = tmp_path / "upstream.bin"
    source.write_bytes(b"x" * 3000)
    model = named.named_models()["mace-mpa-0"]
    patched = named.NamedModel(**{**model.__dict__, "url": source.as_uri()})
    monkeypatch.setitem(named._NAMED, "mace-mpa-0", patched)
    monkeypatch.setattr(named, "_reachable", lambda url, timeout=None: True)
    monkeypatch.setattr(named, "_upstream_file", lambda model: None)
    path = named.resolve("mace-mpa-0")
    assert path == model_dir / "mace-mpa-0-medium.model"
    assert path.read_bytes() == source.read_bytes()
    assert [p.name for p in model_dir.iterdir()] == [path.name]  # no partial file left
    monkeypatch.setattr(named, "_download", lambda *a, **k: pytest.fail("downloaded twice"))
    assert named.resolve("mace-mpa-0") == path


def test_truncated_download_is_never_installed(model_dir, monkeypatch):
    """A response that ends before its Content-Length: nothing lands in the directory."""
    import io
    import urllib.request

    class Short(io.BytesIO):
        headers = {"Content-Length": "5000"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Short(b"x" * 100))
    monkeypatch.setattr(named, "_reachable", lambda url, timeout=None: True)
    monkeypatch.setattr(named, "_upstream_file", lambda model: None)
    with pytest.raises(named.MissingModelError, match="stopped after 100 of 5000 bytes"):
        named.resolve("mace-mpa-0")
    assert not model_dir.exists() or not any(model_dir.iterdir())


def test_a_slow_name_lookup_is_cut_at_the_timeout(monkeypatch):
    """Name lookup is not bounded by the socket timeout: the check still answers in time."""
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(30))
    start = time.perf_counter()
    assert not named._reachable("https://example.org/x", timeout=0.5)
    assert time.perf_counter() - start < 2.0


def test_a_misspelt_name_gets_the_closest_ones():
    from ase_symcalc import SymmetrizedCalculator

    with pytest.raises(FileNotFoundError, match="did you mean 'orb-v3-direct-20-omat'"):
        SymmetrizedCalculator("orb-v3-direct-20-omatt")


def test_failed_download_leaves_nothing(model_dir, tmp_path, monkeypatch):
    model = named.named_models()["mace-mpa-0"]
    missing = (tmp_path / "not-there.bin").as_uri()
    monkeypatch.setitem(
        named._NAMED, "mace-mpa-0", named.NamedModel(**{**model.__dict__, "url": missing})
    )
    monkeypatch.setattr(named, "_reachable", lambda url, timeout=None: True)
    monkeypatch.setattr(named, "_upstream_file", lambda model: None)
    with pytest.raises(named.MissingModelError, match="the download failed"):
        named.resolve("mace-mpa-0")
    assert not any(model_dir.iterdir())


def test_models_command_lists_every_name_with_its_state(model_dir, capsys):
    model_dir.mkdir()
    (model_dir / "orb-v3-direct-20-omat-20250404.ckpt").write_bytes(b"0" * 2_000_000)
    (model_dir / "pet-omat-l-v1.0.0.ckpt").write_bytes(b"0")
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(named.named_models()) | {"pet-cu-emt", "pet-cu-emt-v1"} <= set(rows)
    assert rows["orb-v3-direct-20-omat"]["state"] == "model dir"
    assert rows["orb-v3-direct-20-omat"]["size_MB"] == pytest.approx(2.0)
    assert rows["pet-omat-l"]["path"].endswith("pet-omat-l-v1.0.0.ckpt")
    assert rows["orb-v3-direct-inf-omat"]["state"] == "missing"
    assert rows["esen-sm-direct-all-omol"]["state"] == "gated"
    assert rows["pet-cu-emt"]["state"] == "shipped"
    assert rows["sevennet-0"]["equivariance"] == "SO(3)"
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert (
        "orb-v3-direct-20-omat" in table and "model dir" in table and "sevennet-0 (7net-0)" in table
    )


def test_cli_missing_named_model_is_one_line(model_dir, no_network, tmp_path, capsys):
    from ase.io import write

    write(tmp_path / "cu.xyz", bulk("Cu", "fcc", a=3.61, cubic=True))
    code = main(["compare", str(tmp_path / "cu.xyz"), "--model", "orb-v3-direct-20-omat"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "orb-v3-direct-20-omat-20250404.ckpt" in err and "https://" in err


# -- Orb-v3 checkpoints with random weights, under their published names -----------------


def _orb_checkpoint(directory, name, conservative, seed):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch_sim", reason="torch-sim needs Python >= 3.12")
    from orb_models.forcefield.pretrained import (
        orb_v3_conservative_architecture,
        orb_v3_direct_architecture,
    )

    torch.manual_seed(seed)
    build = orb_v3_conservative_architecture if conservative else orb_v3_direct_architecture
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / named.named_models()[name].file
    torch.save(build(device="cpu").state_dict(), path)
    return path


def _cu(seed=0):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_orb_direct_loads_by_name_and_symmetrizes(model_dir, no_network):
    from ase_symcalc import SymmetrizedCalculator

    path = _orb_checkpoint(model_dir, "orb-v3-direct-20-omat", conservative=False, seed=3)
    atoms = _cu()
    atoms.calc = by_name = SymmetrizedCalculator("orb-v3-direct-20-omat", quadrature="group:T")
    forces = atoms.get_forces()
    atoms.calc = by_file = SymmetrizedCalculator(f"orb:{path}", quadrature="group:T")
    np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-5)
    assert by_name.results["forces_equivariance_error"] > 1e-4  # random weights: not equivariant
    assert by_file.evaluator.name.startswith("torch-sim model")
    assert not no_network


def test_orb_conservative_from_a_file_is_told_apart_and_conservative(model_dir):
    """``orb:FILE`` reads conservative from the weights; its forces are -dE/dx."""
    import torch

    from ase_symcalc.models.architectures import load_architecture

    path = _orb_checkpoint(model_dir, "orb-v3-conservative-inf-omat", conservative=True, seed=4)
    model = load_architecture("orb", path, dtype=torch.float64)
    assert model.conservative
    # by name, the neighbour limit comes from the registry, not from the file's name
    by_name = named.load("orb-v3-conservative-inf-omat")
    assert by_name.conservative and by_name.atoms_adapter.max_num_neighbors == 120
    renamed = model_dir / "0123abcd.ckpt"  # as orb-models' cache names its downloads
    path.rename(renamed)
    assert (
        load_architecture("orb", renamed, max_num_neighbors=120).atoms_adapter.max_num_neighbors
        == 120
    )
    from ase_symcalc import SymmetrizedCalculator

    atoms = _cu(seed=1)
    atoms.calc = calc = SymmetrizedCalculator(model, quadrature="identity", raw=False)
    forces = atoms.get_forces()
    h = 1e-4
    for index, axis in ((0, 0), (2, 1), (3, 2)):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[index, axis] += sign * h
            moved.calc = calc
            energies.append(moved.get_potential_energy())
        numeric = -(energies[0] - energies[1]) / (2 * h)
        assert numeric == pytest.approx(forces[index, axis], abs=1e-5 + 1e-4 * abs(numeric))
    with pytest.raises(ValueError, match="not an Orb-v3 state dict"):
        bad = model_dir / "orb-bad.ckpt"
        torch.save({"weight": torch.zeros(1)}, bad)
        load_architecture("orb", bad)
