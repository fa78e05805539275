"""Pretrained models by name, offline first.

``resolve(name)`` finds the weights of a named pretrained model (``pet-mad``,
``orb-v3-direct-20-omat``, ``mace-mpa-0``, ``sevennet-0``, ``chgnet``, ...),
in this order:

a. ``$ASE_SYMCALC_MODEL_DIR`` (default ``~/.cache/ase-symcalc/models``),
   under the file name the upstream publishes;
b. the upstream package's own cache, or the file bundled in its wheel
   (SevenNet-0 in ``sevenn``, CHGNet 0.3.0 in ``chgnet``);
c. the upstream's download, when online: a connection test of a few seconds
   first (so a compute node without network never hangs), then the file
   with a progress bar, written atomically into (a);
d. otherwise ``MissingModelError``: one line naming the exact path to put the
   file at and the URL to fetch it from.

``ASE_SYMCALC_OFFLINE=1`` skips (c). ``load(name)`` returns what
``SymmetrizedCalculator`` takes: a torch-sim model, an ASE calculator or a
metatomic model, built with the architecture's own package.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from importlib import util as importlib_util
from pathlib import Path

__all__ = [
    "MODEL_DIR_VARIABLE",
    "OFFLINE_VARIABLE",
    "MissingModelError",
    "NamedModel",
    "canonical_name",
    "is_named",
    "load",
    "local_file",
    "model_directory",
    "named_models",
    "resolve",
]

MODEL_DIR_VARIABLE = "ASE_SYMCALC_MODEL_DIR"
OFFLINE_VARIABLE = "ASE_SYMCALC_OFFLINE"
#: seconds to wait for a connection before deciding that there is no network
CONNECT_TIMEOUT = 3.0


class MissingModelError(FileNotFoundError):
    """A named model's file is nowhere on this machine and cannot be downloaded."""


@dataclass(frozen=True)
class NamedModel:
    """A pretrained model known by name."""

    name: str
    #: how ``load`` builds it: orb, mace, upet, sevennet, chgnet, mattersim, fairchem
    architecture: str
    #: what the architecture guarantees: "O(3)", "SO(3)" or "none" (learned)
    equivariance: str
    #: the file name the upstream publishes (a glob for upet's versioned files)
    file: str
    url: str | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    #: the upstream package, and a note on access (gated, licence)
    package: str = ""
    note: str = ""
    #: inside the upstream wheel: (module, relative path)
    bundled: tuple[str, str] | None = None
    extra: dict = field(default_factory=dict)


_ORB_URL = "https://orbitalmaterials-public-models.s3.us-west-1.amazonaws.com/forcefields/orb-v3/"
_MACE_URL = "https://github.com/ACEsuit/mace-mp/releases/download/"
_UPET_URL = "https://huggingface.co/lab-cosmo/upet/resolve/main/models/"
# upet's models (upet._version.UPET_AVAILABLE_MODELS), with the version we know
# is published; the others are found by any version in (a) and (b)
_UPET = {
    "pet-mad-xs": "1.6.0",
    "pet-mad-s": "1.0.2",
    "pet-mad-m": None,
    "pet-omat-xs": None,
    "pet-omat-s": None,
    "pet-omat-m": None,
    "pet-omat-l": None,
    "pet-omat-xl": None,
    "pet-oam-l": None,
    "pet-oam-xl": None,
    "pet-omad-xs": "1.0.0",
    "pet-omad-s": "1.0.0",
    "pet-omad-l": "0.1.0",
    "pet-omatpes-l": None,
    "pet-omol-s": None,
    "pet-omol-m": None,
    "pet-omol-l": None,
    "pet-mols-s": None,
    "pet-spice-s": None,
    "pet-spice-l": None,
}


