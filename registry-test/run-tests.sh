#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests use (skopeo, umoci, the
# registry, containerd, runc), then runs every Rust test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in skopeo umoci docker-registry containerd runc htpasswd; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test tools: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends skopeo umoci docker-registry containerd runc apache2-utils \
    ca-certificates >/dev/null
fi
[ -d ../shared/fixtures/channels ] || { echo "../shared/fixtures/channels is missing" >&2; exit 1; }
cargo test --workspace --locked "$@"
