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
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/python -c "import ase_symcalc, ase, numpy, scipy; print('ase_symcalc', ase_symcalc.__version__, '| ase', ase.__version__, '| numpy', numpy.__version__, '| scipy', scipy.__version__)"
