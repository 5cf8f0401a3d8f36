#!/usr/bin/env bash
# One GPU window runs a pre-registered study: installs the carried wheels, runs the protocol's
# arms x seeds side by side on the device, and writes events, configs, logs and a timing
# table to $OUT, within a wall-time budget (default 540 s, 9 minutes).
#
#   OUT=<folder that comes back> experiments/gpu_study.sh PROTOCOL [OVERRIDE ...]
#
# PROTOCOL: a protocol.yaml (pkpo.analysis.confirmatory.Protocol: preset, arms, seeds,
# overrides). The runs are those `python -m experiments.repro_sweep --protocol PROTOCOL`
# launches, in explicit form (--preset/--arms/--seeds/overrides), so that they can run in a
# copy of the checkout without git; each run records the commit as `protocol_commit` when the
# copy is a git checkout whose tracked files are unchanged. OVERRIDEs are Hydra overrides added to every run.
#
# Prepare the carried folder here, on a machine with PyPI (the GPU machine has no registry):
#   experiments/gpu_carry.sh carry     # carry/wheels: the project's wheel, hydra-core,
#                                      # omegaconf, antlr4 (built from its sdist), gguf; ~4 MB
# and carry `carry` (git-ignored) with the call. The wheels install with
# `pip install --no-index --no-deps --target $SITE`; the machine's own torch and transformers
# are used. SmolLM2's GGUF (98 MB) is over one call's 64 MiB: split it here
# (`split -b 49181216 <gguf> part.`) into carry/gguf_a and carry/gguf_b, carry gguf_a in a
# first call that copies it to /tmp/gguf_a, then carry gguf_b with the call that runs this
# script with GGUF_PARTS="/tmp/gguf_a/* carry/gguf_b/*". The joined file is checked against
# GGUF_SHA256 (when set), converted once into $PKPO_CACHE and every run loads it
# (model.source=local).
#
# Environment (all optional but OUT):
#   OUT          where the results go (only small files: no checkpoints)
#   CARRY        the carried folder (default: carry)
#   PYTHON       the interpreter (default: python3)
#   PARALLEL     runs side by side: auto (sized from the device, pkpo.placement) or a number
#   BUDGET_S     wall-time budget of the whole script in seconds (default: 540)
#   SITE         where the wheels install (default: /tmp/pkpo_site)
#   PKPO_CACHE   converted models and the compile cache, kept while the machine stays warm
#                (default: /tmp/pkpo_cache); RUNS: the run folders (default: /tmp/pkpo_runs)
#   GGUF_PARTS, GGUF_SHA256   see above
#
# `make gpu-rehearsal` runs this script end to end on the CPU with the testbed model and a
# few steps (experiments/gpu_rehearsal/protocol.yaml).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: OUT=<folder> experiments/gpu_study.sh PROTOCOL [OVERRIDE ...]" >&2
    exit 2
fi
PROTOCOL=$1
shift
if [[ -z "${OUT:-}" ]]; then
    echo "gpu_study: error: set OUT to the folder for the results" >&2
    exit 2
fi
if [[ ! -f "$PROTOCOL" ]]; then
    echo "gpu_study: error: PROTOCOL: no file $PROTOCOL" >&2
    exit 2
fi
CARRY=${CARRY:-carry}
PYTHON=${PYTHON:-python3}
PARALLEL=${PARALLEL:-auto}
BUDGET_S=${BUDGET_S:-540}
SITE=${SITE:-/tmp/pkpo_site}
RUNS=${RUNS:-/tmp/pkpo_runs}
export PKPO_CACHE=${PKPO_CACHE:-/tmp/pkpo_cache}
# one compile cache for every run of the study: the runs after the first load its kernels
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PKPO_CACHE/torch_compile}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
export WANDB_MODE=disabled
START=$(date +%s)
mkdir -p "$OUT"
TIMES="$OUT/script_times.tsv"
printf 'phase\tseconds\n' >"$TIMES"
phase_done() { printf '%s\t%s\n' "$1" "$(($(date +%s) - ${2}))" >>"$TIMES"; }

