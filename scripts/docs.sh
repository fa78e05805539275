#!/usr/bin/env bash
# Build the documentation site into build/docs/html (after scripts/setup.sh),
# offline, with warnings as errors, then check its links, its reference and
# its gallery (scripts/check_docs.py). ASE_SYMCALC_DOCS_EXECUTE=False skips
# running the gallery's examples (a quick build while writing).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf build/docs/html
.venv/bin/python -m sphinx -W --keep-going -q -b html -d build/docs/doctrees docs build/docs/html
.venv/bin/python scripts/check_docs.py build/docs/html
echo "docs: build/docs/html/index.html"
