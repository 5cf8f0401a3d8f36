#!/usr/bin/env bash
# Build the folder that experiments/gpu_study.sh carries to a GPU machine with no package
# registry: FOLDER/wheels holds the project's wheel and the pure-Python packages the machine
# lacks (hydra-core, omegaconf, antlr4 built from its sdist, gguf), about 4 MB. Needs PyPI.
#
#   experiments/gpu_carry.sh [FOLDER]      # default: carry (git-ignored)
set -euo pipefail
DEST=${1:-carry}
PYTHON=${PYTHON:-.venv/bin/python}
rm -rf "$DEST/wheels"
mkdir -p "$DEST/wheels"
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST/wheels" .
"$PYTHON" -m pip wheel -q --no-deps -w "$DEST/wheels" \
    hydra-core==1.3.8 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 gguf==0.19.0
ls -l "$DEST/wheels"
