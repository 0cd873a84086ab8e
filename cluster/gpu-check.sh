#!/usr/bin/env bash
# Measure and check dask-pipeline on a GPU node, in one go (under 8 minutes on 1 GPU / 16 cores):
#
#   cluster/gpu-check.sh [--dry-run] [OUT_DIR]        (default OUT_DIR: gpu-check-<date>)
#
# 1. finds the GPU (nvidia-smi); without one it says so in one line and exits 3, unless --dry-run;
# 2. makes a virtual environment ($VENV, default .venv-gpu-check in the repository) and installs
#    what it lacks: pip install -e ".[gpu,xgboost,test]" -- from the wheels in $WHEELS (default
#    cluster/wheels/) with --no-index when that folder holds any (a node without a package index),
#    else from the index;
# 3. runs `python -m dask_pipeline.gpucheck OUT_DIR`: the GPU, cuda, cupy and XGBoost tests for
#    real; `bench waves` with numba, numpy, cupy and cuda rows (1 symbol x 500 windows, and
#    sp500); configs/research.yaml on a local-cuda cluster, checking that every waves-<S> task
#    ran on the GPU worker and every fit task on a CPU worker; an XGBoost fit on the CPU and the
#    GPU. It writes OUT_DIR/gpu-check.md (one table: paste it into the README's GPU section) and
#    OUT_DIR/gpu-check.json (every figure), and prints the table.
#
# Exit status: 0 every check passed; 1 a check failed (the table says which); 2 bad usage or the
# install failed; 3 no GPU found (nothing measured).
#
# --dry-run rehearses every step on a machine without a GPU, at small sizes: CPU rows measured,
# GPU rows "skipped". It installs only ".[xgboost,test]" (no CUDA libraries) and exits 0 or 1.
#
# Wheels for a node without a package index, made on a machine with one (same OS, CPU
# architecture and Python version as the node):
#   pip download --dest cluster/wheels ".[gpu,xgboost,test]" pip setuptools wheel
#
# Environment (all optional): PYTHON (the interpreter that makes the venv, default python3),
# VENV, WHEELS, CUDA_VISIBLE_DEVICES (which GPU), GPU_CHECK_SKIP (steps to leave out, e.g. "tests").
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
dry_run=""
out=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run="--dry-run" ;;
        # The comment header below the shebang, up to the first line of code, whatever its length.
        -h|--help) awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        -*) echo "gpu-check.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) if [[ -n "$out" ]]; then echo "gpu-check.sh: one OUT_DIR only (see --help)" >&2; exit 2; fi
           out="$arg" ;;
    esac
done
out="${out:-gpu-check-$(date +%Y%m%d-%H%M%S)}"

gpus=""
if command -v nvidia-smi >/dev/null 2>&1; then
    gpus="$(nvidia-smi -L 2>/dev/null | grep '^GPU ' || true)"
fi
if [[ -z "$gpus" ]]; then
    why="$(command -v nvidia-smi >/dev/null 2>&1 && echo "nvidia-smi lists none" || echo "no nvidia-smi")"
    if [[ -z "$dry_run" ]]; then
        echo "gpu-check: no NVIDIA GPU found ($why): nothing measured; on a GPU node this installs .[gpu,xgboost,test], runs the GPU tests, bench waves (numba, cupy, cuda), a local-cuda research run and an XGBoost GPU fit, and writes $out/gpu-check.md and .json (--dry-run rehearses it here)" >&2
        exit 3
    fi
    echo "gpu-check: no NVIDIA GPU found ($why): dry run, every step at small sizes on the CPU, GPU rows skipped"
    extras="xgboost,test"
else
    echo "gpu-check: $(echo "$gpus" | wc -l) GPU(s): $(echo "$gpus" | head -1 | sed 's/ (UUID.*//')${dry_run:+ (dry run)}"
    extras="${dry_run:+xgboost,test}"
    extras="${extras:-gpu,xgboost,test}"
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"  # the run below works from the repository
venv="${VENV:-$repo/.venv-gpu-check}"
wheels="${WHEELS:-$repo/cluster/wheels}"
if [[ ! -x "$venv/bin/python" ]]; then
    echo "gpu-check: making the virtual environment $venv"
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
need="import dask_pipeline, pytest, xgboost, numba_cuda"
[[ "$extras" == gpu,* ]] && need="$need, cupy, dask_cuda"
if ! (cd "$repo" && "$py" -c "$need") >/dev/null 2>&1; then
    pip_args=(install --quiet --disable-pip-version-check)
    if compgen -G "$wheels/*.whl" >/dev/null; then
        pip_args+=(--no-index --find-links "$wheels")
        echo "gpu-check: installing .[$extras] from $wheels (no package index)"
    else
        echo "gpu-check: installing .[$extras] from the package index"
    fi
    if ! "$py" -m pip "${pip_args[@]}" -e "$repo[$extras]"; then
        echo "gpu-check: pip could not install .[$extras] into $venv (see above)" >&2
        exit 2
    fi
fi

export MPLBACKEND=Agg
cd "$repo"
status=0
"$py" -m dask_pipeline.gpucheck "$out" $dry_run --skip "${GPU_CHECK_SKIP:-}" || status=$?
exit "$status"
