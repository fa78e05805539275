"""The training script's recipes render the metatrain options they promise.

metatrain itself is not run (hours on CPU): `_mtt_train` is replaced by a
stand-in that records the calls and writes the checkpoints metatrain would.
"""

import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_symcalc.models import train

yaml = pytest.importorskip("yaml")


@pytest.fixture()
def fake_training(monkeypatch):
    calls = []

    def frames(seed, scale=1.0, strained_cells=False):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.calc = EMT()
        atoms.get_stress()
        return [atoms]

    def mtt_train(work, options, output):
        calls.append((options, output))
        run = work / "outputs" / "2026-12-03" / f"00-00-{len(calls):02d}"
        run.mkdir(parents=True)
        for epoch in range(0, 101, 10):
            (run / f"model_{epoch}.ckpt").write_text("")
        (work / output).with_suffix(".ckpt").write_text("")

    monkeypatch.setattr(train, "generate_frames", frames)
    monkeypatch.setattr(train, "_mtt_train", mtt_train)
    return calls


def _options(path):
    return yaml.safe_load(path.read_text())


def test_elastic_v2_fine_tunes_stage_one_at_epoch_90_then_stage_two(tmp_path, fake_training):
    assert train.main(["--recipe", "elastic-v2", "--workdir", str(tmp_path), "--no-evaluate"]) == 0
    assert fake_training == [
        ("options.yaml", "model-stage1.pt"),
        ("options-stage2.yaml", "model-stage2.pt"),
        ("options-stage3.yaml", "model.pt"),
    ]
    stage1 = _options(tmp_path / "options.yaml")["architecture"]["training"]
    assert "finetune" not in stage1
    assert stage1["loss"]["non_conservative_stress"]["weight"] == 10.0
    stage2 = _options(tmp_path / "options-stage2.yaml")["architecture"]["training"]
    assert stage2["finetune"]["read_from"].endswith("model_90.ckpt")
    assert stage2["loss"]["non_conservative_stress"]["weight"] == 300.0
    assert stage2["loss"]["energy"]["gradients"]["strain"]["weight"] == 10.0
    stage3 = _options(tmp_path / "options-stage3.yaml")["architecture"]["training"]
    assert stage3["finetune"]["read_from"] == str((tmp_path / "model-stage2.ckpt").resolve())
    assert stage3["loss"]["non_conservative_forces"]["weight"] == 20.0


def test_start_stage_resumes_from_a_given_checkpoint(tmp_path, fake_training):
    checkpoint = tmp_path / "given.ckpt"
    checkpoint.write_text("")
    argv = ["--recipe", "elastic-v2", "--workdir", str(tmp_path), "--no-evaluate"]
    assert train.main([*argv, "--finetune-from", str(checkpoint), "--start-stage", "3"]) == 0
    assert fake_training == [("options-stage3.yaml", "model.pt")]
    stage3 = _options(tmp_path / "options-stage3.yaml")["architecture"]["training"]
    assert stage3["finetune"]["read_from"] == str(checkpoint.resolve())


def test_single_stage_recipe_has_no_finetune_and_refuses_finetune_from(tmp_path, fake_training):
    argv = ["--recipe", "v1", "--workdir", str(tmp_path), "--no-evaluate"]
    assert train.main(argv) == 0
    assert fake_training == [("options.yaml", "model.pt")]
    assert "finetune" not in _options(tmp_path / "options.yaml")["architecture"]["training"]
    with pytest.raises(SystemExit):
        train.main([*argv, "--finetune-from", str(tmp_path / "x.ckpt")])


def test_elastic_v3_weights_the_direct_heads_from_the_first_epoch(tmp_path, fake_training):
    argv = ["--recipe", "elastic-v3", "--workdir", str(tmp_path), "--no-evaluate"]
    assert train.main(argv) == 0
    assert fake_training == [("options.yaml", "model.pt")]
    options = _options(tmp_path / "options.yaml")["architecture"]["training"]
    assert "finetune" not in options
    assert options["num_epochs"] == 200
    assert options["loss"]["non_conservative_stress"]["weight"] == 300.0
    assert options["loss"]["non_conservative_forces"]["weight"] == 20.0
    assert options["loss"]["energy"]["weight"] == 3.0
    assert options["loss"]["energy"]["gradients"]["strain"]["weight"] == 10.0
    assert options["per_structure_targets"] == ["non_conservative_stress"]


def test_elastic_v4_fine_tunes_the_best_weights_twice_with_extra_frames(tmp_path, fake_training):
    argv = ["--recipe", "elastic-v4", "--workdir", str(tmp_path), "--no-evaluate"]
    assert train.main(argv) == 0
    assert fake_training == [
        ("options.yaml", "model-stage1.pt"),
        ("options-stage2.yaml", "model-stage2.pt"),
        ("options-stage3.yaml", "model.pt"),
    ]
    stage1 = _options(tmp_path / "options.yaml")
    assert stage1["architecture"]["training"]["num_epochs"] == 200
    assert stage1["training_set"]["systems"]["read_from"] == "train.extxyz"
    stage2 = _options(tmp_path / "options-stage2.yaml")
    training = stage2["architecture"]["training"]
    # the best epoch of stage 1, not a numbered checkpoint
    assert training["finetune"]["read_from"] == str((tmp_path / "model-stage1.ckpt").resolve())
    assert training["loss"]["energy"]["weight"] == 10.0
    assert stage2["training_set"]["systems"]["read_from"] == "train.extxyz"
    stage3 = _options(tmp_path / "options-stage3.yaml")
    training = stage3["architecture"]["training"]
    assert training["loss"]["non_conservative_forces"]["weight"] == 100.0
    assert training["loss"]["non_conservative_stress"]["weight"] == 300.0
    assert stage3["training_set"]["systems"]["read_from"] == "train-stage3.extxyz"
    from ase.io import read

    frames = read(tmp_path / "train-stage3.extxyz", ":")
    # one fake frame from each generate_frames call (training set, extra) + 200 cells
    assert len(frames) == 1 + 1 + 200
    cells = frames[2:]
    assert all(len(atoms) == 4 for atoms in cells)
    assert max(abs(atoms.get_stress()).max() for atoms in cells) > 0


def test_elastic_regime_frames_are_small_strains_of_the_perfect_crystal():
    frames = train.elastic_regime_frames(7, 20)
    for atoms in frames:
        a = atoms.cell.lengths()
        assert len(atoms) == 4 and 3.56 * 0.984 < a.min() and a.max() < 3.64 * 1.016
        assert atoms.get_forces().shape == (4, 3)
    assert train.elastic_regime_frames(7, 3)[2].cell.array == pytest.approx(frames[2].cell.array)


def test_render_options_defaults_to_recipe_v1_and_refuses_unknown_settings(tmp_path, fake_training):
    options = yaml.safe_load(train.render_options(3, 80, 10))
    training = options["architecture"]["training"]
    assert options["seed"] == 3 and training["num_epochs"] == 80
    assert "finetune" not in training and training["learning_rate"] == 3e-4
    assert options["training_set"]["targets"]["energy"]["forces"] is False  # yaml's "off"
    # the same text as the training script's own v1 stage
    assert train.main(["--recipe", "v1", "--workdir", str(tmp_path), "--no-evaluate"]) == 0
    rendered = (tmp_path / "options.yaml").read_text()
    assert rendered == train.render_options(2026, 200, 20)
    with pytest.raises(ValueError, match="unknown training settings \\['lr'\\]"):
        train.render_options(3, 80, 10, lr=1e-3)
