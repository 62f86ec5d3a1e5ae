#!/usr/bin/env bash
# Starts containerd (Debian's 1.6) as a plain process with its own root, state and socket under WORKDIR,
# with the CRI plugin on (the image service kubelet calls) and the overlayfs snapshotter that nodes use
# (native, which copies every layer's parent, when this machine cannot mount overlayfs).
# Registries are configured per host in WORKDIR/certs.d/<host:port>/hosts.toml (see allow_registry below).
# usage: start-containerd.sh WORKDIR [REGISTRY_HOST:PORT ...]   (each registry is allowed over plain HTTP)
# Writes WORKDIR/containerd.sock, WORKDIR/snapshotter and WORKDIR/pids. Stop with: kill $(cat WORKDIR/pids)
set -euo pipefail
work=$(mkdir -p "${1:?usage: start-containerd.sh WORKDIR [REGISTRY ...]}" && cd "$1" && pwd)
shift
mkdir -p "$work/certs.d"
snapshotter=native
probe=$work/overlay-probe
mkdir -p "$probe"/{l,u,w,m}
if mount -t overlay overlay -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" "$probe/m" 2>/dev/null; then
  umount "$probe/m"
  snapshotter=overlayfs
fi
rm -rf "$probe"
echo "$snapshotter" > "$work/snapshotter"
for reg in "$@"; do
  mkdir -p "$work/certs.d/$reg"
  printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$reg" "$reg" > "$work/certs.d/$reg/hosts.toml"
done
cat > "$work/config.toml" <<TOML
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$snapshotter"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$work/certs.d"
TOML
: > "$work/pids"
containerd --config "$work/config.toml" > "$work/containerd.log" 2>&1 &
echo $! >> "$work/pids"
for _ in $(seq 1 200); do
  [ -S "$work/containerd.sock" ] && ctr --address "$work/containerd.sock" version >/dev/null 2>&1 && { echo "$work/containerd.sock"; exit 0; }
  sleep 0.05
done
echo "containerd did not start:" >&2; tail -20 "$work/containerd.log" >&2; exit 1
