"""The public equivariance checks, for any ASE calculator.

Two protocols, reimplemented from their public descriptions so that a
symmetrized model can be scored the way the community scores raw ones:

- ``arena_force_equivariance``: MLIP Arena's force-equivariance test
  (atomind-ai/mlip-arena, ``tasks/equivariance.py``). The structure is
  rotated by 12 angles (30..360 degrees) about random axes; for every
  rotation the forces are compared with the rotated forces of the original
  orientation. A rotation passes when the force MAE is below ``threshold``
  (1 meV/Å) and every atom's cosine similarity is above ``1 - threshold``; the
  structure passes when every rotation does. Differences from the original:
  10 axes by default instead of 100 (each call of a symmetrized model is a
  whole pass over its rule; ``axes=100`` restores it), axes from a seeded
  ``numpy.random.Generator`` rather than the global seed, and the input
  ``Atoms`` is never modified.
- ``rotational_symmetry_walk``: ML-PEG's rotational-symmetry test
  (ddmms/ml-peg, ``physicality/rotational_symmetry``). A seeded cumulative
  walk of orientations: 14 small steps (1 to 40 degrees) about random axes,
  then 100 Haar-random steps, 115 orientations with the original; the
  successive pairs are compared: ``|dE|`` per atom and the MAE of the forces
  rotated back to the original frame; the scores are the mean and max over
  pairs. Same seeds (42) and step angles as ML-PEG, so the walk is the same;
  differences: one structure at a time (ML-PEG pools ten fixed ones) and
  forces compared in float64 without a file round trip.

Both return dataclasses with a ``summary()`` dict in eV and eV/Å.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from scipy.spatial.transform import Rotation

from .evaluators.ase_loop import rotated_atoms

__all__ = [
    "ArenaResult",
    "WalkResult",
    "arena_force_equivariance",
    "plot_checks",
    "rotational_symmetry_walk",
    "walk_rotations",
]

ARENA_ANGLES = tuple(range(30, 361, 30))
WALK_STEP_ANGLES = (1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0, 28.0, 40.0)
WALK_RANDOM_STEPS = 100


def _energy_and_forces(calculator, atoms: Atoms):
    copy = atoms.copy()
    copy.calc = calculator
    return float(copy.get_potential_energy()), np.array(copy.get_forces(), dtype=np.float64)


def _cosines(expected: np.ndarray, actual: np.ndarray, zero: float = 1e-10) -> np.ndarray:
    """Per-atom cosine similarity; 1 when both forces vanish, -1 when one does."""
    a = np.linalg.norm(expected, axis=1)
    b = np.linalg.norm(actual, axis=1)
    cos = np.full(len(a), -1.0)
    both = (a < zero) & (b < zero)
    valid = (a >= zero) & (b >= zero)
    cos[both] = 1.0
    cos[valid] = np.sum(expected[valid] * actual[valid], axis=1) / (a[valid] * b[valid])
    return cos


@dataclass
class ArenaResult:
    """MLIP Arena force-equivariance scores of one structure."""

    angles: np.ndarray  # (A,) degrees
    mae: np.ndarray  # (A, X) eV/Å, per angle and axis
    min_cosine: np.ndarray  # (A, X)
    threshold: float

    @property
    def passed(self) -> bool:
        return bool(
            np.all(self.mae < self.threshold) and np.all(self.min_cosine > 1 - self.threshold)
        )

    def summary(self) -> dict:
        return {
            "force_mae_mean": float(self.mae.mean()),
            "force_mae_max": float(self.mae.max()),
            "min_cosine": float(self.min_cosine.min()),
            "passed_fraction": float(
                np.mean((self.mae < self.threshold) & (self.min_cosine > 1 - self.threshold))
            ),
            "passed": self.passed,
        }


def arena_force_equivariance(
    calculator,
    atoms: Atoms,
    *,
    angles=ARENA_ANGLES,
    axes: int = 10,
    seed: int = 0,
    threshold: float = 1e-3,
    improper: bool = False,
    progress=None,
) -> ArenaResult:
    """MLIP Arena's force-equivariance test of ``calculator`` on ``atoms``.

    ``improper=True`` composes every rotation with the inversion (mirror
    images: an extension of the protocol to O(3), which MLIP Arena does not
    test). ``progress``: an optional callable run after each rotation (a
    progress bar's ``update``).
    """
    angles = np.asarray(angles, dtype=np.float64)
    rng = np.random.default_rng(seed)
    axis_vectors = rng.normal(size=(axes, 3))
    axis_vectors /= np.linalg.norm(axis_vectors, axis=1, keepdims=True)
    _, original = _energy_and_forces(calculator, atoms)
    mae = np.zeros((len(angles), axes))
    min_cosine = np.zeros((len(angles), axes))
    for a, angle in enumerate(angles):
        for x, axis in enumerate(axis_vectors):
            rotation = Rotation.from_rotvec(np.radians(angle) * axis).as_matrix()
            if improper:
                rotation = -rotation
            _, forces = _energy_and_forces(calculator, rotated_atoms(atoms, rotation))
            expected = original @ rotation.T
            mae[a, x] = np.mean(np.abs(expected - forces))
            min_cosine[a, x] = _cosines(expected, forces).min()
            if progress is not None:
                progress()
    return ArenaResult(angles, mae, min_cosine, threshold)


def walk_rotations(seed: int = 42) -> np.ndarray:
    """ML-PEG's walk: 114 cumulative orientations (the original not included)."""
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(len(WALK_STEP_ANGLES), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    steps = Rotation.concatenate(
        [
            Rotation.from_rotvec(np.radians(WALK_STEP_ANGLES)[:, None] * axes),
            Rotation.random(WALK_RANDOM_STEPS, random_state=seed),
        ]
    )
    current = Rotation.identity()
    orientations = []
    for step in steps:
        current = step * current
        orientations.append(current.as_matrix())
    return np.array(orientations)


@dataclass
class WalkResult:
    """ML-PEG rotational-symmetry scores of one structure (successive pairs)."""

    relative_angles: np.ndarray  # (P,) degrees between successive orientations
    energy_change: np.ndarray  # (P,) |dE| per atom, eV
    forces_change: np.ndarray  # (P,) MAE of back-rotated forces, eV/Å
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "energy_change_mean": float(self.energy_change.mean()),
            "energy_change_max": float(self.energy_change.max()),
            "forces_change_mean": float(self.forces_change.mean()),
            "forces_change_max": float(self.forces_change.max()),
        }


def rotational_symmetry_walk(
    calculator, atoms: Atoms, *, seed: int = 42, progress=None
) -> WalkResult:
    """ML-PEG's rotational-symmetry walk of ``calculator`` on ``atoms``."""
    matrices = np.concatenate([np.eye(3)[None], walk_rotations(seed)])
    energies, back_rotated = [], []
    for rotation in matrices:
        energy, forces = _energy_and_forces(calculator, rotated_atoms(atoms, rotation))
        energies.append(energy)
        back_rotated.append(forces @ rotation)  # back to the original frame
        if progress is not None:
            progress()
    energy_array = np.array(energies)
    forces_array = np.array(back_rotated)
    relative = np.einsum("kij,klj->kil", matrices[1:], matrices[:-1])  # R_{k+1} R_k^T
    angles = np.degrees(Rotation.from_matrix(relative).magnitude())
    return WalkResult(
        relative_angles=angles,
        energy_change=np.abs(np.diff(energy_array)) / len(atoms),
        forces_change=np.abs(np.diff(forces_array, axis=0)).mean(axis=(1, 2)),
    )


def plot_checks(report: dict, output) -> None:
    """Arena MAE against angle and walk ``|dF|`` against relative angle, raw vs symmetrized."""
    from ._optional import pyplot

    plt = pyplot("the checks plot")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for index, entry in enumerate(report["frames"]):
        for name, style in (("raw", "o-"), ("symmetrized", "s--")):
            curves = entry[name]["curves"]
            label = f"frame {entry['frame']} {name}"
            color = f"C{index % 10}"
            axes[0].semilogy(
                curves["arena_angles"],
                1e3 * np.maximum(curves["arena_mae_by_angle"], 1e-12),
                style,
                ms=3,
                color=color,
                label=label,
            )
            axes[1].loglog(
                curves["walk_angles"],
                1e3 * np.maximum(curves["walk_forces_change"], 1e-12),
                style[0],
                ms=3,
                color=color,
                alpha=0.7 if name == "raw" else 1.0,
                label=label,
            )
    axes[0].axhline(1.0, color="k", lw=0.8, ls=":")
    axes[0].set_xlabel("rotation angle (degrees)")
    axes[0].set_ylabel("MLIP Arena force MAE (meV/Å)")
    axes[0].set_title("MLIP Arena (pass below the dotted line)", fontsize=9)
    axes[1].set_xlabel("relative angle of successive orientations (degrees)")
    axes[1].set_ylabel("ML-PEG |dF| (meV/Å)")
    axes[1].set_title("ML-PEG rotational-symmetry walk", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)
