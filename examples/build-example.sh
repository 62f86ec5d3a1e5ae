#!/usr/bin/env bash
# One command, no registry, no internet: builds envlayer (unless target/release/envlayer exists), writes the example channel, and builds
# examples/environment.yaml into the OCI layout examples/hello.oci.
set -euo pipefail
cd "$(dirname "$0")/.."
# A release build when there is one (cargo build --release) newer than the sources, else a debug build.
if [ -x target/release/envlayer ] && [ -z "$(find src layers/src oci/src Cargo.lock -newer target/release/envlayer -print -quit)" ]; then
  envlayer=./target/release/envlayer
else
  cargo build --quiet --bin envlayer
  envlayer=./target/debug/envlayer
fi
"$envlayer" example-channel examples/channel >/dev/null
# The example's packages are data and scripts for a base to run: built alone here, on purpose (--base
# scratch), unless a --base is given.
base=(--base scratch)
for a in "$@"; do case "$a" in --base|--base=*) base=() ;; esac; done
"$envlayer" build examples/environment.yaml -o examples/hello.oci --cache-dir target/example-cache "${base[@]}" "$@"
echo "image: examples/hello.oci (try: skopeo inspect oci:examples/hello.oci:latest)" >&2
