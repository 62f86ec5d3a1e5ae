#!/usr/bin/env bash
# The benchmark, in one command: installs what it compares against (pigz, zstd, GNU time, containerd and
# the registry from Debian, iproute2 for the shaped links; py-rattler from PyPI), builds envlayer in
# release mode, and runs every scenario of benches/pipeline.rs, printing a table of ratios. It needs root
# (network namespaces, loop-mounted disks, containerd). `./registry-test/run-bench.sh --quick`
# skips the large synthetic environment.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in pigz zstd docker-registry containerd runc skopeo umoci; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
[ -x /usr/bin/time ] || need+=(time)
# The shaped links: network namespaces, tc (iproute2), nsenter (util-linux); node disks: mkfs.ext4.
command -v tc >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends pigz zstd time docker-registry containerd runc skopeo umoci openssl "${need[@]}" >/dev/null
fi
python3 -c "import rattler" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check py-rattler
cargo build --release --locked --bin envlayer
cargo bench --locked --bench pipeline -- "$@"
