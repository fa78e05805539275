"""The documentation's Python examples run as written, and the site checker
catches what it is meant to catch.

Every ```python block of a page under docs/ runs in order, in one namespace
per page (as tests/test_readme.py does for the README); the names the prose
leaves to the reader (``my_unconstrained_calculator``, ``base``) are an
analytic anisotropic calculator; MD examples run one or two steps.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(
    path
    for path in DOCS.rglob("*.md")
    if "auto_examples" not in path.parts and "```python" in path.read_text()
)


def test_the_pages_hold_examples():
    assert len(PAGES) >= 5, PAGES


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples_run(page, tmp_path, monkeypatch):
    from ase.calculators.emt import EMT

    from ase_symcalc.testing import AnisotropicCalculator

    monkeypatch.chdir(tmp_path)
    calculator = AnisotropicCalculator(EMT(), terms=((2, 0.05),), direction=(0.3, 0.5, 0.8))
    namespace = {"my_unconstrained_calculator": calculator, "base": calculator}
    for index, block in enumerate(_python_blocks(page)):
        if ("torch_sim" in block or "random_torchsim" in block) and importlib.util.find_spec(
            "torch_sim"
        ) is None:
            continue  # Python < 3.12: no torch-sim
        code = block.replace("dyn.run(100)", "dyn.run(1)").replace("n_steps=100", "n_steps=2")
        exec(compile(code, f"{page.name}, python block {index}", "exec"), namespace)  # noqa: S102


def _site(tmp_path: Path, pages: dict[str, str]) -> Path:
    for name, html in pages.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html)
    return tmp_path


def test_site_checker_finds_broken_links_and_anchors(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from check_docs import check_links, parse

    root = _site(
        tmp_path,
        {
            "index.html": '<a href="a/page.html#here">ok</a><a href="a/page.html#gone">x</a>'
            '<a href="missing.html">y</a><a href="https://example.org/z">external</a>',
            "a/page.html": '<h2 id="here">Here</h2><a href="../index.html">up</a>'
            '<img src="../figures/missing.png">',
        },
    )
    pages = {path.resolve(): parse(path) for path in root.rglob("*.html")}
    problems = check_links(root.resolve(), pages)
    assert len(problems) == 3, problems
    assert any("missing anchor a/page.html#gone" in p for p in problems)
    assert any("broken link missing.html" in p for p in problems)
    assert any("figures/missing.png" in p for p in problems)
