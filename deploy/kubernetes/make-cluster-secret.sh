#!/usr/bin/env bash
# Makes the files of the `rusk-cluster` Secret (see docs/deployment.md, "Kubernetes"):
#   token           the cluster token (the scheduler's --token-file)
#   ca.pem          the cluster CA's certificate (the scheduler's --tls-ca)
#   scheduler.pem   the scheduler's certificate, for the Service's DNS names (--tls-cert)
#   scheduler.key   its key (--tls-key)
#   scheduler.json  a scheduler file for joiners (nannies, `rusk status`, Python clients): the
#                   Service's address, the token, and the CA's certificate and key, from which
#                   each joiner issues itself a certificate for its pod's names and addresses
# The CA is made by rusk itself (a scheduler run once with --tls on), so that joiners can
# issue from its key; the scheduler's certificate is signed with openssl.
#
# Usage: make-cluster-secret.sh OUT_DIR [NAMESPACE] [SERVICE] [CLUSTER_DOMAIN]
# Outside Kubernetes (systemd on several hosts): EXTRA_SANS="DNS:sched.example.com,IP:10.0.0.1"
# adds names to the scheduler's certificate, ADDRESS=sched.example.com:8786 is the joiners' address.
# then:  kubectl -n NAMESPACE create secret generic rusk-cluster --from-file=OUT_DIR
# Needs: rusk on PATH, openssl, jq.
set -euo pipefail
out=${1:?usage: make-cluster-secret.sh OUT_DIR [NAMESPACE] [SERVICE] [CLUSTER_DOMAIN]}
ns=${2:-rusk}
svc=${3:-rusk-scheduler}
domain=${4:-cluster.local}
port=8786

mkdir -p "$out"
chmod 700 "$out"
umask 077
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

# A throwaway scheduler on loopback makes the CA and the token, and writes them to its file.
rusk scheduler --tls on --listen 127.0.0.1:0 --dashboard none \
    --scheduler-file "$work/boot.json" >"$work/boot.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -s "$work/boot.json" ] && break; sleep 0.1; done
kill "$pid"
jq -er .tls.ca_pem "$work/boot.json" >"$out/ca.pem"
jq -er .tls.ca_key_pem "$work/boot.json" >"$work/ca.key"
jq -er .token "$work/boot.json" >"$out/token"

# The scheduler's certificate: every name a peer may dial it by.
fqdn="$svc.$ns.svc.$domain"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/scheduler.key" 2>/dev/null
openssl req -new -key "$out/scheduler.key" -subj "/CN=$fqdn" -out "$work/scheduler.csr"
cat >"$work/ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$svc,DNS:$svc.$ns,DNS:$svc.$ns.svc,DNS:$fqdn,DNS:localhost,IP:127.0.0.1${EXTRA_SANS:+,$EXTRA_SANS}
EXT
openssl x509 -req -in "$work/scheduler.csr" -CA "$out/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -CAserial "$work/ca.srl" -days 397 -sha256 -extfile "$work/ext" \
    -out "$out/scheduler.pem" 2>/dev/null

# The joiners' scheduler file.
address=${ADDRESS:-$fqdn:$port}
jq -n --arg address "$address" --rawfile token "$out/token" \
    --rawfile ca "$out/ca.pem" --rawfile key "$work/ca.key" \
    '{address: $address, token: ($token | rtrimstr("\n")), pid: 0,
      tls: {ca_pem: $ca, ca_key_pem: $key}}' >"$out/scheduler.json"
echo "wrote $out: token ca.pem scheduler.pem scheduler.key scheduler.json (address $address)"
echo "next: kubectl -n $ns create secret generic rusk-cluster --from-file=$out"