def _registry() -> dict[str, NamedModel]:
    models = []
    for kind in ("direct", "conservative"):
        for neighbours in ("20", "inf"):
            for data in ("omat", "mpa"):
                name = f"orb-v3-{kind}-{neighbours}-{data}"
                file = f"{name}-20250404.ckpt"
                models.append(
                    NamedModel(
                        name,
                        "orb",
                        "none",
                        file,
                        _ORB_URL + file,
                        f"Orb-v3 {kind} forces, {neighbours} neighbours, {data.upper()} data",
                        package="orb-models",
                        extra={
                            "conservative": kind == "conservative",
                            "max_num_neighbors": 20 if neighbours == "20" else 120,
                        },
                    )
                )
    for name, file, url, description, note in (
        (
            "mace-mp-0",
            "2023-12-03-mace-128-L1_epoch-199.model",
            _MACE_URL + "mace_mp_0/2023-12-03-mace-128-L1_epoch-199.model",
            "MACE-MP-0 medium (MPtrj)",
            "",
        ),
        (
            "mace-mpa-0",
            "mace-mpa-0-medium.model",
            _MACE_URL + "mace_mpa_0/mace-mpa-0-medium.model",
            "MACE-MPA-0 medium (MPtrj + sAlex)",
            "",
        ),
        (
            "mace-omat-0",
            "mace-omat-0-medium.model",
            _MACE_URL + "mace_omat_0/mace-omat-0-medium.model",
            "MACE-OMAT-0 medium (OMat24)",
            "ASL licence (academic use)",
        ),
    ):
        models.append(
            NamedModel(
                name, "mace", "O(3)", file, url, description, package="mace-torch", note=note
            )
        )
    for name, version in _UPET.items():
        file = f"{name}-v{version}.ckpt" if version else f"{name}-v*.ckpt"
        models.append(
            NamedModel(
                name,
                "upet",
                "none",
                file,
                _UPET_URL + file if version else _UPET_URL.replace("resolve", "tree"),
                f"UPET {name} (unconstrained PET, metatomic)",
                aliases=("pet-mad",) if name == "pet-mad-s" else (),
                package="upet",
            )
        )
    models += [
        NamedModel(
            "sevennet-0",
            "sevennet",
            "SO(3)",
            "checkpoint_sevennet_0.pth",
            None,
            "SevenNet-0 (11Jul2024), NequIP-style E(3) message passing, MPtrj",
            aliases=("7net-0",),
            package="sevenn",
            bundled=(
                "sevenn",
                "pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",
            ),
        ),
        NamedModel(
            "sevennet-l3i5",
            "sevennet",
            "SO(3)",
            "checkpoint_l3i5.pth",
            None,
            "SevenNet-l3i5 (lmax 3, 5 interactions), MPtrj",
            aliases=("7net-l3i5",),
            package="sevenn",
            bundled=("sevenn", "pretrained_potentials/SevenNet_l3i5/checkpoint_l3i5.pth"),
        ),
        NamedModel(
            "chgnet",
            "chgnet",
            "O(3)",
            "chgnet_0.3.0_e29f68s314m37.pth.tar",
            None,
            "CHGNet 0.3.0: invariant graph features (distances, angles), MPtrj",
            aliases=("chgnet-0.3.0",),
            package="chgnet",
            bundled=("chgnet", "pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar"),
        ),
        NamedModel(
            "mattersim-v1",
            "mattersim",
            "O(3)",
            "mattersim-v1.0.0-1M.pth",
            "https://raw.githubusercontent.com/microsoft/mattersim/main/pretrained_models/"
            "mattersim-v1.0.0-1M.pth",
            "MatterSim v1.0.0 1M (M3GNet-style invariant features)",
            aliases=("mattersim-v1.0.0-1m",),
            package="mattersim",
            extra={"cache": "~/.local/mattersim/pretrained_models"},
        ),
        NamedModel(
            "esen-sm-direct-all-omol",
            "fairchem",
            "none",
            "esen_sm_direct_all.pt",
            None,
            "fairchem eSEN small, direct forces, OMol25",
            package="fairchem-core",
            note="gated: accept the licence of facebook/OMol25 on Hugging Face, log in, "
            "and download checkpoints/esen_sm_direct_all.pt",
        ),
        NamedModel(
            "esen-md-direct-all-omol",
            "fairchem",
            "none",
            "esen_md_direct_all.pt",
            None,
            "fairchem eSEN medium, direct forces, OMol25",
            package="fairchem-core",
            note="gated: accept the licence of facebook/OMol25 on Hugging Face, log in, "
            "and download checkpoints/esen_md_direct_all.pt",
        ),
    ]
    return {model.name: model for model in models}


_NAMED = _registry()
_ALIASES = {alias: model.name for model in _NAMED.values() for alias in model.aliases}


def named_models() -> dict[str, NamedModel]:
    """Every known pretrained model, by name."""
    return dict(_NAMED)


def canonical_name(name) -> str | None:
    """The registry name of ``name`` (case-insensitive, aliases resolved), or None."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in _NAMED else None


def is_named(name) -> bool:
    return canonical_name(name) is not None


def model_directory() -> Path:
    """``$ASE_SYMCALC_MODEL_DIR`` or ``~/.cache/ase-symcalc/models``."""
    value = os.environ.get(MODEL_DIR_VARIABLE)
    if value:
        return Path(value).expanduser()
    return Path("~/.cache/ase-symcalc/models").expanduser()


def _version_key(path: Path):
    numbers = re.findall(r"\d+", path.name)
    return [int(n) for n in numbers]


def _glob_newest(directory: Path, pattern: str) -> Path | None:
    if not directory.is_dir():
        return None
    found = sorted((p for p in directory.glob(pattern) if p.is_file()), key=_version_key)
    return found[-1] if found else None


def _package_file(module: str, relative: str) -> Path | None:
    """A file inside an installed package, found without importing it."""
    try:
        spec = importlib_util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def _hugging_face_cache() -> Path:
    """Where huggingface_hub keeps its downloads (its own constant when installed)."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        pass
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return xdg / "huggingface" / "hub"


