#!/bin/sh
# Print the Secrets that facestream's Redis and its clients need, as Kubernetes YAML on stdout, with fresh
# random passwords, a fresh CA and a certificate for the Redis service. Create them once per cluster,
# before the first `kubectl apply -k` (any overlay; the dev overlay too, so no known password exists):
#
#   kubectl create namespace facestream
#   deploy/k8s/secrets/make-secrets.sh | kubectl create -f -
#
# To rotate every Redis password and the certificate: `... | kubectl replace -f -`, then
# `kubectl -n facestream rollout restart statefulset/facestream-redis deployment/facestream-matcher`.
# Nothing is committed and nothing is left on disk: the work happens in a private temporary folder that is
# removed on exit, the CA's key included (the next rotation makes a new CA). The script refuses to print to
# a terminal. The Kafka credentials are not made here: Strimzi creates one Secret per KafkaUser and keeps
# its own cluster CA.
#
#   Secret                    keys                       mounted by
#   facestream-redis-tls      tls.crt, tls.key, ca.crt   Redis (its certificate; type kubernetes.io/tls)
#   facestream-redis-acl      users.acl, probe, admin    Redis (users.acl, probe); admin is for people only
#   facestream-redis-ca       ca.crt                     the matcher (verifies Redis), and you, to enroll
#   facestream-redis-matcher  password                   the matcher (ACL user matcher)
#   facestream-redis-enroll   password                   nobody: `facestream gallery` via a port-forward
#
# cert-manager instead of this CA: a Certificate with secretName facestream-redis-tls, the DNS names below,
# and an Issuer whose CA certificate you copy into facestream-redis-ca (key ca.crt); keep making the
# passwords and the ACL file here and drop facestream-redis-tls from the output.
#
# Environment: NAMESPACE (facestream), CLUSTER_DOMAIN (cluster.local), CERT_DAYS (825). Needs openssl.
set -eu
umask 077

NAMESPACE="${NAMESPACE:-facestream}"
CLUSTER_DOMAIN="${CLUSTER_DOMAIN:-cluster.local}"
CERT_DAYS="${CERT_DAYS:-825}"
SERVICE=facestream-redis
HERE=$(cd "$(dirname "$0")" && pwd)
TEMPLATE="$HERE/redis-users.acl"

if [ -t 1 ]; then
    echo "make-secrets.sh: this prints passwords; pipe it into kubectl: $0 | kubectl create -f -" >&2
    exit 2
fi
command -v openssl >/dev/null 2>&1 || { echo "make-secrets.sh: openssl is needed" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# One password per Redis user (hex: no quoting trouble anywhere), and its SHA-256 for the ACL file.
sed_args=""
for user in admin probe matcher enroll; do
    openssl rand -hex 32 | tr -d '\n' > "$WORK/$user.password"
    hash=$(openssl dgst -sha256 -r < "$WORK/$user.password" | cut -d' ' -f1)
    upper=$(printf '%s' "$user" | tr '[:lower:]' '[:upper:]')
    sed_args="$sed_args -e s/@${upper}_SHA256@/#$hash/"
done
# Redis's ACL file takes `user` lines only: the template's comments and blank lines are dropped.
# shellcheck disable=SC2086
grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$TEMPLATE" | sed $sed_args > "$WORK/users.acl"
if grep -q '@[A-Z_]*_SHA256@' "$WORK/users.acl"; then
    echo "make-secrets.sh: $TEMPLATE names a user this script makes no password for" >&2
    exit 1
fi

# A CA of its own, and Redis's certificate for every name a client uses: the Service (short, namespaced
# and full names), the pod's own name under the headless Service, and localhost (the readiness probe, and
# a port-forward from a workstation).
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 3650 \
    -subj "/CN=facestream-redis-ca" -keyout "$WORK/ca.key" -out "$WORK/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -subj "/CN=$SERVICE" -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
svc="$SERVICE.$NAMESPACE.svc"
names="DNS:$SERVICE, DNS:$SERVICE.$NAMESPACE, DNS:$svc, DNS:$svc.$CLUSTER_DOMAIN"
names="$names, DNS:*.$svc, DNS:*.$svc.$CLUSTER_DOMAIN, DNS:localhost, IP:127.0.0.1, IP:::1"
cat > "$WORK/ext.cnf" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $names
EOF
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$CERT_DAYS" -sha256 -extfile "$WORK/ext.cnf" \
    -out "$WORK/tls.crt" 2>/dev/null

# secret NAME TYPE KEY=FILE...: one Secret, every value base64 as the API wants it.
secret() {
    name=$1 type=$2
    shift 2
    printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$NAMESPACE"
    printf '  labels:\n    app.kubernetes.io/part-of: facestream\ntype: %s\ndata:\n' "$type"
    for pair in "$@"; do
        printf '  %s: %s\n' "${pair%%=*}" "$(base64 < "$WORK/${pair#*=}" | tr -d '\n')"
    done
}
secret facestream-redis-tls kubernetes.io/tls tls.crt=tls.crt tls.key=tls.key ca.crt=ca.crt
secret facestream-redis-acl Opaque users.acl=users.acl probe=probe.password admin=admin.password
secret facestream-redis-ca Opaque ca.crt=ca.crt
secret facestream-redis-matcher Opaque password=matcher.password
secret facestream-redis-enroll Opaque password=enroll.password
