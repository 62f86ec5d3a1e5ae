#!/usr/bin/env bash
# Starts pypiserver (a real PEP 503 index, from setup-pypi.sh's venv) on 127.0.0.1 with a free port,
# serving the wheels in WHEELS, in the background. With USER and PASSWORD, downloads and listings need
# HTTP basic auth.
# usage: start-pypi.sh TOOLS WORKDIR WHEELS [USER PASSWORD]
# Writes WORKDIR/addr (host:port), WORKDIR/pids and WORKDIR/pypi.log (with an access log line per
# request); prints http://ADDR/simple/.
set -euo pipefail
tools=${1:?usage: start-pypi.sh TOOLS WORKDIR WHEELS [USER PASSWORD]}
work=$(mkdir -p "${2:?}" && cd "$2" && pwd)
wheels=${3:?}
: > "$work/pids"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
auth=(-a . -P .)
if [ -n "${4:-}" ]; then
  htpasswd -bc "$work/htpasswd" "$4" "${5:?}" 2>/dev/null
  auth=(-a download,list,update -P "$work/htpasswd")
fi
"$tools/venv/bin/pypi-server" run -p "$port" -i 127.0.0.1 -v --disable-fallback "${auth[@]}" "$wheels" > "$work/pypi.log" 2>&1 &
echo $! >> "$work/pids"
for _ in $(seq 1 200); do
  grep -q "Listening on" "$work/pypi.log" && break
  sleep 0.05
done
grep -q "Listening on" "$work/pypi.log" || { echo "pypiserver did not start:" >&2; cat "$work/pypi.log" >&2; exit 1; }
echo "127.0.0.1:$port" > "$work/addr"
echo "http://127.0.0.1:$port/simple/"
