#!/usr/bin/env bash
# Makes an OCI image layout holding the Debian libraries that the local-python fixture's CPython links
# against (libc6, libssl3, ...), plus a shell and coreutils, as the base for test images.
#   usage: make-debian-base.sh OUT_LAYOUT [DEB_CACHE_DIR]
# The .deb files are fetched with `apt-get download` (Debian's package archive) and kept in DEB_CACHE_DIR.
set -euo pipefail
out=${1:?usage: make-debian-base.sh OUT_LAYOUT [DEB_CACHE_DIR]}
debs=${2:-$(dirname "$out")/debs}
pkgs=(libc6 libgcc-s1 libssl3 libffi8 libsqlite3-0 libbz2-1.0 liblzma5 zlib1g libncursesw6 libtinfo6
      libreadline8 libuuid1 libexpat1 readline-common dash coreutils libacl1 libattr1 libselinux1 libpcre2-8-0
      libgmp10 libcap2 base-files bash)
mkdir -p "$debs"
fetch() { (cd "$debs" && for p in "${pkgs[@]}"; do ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download -q -o APT::Sandbox::User=root "$p" >/dev/null || return 1; done); }
# A fresh machine may have no package lists yet.
fetch || { apt-get update -qq && fetch; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"
for p in "${pkgs[@]}"; do dpkg-deb -x "$(ls "$debs/${p}"_*.deb | head -n1)" "$rootfs"; done
# Debian images ship merged /usr: make the usual links where the packages did not.
for d in bin sbin lib lib64; do
  if [ -d "$rootfs/$d" ] && [ ! -L "$rootfs/$d" ]; then mkdir -p "$rootfs/usr/$d"; cp -a "$rootfs/$d/." "$rootfs/usr/$d/"; rm -rf "${rootfs:?}/$d"; fi
  [ -e "$rootfs/$d" ] || ln -s "usr/$d" "$rootfs/$d"
done
ln -sf dash "$rootfs/usr/bin/sh"
mkdir -p "$rootfs/tmp" "$rootfs/etc" "$rootfs/proc" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
rm -rf "$out"
umoci init --layout "$out"
umoci new --image "$out:base"
umoci unpack --image "$out:base" "$work/bundle" >/dev/null
rm -rf "$work/bundle/rootfs"
mv "$rootfs" "$work/bundle/rootfs"
umoci repack --image "$out:base" "$work/bundle" >/dev/null
umoci config --image "$out:base" --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd /bin/sh --os linux --architecture amd64 >/dev/null
umoci gc --layout "$out"
echo "$out"
