#!/usr/bin/env bash
# Puts HTTPS in front of a plain-HTTP test server: makes a test CA ($WORKDIR/ca.pem) and a leaf
# certificate for 127.0.0.1, and starts tls-front.py on a free port of 127.0.0.1 passing to BACKEND.
# usage: start-tls-front.sh WORKDIR BACKEND(host:port)
# Prints https://127.0.0.1:PORT; writes WORKDIR/addr and WORKDIR/pids. Stop with: kill $(cat WORKDIR/pids)
set -euo pipefail
work=$(mkdir -p "${1:?usage: start-tls-front.sh WORKDIR BACKEND}" && cd "$1" && pwd)
backend=${2:?usage: start-tls-front.sh WORKDIR BACKEND}
here=$(cd "$(dirname "$0")" && pwd)
: > "$work/pids"
"$here/make-test-certs.sh" "$work"
python3 "$here/tls-front.py" "$work/leaf.pem" "$work/leaf-key.pem" "$backend" > "$work/front.log" 2>&1 &
echo $! >> "$work/pids"
for _ in $(seq 1 200); do grep -q "listening on" "$work/front.log" 2>/dev/null && break; sleep 0.05; done
addr=$(grep -o "listening on [0-9.:]*" "$work/front.log" | head -n1 | cut -d' ' -f3)
[ -n "$addr" ] || { cat "$work/front.log" >&2; exit 1; }
echo "$addr" > "$work/addr"
echo "https://$addr"
