"""Every command checks its input before any model call: one line, exit 2 (issue 29)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.io import write
from hypothesis import given, settings
from hypothesis import strategies as st

from ase_symcalc.cli import main, md

BAD_ARGUMENTS = {
    "negative temperature": (["md", "{cu}", "--temperature", "-5"], "--temperature -5.0: must"),
    "NaN temperature": (["md", "{cu}", "--temperature", "nan"], "--temperature nan: must"),
    "zero time step": (["md", "{cu}", "--timestep", "0"], "--timestep 0.0: must"),
    "infinite time step": (["md", "{cu}", "--timestep", "inf"], "--timestep inf: must"),
    "negative steps": (["md", "{cu}", "--steps", "-1"], "--steps -1: must"),
    "zero interval": (["md", "{cu}", "--interval", "0"], "--interval 0: must"),
    "negative tolerance": (["md", "{cu}", "--tolerance", "-1"], "--tolerance -1.0: must"),
    "NaN pressure": (
        ["md", "{cu}", "--ensemble", "npt", "--pressure", "nan"],
        "--pressure nan: must",
    ),
    "negative seed": (["md", "{cu}", "--seed", "-3"], "--seed -3: must"),
    "huge rule": (
        ["md", "{cu}", "--mode", "grid", "--quadrature", "lebedev:99"],
        "694,000 rotations",
    ),
    "huge run": (
        ["md", "{cu}", "--mode", "grid", "--quadrature", "group:I", "--steps", "100000"],
        "--max-run-evaluations",
    ),
    "bad rule": (["md", "{cu}", "--mode", "grid", "--quadrature", "lebedev:x"], "valid forms"),
    "zero cell": (["md", "{flat}"], "degenerate along its periodic directions"),
    "two atoms on one site": (["md", "{double}"], "closer than 0.5 Å"),
    "NaN position": (["md", "{nan}"], "non-finite position"),
    "output is a file": (["md", "{cu}", "--output", "{cu}"], "is an existing file"),
    "output not writable": (["md", "{cu}", "--output", "/proc/nope"], "cannot be written"),
    "missing input": (["md", "missing.xyz"], "does not exist"),
    "not a structure": (["md", "{text}"], "cannot read structure"),
    "zero supercell": (["phonons", "--supercell", "0", "0", "0"], "--supercell 0 0 0: must"),
    "negative displacement": (["phonons", "--displacement", "-0.1"], "--displacement -0.1"),
    "zero strain": (["elastic", "--strains", "0"], "--strains 0.0: must"),
    "zero fmax": (["relax", "--fmax", "0"], "--fmax 0.0: must"),
    "negative rattle": (["relax", "--rattle", "-1"], "--rattle -1.0: must"),
    "NaN strain": (["relax", "--strain", "nan"], "--strain nan: must"),
    "zero axes": (["check", "pet-cu-emt", "{cu}", "--axes", "0"], "--axes 0: must"),
    "negative lmax": (["diagnose", "pet-cu-emt", "{cu}", "--lmax", "-1"], "--lmax -1: must"),
    "zero frames": (["diagnose", "pet-cu-emt", "{cu}", "--frames", "0"], "--frames 0: must"),
    "compare tolerance": (
        ["compare", "{cu}", "--quadrature", "auto", "--tolerance", "0"],
        "--tolerance 0.0: must",
    ),
    "serve probe interval": (
        ["serve", "unix:x", "--structure", "{cu}", "--probe-interval", "-1"],
        "--probe-interval -1: must",
    ),
    "serve on a degenerate cell": (
        ["serve", "unix:x", "--structure", "{flat}"],
        "degenerate",
    ),
}


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cu = bulk("Cu", "fcc", a=3.61, cubic=True)
    files = {"cu": tmp_path / "cu.extxyz"}
    write(files["cu"], cu)
    flat = cu.copy()
    flat.cell = np.zeros((3, 3))
    files["flat"] = tmp_path / "flat.extxyz"
    write(files["flat"], Atoms("Cu2", positions=[[0, 0, 0], [2, 0, 0]], pbc=True))
    double = cu.copy()
    double.positions[1] = double.positions[0] + 0.1
    files["double"] = tmp_path / "double.extxyz"
    write(files["double"], double)
    files["nan"] = tmp_path / "nan.xyz"
    files["nan"].write_text("2\n\nCu 0 0 0\nCu nan 0 0\n")
    files["text"] = tmp_path / "notes.txt"
    files["text"].write_text("this is not a structure\n")
    return {name: str(path) for name, path in files.items()}


def _digest(paths):
    return {path: hashlib.sha256(open(path, "rb").read()).hexdigest() for path in paths}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS), ids=list(BAD_ARGUMENTS))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, inputs, tmp_path, capsys):
    argv, message = BAD_ARGUMENTS[case]
    argv = [part.format(**inputs) for part in argv]
    if "--output" not in argv and argv[0] in ("md", "phonons", "elastic", "relax", "compare"):
        argv += ["--output", str(tmp_path / "out")]
    before = _digest(inputs.values())
    listing = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) <= 3 and "Traceback" not in err
    assert _digest(inputs.values()) == before  # the user's files unchanged
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing written


def test_a_dependency_error_is_one_line_unless_debug(inputs, capsys, monkeypatch):
    def broken(args):
        np.linalg.inv(np.zeros((2, 2)))

    monkeypatch.setitem(md.HANDLERS, "md", broken)
    assert main(["md", inputs["cu"]]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "LinAlgError from numpy: Singular matrix" in err and "--debug" in err
    with pytest.raises(np.linalg.LinAlgError):
        main(["--debug", "md", inputs["cu"]])


def test_suspicious_md_settings_warn_in_one_line(inputs, tmp_path, capsys):
    argv = ["md", inputs["cu"], "--steps", "1", "--timestep", "12", "--temperature", "7000"]
    assert main([*argv, "--output", str(tmp_path / "hot")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert any("--timestep 12 fs is long for Cu" in line for line in warnings)
    assert any("--temperature 7000 K" in line for line in warnings)


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6),
)


def _parser_options() -> dict[str, tuple[list, list]]:
    """Every command's numeric options (flag, type, nargs) and positional names, read
    from the parsers themselves (argparse has no public walk of its sub-commands)."""
    import argparse

    from ase_symcalc.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    table = {}
    for name, command in sub.choices.items():
        numeric = [
            (action.option_strings[-1], action.type, action.nargs)
            for action in command._actions
            if action.option_strings and action.type in (int, float)
        ]
        positional = [action.dest for action in command._actions if not action.option_strings]
        table[name] = (numeric, positional)
    return table


PARSER_OPTIONS = _parser_options()
_SCRATCH = Path(tempfile.mkdtemp(prefix="ase_symcalc_hypothesis_"))
write(_SCRATCH / "cu.xyz", bulk("Cu", "fcc", a=3.61, cubic=True))
POSITIONAL_VALUES = {
    "structure": str(_SCRATCH / "cu.xyz"),
    "dataset": str(_SCRATCH / "cu.xyz"),
    "model": "pet-cu-emt",
    "log": str(_SCRATCH / "log.csv"),
    "address": "localhost:31415",
    "output": str(_SCRATCH / "out.pt"),
}


def _value(draw, kind):
    value = draw(NUMBERS)
    if kind is int:
        return str(int(value)) if np.isfinite(value) else str(value)
    return str(value)


@settings(max_examples=120, deadline=None)
@given(command=st.sampled_from(sorted(PARSER_OPTIONS)), data=st.data())
def test_random_command_lines_exit_0_or_2_never_a_traceback(command, data):
    """Every command, with values drawn for its parser's own numeric options (NaN, inf,
    negative and huge included); the commands themselves are stubbed: what is tested
    is the checking layer, which must answer 0 or 2 and never raise."""
    from ase_symcalc.cli import COMMANDS

    numeric, positional = PARSER_OPTIONS[command]
    argv = [command] + [POSITIONAL_VALUES[name] for name in positional]
    if numeric:
        chosen = data.draw(st.lists(st.sampled_from(numeric), unique=True, max_size=4))
        for flag, kind, nargs in chosen:
            count = nargs if isinstance(nargs, int) else 1
            argv += [flag] + [_value(data.draw, kind) for _ in range(count)]
    module = next(module for module in COMMANDS if command in module.HANDLERS)
    original = module.HANDLERS[command]
    module.HANDLERS[command] = lambda args: 0
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse: a float where an int goes
        code = exit_info.code
    finally:
        module.HANDLERS[command] = original
    assert code in (0, 2), argv


def _md_namespace(**options):
    from argparse import Namespace

    values = dict(
        command="md",
        mode=None,
        quadrature=None,
        steps=500,
        interval=None,
        mts=None,
        tolerance=None,
        max_evaluations=None,
        max_run_evaluations=5_000_000,
    )
    values.update(options)
    return Namespace(**values)


def test_the_cost_guard_counts_what_the_mode_runs():
    from ase_symcalc.cli._checks import check_cost
    from ase_symcalc.cli._common import CommandError

    # md's default mode is random: a rule it never runs costs nothing
    check_cost(_md_namespace(quadrature="group:I", steps=50_000))
    check_cost(_md_namespace(quadrature="lebedev:99"))
    with pytest.raises(CommandError, match="694,000 rotations"):  # escalation would run it
        check_cost(_md_namespace(quadrature="lebedev:99", tolerance=0.01))
    # --mts: raw inner steps plus the rule every M steps
    check_cost(_md_namespace(quadrature="group:I", steps=200_000, mts=8))
    with pytest.raises(CommandError, match="--max-run-evaluations"):
        check_cost(_md_namespace(quadrature="group:I", steps=200_000, mode="grid"))
    # random mode logging every step: 3 evaluations per step
    with pytest.raises(CommandError, match="about 6,000,000"):
        check_cost(_md_namespace(steps=2_000_000, mode="random", interval=1))
    from argparse import Namespace

    export = Namespace(command="export-metatomic", quadrature="lebedev:99", symmetrize=False)
    check_cost(export)  # the rule is not used without --symmetrize


def test_seed_and_timestep_limits(inputs, tmp_path, capsys):
    assert main(["md", inputs["cu"], "--seed", str(2**32)]) == 2
    assert "--seed 4294967296: must" in capsys.readouterr().err
    from ase_symcalc.cli._checks import md_warnings

    hydrogen = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    md_warnings(_md_namespace(timestep=2.0, temperature=300.0), hydrogen)
    assert capsys.readouterr().err == ""  # the default time step never warns


def test_the_calculator_names_a_misspelt_option_and_a_broken_structure():
    from ase.calculators.emt import EMT

    from ase_symcalc import SymmetrizedCalculator

    with pytest.raises(ValueError, match="'residuals' \\(did you mean 'residual'\\?\\)"):
        SymmetrizedCalculator(EMT(), residuals=True)
    calc = SymmetrizedCalculator(EMT(), quadrature="group:T")
    with pytest.raises(ValueError, match="'remove_net_forces' \\(did you mean 'remove_net_force'"):
        calc.set(remove_net_forces=True)
    assert calc.parameters.remove_net_force is None  # nothing stored
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.calc = calc
    atoms.positions[2, 1] = np.nan
    with pytest.raises(ValueError, match="atom 2 has a non-finite position"):
        atoms.get_forces()
    flat = Atoms("Cu2", positions=[[0, 0, 0], [2, 0, 0]], pbc=True)
    flat.calc = calc
    with pytest.raises(ValueError, match="degenerate along its periodic directions"):
        flat.get_potential_energy()
    assert calc.evaluation_count == 0  # refused before any model call


class _NeverCalled(Calculator):
    """A calculator that fails the test if a workflow calls it."""

    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, *args, **kwargs):
        raise AssertionError("the model was called before the input was checked")


def _cu_cell():
    return bulk("Cu", "fcc", a=3.61, cubic=True)


def _nan_cell():
    atoms = _cu_cell()
    atoms.positions[1, 0] = np.inf
    return atoms


def _molecule():
    return Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])


# (workflow, keyword arguments, the error's words): three or more bad values of each kind
PYTHON_API_CASES = [
    ("phonons", {"supercell": (0, 0, 0)}, "supercell must be three integers"),
    ("phonons", {"supercell": (2, 2)}, "supercell must be three integers"),
    ("phonons", {"supercell": (2.5, 2, 2)}, "supercell must be three integers"),
    ("phonons", {"supercell": (100, 1, 1)}, "supercell must be three integers"),
    ("phonons", {"displacement": 0.0}, "displacement must be a finite number > 0"),
    ("phonons", {"displacement": float("nan")}, "displacement must be a finite number > 0"),
    ("phonons", {"displacement": -0.01}, "displacement must be a finite number > 0"),
    ("phonons", {"degenerate_tolerance": -1.0}, "degenerate_tolerance must be"),
    ("phonons", {"band_points": 1}, "band_points must be an integer >= 2"),
    ("phonons", {"atoms": _molecule}, "needs a crystal"),
    ("phonons", {"atoms": _nan_cell}, "non-finite position"),
    ("phonons", {"calculators": {}}, "non-empty dict"),
    ("phonons", {"calculators": {"model": "EMT"}}, "not an ASE calculator"),
    ("elastic", {"strains": (0.0,)}, "strain must be a finite number > 0"),
    ("elastic", {"strains": (float("inf"),)}, "strain must be a finite number > 0"),
    ("elastic", {"strains": ()}, "at least one magnitude"),
    ("elastic", {"strains": (0.5,)}, "beyond the linear response"),
    ("elastic", {"strains": 0.01}, "strains must be a list"),
    ("elastic", {"atoms": _molecule}, "needs a crystal"),
    ("elastic", {"atoms": _nan_cell}, "non-finite position"),
    ("relax", {"fmax": 0.0}, "fmax must be a finite number > 0"),
    ("relax", {"fmax": float("nan")}, "fmax must be a finite number > 0"),
    ("relax", {"steps": -1}, "steps must be an integer >= 0"),
    ("relax", {"steps": 2.5}, "steps must be an integer >= 0"),
    ("relax", {"optimizer": "Newton"}, "optimizer must name an optimizer"),
    ("relax", {"atoms": _molecule}, "needs a crystal"),
    ("relax", {"atoms": _nan_cell}, "non-finite position"),
    ("relax", {"calculators": {"model": object()}}, "not an ASE calculator"),
]


@pytest.mark.parametrize(
    "workflow, options, words",
    PYTHON_API_CASES,
    ids=[f"{w}-{'-'.join(map(str, o))}-{i}" for i, (w, o, _) in enumerate(PYTHON_API_CASES)],
)
def test_workflows_refuse_bad_input_before_any_model_call(workflow, options, words):
    from ase_symcalc.workflows import elastic_tensors, phonon_report, relax_report

    options = dict(options)
    atoms = options.pop("atoms", _cu_cell)()
    before = atoms.copy() if np.isfinite(atoms.positions).all() else None
    calculators = options.pop("calculators", {"model": _NeverCalled()})
    run = {"phonons": phonon_report, "elastic": elastic_tensors, "relax": relax_report}[workflow]
    with pytest.raises((ValueError, TypeError), match=words):
        run(calculators, atoms, **options)
    if before is not None:  # the user's Atoms untouched
        assert atoms == before


def test_options_are_typed_keyword_only_arguments_with_the_ase_defaults():
    """Every option is a keyword-only constructor argument whose default is ASE's
    ``default_parameters`` entry (the two cannot drift apart)."""
    import inspect

    from ase_symcalc import SymmetrizedCalculator

    parameters = inspect.signature(SymmetrizedCalculator).parameters
    defaults = SymmetrizedCalculator.default_parameters
    assert parameters["quadrature"].default == defaults["quadrature"]
    options = {
        name: p for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(options) == set(defaults) - {"quadrature"}
    for name, parameter in options.items():
        assert parameter.default == defaults[name], name
        assert parameter.annotation is not inspect.Parameter.empty, name
