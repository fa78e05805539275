#!/usr/bin/env bash
# Set up a fresh machine for ase_symcalc: a virtual environment in .venv with
# the package (editable) and its test tools. Safe to run again.
#
# Python >= 3.12 is used where the machine has one (torch-sim, and with it the
# Orb / MACE / torch-sim tests, needs it): $PYTHON if set, else python3.12 or
# python3.13 on the PATH, else a 3.12+ under pyenv. Without one, the package
# is installed on python3 without torch-sim, and the torch-sim tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."

is_312() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

find_python() {
    local candidate version root
    for candidate in "${PYTHON:-}" python3.12 python3.13 python3; do
        if [ -n "$candidate" ] && command -v "$candidate" >/dev/null && is_312 "$candidate"; then
            command -v "$candidate"
            return
        fi
    done
    if command -v pyenv >/dev/null; then
        root=$(pyenv root)
        for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[2-9](\.[0-9]+)?$' | sort -V); do
            if is_312 "$root/versions/$version/bin/python"; then
                echo "$root/versions/$version/bin/python"
                return
            fi
        done
    fi
}

PYTHON_BIN=$(find_python || true)
if [ -z "$PYTHON_BIN" ]; then
    PYTHON_BIN=$(command -v python3)
    echo "setup: no Python >= 3.12 found, so torch-sim (Orb, MACE, batched MD) is left out; install one (apt install python3.12-venv, or pyenv install 3.12) and rerun" >&2
fi
wanted=$("$PYTHON_BIN" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ -x .venv/bin/python ]; then
    have=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$have" != "$wanted" ]; then
        echo "setup: .venv has Python $have, rebuilding it with Python $wanted ($PYTHON_BIN)"
        rm -rf .venv
    fi
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON_BIN" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: for Python 3.11 this machine kind has a local CPU build;
# for 3.12 PyPI serves the CUDA build (~3 GB with its nvidia wheels, runs on CPU)
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# SevenNet (real pretrained weights in its wheel) needs e3nn >= 0.5; mace-torch pins
# e3nn 0.4.4. sevenn and its e3nn go in an overlay that the SevenNet tests put
# first on PYTHONPATH (its other dependencies are in [dev]).
overlay=.venv/overlays/sevenn
if [ ! -d "$overlay/sevenn-0.13.0.dist-info" ] || [ ! -d "$overlay/e3nn-0.6.0.dist-info" ]; then
    rm -rf "$overlay"
    .venv/bin/python -m pip install --quiet --no-deps --target "$overlay" "sevenn==0.13.0" "e3nn==0.6.0"
fi
.venv/bin/python -c "import ase_symcalc, ase, torch, metatomic.torch; print('ase_symcalc', ase_symcalc.__version__, '| ase', ase.__version__, '| torch', torch.__version__, '| metatomic-torch', metatomic.torch.__version__)"
.venv/bin/python -c "import torch_sim; print('torch-sim', torch_sim.__version__)" 2>/dev/null || echo "setup: torch-sim not installed (Python < 3.12): its tests will skip"
