#!/usr/bin/env bash
# Make a private CA and certificates for a TLS Dask cluster (openssl only).
#
#   cluster/make-certs.sh [OUT_DIR]            # default OUT_DIR: ./certs
#
# Writes, in OUT_DIR:
#   ca.pem, ca-key.pem                 the cluster's own CA (kept if already there, so
#                                      certificates made later still join the same cluster)
#   scheduler.pem, scheduler-key.pem   for cluster/scheduler.sh
#   worker.pem, worker-key.pem         for cluster/worker.sh and cluster/cuda-worker.sh
#   client.pem, client-key.pem         for cluster.tls in the config (the machine that runs
#                                      dask-pipeline)
#
# Every certificate is signed by ca.pem and valid for both TLS server and client use:
# Dask authenticates in both directions (the scheduler also dials workers, workers dial
# each other). Dask checks the CA, not host names, so one set serves every node; the
# names in CERT_HOSTS are only recorded in the certificates.
#
# Environment:
#   CERT_DAYS    validity in days (default 365)
#   CERT_HOSTS   subjectAltName entries (default DNS:localhost,IP:127.0.0.1)
#   CERT_NAMES   certificates to make (default "scheduler worker client")
#
# Copy ca.pem plus the matching cert and key to each node (or keep them on a shared
# filesystem readable only by you); never copy ca-key.pem anywhere.
set -euo pipefail

out="${1:-certs}"
days="${CERT_DAYS:-365}"
hosts="${CERT_HOSTS:-DNS:localhost,IP:127.0.0.1}"
names="${CERT_NAMES:-scheduler worker client}"

command -v openssl >/dev/null || { echo "make-certs.sh: openssl is not installed" >&2; exit 1; }
mkdir -p "$out"
umask 077

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

if [[ ! -f "$out/ca.pem" ]]; then
    new_key "$out/ca-key.pem"
    openssl req -x509 -new -key "$out/ca-key.pem" -sha256 -days "$days" \
        -subj "/CN=dask-pipeline cluster CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$out/ca.pem"
fi

ext="$(mktemp)"
trap 'rm -f "$ext"' EXIT
cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$hosts
EOF

for name in $names; do
    new_key "$out/$name-key.pem"
    openssl req -new -key "$out/$name-key.pem" -subj "/CN=dask-$name" -out "$out/$name.csr"
    openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" \
        -CAcreateserial -CAserial "$out/ca.srl" -sha256 -days "$days" \
        -extfile "$ext" -out "$out/$name.pem" 2>/dev/null
    rm -f "$out/$name.csr"
done
# Certificates are public; the keys stay readable by their owner only (umask above).
chmod 644 "$out/ca.pem"
for name in $names; do chmod 644 "$out/$name.pem"; done
echo "certificates in $out: ca.pem$(for n in $names; do printf ' %s.pem %s-key.pem' "$n" "$n"; done)"
