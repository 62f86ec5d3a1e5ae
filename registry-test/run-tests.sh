#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests use (skopeo, umoci, the
# registry, containerd, runc, openssl, htpasswd, GNU time for peak-memory checks; grpcio from PyPI for the
# CRI client; uv, pypiserver and real wheels from PyPI for the pip tests), then runs every
# Rust test of the workspace (after clippy), then each fuzz target for a bounded time, and prints one
# totals line.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in skopeo umoci docker-registry containerd runc htpasswd openssl podman ip flock; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test tools: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends skopeo umoci docker-registry containerd runc apache2-utils \
    openssl ca-certificates time podman iproute2 util-linux >/dev/null
fi
if ! python3 -c "import grpc, grpc_tools" 2>/dev/null; then
  echo "installing grpcio and grpcio-tools from PyPI (CRI PullImage client)" >&2
  python3 -m pip install -q --disable-pip-version-check grpcio grpcio-tools 2>&1 | grep -v "Running pip as the 'root'" >&2 || true
fi
[ -d ../shared/fixtures/channels ] || { echo "../shared/fixtures/channels is missing" >&2; exit 1; }
# The pip tests' tools and data: uv and pypiserver (pinned, from PyPI, in a venv) and real wheels from
# PyPI, under target/pypi-tools (the tests also make it on first use; doing it here shows a failure early).
python3 -m venv --help >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
./registry-test/setup-pypi.sh >/dev/null
# Lints first: clippy on every target, warnings are errors (the library may not print: see Cargo.toml).
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
# Each library crate alone (features are unified across a workspace build, which can hide a missing one),
# and the library without the CLI feature: it must build, and pull in no command-line crate.
for crate in envlayer-layers envlayer-oci; do cargo check -p "$crate" --lib --locked; done
cargo check -p envlayer --lib --no-default-features --locked
if cargo tree -p envlayer --no-default-features -e normal --locked | grep -E ' (clap|clap_complete|indicatif|tracing-subscriber) v'; then
  echo "the envlayer library depends on a command-line crate (above)" >&2; exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# Fuzzing, bounded: each target of fuzz/ for 30 s (ENVLAYER_SKIP_FUZZ=1 skips it).
fuzz_status=0
if [ "$status" -eq 0 ] && [ -z "${ENVLAYER_SKIP_FUZZ:-}" ]; then
  ./registry-test/run-fuzz.sh "${ENVLAYER_FUZZ_SECONDS:-30}" 2>&1 | grep -E "^(Done|fuzz:|==[0-9]+==|thread .* panicked|SUMMARY)"
  fuzz_status=${PIPESTATUS[0]}
fi
set -e
# One closing line with the totals of every test binary (cargo prints one result line per binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "envlayer: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
[ "$fuzz_status" -eq 0 ] || echo "fuzzing found a crash (see fuzz/artifacts)" >&2
[ "$status" -ne 0 ] && exit "$status"
exit "$fuzz_status"
