"""Models shipped with the package, loadable offline.

``pretrained()`` returns a ready ASE calculator (metatomic-ase's
``MetatomicCalculator`` with direct forces and stress) of a shipped model;
``SymmetrizedCalculator(pretrained())`` symmetrizes it with the batched
metatomic evaluator.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from importlib import resources
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL",
    "default_name",
    "feature_groups",
    "fetch",
    "list_pretrained",
    "metadata",
    "models_dir",
    "path",
    "pretrained",
]

DEFAULT_MODEL = "pet-cu-emt"

#: environment variable naming the model that commands, ``pretrained()`` and
#: ``path()`` use when none is given (default: ``DEFAULT_MODEL``), so that a
#: benchmark reruns on another shipped model unchanged
MODEL_ENVIRONMENT_VARIABLE = "ASE_SYMCALC_MODEL"

_MODELS = {
    "pet-cu-emt": (
        "Small unconstrained PET (metatrain) for copper, trained on EMT data with "
        "rotational augmentation; direct forces and stress with the elastic response "
        "of EMT (recipe elastic-v4)"
    ),
    "pet-cu-emt-v1": (
        "The first pet-cu-emt (recipe v1): accurate forces, but a direct stress "
        "without shear stiffness (C44 = 0, C11 = C12); archived, not in the wheel: "
        "python scripts/fetch_model.py pet-cu-emt-v1 installs it, so that numbers "
        "measured with it reproduce"
    ),
}

#: models listed but not in the wheel (one model ships): ``fetch`` installs them
#: into ``models_dir()`` from a source checkout's ``training/archive``
ARCHIVED = frozenset({"pet-cu-emt-v1"})

#: environment variable naming the folder of fetched (archived) models
MODELS_DIR_ENVIRONMENT_VARIABLE = "ASE_SYMCALC_MODELS_DIR"


def models_dir() -> Path:
    """Where fetched models live: ``$ASE_SYMCALC_MODELS_DIR`` or
    ``~/.cache/ase-symcalc/models``."""
    folder = os.environ.get(MODELS_DIR_ENVIRONMENT_VARIABLE)
    return Path(folder) if folder else Path.home() / ".cache" / "ase-symcalc" / "models"


def archive_dir() -> Path:
    """The archived models of a source checkout (``training/archive``)."""
    return Path(__file__).resolve().parents[2] / "training" / "archive"


def fetch(name: str, source: str | os.PathLike | None = None) -> Path:
    """Install an archived model into ``models_dir()`` and return its ``.pt`` path.

    From ``source`` (a folder holding ``NAME.pt`` and ``NAME.json``), else from
    the source checkout's ``training/archive``. No network: a model neither
    place has must be retrained into a folder of its own (for
    ``pet-cu-emt-v1``: ``python -m ase_symcalc.models.train --recipe v1
    --workdir DIR --no-install``, whose ``DIR/model.pt`` is then copied as
    ``pet-cu-emt-v1.pt`` into a folder given as ``source``; without
    ``--no-install`` it would replace the shipped model).
    """
    import shutil

    if name not in ARCHIVED:
        raise ValueError(
            f"{name!r} is not an archived model (archived: {', '.join(sorted(ARCHIVED))}); "
            "the shipped ones need no fetching"
        )
    folder = Path(source) if source is not None else archive_dir()
    file = folder / f"{name}.pt"
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} does not exist: run this from a source checkout of ase-symcalc (its "
            "training/archive holds the file), give source=FOLDER, or retrain it: python -m "
            "ase_symcalc.models.train --recipe v1 --workdir DIR --no-install, then copy "
            f"DIR/model.pt to FOLDER/{name}.pt"
        )
    target = models_dir()
    target.mkdir(parents=True, exist_ok=True)
    for suffix in (".pt", ".json"):
        if (folder / f"{name}{suffix}").is_file():
            # copy, then rename: an interrupted fetch never leaves half a model
            partial = target / f".{name}{suffix}.partial"
            shutil.copyfile(folder / f"{name}{suffix}", partial)
            os.replace(partial, target / f"{name}{suffix}")
    return target / f"{name}.pt"


def list_pretrained() -> dict[str, str]:
    """The package's model names (shipped in the wheel, or archived: ``ARCHIVED``)
    with a one-line description each."""
    return dict(_MODELS)


def default_name() -> str:
    """The model used when none is given: ``$ASE_SYMCALC_MODEL`` or ``DEFAULT_MODEL``."""
    return os.environ.get(MODEL_ENVIRONMENT_VARIABLE) or DEFAULT_MODEL


def _check_name(name: str | None) -> str:
    if name is None:
        name = default_name()
        if name not in _MODELS:
            raise ValueError(
                f"{MODEL_ENVIRONMENT_VARIABLE}={name!r} is not a shipped model; available: "
                f"{', '.join(_MODELS)} (unset it to use {DEFAULT_MODEL!r})"
            )
    if name not in _MODELS:
        raise ValueError(
            f"unknown shipped model {name!r}; available: {', '.join(_MODELS)} "
            "(or give the path of your own metatomic .pt file)"
        )
    return name


def path(name: str | None = None) -> Path:
    """The ``.pt`` file of a shipped model (inside the installed package), or of
    an archived one once fetched (``models_dir()``)."""
    name = _check_name(name)
    if name in ARCHIVED:
        file = models_dir() / f"{name}.pt"
        if not file.is_file():
            raise FileNotFoundError(
                f"{name!r} is archived, not shipped in the wheel; install it with "
                f"python scripts/fetch_model.py {name} (or ase_symcalc.models.fetch({name!r})) "
                f"from a source checkout; it goes to {models_dir()}"
            )
        return file
    file = Path(str(resources.files(__name__).joinpath("data", f"{name}.pt")))
    if not file.is_file():
        raise FileNotFoundError(
            f"the model file of {name!r} is missing from the installation ({file}); "
            "reinstall ase-symcalc, or rebuild it with python -m ase_symcalc.models.train"
        )
    return file


def metadata(name: str | None = None) -> dict:
    """How a shipped model was made: command, seed, versions, accuracy."""
    file = path(name).with_suffix(".json")
    return json.loads(file.read_text()) if file.is_file() else {}


def is_shipped(file) -> bool:
    """Whether ``file`` is one of the model files shipped with the package."""
    if not isinstance(file, (str, os.PathLike)):
        return False
    shipped = Path(str(resources.files(__name__).joinpath("data")))
    folder = Path(file).resolve().parent
    return folder == shipped.resolve() or (
        Path(file).stem in ARCHIVED and folder == models_dir().resolve()
    )


@contextlib.contextmanager
def loading(file):
    """Load ``file`` without metatomic's output-name deprecation if it is ours.

    The shipped models were exported by metatrain 2026.4.1 with the output
    name ``non_conservative_forces``, which metatomic-torch 0.1.19 maps to
    ``non_conservative_force`` (both work) with a warning on every load that
    asks to update the model file: advice for the model's author, which our
    users cannot act on. Other files keep the warning.
    """
    with warnings.catch_warnings():
        if is_shipped(file):
            warnings.filterwarnings(
                "ignore", message=r"the '\w+' output name is deprecated", category=UserWarning
            )
        yield


def pretrained(name: str | None = None, *, device: str | None = None, **kwargs):
    """A ready ASE calculator of the raw (unsymmetrized) shipped model.

    Forces and stress are the model's direct outputs (``non_conservative=True``);
    note that ``MetatomicCalculator`` removes the net force of direct forces.
    Extra keyword arguments go to ``MetatomicCalculator``.
    """
    from metatomic_ase import MetatomicCalculator

    kwargs.setdefault("non_conservative", True)
    file = path(name)
    with loading(file):
        return MetatomicCalculator(str(file), device=device, **kwargs)


def pet_feature_groups(d_pet: int, num_gnn_layers: int) -> dict[str, dict[str, slice]]:
    """Named column slices of a PET ``feature`` output, layer by layer.

    metatrain's PET concatenates the node features of every GNN layer, then
    the (cutoff-weighted, summed) edge features of every layer, ``d_pet``
    columns each.
    """
    groups = {}
    for layer in range(num_gnn_layers):
        groups[f"node features, layer {layer + 1}"] = slice(layer * d_pet, (layer + 1) * d_pet)
    offset = num_gnn_layers * d_pet
    for layer in range(num_gnn_layers):
        start = offset + layer * d_pet
        groups[f"edge features, layer {layer + 1}"] = slice(start, start + d_pet)
    return {"feature": groups}


def feature_groups(model) -> dict[str, dict[str, slice]] | None:
    """Layer-by-layer slices of the ``feature`` output of a shipped model, or None.

    ``model`` is a shipped name or the path of a shipped ``.pt`` file; other
    models give None (their ``feature`` output is analysed as one block).
    """
    for name in _MODELS:
        if name in ARCHIVED and not (models_dir() / f"{name}.pt").is_file():
            continue  # not fetched: it cannot be the file given
        if model == name or (model is not None and str(model) == str(path(name))):
            hypers = metadata(name).get("hypers", {})
            if "d_pet" in hypers:
                return pet_feature_groups(hypers["d_pet"], hypers.get("num_gnn_layers", 2))
    return None
