"""The README's Python examples run as written.

Each ```python block is executed in order in one namespace; the names the
prose leaves to the reader (``my_unconstrained_calculator``, ``base``) are an
analytic anisotropic calculator. The pages under docs/ are run the same way
by test_docs.py.
"""

import importlib.util
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_is_short_and_has_its_example():
    """The README is the five-minute read (issue 26): the rest lives in docs/."""
    assert len(README.read_text().splitlines()) <= 200
    assert len(_python_blocks()) >= 1


def test_readme_examples_run(tmp_path, monkeypatch):
    from ase.calculators.emt import EMT

    from ase_symcalc.testing import AnisotropicCalculator

    monkeypatch.chdir(tmp_path)  # the examples write log.csv and traj.extxyz
    calculator = AnisotropicCalculator(EMT(), terms=((2, 0.05),), direction=(0.3, 0.5, 0.8))
    namespace = {"my_unconstrained_calculator": calculator, "base": calculator}
    for index, block in enumerate(_python_blocks()):
        if "torch_sim" in block or "random_torchsim" in block:
            if importlib.util.find_spec("torch_sim") is None:
                continue  # Python < 3.12: no torch-sim
        code = block.replace("dyn.run(100)", "dyn.run(1)").replace("n_steps=100", "n_steps=2")
        exec(compile(code, f"README.md, python block {index}", "exec"), namespace)  # noqa: S102
    assert namespace["atoms"].calc.results["forces_equivariance_error"] > 0
