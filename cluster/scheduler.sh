#!/usr/bin/env bash
# Start the Dask scheduler a dask-pipeline run connects to (cluster.kind: address).
#
#   cluster/scheduler.sh [extra `dask scheduler` options...]
#
# It binds to 127.0.0.1 unless told otherwise: reachable from this machine only. For
# workers on other nodes set SCHEDULER_HOST to this node's cluster-network address (and use
# TLS). The dashboard stays on 127.0.0.1; reach it through an SSH tunnel (cluster/README.md).
#
# Environment (all optional):
#   SCHEDULER_HOST       address to bind (default 127.0.0.1)
#   SCHEDULER_PORT       port (default 8786)
#   DASHBOARD_ADDRESS    dashboard bind address (default 127.0.0.1:8787; "none" turns it off)
#   SCHEDULER_FILE       where to write the address for workers (default ./scheduler.json)
#   TLS_CA_FILE, TLS_CERT, TLS_KEY
#                        all three: listen on tls:// with these files (cluster/make-certs.sh)
#   PYTHON               the Python that has dask-pipeline installed (default python3)
set -euo pipefail

host="${SCHEDULER_HOST:-127.0.0.1}"
port="${SCHEDULER_PORT:-8786}"
dashboard="${DASHBOARD_ADDRESS:-127.0.0.1:8787}"
scheduler_file="${SCHEDULER_FILE:-scheduler.json}"
python="${PYTHON:-python3}"

args=(--host "$host" --port "$port" --scheduler-file "$scheduler_file")
if [[ "$dashboard" == "none" ]]; then
    args+=(--no-dashboard)
else
    args+=(--dashboard-address "$dashboard")
fi

tls_given="${TLS_CA_FILE:+x}${TLS_CERT:+x}${TLS_KEY:+x}"
if [[ -n "$tls_given" ]]; then
    if [[ "$tls_given" != "xxx" ]]; then
        echo "scheduler.sh: TLS needs all of TLS_CA_FILE, TLS_CERT and TLS_KEY" >&2
        exit 2
    fi
    args+=(--protocol tls --tls-ca-file "$TLS_CA_FILE" --tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
fi

# exec: the scheduler gets this script's PID, so stopping the script stops the scheduler.
exec "$python" -m dask scheduler "${args[@]}" "$@"
