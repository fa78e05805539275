"""Deliberate bugs in the maths core: does the test suite catch each one?

    python scripts/mutation_check.py            # all mutations, ~2-10 min each
    python scripts/mutation_check.py --list
    python scripts/mutation_check.py back-rotation-transposed

Each mutation is one textual change to a file of ``ase_symcalc`` (a wrong
sign, a transposed matrix, a missing weight). It is applied to a copy of the
repository from ``git archive HEAD`` in a temporary folder, never to this
checkout, and the fast physics tests run there with ``-x``: a mutation is
*caught* when a test fails. Prints one line per mutation with the first
failing test, and exits 1 if any mutation survives.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the tests every mutation runs against (fast, physics first)
TESTS = [
    "tests/test_physics.py",
    # batches of several systems: what a batch of one cannot see (fast, so early)
    "tests/test_torchsim.py::test_the_fixed_rule_forward_is_vectorised_without_host_syncs",
    "tests/test_torchsim.py::test_net_force_is_removed_per_system_in_a_batch",
    "tests/test_torchsim.py::test_symmetrized_model_md_of_three_systems",
    "tests/test_quadrature.py",
    "tests/test_calculator.py",
    "tests/test_residual_auto.py",
    "tests/test_structure_symmetry.py",
]

#: name -> (file, original text, mutated text, what the bug is)
MUTATIONS = {
    "back-rotation-transposed": (
        "ase_symcalc/transforms.py",
        "    return forces @ as_float64(g, like=forces)",
        "    return forces @ as_float64(g, like=forces).swapaxes(-1, -2)",
        "forces rotated forward instead of back (F g^T for F g)",
    ),
    "stress-back-rotation-transposed": (
        "ase_symcalc/transforms.py",
        "    return g.swapaxes(-1, -2) @ stress @ g\n",
        "    return g @ stress @ g.swapaxes(-1, -2)\n",
        "stress rotated forward instead of back",
    ),
    "missing-weight": (
        "ase_symcalc/metrics.py",
        "    weighted = weights.reshape((-1,) + (1,) * (values.ndim - 1)) * values\n",
        "    weighted = values / len(values)\n",
        "the weighted mean ignores the rule's weights",
    ),
    "cell-not-rotated": (
        "ase_symcalc/transforms.py",
        "    return np.asarray(cell, dtype=np.float64) @ proper_part(g).T",
        "    return np.asarray(cell, dtype=np.float64) @ proper_part(g)",
        "the cell of a rotated copy is rotated by the inverse (a transposed cell)",
    ),
    "spread-not-centred": (
        "ase_symcalc/metrics.py",
        "    deviation = values - mean\n",
        "    deviation = values\n",
        "the equivariance error is not centred on the mean",
    ),
    "residual-not-halved": (
        "ase_symcalc/metrics.py",
        ".append(reduce(difference) / 2.0)\n",
        ".append(reduce(difference))\n",
        "the residual from a pair of averages is not halved (sqrt(2) too large)",
    ),
    "structure-permutation-inverted": (
        "ase_symcalc/structure_symmetry.py",
        "        result[perm] += forces @ q.T\n",
        "        result += forces[perm] @ q.T\n",
        "a structure operation's atom map applied the wrong way round",
    ),
    "errors-over-the-batch-atoms": (
        "ase_symcalc/symmetrize.py",
        "    return sqrt(systems.sum(per_atom * per_atom) / counts)\n",
        "    return sqrt(systems.sum(per_atom * per_atom) / counts.sum())\n",
        "a system's forces error divided by the batch's atoms, not its own",
    ),
    "net-force-of-the-batch": (
        "ase_symcalc/symmetrize.py",
        "        forces = forces - mean[..., systems.index, :]\n",
        "        forces = forces - forces.mean(axis=-2, keepdims=True)\n",
        "the net force removed over the whole batch instead of per system",
    ),
    "raw-copy-off-by-one": (
        "ase_symcalc/core.py",
        "                raw_index = len(matrices)\n",
        "                raw_index = len(matrices) - 1\n",
        "the raw outputs taken from the rule's last copy instead of the lab frame",
    ),
    "copies-share-a-system": (
        "ase_symcalc/_torchsim_copies.py",
        "    offsets = n_batch * torch.arange(n_copies, device=state.device)\n",
        "    offsets = torch.arange(n_copies, device=state.device)\n",
        "the copies of different systems numbered as one system",
    ),
    "residual-orientation-not-improper": (
        "ase_symcalc/rule_policy.py",
        "            flip = bool(self.inversion) and k == 0\n",
        "            flip = False\n",
        "the residual never looks at mirror images (auto's O(3) target lost)",
    ),
}


def _copy_of_head(destination: Path) -> None:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryFile() as handle:
        handle.write(archive)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            tar.extractall(destination, filter="data")


def run(name: str, timeout: float) -> tuple[bool, str, float]:
    path, original, mutated, _ = MUTATIONS[name]
    with tempfile.TemporaryDirectory(prefix="ase-symcalc-mutant-") as folder:
        copy = Path(folder)
        _copy_of_head(copy)
        target = copy / path
        text = target.read_text()
        if text.count(original) != 1:
            raise SystemExit(f"mutation {name!r}: its original text is not found once in {path}")
        target.write_text(text.replace(original, mutated))
        env = dict(os.environ, PYTHONPATH=str(copy))
        start = time.perf_counter()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
                cwd=copy,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return False, f"not caught within {timeout:.0f} s", time.perf_counter() - start
        elapsed = time.perf_counter() - start
        failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
        if result.returncode == 0:
            return False, "not caught: every test passed", elapsed
        return True, failed[0] if failed else result.stdout.strip().splitlines()[-1], elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutations to try (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutation")
    args = parser.parse_args(argv)
    if args.list:
        for name, (path, _, _, what) in MUTATIONS.items():
            print(f"{name:36s} {path}: {what}")
        return 0
    unknown = sorted(set(args.names) - set(MUTATIONS))
    if unknown:
        parser.error(f"unknown mutations {unknown}; --list shows them")
    names = args.names or list(MUTATIONS)
    for name in names:  # every mutation still applies to this checkout, before any runs
        path, original = MUTATIONS[name][:2]
        if (ROOT / path).read_text().count(original) != 1:
            parser.error(f"mutation {name!r}: its original text is not found once in {path}")
    survivors = 0
    for name in names:
        caught, detail, elapsed = run(name, args.timeout)
        survivors += not caught
        print(f"{'caught  ' if caught else 'SURVIVED'} {name:36s} {elapsed:6.0f} s  {detail}")
        sys.stdout.flush()
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
