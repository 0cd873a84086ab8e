#!/usr/bin/env bash
# Start GPU workers for dask-pipeline on this node: one dask-cuda worker per visible GPU,
# each with the resource GPU=1 (the GPU stages of the graph ask for it). Start the CPU
# workers of the node with cluster/worker.sh beside it (N_WORKERS = cores - GPUs).
#
#   cluster/cuda-worker.sh [SCHEDULER_ADDRESS] [extra `dask cuda worker` options...]
#
# Needs the gpu extra on this node: pip install "dask-pipeline[gpu]".
# Without SCHEDULER_ADDRESS the workers read SCHEDULER_FILE (default ./scheduler.json).
#
# Environment (all optional):
#   GPUS                  which GPUs to use, e.g. "0,1" or GPU UUIDs; sets CUDA_VISIBLE_DEVICES
#                         (default: CUDA_VISIBLE_DEVICES as set, else every GPU)
#   MEMORY_LIMIT          host memory per worker (default auto)
#   DEVICE_MEMORY_LIMIT   GPU memory before spilling to host (default 0.8)
#   LOCAL_DIRECTORY       spill and scratch space (default ${TMPDIR:-/tmp}/dask-cuda-worker-$USER)
#   WORKER_HOST, WORKER_INTERFACE, SCHEDULER_FILE, TLS_CA_FILE, TLS_CERT, TLS_KEY, PYTHON
#                         as in cluster/worker.sh
set -euo pipefail

python="${PYTHON:-python3}"
memory_limit="${MEMORY_LIMIT:-auto}"
device_memory_limit="${DEVICE_MEMORY_LIMIT:-0.8}"
local_directory="${LOCAL_DIRECTORY:-${TMPDIR:-/tmp}/dask-cuda-worker-${USER:-$(id -un)}}"

# dask cuda worker starts one worker per device in CUDA_VISIBLE_DEVICES and gives each
# worker its own device first in the list, so every task sees "its" GPU as device 0.
if [[ -n "${GPUS:-}" ]]; then
    export CUDA_VISIBLE_DEVICES="$GPUS"
fi
if [[ "${CUDA_VISIBLE_DEVICES-unset}" == "" ]]; then
    echo "cuda-worker.sh: CUDA_VISIBLE_DEVICES is empty: no GPU to start a worker on" >&2
    exit 2
fi

# Host-side numerical code in GPU workers stays single-threaded too (WORKER_ENV).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 VECLIB_MAXIMUM_THREADS=1

scheduler=()
if [[ $# -gt 0 && "$1" != -* ]]; then
    scheduler=("$1")
    shift
else
    scheduler=(--scheduler-file "${SCHEDULER_FILE:-scheduler.json}")
fi

mkdir -p "$local_directory"
# Workers still serve HTTP (health, metrics) without a dashboard; keep it on loopback.
args=(--nthreads 1 --memory-limit "$memory_limit" --device-memory-limit "$device_memory_limit"
      --resources GPU=1 --local-directory "$local_directory" --no-dashboard
      --dashboard-address 127.0.0.1:0)
if [[ -n "${WORKER_INTERFACE:-}" ]]; then
    args+=(--interface "$WORKER_INTERFACE")
else
    args+=(--host "${WORKER_HOST:-127.0.0.1}")
fi

tls_given="${TLS_CA_FILE:+x}${TLS_CERT:+x}${TLS_KEY:+x}"
if [[ -n "$tls_given" ]]; then
    if [[ "$tls_given" != "xxx" ]]; then
        echo "cuda-worker.sh: TLS needs all of TLS_CA_FILE, TLS_CERT and TLS_KEY" >&2
        exit 2
    fi
    args+=(--protocol tls --tls-ca-file "$TLS_CA_FILE" --tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
fi

exec "$python" -m dask cuda worker "${scheduler[@]}" "${args[@]}" "$@"
