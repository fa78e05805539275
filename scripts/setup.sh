#!/usr/bin/env bash
# Set up a fresh machine for ase_symcalc: a virtual environment in .venv with
# the package (editable) and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: on this machine torch==2.13.0 is a local CPU build, while
# an unpinned torch would pull a multi-GB CUDA build (pyproject only asks >=2.3)
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -c "import ase_symcalc, ase, torch, metatomic.torch; print('ase_symcalc', ase_symcalc.__version__, '| ase', ase.__version__, '| torch', torch.__version__, '| metatomic-torch', metatomic.torch.__version__)"
