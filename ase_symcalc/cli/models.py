"""`ase-symcalc models`: the models known by name and where their files are."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "models",
        help="list the shipped and pretrained models by name, and which are on this machine",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the table as JSON (one object per model)"
    )


def model_rows() -> list[dict]:
    """One row per known model: the shipped ones, then the pretrained ones."""
    from ..models import ARCHIVED, list_pretrained, models_dir, named
    from ..models import path as shipped_path

    rows: list[dict] = []
    for name, description in list_pretrained().items():
        try:
            file = shipped_path(name)
            state = "fetched" if name in ARCHIVED else "shipped"
        except FileNotFoundError:  # archived, not fetched yet
            file, state = models_dir() / f"{name}.pt", "archived (scripts/fetch_model.py)"
        rows.append(
            {
                "name": name,
                "aliases": [],
                "architecture": "metatomic (PET)",
                "equivariance": "none",
                "file": file.name,
                "state": state,
                "path": str(file),
                "size_MB": file.stat().st_size / 1e6 if file.is_file() else None,
                "description": description,
                "note": "",
            }
        )
    for model in named.named_models().values():
        path, where = named.local_file(model.name)
        rows.append(
            {
                "name": model.name,
                "aliases": list(model.aliases),
                "architecture": model.architecture,
                "equivariance": model.equivariance,
                "file": model.file,
                "state": where or ("gated" if "gated" in model.note else "missing"),
                "path": str(path) if path else None,
                "size_MB": path.stat().st_size / 1e6 if path else None,
                "description": model.description,
                "note": model.note,
            }
        )
    return rows


def run_models(args) -> int:
    from ..models import named

    rows = model_rows()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"{'name':36s} {'architecture':16s} {'equivariant':11s} {'state':9s} "
        f"{'MB':>6s}  file or path"
    )
    for row in rows:
        name = row["name"] + (f" ({', '.join(row['aliases'])})" if row["aliases"] else "")
        size = f"{row['size_MB']:6.1f}" if row["size_MB"] is not None else f"{'-':>6s}"
        where = row["path"] or row["file"]
        print(
            f"{name:36s} {row['architecture']:16s} {row['equivariance']:11s} "
            f"{row['state']:9s} {size}  {where}"
        )
    print(
        f"\nmodel directory: {named.model_directory()} (${named.MODEL_DIR_VARIABLE}); a missing "
        f"model is downloaded on first use when online (${named.OFFLINE_VARIABLE}=1: never). "
        "equivariant: what the architecture guarantees (O(3), SO(3) only, or none: learned)."
    )
    return 0


HANDLERS = {"models": run_models}