# 1. the carried wheels; the checkout's own pkpo/ must not shadow the installed one (its
#    configs live in the wheel as pkpo.conf), so Python does not put the working folder on
#    sys.path (PYTHONSAFEPATH)
t=$(date +%s)
wheels=("$CARRY"/wheels/*.whl)
if [[ ! -e "${wheels[0]}" ]]; then
    echo "gpu_study: error: CARRY: no wheels in $CARRY/wheels (experiments/gpu_carry.sh $CARRY)" >&2
    exit 2
fi
"$PYTHON" -m pip install -q --no-index --no-deps --upgrade --target "$SITE" "${wheels[@]}"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1
phase_done install "$t"

# 2. the protocol's runs, as repro_sweep arguments (one line on stderr if it is malformed)
mapfile -d '' SWEEP < <("$PYTHON" -c '
import sys
from pkpo.analysis.confirmatory import Protocol
try:
    p = Protocol.load(sys.argv[1])
except (OSError, ValueError) as err:
    sys.exit(f"gpu_study: error: PROTOCOL: {err}")
args = ["--preset", p.preset, "--arms", *p.arms, "--seeds", *map(str, p.seeds), "--"]
sys.stdout.write("\0".join([*args, *p.overrides]) + "\0")
' "$PROTOCOL")
if [[ ${#SWEEP[@]} -eq 0 ]]; then
    exit 2
fi
EXTRA=("$@")
# tracked files only, as the launcher's check: the study's own run folders are untracked
if git diff --quiet HEAD 2>/dev/null; then
    EXTRA+=("+protocol_commit=$(git rev-parse HEAD)")
fi

# 3. the model: SmolLM2's GGUF joined from carried parts, converted once
if [[ -n "${GGUF_PARTS:-}" ]]; then
    t=$(date +%s)
    model_dir="$PKPO_CACHE/models/gguf_parts"
    if [[ ! -f "$model_dir/config.json" ]]; then
        mkdir -p "$PKPO_CACHE/gguf"
        # shellcheck disable=SC2086 # GGUF_PARTS is a list of globs
        cat $GGUF_PARTS >"$PKPO_CACHE/gguf/model.gguf"
        if [[ -n "${GGUF_SHA256:-}" ]]; then
            echo "$GGUF_SHA256  $PKPO_CACHE/gguf/model.gguf" | sha256sum --check --quiet
        fi
        "$PYTHON" -c 'import sys; from pathlib import Path; from pkpo.models import convert_gguf
convert_gguf(Path(sys.argv[1]), Path(sys.argv[2]))' "$PKPO_CACHE/gguf/model.gguf" "$model_dir"
    fi
    EXTRA+=(model.source=local "++model.path=$model_dir")
    phase_done model "$t"
fi

# 4. the runs, side by side, within what is left of the budget (30 s kept for step 5)
t=$(date +%s)
left=$((BUDGET_S - (t - START) - 30))
name=$(basename "$(dirname "$PROTOCOL")")
status=0
timeout --kill-after=10 "$left" "$PYTHON" "$(dirname "$0")/repro_sweep.py" \
    --out "$RUNS/$name" --parallel "$PARALLEL" --retries 0 "${SWEEP[@]}" "${EXTRA[@]}" ||
    status=$?
phase_done runs "$t"

# 5. what comes back: events, configs, logs, the manifest (no checkpoints), timing tables
t=$(date +%s)
if [[ -d "$RUNS/$name" ]]; then
    "$PYTHON" "$(dirname "$0")/collect_runs.py" --replace "$RUNS/$name" "$OUT/runs"
    "$PYTHON" "$(dirname "$0")/bench_gpu_window.py" --runs "$OUT/runs" --out "$OUT/timing.md"
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >"$OUT/device.csv" || true
fi
phase_done collect "$t"
phase_done total "$START"
echo "gpu_study: sweep exit status $status; results in $OUT (timing.md, script_times.tsv)"
exit "$status"