def _upstream_file(model: NamedModel) -> Path | None:
    """(b): the upstream package's cache, or the file in its wheel."""
    if model.bundled is not None:
        return _package_file(*model.bundled)
    home = Path.home()
    if model.architecture == "mace":
        cache = Path(os.environ.get("XDG_CACHE_HOME", home / ".cache")) / "mace"
        # mace saves a download under its name with everything but [A-Za-z0-9_] dropped
        mangled = "".join(c for c in model.file if c.isalnum() or c == "_")
        return _glob_newest(cache, model.file) or _glob_newest(cache, mangled)
    if model.architecture == "orb" and model.url:
        try:  # orb-models downloads through cached_path, under a hashed name
            from cached_path import find_latest_cached
        except ImportError:
            return None
        found = find_latest_cached(model.url)
        return Path(found) if found else None
    if model.architecture == "upet":
        hub = _hugging_face_cache()
        snapshots = hub / "models--lab-cosmo--upet" / "snapshots"
        if snapshots.is_dir():
            candidates = [_glob_newest(s / "models", model.file) for s in snapshots.iterdir()]
            found = [f for f in candidates if f is not None]
            return max(found, key=_version_key) if found else None
        return None
    upstream_cache = model.extra.get("cache")
    if upstream_cache:
        return _glob_newest(Path(upstream_cache).expanduser(), model.file)
    return None


def local_file(name) -> tuple[Path | None, str]:
    """Where a named model's file is on this machine: (path, "model dir" | "upstream") or
    (None, "") when it is nowhere; never touches the network."""
    model = _NAMED[_checked(name)]
    found = _glob_newest(model_directory(), model.file)
    if found is not None:
        return found, "model dir"
    found = _upstream_file(model)
    if found is not None:
        return found, "upstream"
    return None, ""


def _checked(name) -> str:
    key = canonical_name(name)
    if key is None:
        raise ValueError(f"unknown model name {name!r}; `ase-symcalc models` lists the known ones")
    return key


def _offline() -> bool:
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def _reachable(url: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether the host of ``url`` (or the proxy for its scheme) accepts a connection
    within ``timeout`` seconds in all: name lookup included, which
    ``socket.create_connection`` does not bound, so it runs in a daemon thread."""
    import threading

    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    target = (
        urllib.parse.urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}")
        if proxy
        else parts
    )
    port = target.port or (443 if target.scheme == "https" else 80)
    answer = []

    def connect():
        try:
            with socket.create_connection((target.hostname, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def _download(url: str, destination: Path, *, timeout: float = 30.0) -> Path:
    """``url`` into ``destination``, with a progress bar; atomic: a file that is not
    complete (fewer bytes than announced) is never installed."""
    from tqdm.auto import tqdm

    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=destination.parent, suffix=".part")
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            written = 0
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=destination.name,
                disable=not sys.stderr.isatty(),
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        if total is not None and written != total:
            raise OSError(f"the download stopped after {written} of {total} bytes")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)  # mkstemp's 0600 would hide it from a shared dir
        os.replace(partial, destination)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return destination


def _missing_message(model: NamedModel, why: str) -> str:
    target = model_directory() / model.file
    if model.url and "*" not in model.file:
        where = f"download {model.url} and put it at {target}"
    elif model.url:
        where = (
            f"download one of its versions from {model.url} and put it in "
            f"{model_directory()} (as {model.file})"
        )
    elif model.bundled is not None:
        where = f"pip install {model.package} (its wheel holds the file; the package runs it)"
    else:
        where = f"put {model.file} at {target}"
    note = f"; {model.note}" if model.note else ""
    return f"pretrained model '{model.name}' is not on this machine ({why}): {where}{note}"


def resolve(name, *, download: bool = True) -> Path:
    """The file of a named model, from (a) the model directory, (b) the upstream's
    cache or wheel, (c) a download when online; ``MissingModelError`` otherwise."""
    model = _NAMED[_checked(name)]
    found, _ = local_file(model.name)
    if found is not None:
        return found
    if not download or model.url is None or "*" in model.file:
        why = "no download for it" if model.url is None else "not found locally"
        raise MissingModelError(_missing_message(model, why))
    if _offline():
        raise MissingModelError(_missing_message(model, f"{OFFLINE_VARIABLE} is set"))
    if not _reachable(model.url):
        host = urllib.parse.urlsplit(model.url).hostname
        raise MissingModelError(
            _missing_message(model, f"no network: {host} did not answer in {CONNECT_TIMEOUT:g} s")
        )
    target = model_directory() / model.file
    try:
        return _download(model.url, target)
    except OSError as error:
        raise MissingModelError(_missing_message(model, f"the download failed: {error}")) from error


def load(name, *, device=None, dtype=None):
    """A named pretrained model, ready for ``SymmetrizedCalculator``."""
    model = _NAMED[_checked(name)]
    file = resolve(model.name)
    from .architectures import load_architecture

    options = {}
    if "max_num_neighbors" in model.extra:  # a cached file's name does not tell -20 from -inf
        options["max_num_neighbors"] = model.extra["max_num_neighbors"]
    return load_architecture(model.architecture, file, device=device, dtype=dtype, **options)
