#!/usr/bin/env bash
# Starts Debian's docker-registry (CNCF distribution 2.8) on 127.0.0.1 with a free port, in the
# background, in one of the variants the tests use:
#   plain     plain HTTP, no auth
#   htpasswd  plain HTTP, basic auth (user "envlayer", password from $REGISTRY_PASSWORD, default "s3cret-pw")
#   token     plain HTTP, bearer tokens from registry-test/token-server.py (same user and password);
#             with TOKEN_DENY_CROSS_REPO=1 the token server refuses cross-repository mounts
#   tls       HTTPS with a leaf certificate signed by a test CA ($WORKDIR/ca.pem), no auth
# usage: start-registry.sh MODE WORKDIR
# Writes WORKDIR/addr (host:port), WORKDIR/pids (every process started) and WORKDIR/registry.log.
# REGISTRY_BIND (default 127.0.0.1) is the address to listen on; REGISTRY_DATA (default WORKDIR/data)
# the storage folder, which a second registry may serve too (the benchmark serves one storage on
# loopback and across a shaped link).
# Stop everything with: kill $(cat WORKDIR/pids)
set -euo pipefail
mode=${1:?usage: start-registry.sh MODE WORKDIR}
work=$(mkdir -p "${2:?usage: start-registry.sh MODE WORKDIR}" && cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
user=envlayer
pass=${REGISTRY_PASSWORD:-s3cret-pw}
: > "$work/pids"

wait_for() { # file pattern
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}

auth=""
scheme=http
case "$mode" in
  plain) ;;
  htpasswd)
    htpasswd -Bbn "$user" "$pass" > "$work/htpasswd"
    auth="auth:
  htpasswd:
    realm: envlayer-test
    path: $work/htpasswd"
    ;;
  token)
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/token-key.pem" -out "$work/token-cert.pem" \
      -days 2 -subj "/CN=envlayer-test-token" 2>/dev/null
    python3 "$here/token-server.py" --key "$work/token-key.pem" --cert "$work/token-cert.pem" \
      --user "$user" --password "$pass" ${TOKEN_DENY_CROSS_REPO:+--deny-cross-repo} > "$work/token.log" 2>&1 &
    echo $! >> "$work/pids"
    wait_for "$work/token.log" "listening on"
    token_addr=$(grep -o "listening on [0-9.:]*" "$work/token.log" | head -n1 | cut -d' ' -f3)
    auth="auth:
  token:
    realm: http://$token_addr/token
    service: envlayer-test
    issuer: envlayer-test-issuer
    rootcertbundle: $work/token-cert.pem"
    ;;
  tls)
    "$here/make-test-certs.sh" "$work"
    scheme=https
    ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac

tls=""
[ "$mode" = tls ] && tls="  tls:
    certificate: $work/leaf.pem
    key: $work/leaf-key.pem"
cat > "$work/config.yml" <<YAML
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${REGISTRY_DATA:-$work/data}
  delete:
    enabled: true
http:
  addr: ${REGISTRY_BIND:-127.0.0.1}:0
$tls
$auth
YAML
docker-registry serve "$work/config.yml" > "$work/registry.log" 2>&1 &
echo $! >> "$work/pids"
wait_for "$work/registry.log" "listening on"
grep -o "listening on [0-9.:]*" "$work/registry.log" | head -n1 | cut -d' ' -f3 > "$work/addr"
echo "$scheme://$(cat "$work/addr")"
