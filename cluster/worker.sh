#!/usr/bin/env bash
# Start CPU workers for dask-pipeline on this node: N single-threaded worker processes,
# each with the resource CPU=1 and numerical libraries pinned to one thread (the same
# environment as dask_pipeline.cluster.WORKER_ENV).
#
#   cluster/worker.sh [SCHEDULER_ADDRESS] [extra `dask worker` options...]
#
# Without SCHEDULER_ADDRESS the workers read SCHEDULER_FILE (default ./scheduler.json),
# written by cluster/scheduler.sh on a shared filesystem.
#
# Environment (all optional):
#   N_WORKERS         worker processes on this node (default: the number of cores)
#   MEMORY_LIMIT      per worker process (default auto: the node's memory / N_WORKERS)
#   LOCAL_DIRECTORY   spill and scratch space, local disk (default ${TMPDIR:-/tmp}/dask-worker-$USER)
#   WORKER_HOST       address to bind (default 127.0.0.1; set the node's cluster-network
#                     address when the scheduler is on another node)
#   WORKER_INTERFACE  bind to this network interface instead (e.g. ib0, eth0)
#   SCHEDULER_FILE    see above
#   TLS_CA_FILE, TLS_CERT, TLS_KEY
#                     all three: connect over tls:// with these files (cluster/make-certs.sh)
#   PYTHON            the Python that has dask-pipeline installed (default python3)
set -euo pipefail

python="${PYTHON:-python3}"
n_workers="${N_WORKERS:-$(nproc)}"
memory_limit="${MEMORY_LIMIT:-auto}"
local_directory="${LOCAL_DIRECTORY:-${TMPDIR:-/tmp}/dask-worker-${USER:-$(id -un)}}"

# Keep in step with WORKER_ENV in dask_pipeline/cluster.py: one thread per task.
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
args=(--nworkers "$n_workers" --nthreads 1 --memory-limit "$memory_limit"
      --resources CPU=1 --local-directory "$local_directory" --no-dashboard
      --dashboard-address 127.0.0.1:0)
if [[ -n "${WORKER_INTERFACE:-}" ]]; then
    args+=(--interface "$WORKER_INTERFACE")
else
    args+=(--host "${WORKER_HOST:-127.0.0.1}")
fi

tls_given="${TLS_CA_FILE:+x}${TLS_CERT:+x}${TLS_KEY:+x}"
if [[ -n "$tls_given" ]]; then
    if [[ "$tls_given" != "xxx" ]]; then
        echo "worker.sh: TLS needs all of TLS_CA_FILE, TLS_CERT and TLS_KEY" >&2
        exit 2
    fi
    args+=(--protocol tls --tls-ca-file "$TLS_CA_FILE" --tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
fi

# exec: the nanny gets this script's PID; stopping it stops every worker it started.
exec "$python" -m dask worker "${scheduler[@]}" "${args[@]}" "$@"
