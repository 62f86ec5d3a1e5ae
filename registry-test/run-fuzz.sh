#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets) for a bounded time: SECONDS each (default 60).
# Installs cargo-fuzz if needed. cargo fuzz uses sanitizer flags that stable Rust accepts with
# RUSTC_BOOTSTRAP=1; the targets are built in release mode with AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# Leaks known in dependencies (each explained in the file); any other leak fails the run.
export LSAN_OPTIONS="suppressions=$PWD/fuzz/lsan-suppressions.txt"
for target in env_yaml package_archive; do
  mkdir -p "fuzz/corpus/$target"
  # Inputs that once failed are where every run starts.
  if [ -d "fuzz/regressions/$target" ]; then cp fuzz/regressions/"$target"/* "fuzz/corpus/$target/"; fi
  cargo fuzz run "$target" --fuzz-dir fuzz -- -max_total_time="$seconds" -rss_limit_mb=2048 "fuzz/corpus/$target"
done
echo "fuzz: every target ran ${seconds}s with no crash"
