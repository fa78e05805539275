"""Sphinx configuration of the ase_symcalc documentation (``bash scripts/docs.sh``).

Built offline with warnings as errors: no intersphinx inventory or image is
fetched at build time. Pages are Markdown (MyST); the tutorials are the
``examples/`` scripts, executed by sphinx-gallery when they are fast
(``GALLERY_EXECUTED``) and shown with their stored output otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ase_symcalc  # noqa: E402

project = "ase_symcalc"
author = "ase_symcalc developers"
copyright = "2026, ase_symcalc developers"
release = ase_symcalc.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinxarg.ext",
    "sphinx_gallery.gen_gallery",
]

myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**.zip"]

autodoc_member_order = "bysource"
# wrappers of torch-sim and ASE classes: their parents' docstrings (other styles) stay theirs
autodoc_inherit_docstrings = False
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
# the docstrings use numpy style with free-form sections; keep their text as written
napoleon_use_param = True
nitpicky = False

#: scripts executed at build time (seconds each on 2 CPU cores); the others are
#: rendered with their stored output and the command that reproduces it
GALLERY_EXECUTED = r"(quickstart|quickstart_pet|metatomic_model|relax_cell)\.py"

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": GALLERY_EXECUTED,
    "ignore_pattern": r"(__init__|make_init)\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "plot_gallery": os.environ.get("ASE_SYMCALC_DOCS_EXECUTE", "True"),
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "show_memory": False,
    "min_reported_time": 1,
}

html_theme = "furo"
html_title = f"ase_symcalc {release}"
html_static_path: list[str] = []
suppress_warnings = ["myst.header"]
