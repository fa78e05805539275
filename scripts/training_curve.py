"""Equivariance error against test error over a metatrain run, checkpoint by checkpoint.

    python scripts/training_curve.py [RUN] [--frames 10] [--quadrature group:I]

RUN is a metatrain working directory (default ``build/model``, where
``python -m ase_symcalc.models.train`` trains the shipped model) holding
``outputs/*/*/model_*.ckpt`` and a ``test.extxyz``. Every checkpoint is
exported to a metatomic model (its weights of that epoch) and split with
``ase_symcalc.diagnostics.error_split`` on ``--frames`` evenly spaced test
frames: force RMSE of the raw model, of the symmetrized model, the
equivariance error, and their ratio (issue 3 asks for RMSE / equivariance
error >= 3). Prints a markdown table and writes ``training_curve.json`` and
``training_curve.png`` into RUN.

``--average-last K [K ...]`` adds rows for the weight average of the last K
checkpoints (stochastic weight averaging after the fact): if the equivariance
error were noise of the optimiser around a symmetric minimum, averaging would
shrink it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduce_analysis import _checkpoints, _export, _frames  # noqa: E402


def curve(run: Path, frames: int, quadrature: str) -> list[dict]:
    from ase_symcalc.diagnostics import error_split

    test = _frames(run, frames)
    exported = run / "curve"
    exported.mkdir(exist_ok=True)
    rows = []
    for epoch, checkpoint in _checkpoints(run):
        begin = time.time()
        model = _export(checkpoint, exported / f"epoch_{epoch}.pt")
        forces = error_split(str(model), test, quadrature=quadrature)["forces"]
        row = {
            "epoch": epoch,
            "rmse": forces["rmse_raw"],
            "rmse_symmetrized": forces["rmse_symmetrized"],
            "equivariance_error": forces["equivariance_error"],
            "ratio": forces["rmse_raw"] / forces["equivariance_error"],
        }
        rows.append(row)
        print(
            f"epoch {epoch:4d}: force RMSE {row['rmse'] * 1e3:7.1f}, equivariance error "
            f"{row['equivariance_error'] * 1e3:6.1f} meV/Å, ratio {row['ratio']:.2f} "
            f"({time.time() - begin:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    return rows


def averaged(run: Path, last: int, frames: int, quadrature: str) -> dict:
    """The error split of the weight average of the last ``last`` checkpoints."""
    import metatomic.torch  # noqa: F401 - registers the classes stored in checkpoints
    import torch
    from metatrain.utils.io import model_from_checkpoint

    from ase_symcalc.diagnostics import error_split

    checkpoints = [
        torch.load(path, weights_only=False, map_location="cpu")
        for _, path in _checkpoints(run)[-last:]
    ]
    merged = checkpoints[-1]
    state = merged["model_state_dict"]
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and torch.is_floating_point(value):
            state[key] = sum(c["model_state_dict"][key] for c in checkpoints) / len(checkpoints)
    destination = run / "curve" / f"average_last_{last}.pt"
    model_from_checkpoint(merged, context="restart").export().save(str(destination))
    forces = error_split(str(destination), _frames(run, frames), quadrature=quadrature)["forces"]
    return {
        "epoch": f"average of last {last}",
        "rmse": forces["rmse_raw"],
        "rmse_symmetrized": forces["rmse_symmetrized"],
        "equivariance_error": forces["equivariance_error"],
        "ratio": forces["rmse_raw"] / forces["equivariance_error"],
    }


def plot(rows: list[dict], output: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (
        ("rmse", "test RMSE, raw"),
        ("rmse_symmetrized", "test RMSE, symmetrized"),
        ("equivariance_error", "equivariance error"),
    ):
        left.plot(epochs, [row[key] * 1e3 for row in rows], "o-", label=label)
    left.set(xlabel="epoch", ylabel="forces (meV/Å)", yscale="log", title=title)
    left.legend()
    right.plot(epochs, [row["ratio"] for row in rows], "o-", color="C3")
    right.axhline(3.0, color="grey", ls="--", label="target 3")
    right.set(xlabel="epoch", ylabel="RMSE / equivariance error", ylim=(0, None))
    right.legend()
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", default="build/model", type=Path)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--quadrature", default="group:I")
    parser.add_argument("--average-last", type=int, nargs="*", default=[], metavar="K")
    args = parser.parse_args(argv)
    if not (args.run / "test.extxyz").exists() or not _checkpoints(args.run):
        sys.exit(
            f"error: {args.run} holds no metatrain checkpoints and test.extxyz; train "
            "first (python -m ase_symcalc.models.train --workdir build/model)"
        )
    rows = curve(args.run, args.frames, args.quadrature)
    title = f"{args.run.name}: {args.frames} test frames, {args.quadrature}"
    plot(rows, args.run / "training_curve.png", title)
    rows += [averaged(args.run, k, args.frames, args.quadrature) for k in args.average_last]
    (args.run / "training_curve.json").write_text(json.dumps(rows, indent=1))
    print("| epoch | force RMSE raw | symmetrized | equivariance error | RMSE / eq. error |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['epoch']} | {row['rmse'] * 1e3:.1f} | {row['rmse_symmetrized'] * 1e3:.1f}"
            f" | {row['equivariance_error'] * 1e3:.1f} | {row['ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
