#!/usr/bin/env bash
# The README's "What symmetrizing fixes": phonons, elastic constants and a
# relaxation of fcc copper with the shipped model, raw / symmetrized / EMT,
# for the default rule and for auto at 1e-3 eV/Å. About 10 minutes on 2 cores.
# Outputs in build/fixes/<workflow>-<rule>/ (JSON, figures).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin/ase-symcalc
out=build/fixes
for rule in default auto; do
    opts=(--reference emt --overwrite)
    [ "$rule" = auto ] && opts+=(--quadrature auto --tolerance 1e-3)
    "$bin" phonons "${opts[@]}" --output "$out/phonons-$rule"
    "$bin" elastic "${opts[@]}" --output "$out/elastic-$rule"
    "$bin" relax --rattle 0.01 --strain 0.01 "${opts[@]}" --output "$out/relax-$rule"
done
