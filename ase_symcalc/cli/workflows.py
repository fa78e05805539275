"""``ase-symcalc phonons | elastic | relax``: raw vs symmetrized vs a reference.

Each command builds the raw model, the symmetrized model (same rule options
as ``md``) and, with ``--reference NAME``, any calculator ASE can name (``emt``
for the shipped copper model), runs the workflow of ``ase_symcalc.workflows``
on each, prints a short table and writes ``DIR/<workflow>.json`` and a figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator

from ._common import (
    CommandError,
    _add_rule_options,
    _check_output,
    _load_structure,
    _model_path,
    _prepare_output,
    _rule_kwargs,
    add_model_options,
    add_output_options,
    save_plot,
)

__all__ = ["add_parser", "HANDLERS"]


def _common(parser, default_output: str) -> None:
    parser.add_argument("structure", nargs="?", help="any file ASE reads (default: copper)")
    add_model_options(parser, forces=True, batch_size=True)
    _add_rule_options(parser, "group:I")
    parser.add_argument(
        "--reference",
        default=None,
        help="a calculator ASE can name (e.g. emt), run beside raw and symmetrized",
    )
    parser.add_argument(
        "--no-structure-symmetry",
        dest="structure_symmetry",
        action="store_false",
        help="do not average the symmetrized model over the structure's own symmetry "
        "(by default it is, and the O(3) average alone is reported beside it as "
        "'symmetrized-o3')",
    )
    parser.add_argument(
        "--symmetry-tolerance",
        type=float,
        default=1e-5,
        help="Å, for finding the structure's symmetry (default 1e-5)",
    )
    add_output_options(parser, default_output, "output directory", overwrite=True)


def add_parser(sub) -> None:
    phonons = sub.add_parser(
        "phonons",
        help="phonons raw vs symmetrized (vs a reference): degenerate-branch splittings",
        description="Phonons by finite displacements with phonopy, crystal symmetry not "
        "imposed. Writes DIR/phonons.json and DIR/bands.png.",
    )
    _common(phonons, "symcalc-phonons")
    phonons.add_argument("--supercell", type=int, nargs=3, default=[3, 3, 3])
    phonons.add_argument("--displacement", type=float, default=0.005, help="Å (default 0.005)")

    elastic = sub.add_parser(
        "elastic",
        help="elastic constants raw vs symmetrized (vs a reference): cubic relations",
        description="The 6x6 elastic tensor from finite strains of the model's stress. "
        "Writes DIR/elastic.json and DIR/elastic.png.",
    )
    _common(elastic, "symcalc-elastic")
    elastic.add_argument(
        "--strains", type=float, nargs="+", default=[0.005, 0.01], help="strain magnitudes"
    )

    relax = sub.add_parser(
        "relax",
        help="relax positions and cell raw vs symmetrized: space group kept or lost",
        description="Relax positions and cell (FrechetCellFilter + BFGS); space groups by "
        "spglib at 1e-5..1e-1 Å before and after. Writes DIR/relax.json and "
        "DIR/relaxed-<name>.extxyz.",
    )
    _common(relax, "symcalc-relax")
    relax.add_argument("--fmax", type=float, default=1e-3, help="eV/Å (default 1e-3)")
    relax.add_argument("--steps", type=int, default=300, help="optimizer steps at most")
    relax.add_argument(
        "--rattle", type=float, default=0.0, help="rattle the input first (Å, seeded)"
    )
    relax.add_argument(
        "--strain", type=float, default=0.0, help="strain the input cell first (e.g. 0.01)"
    )
    relax.add_argument("--seed", type=int, default=0)
    relax.add_argument(
        "--refine-tolerance",
        type=float,
        default=0.1,
        help="Å: with structure symmetry, the input's space group at this tolerance is "
        "made exact (ASE's refine_symmetry, as FixSymmetry does) before the "
        "symmetrized model relaxes it (default 0.1)",
    )


def _default_structure(command: str):
    from ase.build import bulk

    if command == "phonons":
        return bulk("Cu", "fcc", a=3.61)  # primitive: 1 atom, 3x3x3 supercell of 27
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)  # axes along x, y, z
    return atoms.repeat(2) if command == "relax" else atoms


def _calculators(args) -> dict:
    from ase.calculators.calculator import get_calculator_class

    from ..calculator import SymmetrizedCalculator
    from ..workflows import O3OnlyView

    model_path = _model_path(args.model)
    if not args.symmetry_tolerance > 0:
        raise CommandError(
            f"--symmetry-tolerance must be a positive distance in Å, got {args.symmetry_tolerance}"
        )
    try:
        raw = SymmetrizedCalculator(
            model_path, quadrature="identity", raw=False, forces=args.forces, variant=args.variant
        )
        sym = SymmetrizedCalculator(
            raw.evaluator,
            raw=False,
            batch_size=args.batch_size,
            structure_symmetry=args.structure_symmetry,
            symmetry_tolerance=args.symmetry_tolerance,
            **_rule_kwargs(args),
        )
    except ValueError as error:
        raise CommandError(str(error)) from error
    calculators: dict[str, Calculator] = {"raw": raw, "symmetrized": sym}
    if args.structure_symmetry:
        calculators["symmetrized-o3"] = O3OnlyView(sym)
    if args.reference:
        try:
            calculators["reference"] = get_calculator_class(args.reference.lower())()
        except Exception as error:
            raise CommandError(
                f"cannot build the reference calculator '{args.reference}': {error}"
            ) from error
    return calculators


def _setup(args):
    atoms = _load_structure(args.structure) if args.structure else _default_structure(args.command)
    if not (atoms.pbc.all() and atoms.cell.rank == 3):
        raise CommandError(
            f"{args.command} needs a crystal: '{args.structure}' has pbc={atoms.pbc.tolist()} "
            f"and a cell of rank {atoms.cell.rank}; give a 3D-periodic structure"
        )
    output = Path(args.output)
    _check_output(output, args.overwrite)
    calculators = _calculators(args)
    return atoms, output, calculators


def _rule_name(calculators) -> str:
    return calculators["symmetrized"].quadrature.name


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=None)


def run_phonons(args) -> int:
    from ..workflows.phonons import phonon_report, plot_bands

    atoms, output, calculators = _setup(args)
    n_cells = 6 * len(atoms)  # every atom displaced along +-x, +-y, +-z
    bar = _progress(n_cells * len(calculators), "phonons")
    try:
        report = phonon_report(
            calculators,
            atoms,
            supercell=tuple(args.supercell),
            displacement=args.displacement,
            progress=bar.update,
        )
    except ValueError as error:
        raise CommandError(str(error)) from error
    finally:
        bar.close()
    report["rule"] = _rule_name(calculators)
    _prepare_output(output, args.overwrite)
    (output / "phonons.json").write_text(json.dumps(report, indent=1) + "\n")
    save_plot(plot_bands, report, list(calculators), output / "bands.png")
    names = list(calculators)
    keys = sorted({k for name in names for k in report[name]["splittings_THz"]})
    print(f"largest splitting of degenerate branches (THz), rule {report['rule']}")
    print(f"{'':12s}" + "".join(f"{name:>16s}" for name in names))
    for key in keys:
        cells = [report[name]["splittings_THz"].get(key) for name in names]
        print(
            f"{key:12s}" + "".join("               -" if v is None else f"{v:16.2e}" for v in cells)
        )
    print(
        f"{'Gamma acoust':12s}"
        + "".join(f"{report[name]['gamma_acoustic_THz']:16.2e}" for name in names)
    )
    print(f"wrote {output / 'phonons.json'} and {output / 'bands.png'}")
    return 0


def run_elastic(args) -> int:
    from ..workflows.elastic import cubic_spread, cubic_summary, elastic_tensors

    atoms, output, calculators = _setup(args)
    bar = _progress(6 * len(args.strains) * len(calculators), "elastic")
    report = {"strains": args.strains, "rule": _rule_name(calculators)}
    try:
        tensors = elastic_tensors(calculators, atoms, strains=args.strains, progress=bar.update)
        for name, c in tensors.items():
            report[name] = {
                "C_GPa": c.tolist(),
                "cubic_spread_GPa": cubic_spread(c),
                "cubic_GPa": cubic_summary(c),
            }
    except ValueError as error:
        raise CommandError(str(error)) from error
    finally:
        bar.close()
    _prepare_output(output, args.overwrite)
    (output / "elastic.json").write_text(json.dumps(report, indent=1) + "\n")
    save_plot(_plot_elastic, report, list(calculators), output / "elastic.png")
    names = list(calculators)
    print(f"elastic constants (GPa), rule {report['rule']}")
    print(f"{'':22s}" + "".join(f"{name:>16s}" for name in names))
    for key in ("C11", "C12", "C44", "bulk_modulus"):
        print(f"{key:22s}" + "".join(f"{report[n]['cubic_GPa'][key]:16.3f}" for n in names))
    for key in ("C11", "C12", "C44", "forbidden_max"):
        label = f"spread {key}" if key != "forbidden_max" else "largest forbidden"
        print(
            f"{label:22s}" + "".join(f"{report[n]['cubic_spread_GPa'][key]:16.2e}" for n in names)
        )
    print(f"wrote {output / 'elastic.json'} and {output / 'elastic.png'}")
    return 0


def _plot_elastic(report, names, output) -> None:
    from .._optional import pyplot

    plt = pyplot("the elastic constants plot")

    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        c = np.asarray(report[name]["C_GPa"])
        image = ax.imshow(c, cmap="viridis")
        for i in range(6):
            for j in range(6):
                ax.text(j, i, f"{c[i, j]:.1f}", ha="center", va="center", fontsize=6, color="w")
        labels = ["xx", "yy", "zz", "yz", "xz", "xy"]
        ax.set_xticks(range(6), labels, fontsize=7)
        ax.set_yticks(range(6), labels, fontsize=7)
        spread = max(report[name]["cubic_spread_GPa"].values())
        ax.set_title(f"{name}\nlargest cubic violation {spread:.2g} GPa", fontsize=8)
        fig.colorbar(image, ax=ax, shrink=0.7)
    fig.tight_layout()
    fig.savefig(output, dpi=130)
    plt.close(fig)


def run_relax(args) -> int:
    from ase.io import write

    from ..workflows.relax import refined, relax_report

    atoms, output, calculators = _setup(args)
    if args.strain:
        atoms.set_cell(atoms.cell.array * (1.0 + args.strain), scale_atoms=True)
    if args.rattle:
        atoms.rattle(args.rattle, seed=args.seed)
    try:
        starts = {}
        if args.structure_symmetry:
            starts["symmetrized"] = refined(atoms, args.refine_tolerance)
        report, relaxed = relax_report(
            calculators, atoms, fmax=args.fmax, steps=args.steps, starts=starts
        )
    except ValueError as error:
        raise CommandError(str(error)) from error
    if starts:
        report["refine_tolerance"] = args.refine_tolerance
    report["rule"] = _rule_name(calculators)
    _prepare_output(output, args.overwrite)
    (output / "relax.json").write_text(json.dumps(report, indent=1) + "\n")
    for name, structure in relaxed.items():
        write(output / f"relaxed-{name}.extxyz", structure, format="extxyz")
    names = ["initial", *calculators]
    print(f"space group by spglib tolerance (Å), rule {report['rule']}")
    print(f"{'':9s}" + "".join(f"{name:>16s}" for name in names))
    for tolerance in report["initial"]["spacegroup"]:
        print(
            f"{tolerance:9s}"
            + "".join(f"{report[name]['spacegroup'][tolerance]:>16s}" for name in names)
        )
    print(f"{'a (Å)':9s}" + "".join(f"{report[n]['cellpar'][0]:16.5f}" for n in names))
    print(
        f"{'steps':9s}{'':16s}"
        + "".join(
            f"{report[n]['steps']:>12d} {'ok' if report[n]['converged'] else 'NO':>3s}"
            for n in calculators
        )
    )
    print(f"wrote {output / 'relax.json'} and the relaxed structures")
    return 0


HANDLERS = {"phonons": run_phonons, "elastic": run_elastic, "relax": run_relax}
