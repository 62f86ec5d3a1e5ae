#!/usr/bin/env bash
# One command, no registry, no internet: builds envlayer, writes the example channel, and builds
# examples/environment.yaml into the OCI layout examples/hello.oci.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin envlayer
./target/debug/envlayer example-channel examples/channel >/dev/null
./target/debug/envlayer build examples/environment.yaml -o examples/hello.oci --cache-dir target/example-cache "$@"
echo "image: examples/hello.oci (try: skopeo inspect oci:examples/hello.oci:latest)" >&2
